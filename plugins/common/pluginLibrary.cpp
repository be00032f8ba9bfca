/*
 * Entry points of liblocore_trt_plugins.so.
 *
 * IPluginRegistry::loadLibrary() (C++), trt.get_plugin_registry().load_library() (Python) and
 * `trtexec --dynamicPlugins=...` open the library, call `setLoggerFinder` when it is exported, and
 * register every creator returned by `getCreators`. These are the only symbols the library has to
 * export; their signatures are the ones TensorRT looks up (plugin/vc in the TensorRT OSS tree).
 *
 * With the CMake option LOCORE_STATIC_PLUGIN_REGISTRATION=ON the creator also registers itself in
 * the global registry when the library is loaded (REGISTER_TENSORRT_PLUGIN). Use that build only by
 * linking or dlopen()-ing the library; loading the same build again through loadLibrary() fails,
 * because TensorRT refuses to register a creator twice.
 */
#include "pluginLogger.h"
#include "selectiveScanPlugin.h"

#include "NvInferRuntime.h"

#include <cstdint>

// TENSORRTAPI expands to nothing outside TensorRT's own build (TENSORRT_BUILD_LIB), and the library
// is compiled with hidden visibility: mark the entry points explicitly.
#if defined(_WIN32)
#define LOCORE_PLUGIN_API __declspec(dllexport)
#else
#define LOCORE_PLUGIN_API __attribute__((visibility("default")))
#endif

namespace
{

nvinfer1::IPluginCreatorInterface* const* pluginCreators(int32_t& nbCreators) noexcept
{
    // Version 2 (A, D, dt_bias FP32) first; version 1 stays registered for engines built with it.
    static locore::plugin::SelectiveScanPluginCreator sSelectiveScanCreator{};
    static locore::plugin::SelectiveScanPluginCreatorV1 sSelectiveScanCreatorV1{};
    static nvinfer1::IPluginCreatorInterface* const kCREATORS[]{&sSelectiveScanCreator, &sSelectiveScanCreatorV1};
    nbCreators = static_cast<int32_t>(sizeof(kCREATORS) / sizeof(kCREATORS[0]));
    return kCREATORS;
}

} // namespace

extern "C" LOCORE_PLUGIN_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    return pluginCreators(nbCreators);
}

extern "C" LOCORE_PLUGIN_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    locore::plugin::setPluginLoggerFinder(finder);
}

#if defined(LOCORE_STATIC_PLUGIN_REGISTRATION) && LOCORE_STATIC_PLUGIN_REGISTRATION
// PluginRegistrar<T> calls getPluginRegistry()->registerCreator(IPluginCreatorInterface&, "") in
// TensorRT 10.x and 11.x, which accepts IPluginCreatorV3One creators. The macro pastes its argument
// into a variable name, so it takes an unqualified class name.
using locore::plugin::SelectiveScanPluginCreator;
using locore::plugin::SelectiveScanPluginCreatorV1;
REGISTER_TENSORRT_PLUGIN(SelectiveScanPluginCreator);
REGISTER_TENSORRT_PLUGIN(SelectiveScanPluginCreatorV1);
#endif
