/*
 * Logging for the locore TensorRT plugin library: see pluginLogger.h.
 */
#include "pluginLogger.h"

#include <atomic>
#include <cstdio>

namespace locore
{
namespace plugin
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};
} // namespace

void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    nvinfer1::ILoggerFinder* expected{nullptr};
    gLoggerFinder.compare_exchange_strong(expected, finder);
}

void logPluginMessage(nvinfer1::ILogger::Severity severity, char const* message) noexcept
{
    if (message == nullptr)
    {
        return;
    }
    nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
    try
    {
        // findLogger() must run on the thread of the plugin call, so it is looked up per message.
        nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(severity, message);
        }
        else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
        {
            // No logger finder (the static-registration build, or a loader that never calls
            // setLoggerFinder): errors and warnings go to stderr instead of being dropped.
            char const* level = severity == nvinfer1::ILogger::Severity::kWARNING ? "WARNING" : "ERROR";
            std::fprintf(stderr, "[locore TensorRT plugin] %s: %s\n", level, message);
        }
    }
    catch (...)
    {
        // Logging must never throw across the TensorRT API boundary.
    }
}

} // namespace plugin
} // namespace locore
