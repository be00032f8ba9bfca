/*
 * Logging for the locore TensorRT plugin library: see pluginLogger.h.
 */
#include "pluginLogger.h"

#include <atomic>

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
    nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
    if (finder == nullptr || message == nullptr)
    {
        return;
    }
    try
    {
        // findLogger() must run on the thread of the plugin call, so it is looked up per message.
        nvinfer1::ILogger* logger = finder->findLogger();
        if (logger != nullptr)
        {
            logger->log(severity, message);
        }
    }
    catch (...)
    {
        // Logging must never throw across the TensorRT API boundary.
    }
}

} // namespace plugin
} // namespace locore
