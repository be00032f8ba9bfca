/*
 * A small JSON reader (RFC 8259) for the metadata the runtime reads: the ONNX metadata strings
 * `locore.config` and `locore.graph_io`, engine sidecars (E.plan.json) and test vectors.
 *
 * Standard library only. Numbers keep their exact integer value when the literal is an integer
 * that fits int64 (ids, shapes), and their double value always (parsed with strtod semantics
 * in the "C" locale, so a float32 written by Python's json round-trips exactly). Objects keep
 * the order of their keys; a repeated key is an error.
 */
#ifndef LOCORE_JSON_HPP
#define LOCORE_JSON_HPP

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace locore
{
namespace json
{

class Value
{
public:
    enum class Kind
    {
        Null,
        Bool,
        Number,
        String,
        Array,
        Object
    };
    using Array = std::vector<Value>;
    using Object = std::vector<std::pair<std::string, Value>>;

    Value() = default; //!< null
    static Value boolean(bool value);
    static Value number(double value);
    static Value integer(std::int64_t value);
    static Value string(std::string value);
    static Value array(Array items = {});
    static Value object(Object members = {});

    Kind kind() const { return kind_; }
    bool is_null() const { return kind_ == Kind::Null; }
    bool is_bool() const { return kind_ == Kind::Bool; }
    bool is_number() const { return kind_ == Kind::Number; }
    //! A number written as an integer literal (no fraction or exponent) that fits int64.
    bool is_integer() const { return kind_ == Kind::Number && integral_; }
    bool is_string() const { return kind_ == Kind::String; }
    bool is_array() const { return kind_ == Kind::Array; }
    bool is_object() const { return kind_ == Kind::Object; }

    // Typed access; each throws locore::JsonError naming the expected and the actual kind.
    bool as_bool() const;
    double as_double() const;
    std::int64_t as_int() const; //!< integer literals only (1.0 is refused)
    std::string const& as_string() const;
    Array const& as_array() const;
    Object const& as_object() const;

    //! Object member `key`, or nullptr when absent (JsonError when this is not an object).
    Value const* find(std::string_view key) const;
    //! Object member `key` (JsonError naming the key when absent).
    Value const& at(std::string_view key) const;
    //! Array element `index` (JsonError when out of range).
    Value const& at(std::size_t index) const;
    //! Elements of an array or members of an object.
    std::size_t size() const;

private:
    Kind kind_ = Kind::Null;
    bool bool_ = false;
    bool integral_ = false;
    double number_ = 0.0;
    std::int64_t int_ = 0;
    std::string string_;
    Array array_;
    Object object_;
};

//! "null", "bool", "number", "string", "array" or "object".
char const* kind_name(Value::Kind kind);

//! Parse one JSON document (surrounding whitespace allowed); locore::JsonError with the line and
//! column of the first problem. `source` names the text in messages (a file name, a key).
Value parse(std::string_view text, std::string const& source = "JSON text");

//! Read and parse a file (std::runtime_error when it cannot be read).
Value parse_file(std::string const& path);

//! Compact JSON text of `value` (doubles with 17 significant digits, so they round-trip).
std::string dump(Value const& value);

} // namespace json
} // namespace locore

#endif // LOCORE_JSON_HPP
