/*
 * Exceptions of the locore C++ runtime.
 *
 * Every message says what was expected, what was received and what to do, as the Python
 * runtime's do. The classes derive from the standard ones, so `catch (std::invalid_argument&)`
 * catches bad input of any kind and `catch (std::runtime_error&)` failures of files and scorers.
 */
#ifndef LOCORE_ERRORS_HPP
#define LOCORE_ERRORS_HPP

#include <stdexcept>
#include <string>

namespace locore
{

//! A configuration, a graph I/O record or an engine sidecar is not what the runtime expects
//! (Python: locore.config.ConfigError).
class ConfigError : public std::invalid_argument
{
public:
    using std::invalid_argument::invalid_argument;
};

//! Features do not fit the model: descriptor dimension, scale ids, global vectors, an empty query
//! (Python: locore.runtime.packing.PackingError).
class PackingError : public std::invalid_argument
{
public:
    using std::invalid_argument::invalid_argument;
};

//! A feature record itself is malformed: sizes, mask values, AMES rows
//! (Python: locore.runtime.local_features.FeatureError and locore.runtime.ames.FormatError).
class FeatureError : public std::invalid_argument
{
public:
    using std::invalid_argument::invalid_argument;
};

//! A caller passed bad parameters: window/stride/topk, order names, ids, similarities
//! (Python: locore.errors.UsageError).
class UsageError : public std::invalid_argument
{
public:
    using std::invalid_argument::invalid_argument;
};

//! Text that is not valid JSON (with line and column).
class JsonError : public std::invalid_argument
{
public:
    using std::invalid_argument::invalid_argument;
};

} // namespace locore

#endif // LOCORE_ERRORS_HPP
