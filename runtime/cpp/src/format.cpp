/*
 * Python-style number formatting for error messages (see format.hpp).
 */
#include "format.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace locore
{
namespace detail
{

std::string py_repr(double value)
{
    if (std::isnan(value))
    {
        return "nan";
    }
    if (std::isinf(value))
    {
        return value > 0 ? "inf" : "-inf";
    }
    if (value == 0.0)
    {
        return std::signbit(value) ? "-0.0" : "0.0";
    }
    // Shortest round-tripping mantissa in scientific form.
    char buf[40];
    int precision = 1;
    for (; precision <= 17; ++precision)
    {
        std::snprintf(buf, sizeof(buf), "%.*e", precision - 1, value);
        if (std::strtod(buf, nullptr) == value)
        {
            break;
        }
    }
    std::string const sci(buf);
    std::size_t const e_pos = sci.find('e');
    std::string mantissa = sci.substr(0, e_pos);
    int const exponent = std::atoi(sci.c_str() + e_pos + 1);
    bool const negative = mantissa[0] == '-';
    if (negative)
    {
        mantissa.erase(0, 1);
    }
    std::string digits;
    for (char const c : mantissa)
    {
        if (c != '.')
        {
            digits += c;
        }
    }
    std::string out;
    if (exponent >= -5 && exponent < 16) // Python: fixed notation for 1e-4 <= |x| < 1e16
    {
        if (exponent < -4)
        {
            out = ""; // falls through to scientific below
        }
        else if (exponent < 0)
        {
            out = "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
        }
        else
        {
            auto const int_len = static_cast<std::size_t>(exponent + 1);
            if (digits.size() <= int_len)
            {
                out = digits + std::string(int_len - digits.size(), '0') + ".0";
            }
            else
            {
                out = digits.substr(0, int_len) + "." + digits.substr(int_len);
            }
        }
    }
    if (out.empty())
    {
        out = digits.substr(0, 1);
        if (digits.size() > 1)
        {
            out += "." + digits.substr(1);
        }
        char exp_buf[16];
        std::snprintf(exp_buf, sizeof(exp_buf), "e%c%02d", exponent < 0 ? '-' : '+',
                      std::abs(exponent));
        out += exp_buf;
    }
    return negative ? "-" + out : out;
}

std::string py_g(double value)
{
    if (std::isnan(value))
    {
        return "nan";
    }
    if (std::isinf(value))
    {
        return value > 0 ? "inf" : "-inf";
    }
    char buf[40];
    std::snprintf(buf, sizeof(buf), "%g", value);
    return buf;
}

} // namespace detail
} // namespace locore
