/*
 * DType names and sizes, binary16 conversion, Tensor helpers (see locore/tensor.hpp).
 */
#include "locore/tensor.hpp"
#include "locore/errors.hpp"

#include <cstring>
#include <sstream>
#include <stdexcept>

namespace locore
{

std::size_t dtype_size(DType dtype)
{
    switch (dtype)
    {
    case DType::Float32:
        return 4;
    case DType::Float16:
        return 2;
    case DType::Float64:
        return 8;
    case DType::Bool:
        return 1;
    case DType::Int64:
        return 8;
    case DType::Int32:
        return 4;
    case DType::Int8:
        return 1;
    case DType::UInt8:
        return 1;
    }
    throw std::logic_error("unknown locore::DType");
}

char const* dtype_name(DType dtype)
{
    switch (dtype)
    {
    case DType::Float32:
        return "float32";
    case DType::Float16:
        return "float16";
    case DType::Float64:
        return "float64";
    case DType::Bool:
        return "bool";
    case DType::Int64:
        return "int64";
    case DType::Int32:
        return "int32";
    case DType::Int8:
        return "int8";
    case DType::UInt8:
        return "uint8";
    }
    return "unknown";
}

DType parse_dtype(std::string const& name)
{
    for (DType const d : {DType::Float32, DType::Float16, DType::Float64, DType::Bool, DType::Int64,
                          DType::Int32, DType::Int8, DType::UInt8})
    {
        if (name == dtype_name(d))
        {
            return d;
        }
    }
    throw ConfigError("unknown dtype \"" + name +
                      "\"; expected one of float32, float16, float64, bool, int64, int32, int8, "
                      "uint8 (\"float\" is resolved by the Packer to the engine's float dtype)");
}

bool is_float(DType dtype)
{
    return dtype == DType::Float32 || dtype == DType::Float16 || dtype == DType::Float64;
}

std::uint16_t float_to_half(float value)
{
    std::uint32_t x = 0;
    std::memcpy(&x, &value, sizeof(x));
    auto const sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) // inf or NaN (NaN keeps a quiet, non-zero significand)
    {
        if (x == 0x7f800000u)
        {
            return static_cast<std::uint16_t>(sign | 0x7c00u);
        }
        return static_cast<std::uint16_t>(sign | 0x7e00u | ((x >> 13) & 0x3ffu));
    }
    if (x >= 0x47800000u) // >= 2^16: beyond the largest finite half after rounding
    {
        return static_cast<std::uint16_t>(sign | 0x7c00u);
    }
    std::uint32_t const e = x >> 23;
    if (e < 113) // below 2^-14: a subnormal half (or zero)
    {
        if (e == 0)
        {
            return sign; // float32 subnormals are far below half's smallest subnormal
        }
        std::uint32_t const m = (x & 0x7fffffu) | 0x800000u;
        std::uint32_t const shift = 126 - e; // m * 2^(e - 150) in units of 2^-24
        if (shift >= 25)
        {
            return sign; // below half of the smallest subnormal
        }
        std::uint32_t q = m >> shift;
        std::uint32_t const rest = m & ((1u << shift) - 1u);
        std::uint32_t const halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (q & 1u)))
        {
            ++q; // may carry into the smallest normal (0x0400): correct
        }
        return static_cast<std::uint16_t>(sign | q);
    }
    std::uint32_t q = ((e - 112) << 10) | ((x & 0x7fffffu) >> 13);
    std::uint32_t const rest = x & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (q & 1u)))
    {
        ++q; // a carry into the exponent is correct, up to 0x7c00 (inf)
    }
    return static_cast<std::uint16_t>(sign | q);
}

float half_to_float(std::uint16_t bits)
{
    std::uint32_t const sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
    std::uint32_t const e = (bits >> 10) & 0x1fu;
    std::uint32_t m = bits & 0x3ffu;
    std::uint32_t out = 0;
    if (e == 0x1f)
    {
        out = sign | 0x7f800000u | (m << 13);
    }
    else if (e != 0)
    {
        out = sign | ((e + 112) << 23) | (m << 13);
    }
    else if (m == 0)
    {
        out = sign;
    }
    else // subnormal: normalise
    {
        std::uint32_t exp = 113;
        while ((m & 0x400u) == 0)
        {
            m <<= 1;
            --exp;
        }
        out = sign | (exp << 23) | ((m & 0x3ffu) << 13);
    }
    float value = 0.0F;
    std::memcpy(&value, &out, sizeof(value));
    return value;
}

std::int64_t Tensor::numel() const
{
    std::int64_t n = 1;
    for (std::int64_t const d : shape)
    {
        n *= d;
    }
    return n;
}

double Tensor::value(std::size_t index) const
{
    std::size_t const size = dtype_size(dtype);
    if ((index + 1) * size > data.size())
    {
        throw std::out_of_range("element " + std::to_string(index) + " of " + describe() +
                                " is out of range");
    }
    unsigned char const* p = data.data() + index * size;
    switch (dtype)
    {
    case DType::Float32:
    {
        float v = 0.0F;
        std::memcpy(&v, p, sizeof(v));
        return v;
    }
    case DType::Float16:
    {
        std::uint16_t v = 0;
        std::memcpy(&v, p, sizeof(v));
        return half_to_float(v);
    }
    case DType::Float64:
    {
        double v = 0.0;
        std::memcpy(&v, p, sizeof(v));
        return v;
    }
    case DType::Bool:
    case DType::UInt8:
        return *p;
    case DType::Int8:
        return static_cast<std::int8_t>(*p);
    case DType::Int64:
    {
        std::int64_t v = 0;
        std::memcpy(&v, p, sizeof(v));
        return static_cast<double>(v);
    }
    case DType::Int32:
    {
        std::int32_t v = 0;
        std::memcpy(&v, p, sizeof(v));
        return v;
    }
    }
    return 0.0;
}

std::string Tensor::describe() const
{
    return name + " " + format_shape(shape) + " " + dtype_name(dtype);
}

void Tensor::check_element_size(std::size_t size) const
{
    if (size != dtype_size(dtype))
    {
        throw std::logic_error("Tensor::as<T>() with sizeof(T) = " + std::to_string(size) + " on " +
                               describe() + " (elements of " + std::to_string(dtype_size(dtype)) +
                               " bytes)");
    }
}

std::string format_shape(std::vector<std::int64_t> const& shape)
{
    std::ostringstream s;
    s << '[';
    for (std::size_t i = 0; i < shape.size(); ++i)
    {
        s << (i ? ", " : "") << shape[i];
    }
    s << ']';
    return s.str();
}

} // namespace locore
