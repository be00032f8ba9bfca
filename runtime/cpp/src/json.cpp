/*
 * A small recursive-descent JSON reader and writer (see locore/json.hpp).
 */
#include "locore/json.hpp"
#include "locore/errors.hpp"

#include <cerrno>
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <locale>
#include <sstream>

namespace locore
{
namespace json
{
namespace
{

constexpr int kMaxDepth = 512;

class Parser
{
public:
    Parser(std::string_view text, std::string const& source) : text_(text), source_(source) {}

    Value document()
    {
        skip_space();
        Value value = parse_value(0);
        skip_space();
        if (pos_ != text_.size())
        {
            fail("unexpected text after the JSON value");
        }
        return value;
    }

private:
    [[noreturn]] void fail(std::string const& what) const
    {
        std::size_t line = 1;
        std::size_t column = 1;
        for (std::size_t i = 0; i < pos_ && i < text_.size(); ++i)
        {
            if (text_[i] == '\n')
            {
                ++line;
                column = 1;
            }
            else
            {
                ++column;
            }
        }
        std::ostringstream message;
        message << source_ << " is not valid JSON: " << what << " at line " << line << ", column "
                << column;
        throw JsonError(message.str());
    }

    void skip_space()
    {
        while (pos_ < text_.size())
        {
            char const c = text_[pos_];
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            {
                break;
            }
            ++pos_;
        }
    }

    char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

    void expect_word(char const* word)
    {
        std::string_view const w(word);
        if (text_.substr(pos_, w.size()) != w)
        {
            fail("expected '" + std::string(word) + "'");
        }
        pos_ += w.size();
    }

    Value parse_value(int depth)
    {
        if (depth > kMaxDepth)
        {
            fail("nesting deeper than 512 levels");
        }
        switch (peek())
        {
        case '{':
            return parse_object(depth);
        case '[':
            return parse_array(depth);
        case '"':
            return Value::string(parse_string());
        case 't':
            expect_word("true");
            return Value::boolean(true);
        case 'f':
            expect_word("false");
            return Value::boolean(false);
        case 'n':
            expect_word("null");
            return Value();
        default:
            break;
        }
        char const c = peek();
        if (c == '-' || (c >= '0' && c <= '9'))
        {
            return parse_number();
        }
        if (pos_ >= text_.size())
        {
            fail("unexpected end of text, expected a value");
        }
        fail(std::string("unexpected character '") + c + "', expected a value");
    }

    Value parse_object(int depth)
    {
        ++pos_; // {
        Value::Object members;
        skip_space();
        if (peek() == '}')
        {
            ++pos_;
            return Value::object(std::move(members));
        }
        while (true)
        {
            skip_space();
            if (peek() != '"')
            {
                fail("expected a string key");
            }
            std::size_t const key_pos = pos_;
            std::string key = parse_string();
            for (auto const& member : members)
            {
                if (member.first == key)
                {
                    pos_ = key_pos;
                    fail("repeated key \"" + key + "\"");
                }
            }
            skip_space();
            if (peek() != ':')
            {
                fail("expected ':' after a key");
            }
            ++pos_;
            skip_space();
            Value value = parse_value(depth + 1);
            members.emplace_back(std::move(key), std::move(value));
            skip_space();
            if (peek() == ',')
            {
                ++pos_;
                continue;
            }
            if (peek() == '}')
            {
                ++pos_;
                return Value::object(std::move(members));
            }
            fail("expected ',' or '}' in an object");
        }
    }

    Value parse_array(int depth)
    {
        ++pos_; // [
        Value::Array items;
        skip_space();
        if (peek() == ']')
        {
            ++pos_;
            return Value::array(std::move(items));
        }
        while (true)
        {
            skip_space();
            items.push_back(parse_value(depth + 1));
            skip_space();
            if (peek() == ',')
            {
                ++pos_;
                continue;
            }
            if (peek() == ']')
            {
                ++pos_;
                return Value::array(std::move(items));
            }
            fail("expected ',' or ']' in an array");
        }
    }

    unsigned hex4()
    {
        if (pos_ + 4 > text_.size())
        {
            fail("truncated \\u escape");
        }
        unsigned code = 0;
        for (int i = 0; i < 4; ++i)
        {
            char const c = text_[pos_++];
            code <<= 4;
            if (c >= '0' && c <= '9')
            {
                code |= static_cast<unsigned>(c - '0');
            }
            else if (c >= 'a' && c <= 'f')
            {
                code |= static_cast<unsigned>(c - 'a' + 10);
            }
            else if (c >= 'A' && c <= 'F')
            {
                code |= static_cast<unsigned>(c - 'A' + 10);
            }
            else
            {
                --pos_;
                fail("bad hex digit in a \\u escape");
            }
        }
        return code;
    }

    static void append_utf8(std::string& out, unsigned code)
    {
        if (code < 0x80)
        {
            out += static_cast<char>(code);
        }
        else if (code < 0x800)
        {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
        else if (code < 0x10000)
        {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
        else
        {
            out += static_cast<char>(0xF0 | (code >> 18));
            out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
    }

    std::string parse_string()
    {
        ++pos_; // opening quote
        std::string out;
        while (true)
        {
            if (pos_ >= text_.size())
            {
                fail("unterminated string");
            }
            char const c = text_[pos_++];
            if (c == '"')
            {
                return out;
            }
            if (static_cast<unsigned char>(c) < 0x20)
            {
                --pos_;
                fail("control character in a string (escape it)");
            }
            if (c != '\\')
            {
                out += c;
                continue;
            }
            if (pos_ >= text_.size())
            {
                fail("unterminated escape");
            }
            char const e = text_[pos_++];
            switch (e)
            {
            case '"':
                out += '"';
                break;
            case '\\':
                out += '\\';
                break;
            case '/':
                out += '/';
                break;
            case 'b':
                out += '\b';
                break;
            case 'f':
                out += '\f';
                break;
            case 'n':
                out += '\n';
                break;
            case 'r':
                out += '\r';
                break;
            case 't':
                out += '\t';
                break;
            case 'u':
            {
                unsigned code = hex4();
                if (code >= 0xD800 && code <= 0xDBFF)
                {
                    if (text_.substr(pos_, 2) != "\\u")
                    {
                        fail("a high surrogate without its low surrogate");
                    }
                    pos_ += 2;
                    unsigned const low = hex4();
                    if (low < 0xDC00 || low > 0xDFFF)
                    {
                        fail("a high surrogate without its low surrogate");
                    }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                }
                else if (code >= 0xDC00 && code <= 0xDFFF)
                {
                    fail("a lone low surrogate");
                }
                append_utf8(out, code);
                break;
            }
            default:
                --pos_;
                fail(std::string("unknown escape '\\") + e + "'");
            }
        }
    }

    Value parse_number()
    {
        std::size_t const start = pos_;
        bool integral = true;
        if (peek() == '-')
        {
            ++pos_;
        }
        if (peek() == '0')
        {
            ++pos_;
        }
        else if (peek() >= '1' && peek() <= '9')
        {
            while (peek() >= '0' && peek() <= '9')
            {
                ++pos_;
            }
        }
        else
        {
            fail("expected a digit");
        }
        if (peek() == '.')
        {
            integral = false;
            ++pos_;
            if (!(peek() >= '0' && peek() <= '9'))
            {
                fail("expected a digit after '.'");
            }
            while (peek() >= '0' && peek() <= '9')
            {
                ++pos_;
            }
        }
        if (peek() == 'e' || peek() == 'E')
        {
            integral = false;
            ++pos_;
            if (peek() == '+' || peek() == '-')
            {
                ++pos_;
            }
            if (!(peek() >= '0' && peek() <= '9'))
            {
                fail("expected a digit in the exponent");
            }
            while (peek() >= '0' && peek() <= '9')
            {
                ++pos_;
            }
        }
        std::string const token(text_.substr(start, pos_ - start));
        double const value = to_double(token);
        if (integral)
        {
            errno = 0;
            char* end = nullptr;
            long long const exact = std::strtoll(token.c_str(), &end, 10);
            if (errno == 0 && end == token.c_str() + token.size())
            {
                Value v = Value::integer(static_cast<std::int64_t>(exact));
                return v;
            }
        }
        return Value::number(value);
    }

    //! strtod in the "C" locale's format whatever the global locale: JSON uses '.'.
    static double to_double(std::string token)
    {
        char const point = *std::localeconv()->decimal_point;
        if (point != '.')
        {
            for (char& c : token)
            {
                if (c == '.')
                {
                    c = point;
                }
            }
        }
        return std::strtod(token.c_str(), nullptr);
    }

    std::string_view text_;
    std::string const& source_;
    std::size_t pos_ = 0;
};

[[noreturn]] void wrong_kind(char const* want, Value::Kind got)
{
    throw JsonError(std::string("expected a JSON ") + want + ", got " + kind_name(got));
}

void dump_string(std::string const& s, std::string& out)
{
    out += '"';
    for (char const c : s)
    {
        switch (c)
        {
        case '"':
            out += "\\\"";
            break;
        case '\\':
            out += "\\\\";
            break;
        case '\n':
            out += "\\n";
            break;
        case '\r':
            out += "\\r";
            break;
        case '\t':
            out += "\\t";
            break;
        default:
            if (static_cast<unsigned char>(c) < 0x20)
            {
                char buf[8];
                std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
                out += buf;
            }
            else
            {
                out += c;
            }
        }
    }
    out += '"';
}

void dump_value(Value const& v, std::string& out)
{
    switch (v.kind())
    {
    case Value::Kind::Null:
        out += "null";
        break;
    case Value::Kind::Bool:
        out += v.as_bool() ? "true" : "false";
        break;
    case Value::Kind::Number:
        if (v.is_integer())
        {
            out += std::to_string(v.as_int());
        }
        else if (!std::isfinite(v.as_double()))
        {
            out += "null"; // JSON has no NaN or infinity
        }
        else
        {
            std::ostringstream s;
            s.imbue(std::locale::classic());
            s.precision(17);
            s << v.as_double();
            out += s.str();
        }
        break;
    case Value::Kind::String:
        dump_string(v.as_string(), out);
        break;
    case Value::Kind::Array:
    {
        out += '[';
        bool first = true;
        for (Value const& item : v.as_array())
        {
            if (!first)
            {
                out += ',';
            }
            first = false;
            dump_value(item, out);
        }
        out += ']';
        break;
    }
    case Value::Kind::Object:
    {
        out += '{';
        bool first = true;
        for (auto const& member : v.as_object())
        {
            if (!first)
            {
                out += ',';
            }
            first = false;
            dump_string(member.first, out);
            out += ':';
            dump_value(member.second, out);
        }
        out += '}';
        break;
    }
    }
}

} // namespace

Value Value::boolean(bool value)
{
    Value v;
    v.kind_ = Kind::Bool;
    v.bool_ = value;
    return v;
}

Value Value::number(double value)
{
    Value v;
    v.kind_ = Kind::Number;
    v.number_ = value;
    return v;
}

Value Value::integer(std::int64_t value)
{
    Value v;
    v.kind_ = Kind::Number;
    v.integral_ = true;
    v.int_ = value;
    v.number_ = static_cast<double>(value);
    return v;
}

Value Value::string(std::string value)
{
    Value v;
    v.kind_ = Kind::String;
    v.string_ = std::move(value);
    return v;
}

Value Value::array(Array items)
{
    Value v;
    v.kind_ = Kind::Array;
    v.array_ = std::move(items);
    return v;
}

Value Value::object(Object members)
{
    Value v;
    v.kind_ = Kind::Object;
    v.object_ = std::move(members);
    return v;
}

bool Value::as_bool() const
{
    if (kind_ != Kind::Bool)
    {
        wrong_kind("boolean", kind_);
    }
    return bool_;
}

double Value::as_double() const
{
    if (kind_ != Kind::Number)
    {
        wrong_kind("number", kind_);
    }
    return number_;
}

std::int64_t Value::as_int() const
{
    if (kind_ != Kind::Number)
    {
        wrong_kind("integer", kind_);
    }
    if (!integral_)
    {
        std::ostringstream s;
        s << "expected a JSON integer, got the number " << number_;
        throw JsonError(s.str());
    }
    return int_;
}

std::string const& Value::as_string() const
{
    if (kind_ != Kind::String)
    {
        wrong_kind("string", kind_);
    }
    return string_;
}

Value::Array const& Value::as_array() const
{
    if (kind_ != Kind::Array)
    {
        wrong_kind("array", kind_);
    }
    return array_;
}

Value::Object const& Value::as_object() const
{
    if (kind_ != Kind::Object)
    {
        wrong_kind("object", kind_);
    }
    return object_;
}

Value const* Value::find(std::string_view key) const
{
    for (auto const& member : as_object())
    {
        if (member.first == key)
        {
            return &member.second;
        }
    }
    return nullptr;
}

Value const& Value::at(std::string_view key) const
{
    Value const* found = find(key);
    if (found == nullptr)
    {
        std::string keys;
        for (auto const& member : object_)
        {
            keys += (keys.empty() ? "" : ", ") + member.first;
        }
        throw JsonError("JSON object has no key \"" + std::string(key) +
                        "\" (keys: " + (keys.empty() ? "none" : keys) + ")");
    }
    return *found;
}

Value const& Value::at(std::size_t index) const
{
    Array const& items = as_array();
    if (index >= items.size())
    {
        throw JsonError("JSON array index " + std::to_string(index) + " is out of range (size " +
                        std::to_string(items.size()) + ")");
    }
    return items[index];
}

std::size_t Value::size() const
{
    if (kind_ == Kind::Array)
    {
        return array_.size();
    }
    if (kind_ == Kind::Object)
    {
        return object_.size();
    }
    wrong_kind("array or object", kind_);
}

char const* kind_name(Value::Kind kind)
{
    switch (kind)
    {
    case Value::Kind::Null:
        return "null";
    case Value::Kind::Bool:
        return "bool";
    case Value::Kind::Number:
        return "number";
    case Value::Kind::String:
        return "string";
    case Value::Kind::Array:
        return "array";
    case Value::Kind::Object:
        return "object";
    }
    return "unknown";
}

Value parse(std::string_view text, std::string const& source)
{
    return Parser(text, source).document();
}

Value parse_file(std::string const& path)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error("cannot open " + path + " for reading");
    }
    std::ostringstream content;
    content << file.rdbuf();
    if (file.bad())
    {
        throw std::runtime_error("error while reading " + path);
    }
    return parse(content.str(), path);
}

std::string dump(Value const& value)
{
    std::string out;
    dump_value(value, out);
    return out;
}

} // namespace json
} // namespace locore
