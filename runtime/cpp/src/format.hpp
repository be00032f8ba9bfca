/*
 * Number formatting for error messages, as Python prints them (internal header).
 */
#ifndef LOCORE_SRC_FORMAT_HPP
#define LOCORE_SRC_FORMAT_HPP

#include <string>

namespace locore
{
namespace detail
{

//! Python's repr(float): the shortest text that round-trips ("0.1", "1e-05", "1.0", "nan").
std::string py_repr(double value);
//! Python's f"{value:g}" (C's %g: 6 significant digits).
std::string py_g(double value);

} // namespace detail
} // namespace locore

#endif // LOCORE_SRC_FORMAT_HPP
