/*
 * The JSON sidecar `locore build` writes beside a TensorRT engine (E.plan -> E.plan.json, see
 * locore::sidecar_path in model_info.hpp), and the checks that refuse a mismatching engine
 * (Python: locore.runtime.engines.read_sidecar, engine_mismatches, check_engine). The model's
 * config and graph I/O in the sidecar's metadata are read by read_engine_model_info.
 *
 * Standard library only, so the checks are compiled and tested on every machine; the TensorRT
 * scorer (trt_scorer.hpp) calls them before it deserializes an engine. The sidecar layout
 * (format 1) is engines.py's Sidecar.to_dict: format, locore_version, onnx, engine_sha256,
 * machine {tensorrt_version, gpu_name, compute_capability}, metadata {locore.* strings},
 * onnx_sha256, config, precision, flavor, profiles [{min, opt, max}], flags, plugin
 * (null or {sha256, versions, namespace}).
 */
#ifndef LOCORE_ENGINE_SIDECAR_HPP
#define LOCORE_ENGINE_SIDECAR_HPP

#include "locore/model_info.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace locore
{

//! An engine does not match its sidecar, the model, the plugin library or this machine
//! (Python: locore.runtime.engines.EngineMismatchError).
class EngineMismatchError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

//! The TensorRT and GPU an engine was built on / runs on (Python: MachineFacts).
struct MachineFacts
{
    std::string tensorrt_version;   //!< "10.3.0.26" (Python's trt.__version__) or "10.3.0"
    std::string gpu_name;           //!< cudaDeviceProp::name, e.g. "Orin"
    std::string compute_capability; //!< "8.7"
};

//! One optimization profile: min/opt/max shape of every input, by name, in the sidecar's order.
struct ShapeProfile
{
    using Shapes = std::vector<std::pair<std::string, std::vector<std::int64_t>>>;
    Shapes min;
    Shapes opt;
    Shapes max;
};

//! The plugin library an engine was built with (absent for the portable flavor).
struct SidecarPlugin
{
    std::string sha256;
    std::vector<std::string> versions;
    std::string namespace_;
};

struct EngineSidecar
{
    std::string path; //!< the sidecar file read
    std::int64_t format = kEngineFormat;
    std::string locore_version;
    std::string onnx;          //!< the ONNX file it was built from (as written at build time)
    std::string engine_sha256; //!< sha256 of the engine file's bytes
    std::string onnx_sha256;
    std::string precision; //!< "fp32", "fp16" or "int8"
    std::string flavor;    //!< "portable" or "plugin"
    MachineFacts machine;
    std::vector<ShapeProfile> profiles;
    bool has_plugin = false;
    SidecarPlugin plugin;
    //! The ONNX file's locore.* metadata strings (locore.config, locore.graph_io, ...).
    std::map<std::string, std::string> metadata;
};

//! The sidecar of `engine` (sidecar_path(engine)): std::runtime_error when it does not exist or
//! cannot be read, locore::ConfigError naming the file when it is not a sidecar of format
//! kEngineFormat.
EngineSidecar read_sidecar(std::string const& engine);

//! Parse sidecar JSON text (`source` names it in messages).
EngineSidecar parse_sidecar(std::string const& text, std::string const& source = "sidecar");

//! Lower-case hex sha256 of bytes / of a file's bytes (std::runtime_error if unreadable).
std::string sha256_hex(void const* data, std::size_t size);
std::string sha256_file(std::string const& path);

//! True when `running` names the same TensorRT release as `built`: equal in every dotted
//! component both give ("10.3.0" matches "10.3.0.26": the C++ API reports major.minor.patch
//! only, Python's trt.__version__ adds the build number).
bool tensorrt_versions_match(std::string const& built, std::string const& running);

//! What an engine must match. Empty strings (and has_machine = false) are not compared.
struct EngineExpectations
{
    std::string onnx_sha256;   //!< the ONNX file the application means to run
    std::string plugin_sha256; //!< the plugin library it loads (plugin flavor)
    bool has_machine = false;
    MachineFacts machine; //!< this machine (TensorRT version, GPU, compute capability)
};

//! One line per way the sidecar differs from `wanted` (Python: engine_mismatches); empty when
//! it matches. A plugin-flavor engine with no plugin_sha256 given is a mismatch too: it cannot
//! run without its plugin library.
std::vector<std::string> engine_mismatches(EngineSidecar const& sidecar,
                                           EngineExpectations const& wanted);

//! The sidecar of `engine` if the engine matches `wanted` (and, with verify_bytes, its bytes
//! hash to the sidecar's engine_sha256); else EngineMismatchError listing every difference and
//! saying what to do. `engine_bytes` (optional) are the engine's bytes when the caller has
//! already read them.
EngineSidecar check_engine(std::string const& engine, EngineExpectations const& wanted,
                           bool verify_bytes = true,
                           std::vector<char> const* engine_bytes = nullptr);

} // namespace locore

#endif // LOCORE_ENGINE_SIDECAR_HPP
