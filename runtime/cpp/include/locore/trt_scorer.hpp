/*
 * locore::TrtScorer: a Scorer that runs a TensorRT engine built by `locore build`
 * (Python twin: locore.runtime.backends.tensorrt.TrtRunner).
 *
 * Compiled when the runtime is built with TensorRT and CUDA (LOCORE_RUNTIME_HAS_TENSORRT in
 * locore/version.hpp). This header needs neither: TensorRT and CUDA stay private to the
 * library.
 *
 * What the constructor does, in order:
 *  1. reads the engine's JSON sidecar (E.plan.json) and refuses the engine (EngineMismatchError,
 *     one clause per difference) when its bytes, the ONNX file, the plugin library or this
 *     machine (TensorRT version, GPU name, compute capability) differ from what it was built
 *     from, as locore.runtime.engines.check_engine does;
 *  2. registers the plugin library (liblocore_trt_plugins.so; plugin-flavor engines) in
 *     TensorRT's plugin registry (IPluginRegistry::loadLibrary), once per process;
 *  3. deserializes the engine (IRuntime::deserializeCudaEngine), creates one execution context
 *     on optimization profile `options.profile`, a CUDA stream, and for every I/O tensor a
 *     device buffer and a pinned host buffer sized for the profile's max shapes, so addresses
 *     never change.
 *
 * score(window) then copies each input into its pinned buffer (converting to the engine's
 * dtype: float32 <-> float16, int64 -> int32, bool/uint8 -> integer types), sets its shape
 * (IExecutionContext::setInputShape), uploads it, runs IExecutionContext::enqueueV3 on the
 * stream, downloads the outputs, synchronizes, and returns the `scores` output as float32.
 * A window whose shape lies outside the engine's profile is refused before anything runs,
 * naming the dim and the allowed range.
 *
 * Not thread-safe: use one TrtScorer per thread (each has its own context and stream).
 */
#ifndef LOCORE_TRT_SCORER_HPP
#define LOCORE_TRT_SCORER_HPP

#include "locore/engine_sidecar.hpp"
#include "locore/model_info.hpp"
#include "locore/scorer.hpp"
#include "locore/tensor.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace locore
{

//! Environment variable naming the plugin library (runtime/engines.py PLUGIN_ENV).
inline constexpr char const* kPluginLibraryEnv = "LOCORE_TRT_PLUGIN";
//! The SelectiveScan plugin's registered name, versions and namespace (locore/scan_spec.py
//! PLUGIN_NAME, PLUGIN_VERSIONS, PLUGIN_NAMESPACE; tests/test_cpp_engine_sidecar.py checks them),
//! used when an engine without a sidecar finds its creators registered already.
inline constexpr char const* kScanPluginName = "SelectiveScan";
inline constexpr char const* kScanPluginVersions[] = {"2", "1"};
inline constexpr char const* kScanPluginNamespace = "locore";

//! TensorRT's message severities (nvinfer1::ILogger::Severity, same order).
enum class TrtLogSeverity
{
    InternalError = 0,
    Error = 1,
    Warning = 2,
    Info = 3,
    Verbose = 4
};

struct TrtScorerOptions
{
    //! The plugin library. Empty: $LOCORE_TRT_PLUGIN. Needed by plugin-flavor engines (whose
    //! sidecar records the library's sha256, compared with this file's); ignored by the
    //! portable flavor.
    std::string plugin_library;
    //! The ONNX model the application means to run: its sha256 must equal the sidecar's
    //! onnx_sha256. Empty: not compared. (Or give the digest itself in onnx_sha256.)
    std::string onnx_path;
    std::string onnx_sha256;
    //! Refuse an engine without a sidecar (true), or run it with nothing checked (false; a
    //! warning goes to the log, and graph I/O dim names come from the engine alone).
    bool require_sidecar = true;
    //! Hash the engine's bytes and compare them with the sidecar's engine_sha256.
    bool verify_engine_bytes = true;
    //! Compare TensorRT version, GPU name and compute capability with the sidecar's.
    bool check_machine = true;
    //! CUDA device (cudaSetDevice) and optimization profile index of the execution context.
    int device = 0;
    int profile = 0;
    //! Messages of TensorRT and of the scorer at or above `log_level`; default: to stderr.
    TrtLogSeverity log_level = TrtLogSeverity::Warning;
    std::function<void(TrtLogSeverity, std::string const&)> log;
};

//! One engine I/O tensor as the engine declares it.
struct TrtTensorInfo
{
    std::string name;
    bool is_input = false;
    DType dtype = DType::Float32;
    //! The engine's dims (-1 = dynamic); for inputs also the profile's min/opt/max.
    std::vector<std::int64_t> shape;
    std::vector<std::int64_t> min_shape;
    std::vector<std::int64_t> opt_shape;
    std::vector<std::int64_t> max_shape;
};

//! GPU time of the last score() call, measured with CUDA events (milliseconds).
struct TrtTimings
{
    float h2d_ms = 0.0F;
    float compute_ms = 0.0F;
    float d2h_ms = 0.0F;
};

class TrtScorer : public Scorer
{
public:
    //! Load `engine_path` (E.plan with E.plan.json). Throws EngineMismatchError (engine refused),
    //! ConfigError (bad sidecar or metadata), std::runtime_error (missing files, plugin library
    //! not loadable, TensorRT or CUDA failures; the message names the call).
    explicit TrtScorer(std::string const& engine_path, TrtScorerOptions options = {});
    //! The same with default options but the plugin library ("" = $LOCORE_TRT_PLUGIN) and the
    //! CUDA device.
    TrtScorer(std::string const& engine_path, std::string const& plugin_library, int device = 0);
    ~TrtScorer() override;
    TrtScorer(TrtScorer const&) = delete;
    TrtScorer& operator=(TrtScorer const&) = delete;

    //! Logits [B * G] (the `scores` output, row-major [B, G]) of the packed window. Every engine
    //! input must be in the window (by name); dtypes are converted to the engine's. PackingError
    //! for a missing input or a shape outside the profile; std::runtime_error when TensorRT or
    //! CUDA fail.
    std::vector<float> score(PackedWindow const& window) override;

    //! The engine's inputs with the recorded dim names and the engine's dtypes ("float16" for an
    //! FP16-I/O engine): give them to the Packer so it packs exactly what the engine takes.
    std::vector<TensorSpec> input_specs() const override;
    //! The profile's max gallery size (num_gallery of gallery_desc's max shape).
    std::int64_t max_gallery() const override;

    //! The float dtype of query_desc (Float32 or Float16): the Packer's float_dtype.
    DType float_dtype() const;
    //! Config and graph I/O from the sidecar (without one: LocoreConfig's defaults and
    //! has_recorded_graph_io false; the engine's own I/O is in tensors()).
    ModelInfo const& model() const;
    //! The sidecar read (has_sidecar() false when require_sidecar was off and there was none).
    bool has_sidecar() const;
    EngineSidecar const& sidecar() const;
    std::vector<TrtTensorInfo> const& tensors() const;
    //! This machine as TensorRT and CUDA report it (TensorRT version "major.minor.patch").
    MachineFacts const& machine() const;
    TrtTimings last_timings() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace locore

#endif // LOCORE_TRT_SCORER_HPP
