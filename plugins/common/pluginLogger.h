/*
 * Logging for the locore TensorRT plugin library.
 *
 * TensorRT hands the library an ILoggerFinder through the exported `setLoggerFinder` entry point
 * (see pluginLibrary.cpp); messages go to the logger of the builder, runtime or execution context
 * that called the plugin. Before TensorRT has called `setLoggerFinder` (or when it never does, as
 * with static registration), messages are dropped: library code never prints.
 */
#ifndef LOCORE_PLUGIN_LOGGER_H
#define LOCORE_PLUGIN_LOGGER_H

#include "NvInferRuntime.h"

namespace locore
{
namespace plugin
{

//! Remember the logger finder passed by TensorRT. The first non-null finder wins.
void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Log `message` with the given severity to the calling TensorRT object's logger, if any.
void logPluginMessage(nvinfer1::ILogger::Severity severity, char const* message) noexcept;

} // namespace plugin
} // namespace locore

#endif // LOCORE_PLUGIN_LOGGER_H
