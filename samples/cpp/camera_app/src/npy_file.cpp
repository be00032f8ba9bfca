#include "npy_file.hpp"

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace camera_app
{
namespace
{

std::vector<unsigned char> read_bytes(const std::string& path, const std::string& what)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw std::runtime_error(what + " " + path + " cannot be opened (missing or unreadable)");
    return std::vector<unsigned char>((std::istreambuf_iterator<char>(in)),
                                      std::istreambuf_iterator<char>());
}

std::uint64_t le(const unsigned char* p, int n)
{
    std::uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i)
        v = (v << 8) | p[i];
    return v;
}

// The value of 'key' in numpy's header dict: {'descr': '<f4', 'fortran_order': False, ...}
std::string header_field(const std::string& header, const std::string& key,
                         const std::string& source)
{
    const auto at = header.find("'" + key + "'");
    if (at == std::string::npos)
        throw std::runtime_error(source + ": the .npy header has no '" + key + "': " + header);
    auto pos = header.find(':', at);
    if (pos == std::string::npos)
        throw std::runtime_error(source + ": malformed .npy header " + header);
    ++pos;
    while (pos < header.size() && header[pos] == ' ')
        ++pos;
    if (pos < header.size() && (header[pos] == '\'' || header[pos] == '"'))
    {
        const char quote = header[pos];
        const auto end = header.find(quote, pos + 1);
        return header.substr(pos + 1, end - pos - 1);
    }
    if (pos < header.size() && header[pos] == '(')
    {
        const auto end = header.find(')', pos);
        return header.substr(pos, end - pos + 1);
    }
    const auto end = header.find_first_of(",}", pos);
    return header.substr(pos, end - pos);
}

int item_size(const std::string& dtype)
{
    if (dtype.size() < 3)
        return 0;
    const int n = std::atoi(dtype.c_str() + 2);
    return dtype[1] == 'U' ? 4 * n : n;
}

void write_array(const std::string& path, const void* data, std::size_t bytes, const char* descr,
                 const std::vector<std::int64_t>& shape)
{
    std::ostringstream dims;
    dims << "(";
    for (std::size_t i = 0; i < shape.size(); ++i)
        dims << shape[i] << (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
    dims << ")";
    std::string header = std::string("{'descr': '") + descr +
                         "', 'fortran_order': False, 'shape': " + dims.str() + ", }";
    const std::size_t total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header.push_back('\n');
    std::ofstream out(path, std::ios::binary);
    if (!out)
        throw std::runtime_error("cannot write " + path);
    const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    out.write(reinterpret_cast<const char*>(magic), 8);
    const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                                  static_cast<unsigned char>(header.size() >> 8)};
    out.write(reinterpret_cast<const char*>(len), 2);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
    if (!out)
        throw std::runtime_error("cannot write " + path);
}

std::size_t count(const std::vector<std::int64_t>& shape)
{
    std::size_t n = 1;
    for (auto d : shape)
        n *= static_cast<std::size_t>(d);
    return n;
}

} // namespace

std::int64_t NpyArray::size() const
{
    std::int64_t n = 1;
    for (auto d : shape)
        n *= d;
    return n;
}

std::vector<float> NpyArray::to_float32(const std::string& what) const
{
    std::vector<float> out(static_cast<std::size_t>(size()));
    if (dtype == "<f4")
    {
        std::memcpy(out.data(), bytes.data(), out.size() * 4);
    }
    else if (dtype == "<f8")
    {
        for (std::size_t i = 0; i < out.size(); ++i)
        {
            double v;
            std::memcpy(&v, bytes.data() + 8 * i, 8);
            out[i] = static_cast<float>(v);
        }
    }
    else
    {
        throw std::runtime_error(what + " must be float32 (or float64), got numpy dtype " + dtype);
    }
    return out;
}

NpyArray parse_npy(const unsigned char* data, std::size_t size, const std::string& source)
{
    static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    if (size < 10 || std::memcmp(data, magic, 6) != 0)
        throw std::runtime_error(source + " is not a .npy array (no \\x93NUMPY magic)");
    const int major = data[6];
    std::size_t header_len, start;
    if (major == 1)
    {
        header_len = le(data + 8, 2);
        start = 10;
    }
    else if (major == 2 || major == 3)
    {
        if (size < 12)
            throw std::runtime_error(source + ": truncated .npy header");
        header_len = le(data + 8, 4);
        start = 12;
    }
    else
    {
        throw std::runtime_error(source + ": unknown .npy format version " + std::to_string(major));
    }
    if (start + header_len > size)
        throw std::runtime_error(source + ": truncated .npy header");
    const std::string header(reinterpret_cast<const char*>(data + start), header_len);
    NpyArray arr;
    arr.dtype = header_field(header, "descr", source);
    if (arr.dtype.size() >= 1 && arr.dtype[0] == '|')
        arr.dtype[0] = '<'; // byte-sized types
    if (header_field(header, "fortran_order", source).find("False") == std::string::npos)
        throw std::runtime_error(source +
                                 ": Fortran-ordered arrays are not supported (save in C order)");
    if (arr.dtype.empty() || arr.dtype[0] != '<')
        throw std::runtime_error(source + ": expected a little-endian array, got dtype " +
                                 arr.dtype);
    const std::string shape = header_field(header, "shape", source);
    for (std::size_t pos = 1; pos < shape.size();)
    {
        while (pos < shape.size() && (shape[pos] == ' ' || shape[pos] == ','))
            ++pos;
        if (pos >= shape.size() || shape[pos] == ')')
            break;
        std::size_t used = 0;
        arr.shape.push_back(std::stoll(shape.substr(pos), &used));
        pos += used;
    }
    const std::size_t bytes = count(arr.shape) * static_cast<std::size_t>(item_size(arr.dtype));
    const std::size_t offset = start + header_len;
    if (offset + bytes > size)
        throw std::runtime_error(source + ": truncated .npy data (" +
                                 std::to_string(size - offset) + " bytes, the header says " +
                                 std::to_string(bytes) + ")");
    arr.bytes.assign(data + offset, data + offset + bytes);
    return arr;
}

NpyArray read_npy(const std::string& path)
{
    const auto data = read_bytes(path, "array file");
    return parse_npy(data.data(), data.size(), path);
}

std::map<std::string, NpyArray> read_npz(const std::string& path)
{
    const auto data = read_bytes(path, "archive");
    const std::size_t n = data.size();
    // End of central directory record (the last one; a comment may follow it).
    std::size_t eocd = std::string::npos;
    for (std::size_t i = n >= 22 ? n - 22 : 0; n >= 22; --i)
    {
        if (le(&data[i], 4) == 0x06054b50)
        {
            eocd = i;
            break;
        }
        if (i == 0 || n - i > 65557)
            break;
    }
    if (eocd == std::string::npos)
        throw std::runtime_error(path +
                                 " is not an .npz (zip) archive: no end-of-directory record");
    std::uint64_t entries = le(&data[eocd + 10], 2);
    std::uint64_t cd_offset = le(&data[eocd + 16], 4);
    if ((entries == 0xffff || cd_offset == 0xffffffffu) && eocd >= 20 &&
        le(&data[eocd - 20], 4) == 0x07064b50)
    { // zip64
        const std::uint64_t rec = le(&data[eocd - 20 + 8], 8);
        if (rec + 56 > n || le(&data[rec], 4) != 0x06064b50)
            throw std::runtime_error(path + ": damaged zip64 directory");
        entries = le(&data[rec + 32], 8);
        cd_offset = le(&data[rec + 48], 8);
    }
    std::map<std::string, NpyArray> out;
    std::size_t pos = cd_offset;
    for (std::uint64_t e = 0; e < entries; ++e)
    {
        if (pos + 46 > n || le(&data[pos], 4) != 0x02014b50)
            throw std::runtime_error(path + ": damaged zip central directory");
        const auto method = le(&data[pos + 10], 2);
        std::uint64_t csize = le(&data[pos + 20], 4), usize = le(&data[pos + 24], 4);
        const auto name_len = le(&data[pos + 28], 2), extra_len = le(&data[pos + 30], 2),
                   comment_len = le(&data[pos + 32], 2);
        std::uint64_t local = le(&data[pos + 42], 4);
        std::string name(reinterpret_cast<const char*>(&data[pos + 46]), name_len);
        for (std::size_t x = pos + 46 + name_len; x + 4 <= pos + 46 + name_len + extra_len;)
        {
            const auto id = le(&data[x], 2), len = le(&data[x + 2], 2);
            if (id == 1)
            { // zip64 sizes and offset, only those whose 32-bit field is full
                std::size_t f = x + 4;
                if (usize == 0xffffffffu)
                    usize = le(&data[f], 8), f += 8;
                if (csize == 0xffffffffu)
                    csize = le(&data[f], 8), f += 8;
                if (local == 0xffffffffu)
                    local = le(&data[f], 8);
            }
            x += 4 + len;
        }
        pos += 46 + name_len + extra_len + comment_len;
        if (method != 0)
            throw std::runtime_error(path + ": member " + name +
                                     " is compressed (np.savez_compressed); save it with np.savez");
        if (local + 30 > n || le(&data[local], 4) != 0x04034b50)
            throw std::runtime_error(path + ": damaged zip member " + name);
        const std::uint64_t start =
            local + 30 + le(&data[local + 26], 2) + le(&data[local + 28], 2);
        if (start + csize > n)
            throw std::runtime_error(path + ": truncated zip member " + name);
        if (name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0)
            name.resize(name.size() - 4);
        out[name] = parse_npy(&data[start], static_cast<std::size_t>(csize), path + ":" + name);
        (void)usize;
    }
    return out;
}

void write_npy(const std::string& path, const float* data, const std::vector<std::int64_t>& shape)
{
    write_array(path, data, count(shape) * 4, "<f4", shape);
}

void write_npy(const std::string& path, const std::int64_t* data,
               const std::vector<std::int64_t>& shape)
{
    write_array(path, data, count(shape) * 8, "<i8", shape);
}

} // namespace camera_app
