// locore::TrtScorer: a TensorRT engine behind the Scorer interface (see trt_scorer.hpp).
//
// Only the TensorRT API present in both 10.x (JetPack 6.1+ ships 10.3) and 11.x is used: I/O
// tensors by name (getNbIOTensors, getIOTensorName, getTensorIOMode, getTensorDataType,
// getTensorShape, getTensorFormat, getProfileShape), IExecutionContext::setInputShape,
// setTensorAddress and enqueueV3, IPluginRegistry::loadLibrary / getCreator, objects released
// with delete (destroy() is gone since 10.0). Nothing deprecated in either version: this file is
// compiled with -Werror against both header sets (runtime/cpp/tests/trt_compile_check.sh).
#include "locore/trt_scorer.hpp"

#include "locore/errors.hpp"

#include <NvInfer.h>
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <sstream>
#include <utility>

namespace locore
{

namespace
{

// ---- CUDA -----------------------------------------------------------------------------------
void cuda_check(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
    {
        throw std::runtime_error(std::string("CUDA ") + what +
                                 " failed: " + cudaGetErrorName(status) + " (" +
                                 cudaGetErrorString(status) + ")");
    }
}

//! Device memory (cudaMalloc) or pinned host memory (cudaMallocHost), freed on destruction.
class CudaBuffer
{
public:
    CudaBuffer() = default;
    CudaBuffer(std::size_t nbytes, bool pinned_host) : pinned_host_(pinned_host), nbytes_(nbytes)
    {
        std::size_t size = std::max<std::size_t>(nbytes, 1);
        if (pinned_host)
        {
            cuda_check(cudaMallocHost(&data_, size), "cudaMallocHost (pinned host buffer)");
        }
        else
        {
            cuda_check(cudaMalloc(&data_, size), "cudaMalloc (device buffer)");
        }
    }
    ~CudaBuffer() { release(); }
    CudaBuffer(CudaBuffer const&) = delete;
    CudaBuffer& operator=(CudaBuffer const&) = delete;
    CudaBuffer(CudaBuffer&& other) noexcept { *this = std::move(other); }
    CudaBuffer& operator=(CudaBuffer&& other) noexcept
    {
        if (this != &other)
        {
            release();
            data_ = std::exchange(other.data_, nullptr);
            nbytes_ = std::exchange(other.nbytes_, 0);
            pinned_host_ = other.pinned_host_;
        }
        return *this;
    }

    void* data() const { return data_; }
    std::size_t nbytes() const { return nbytes_; }

private:
    void release() noexcept
    {
        if (data_ != nullptr)
        {
            // Errors while freeing cannot be reported from a destructor; the memory is gone
            // with the CUDA context anyway.
            static_cast<void>(pinned_host_ ? cudaFreeHost(data_) : cudaFree(data_));
            data_ = nullptr;
        }
    }

    void* data_ = nullptr;
    bool pinned_host_ = false;
    std::size_t nbytes_ = 0;
};

// ---- TensorRT logger ------------------------------------------------------------------------
class Logger : public nvinfer1::ILogger
{
public:
    Logger(TrtLogSeverity level, std::function<void(TrtLogSeverity, std::string const&)> sink)
        : level_(level), sink_(std::move(sink))
    {
    }

    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override
    {
        emit(static_cast<TrtLogSeverity>(static_cast<int>(severity)), msg == nullptr ? "" : msg);
    }

    void emit(TrtLogSeverity severity, std::string const& message) noexcept
    {
        if (static_cast<int>(severity) > static_cast<int>(level_))
        {
            return;
        }
        try
        {
            if (severity == TrtLogSeverity::Error || severity == TrtLogSeverity::InternalError)
            {
                last_error_ = message;
            }
            if (sink_)
            {
                sink_(severity, message);
            }
            else
            {
                static char const* const names[] = {"internal error", "error", "warning", "info",
                                                    "verbose"};
                std::cerr << "[locore TensorRT " << names[static_cast<int>(severity)] << "] "
                          << message << '\n';
            }
        }
        catch (...)
        {
            // A logger must not throw into TensorRT.
        }
    }

    //! The last error TensorRT reported, for exception messages ("" when none).
    std::string const& last_error() const { return last_error_; }

private:
    TrtLogSeverity level_;
    std::function<void(TrtLogSeverity, std::string const&)> sink_;
    std::string last_error_;
};

std::string with_trt_error(std::string message, Logger const& logger)
{
    if (!logger.last_error().empty())
    {
        message += " (TensorRT: " + logger.last_error() + ")";
    }
    return message;
}

// ---- the plugin library, registered once per process ------------------------------------------
struct LoadedLibrary
{
    nvinfer1::IPluginRegistry::PluginLibraryHandle handle = nullptr;
    int users = 0;
};

std::mutex& library_mutex()
{
    static std::mutex mutex;
    return mutex;
}

std::map<std::string, LoadedLibrary>& loaded_libraries()
{
    static std::map<std::string, LoadedLibrary> libraries;
    return libraries;
}

//! True when TensorRT's registry already has a creator of `name` in `ns` for every version.
bool creators_registered(std::vector<std::string> const& versions, std::string const& ns)
{
    nvinfer1::IPluginRegistry* registry = getPluginRegistry();
    if (registry == nullptr || versions.empty())
    {
        return false;
    }
    for (std::string const& version : versions)
    {
        if (registry->getCreator(kScanPluginName, version.c_str(), ns.c_str()) == nullptr)
        {
            return false;
        }
    }
    return true;
}

//! Registers `path` with TensorRT's (process-wide) plugin registry, as trtexec --dynamicPlugins
//! and Python's trt.get_plugin_registry().load_library do; the last user deregisters it.
class PluginLibraryUse
{
public:
    PluginLibraryUse() = default;
    PluginLibraryUse(std::string const& path, std::vector<std::string> const& versions,
                     std::string const& ns, Logger& logger)
    {
        std::lock_guard<std::mutex> lock(library_mutex());
        LoadedLibrary& entry = loaded_libraries()[path];
        if (entry.users == 0)
        {
            nvinfer1::IPluginRegistry* registry = getPluginRegistry();
            if (registry == nullptr)
            {
                loaded_libraries().erase(path);
                throw std::runtime_error("TensorRT returned no plugin registry; cannot load " +
                                         path);
            }
            entry.handle = registry->loadLibrary(path.c_str());
            if (entry.handle == nullptr)
            {
                // loadLibrary also fails when the creators are registered already (the
                // application loaded the library itself, or a static-registration build).
                if (!creators_registered(versions, ns))
                {
                    loaded_libraries().erase(path);
                    throw std::runtime_error(with_trt_error(
                        "TensorRT could not load the plugin library " + path +
                            " (IPluginRegistry::loadLibrary failed): is it a "
                            "liblocore_trt_plugins built for this TensorRT version? Rebuild it "
                            "with `locore build-plugins --tensorrt-root <TensorRT folder>`",
                        logger));
                }
                logger.emit(TrtLogSeverity::Info,
                            "plugin creators " + std::string(kScanPluginName) + " (namespace " +
                                ns + ") were already registered; using them");
            }
        }
        ++entry.users;
        path_ = path;
    }
    ~PluginLibraryUse()
    {
        if (path_.empty())
        {
            return;
        }
        std::lock_guard<std::mutex> lock(library_mutex());
        auto found = loaded_libraries().find(path_);
        if (found != loaded_libraries().end() && --found->second.users == 0)
        {
            if (found->second.handle != nullptr && getPluginRegistry() != nullptr)
            {
                getPluginRegistry()->deregisterLibrary(found->second.handle);
            }
            loaded_libraries().erase(found);
        }
    }
    PluginLibraryUse(PluginLibraryUse const&) = delete;
    PluginLibraryUse& operator=(PluginLibraryUse const&) = delete;

private:
    std::string path_;
};

// ---- dtypes and shapes ----------------------------------------------------------------------
char const* trt_type_name(nvinfer1::DataType type)
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT:
        return "FLOAT";
    case nvinfer1::DataType::kHALF:
        return "HALF";
    case nvinfer1::DataType::kINT8:
        return "INT8";
    case nvinfer1::DataType::kINT32:
        return "INT32";
    case nvinfer1::DataType::kBOOL:
        return "BOOL";
    case nvinfer1::DataType::kUINT8:
        return "UINT8";
    case nvinfer1::DataType::kFP8:
        return "FP8";
    case nvinfer1::DataType::kBF16:
        return "BF16";
    case nvinfer1::DataType::kINT64:
        return "INT64";
    case nvinfer1::DataType::kINT4:
        return "INT4";
    default:
        return "an unknown type";
    }
}

//! The runtime's DType of a TensorRT I/O dtype; ConfigError for those an exported re-ranker
//! never has at its boundary (FP8, BF16, INT4, ...).
DType to_dtype(nvinfer1::DataType type, std::string const& tensor)
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT:
        return DType::Float32;
    case nvinfer1::DataType::kHALF:
        return DType::Float16;
    case nvinfer1::DataType::kINT8:
        return DType::Int8;
    case nvinfer1::DataType::kINT32:
        return DType::Int32;
    case nvinfer1::DataType::kBOOL:
        return DType::Bool;
    case nvinfer1::DataType::kUINT8:
        return DType::UInt8;
    case nvinfer1::DataType::kINT64:
        return DType::Int64;
    default:
        break;
    }
    throw ConfigError("engine I/O tensor '" + tensor + "' has TensorRT type " +
                      trt_type_name(type) +
                      ", which the locore runtime does not exchange; export the model with "
                      "float32/float16 descriptors, bool masks and int64 scale ids");
}

std::vector<std::int64_t> to_vector(nvinfer1::Dims const& dims)
{
    std::vector<std::int64_t> out;
    for (std::int32_t i = 0; i < dims.nbDims; ++i)
    {
        out.push_back(static_cast<std::int64_t>(dims.d[i]));
    }
    return out;
}

nvinfer1::Dims to_dims(std::vector<std::int64_t> const& shape, std::string const& tensor)
{
    nvinfer1::Dims dims{};
    if (shape.size() > static_cast<std::size_t>(nvinfer1::Dims::MAX_DIMS))
    {
        throw PackingError("input '" + tensor + "' has " + std::to_string(shape.size()) +
                           " dims; TensorRT takes at most " +
                           std::to_string(nvinfer1::Dims::MAX_DIMS));
    }
    dims.nbDims = static_cast<std::int32_t>(shape.size());
    for (std::size_t i = 0; i < shape.size(); ++i)
    {
        dims.d[i] = shape[i];
    }
    return dims;
}

std::int64_t numel(std::vector<std::int64_t> const& shape)
{
    std::int64_t n = 1;
    for (std::int64_t d : shape)
    {
        n *= d;
    }
    return n;
}

//! Copies `src` into `out` as `dst` elements: the same dtype byte for byte; float <-> float
//! (float16 rounded to nearest even); integer/bool <-> integer/bool with a range check. A float
//! to integer conversion (or back) is a contract mismatch and refused.
void convert_into(Tensor const& src, DType dst, std::uint8_t* out)
{
    std::size_t n = static_cast<std::size_t>(src.numel());
    if (src.nbytes() != n * dtype_size(src.dtype))
    {
        throw PackingError("input " + src.describe() + " holds " + std::to_string(src.nbytes()) +
                           " bytes, expected " + std::to_string(n * dtype_size(src.dtype)));
    }
    if (src.dtype == dst)
    {
        std::memcpy(out, src.data.data(), src.nbytes());
        return;
    }
    if (is_float(src.dtype) != is_float(dst))
    {
        throw PackingError("input " + src.describe() + ": the engine takes " + dtype_name(dst) +
                           "; give the Packer the scorer's input_specs() so it packs the "
                           "engine's dtypes");
    }
    for (std::size_t i = 0; i < n; ++i)
    {
        double v = src.value(i);
        switch (dst)
        {
        case DType::Float32:
        {
            float f = static_cast<float>(v);
            std::memcpy(out + 4 * i, &f, 4);
            break;
        }
        case DType::Float16:
        {
            std::uint16_t h = float_to_half(static_cast<float>(v));
            std::memcpy(out + 2 * i, &h, 2);
            break;
        }
        case DType::Float64:
            std::memcpy(out + 8 * i, &v, 8);
            break;
        case DType::Bool:
            out[i] = v != 0.0 ? 1 : 0;
            break;
        default:
        {
            double lo = -9.2e18;
            double hi = 9.2e18;
            if (dst == DType::Int8)
            {
                lo = -128.0;
                hi = 127.0;
            }
            else if (dst == DType::UInt8)
            {
                lo = 0.0;
                hi = 255.0;
            }
            else if (dst == DType::Int32)
            {
                lo = static_cast<double>(std::numeric_limits<std::int32_t>::min());
                hi = static_cast<double>(std::numeric_limits<std::int32_t>::max());
            }
            if (v < lo || v > hi)
            {
                throw PackingError("input " + src.describe() + ": value " +
                                   std::to_string(static_cast<long long>(v)) + " at element " +
                                   std::to_string(i) + " does not fit the engine's " +
                                   dtype_name(dst));
            }
            if (dst == DType::Int8)
            {
                auto x = static_cast<std::int8_t>(v);
                std::memcpy(out + i, &x, 1);
            }
            else if (dst == DType::UInt8)
            {
                out[i] = static_cast<std::uint8_t>(v);
            }
            else if (dst == DType::Int32)
            {
                auto x = static_cast<std::int32_t>(v);
                std::memcpy(out + 4 * i, &x, 4);
            }
            else
            {
                auto x = static_cast<std::int64_t>(v);
                std::memcpy(out + 8 * i, &x, 8);
            }
            break;
        }
        }
    }
}

std::string join_names(std::vector<std::string> const& names)
{
    std::string out = "[";
    for (std::size_t i = 0; i < names.size(); ++i)
    {
        out += (i ? ", " : "") + names[i];
    }
    return out + "]";
}

std::string version_text(std::int32_t version)
{
    // getInferLibVersion(): (MAJOR * 100 + MINOR) * 100 + PATCH
    return std::to_string(version / 10000) + "." + std::to_string((version / 100) % 100) + "." +
           std::to_string(version % 100);
}

bool file_exists(std::string const& path)
{
    return static_cast<bool>(std::ifstream(path));
}

template <typename T> struct TrtDelete
{
    void operator()(T* object) const { delete object; }
};
template <typename T> using TrtPtr = std::unique_ptr<T, TrtDelete<T>>;

} // namespace

// ---- the scorer -------------------------------------------------------------------------------
struct TrtScorer::Impl
{
    std::string engine_path;
    TrtScorerOptions options;
    Logger logger;
    MachineFacts machine;
    bool has_sidecar = false;
    EngineSidecar sidecar;
    ModelInfo model;
    std::unique_ptr<PluginLibraryUse> plugin;
    TrtPtr<nvinfer1::IRuntime> runtime;
    TrtPtr<nvinfer1::ICudaEngine> engine;
    TrtPtr<nvinfer1::IExecutionContext> context;
    cudaStream_t stream = nullptr;
    cudaEvent_t events[4] = {nullptr, nullptr, nullptr, nullptr};
    std::vector<TrtTensorInfo> tensors;
    std::vector<CudaBuffer> device;
    std::vector<CudaBuffer> host;
    std::size_t scores_index = 0;
    TrtTimings timings;

    Impl(std::string path, TrtScorerOptions opts)
        : engine_path(std::move(path)), options(std::move(opts)),
          logger(options.log_level, options.log)
    {
    }

    ~Impl()
    {
        if (stream != nullptr)
        {
            static_cast<void>(cudaStreamSynchronize(stream));
        }
        device.clear();
        host.clear();
        for (cudaEvent_t& event : events)
        {
            if (event != nullptr)
            {
                static_cast<void>(cudaEventDestroy(event));
            }
        }
        if (stream != nullptr)
        {
            static_cast<void>(cudaStreamDestroy(stream));
        }
        context.reset(); // before the engine, the engine before the runtime
        engine.reset();
        runtime.reset();
        plugin.reset(); // deregistered once nothing deserialized with it is left
    }

    std::string recorded_dim_name(std::string const& tensor, std::size_t axis) const
    {
        if (model.has_recorded_graph_io)
        {
            TensorSpec const* spec = model.graph_io.find_input(tensor);
            if (spec == nullptr)
            {
                spec = model.graph_io.find_output(tensor);
            }
            if (spec != nullptr && axis < spec->shape.size() && spec->shape[axis].is_dynamic())
            {
                return spec->shape[axis].name;
            }
        }
        return tensor + "_dim" + std::to_string(axis);
    }

    void probe_machine()
    {
        cuda_check(cudaSetDevice(options.device), "cudaSetDevice");
        cudaDeviceProp props{};
        cuda_check(cudaGetDeviceProperties(&props, options.device), "cudaGetDeviceProperties");
        machine.tensorrt_version = version_text(getInferLibVersion());
        machine.gpu_name = props.name;
        machine.compute_capability =
            std::to_string(props.major) + "." + std::to_string(props.minor);
    }

    std::string plugin_path() const
    {
        if (!options.plugin_library.empty())
        {
            return options.plugin_library;
        }
        char const* env = std::getenv(kPluginLibraryEnv);
        return env != nullptr ? std::string(env) : std::string();
    }

    std::vector<char> read_engine() const
    {
        std::ifstream in(engine_path, std::ios::binary);
        if (!in)
        {
            throw std::runtime_error("TensorRT engine " + engine_path + " cannot be opened (" +
                                     std::strerror(errno) + ")");
        }
        return std::vector<char>(std::istreambuf_iterator<char>(in),
                                 std::istreambuf_iterator<char>());
    }

    void load()
    {
        if (options.profile < 0)
        {
            throw UsageError("TrtScorerOptions::profile must be >= 0, got " +
                             std::to_string(options.profile));
        }
        std::vector<char> bytes = read_engine();
        std::string library = plugin_path();
        if (!library.empty() && !file_exists(library))
        {
            throw std::runtime_error(
                "plugin library " + library + " (from " +
                (options.plugin_library.empty() ? std::string("$") + kPluginLibraryEnv
                                                : std::string("TrtScorerOptions::plugin_library")) +
                ") does not exist; build it with `locore build-plugins --tensorrt-root <TensorRT "
                "folder>`");
        }

        probe_machine(); // after the file checks: a missing file is reported as such anywhere

        // 1. the sidecar and what it must match
        has_sidecar = file_exists(sidecar_path(engine_path));
        if (has_sidecar || options.require_sidecar)
        {
            EngineExpectations wanted;
            wanted.onnx_sha256 =
                options.onnx_path.empty() ? options.onnx_sha256 : sha256_file(options.onnx_path);
            wanted.plugin_sha256 = library.empty() ? std::string() : sha256_file(library);
            wanted.has_machine = options.check_machine;
            wanted.machine = machine;
            sidecar = check_engine(engine_path, wanted, options.verify_engine_bytes, &bytes);
            has_sidecar = true;
            model = parse_model_metadata(sidecar.metadata, sidecar_path(engine_path));
        }
        else
        {
            logger.emit(TrtLogSeverity::Warning,
                        engine_path + " has no sidecar: its build settings cannot be checked");
        }

        // 2. the plugin library (plugin flavor; or any library given without a sidecar)
        bool needs_plugin = has_sidecar ? sidecar.flavor == "plugin" : !library.empty();
        if (needs_plugin && !library.empty())
        {
            // Without a sidecar: the versions and namespace locore/scan_spec.py registers.
            std::vector<std::string> versions(std::begin(kScanPluginVersions),
                                              std::end(kScanPluginVersions));
            std::string ns = kScanPluginNamespace;
            if (has_sidecar)
            {
                versions = sidecar.plugin.versions;
                ns = sidecar.plugin.namespace_;
            }
            plugin = std::make_unique<PluginLibraryUse>(library, versions, ns, logger);
        }

        // 3. engine, context, stream, buffers
        runtime.reset(nvinfer1::createInferRuntime(logger));
        if (!runtime)
        {
            throw std::runtime_error(
                with_trt_error("TensorRT createInferRuntime failed (is libnvinfer of the same "
                               "version as the headers this runtime was built with?)",
                               logger));
        }
        engine.reset(runtime->deserializeCudaEngine(bytes.data(), bytes.size()));
        if (!engine)
        {
            throw std::runtime_error(with_trt_error(
                "TensorRT could not deserialize " + engine_path +
                    " (built by another TensorRT version, for another GPU, or without its plugin "
                    "library); rebuild it with `locore build`",
                logger));
        }
        std::int32_t profiles = engine->getNbOptimizationProfiles();
        if (options.profile >= profiles)
        {
            throw UsageError(engine_path + " has " + std::to_string(profiles) +
                             " optimization profile(s), asked for profile " +
                             std::to_string(options.profile) + " (TrtScorerOptions::profile)");
        }
        context.reset(engine->createExecutionContext());
        if (!context)
        {
            throw std::runtime_error(with_trt_error(
                "TensorRT createExecutionContext failed for " + engine_path, logger));
        }
        cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
        for (cudaEvent_t& event : events)
        {
            cuda_check(cudaEventCreate(&event), "cudaEventCreate");
        }
        if (options.profile > 0)
        {
            if (!context->setOptimizationProfileAsync(options.profile, stream))
            {
                throw std::runtime_error(with_trt_error("TensorRT refused optimization profile " +
                                                            std::to_string(options.profile) +
                                                            " of " + engine_path,
                                                        logger));
            }
            cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        }
        describe_tensors();
        allocate();
    }

    void describe_tensors()
    {
        std::int32_t count = engine->getNbIOTensors();
        std::vector<std::string> outputs;
        bool found_scores = false;
        for (std::int32_t i = 0; i < count; ++i)
        {
            TrtTensorInfo info;
            info.name = engine->getIOTensorName(i);
            char const* name = info.name.c_str();
            info.is_input = engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
            info.dtype = to_dtype(engine->getTensorDataType(name), info.name);
            info.shape = to_vector(engine->getTensorShape(name));
            if (engine->getTensorFormat(name) != nvinfer1::TensorFormat::kLINEAR)
            {
                throw ConfigError("engine I/O tensor '" + info.name +
                                  "' is not in linear (row-major) layout; rebuild the engine "
                                  "without I/O format options (locore build uses linear I/O)");
            }
            if (info.is_input)
            {
                auto profile_shape = [&](nvinfer1::OptProfileSelector which)
                { return to_vector(engine->getProfileShape(name, options.profile, which)); };
                info.min_shape = profile_shape(nvinfer1::OptProfileSelector::kMIN);
                info.opt_shape = profile_shape(nvinfer1::OptProfileSelector::kOPT);
                info.max_shape = profile_shape(nvinfer1::OptProfileSelector::kMAX);
                bool is_static = std::none_of(info.shape.begin(), info.shape.end(),
                                              [](std::int64_t d) { return d < 0; });
                if (info.max_shape.size() != info.shape.size() && is_static)
                {
                    // A static input may have no profile entry: its shape is its only shape.
                    info.min_shape = info.opt_shape = info.max_shape = info.shape;
                }
                if (info.max_shape.size() != info.shape.size())
                {
                    // Shape tensors and inputs without a profile entry: a re-ranker has none.
                    throw ConfigError("engine input '" + info.name +
                                      "' has no optimization-profile shape; is this an engine "
                                      "of a locore re-ranker (locore build)?");
                }
            }
            else
            {
                outputs.push_back(info.name);
                if (info.name == kScores)
                {
                    found_scores = true;
                    scores_index = tensors.size();
                }
            }
            tensors.push_back(std::move(info));
        }
        if (!found_scores)
        {
            throw ConfigError(engine_path + " has no output '" + std::string(kScores) +
                              "' (outputs: " + join_names(outputs) +
                              "); a locore re-ranker engine outputs scores [batch, num_gallery]");
        }
        if (has_sidecar && model.has_recorded_graph_io)
        {
            for (TrtTensorInfo const& info : tensors)
            {
                if (info.is_input && model.graph_io.find_input(info.name) == nullptr)
                {
                    throw ConfigError("engine input '" + info.name +
                                      "' is not in the sidecar's recorded graph I/O; the engine "
                                      "and its sidecar disagree: rebuild with `locore build`");
                }
            }
        }
    }

    void allocate()
    {
        for (TrtTensorInfo const& info : tensors)
        {
            if (info.is_input &&
                !context->setInputShape(info.name.c_str(), to_dims(info.max_shape, info.name)))
            {
                throw std::runtime_error(
                    with_trt_error("TensorRT setInputShape refused the profile's max shape " +
                                       format_shape(info.max_shape) + " of " + info.name,
                                   logger));
            }
        }
        for (TrtTensorInfo const& info : tensors)
        {
            std::vector<std::int64_t> shape =
                info.is_input ? info.max_shape
                              : to_vector(context->getTensorShape(info.name.c_str()));
            if (std::any_of(shape.begin(), shape.end(), [](std::int64_t d) { return d < 0; }))
            {
                throw ConfigError("engine output '" + info.name + "' has a data-dependent shape " +
                                  format_shape(shape) +
                                  "; the locore runtime needs outputs whose shape follows from "
                                  "the inputs'");
            }
            std::size_t nbytes = static_cast<std::size_t>(numel(shape)) * dtype_size(info.dtype);
            device.emplace_back(nbytes, false);
            host.emplace_back(nbytes, true);
            if (!context->setTensorAddress(info.name.c_str(), device.back().data()))
            {
                throw std::runtime_error(
                    with_trt_error("TensorRT setTensorAddress failed for " + info.name, logger));
            }
        }
    }

    void check_shape(TrtTensorInfo const& info, Tensor const& input) const
    {
        if (input.shape.size() != info.max_shape.size())
        {
            throw PackingError("input " + input.describe() + " has " +
                               std::to_string(input.shape.size()) + " dims, the engine takes " +
                               std::to_string(info.max_shape.size()) + " (" +
                               format_shape(info.shape) + ", -1 = dynamic)");
        }
        for (std::size_t axis = 0; axis < input.shape.size(); ++axis)
        {
            std::int64_t size = input.shape[axis];
            std::int64_t lo = info.min_shape[axis], hi = info.max_shape[axis];
            if (size >= lo && size <= hi)
            {
                continue;
            }
            std::string what = lo == hi ? "fixed at " + std::to_string(lo) + " in this engine"
                                        : "in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                              "] in this engine's profile " +
                                              std::to_string(options.profile);
            std::string dim_name = recorded_dim_name(info.name, axis);
            std::string advice;
            if (info.shape[axis] >= 0)
            {
                advice = "; the model was exported for other features";
            }
            else if (dim_name == kGalleryDim)
            {
                advice = "; score at most " + std::to_string(hi) +
                         " gallery images per call (Scorer::max_gallery), or rebuild the engine "
                         "with a larger window (locore build --window)";
            }
            else
            {
                advice = "; rebuild the engine with a profile that covers it (locore build "
                         "--minShapes/--maxShapes)";
            }
            throw PackingError("input " + input.describe() + ": dim " + std::to_string(axis) +
                               " (" + dim_name + ") must be " + what + ", got " +
                               std::to_string(size) + advice);
        }
    }

    std::vector<float> score(PackedWindow const& window)
    {
        cuda_check(cudaSetDevice(options.device), "cudaSetDevice"); // the thread may use others
        // Inputs: host staging (converted to the engine's dtype), shapes, uploads.
        std::vector<std::string> given;
        for (Tensor const& t : window.inputs)
        {
            given.push_back(t.name);
        }
        for (std::size_t i = 0; i < tensors.size(); ++i)
        {
            TrtTensorInfo const& info = tensors[i];
            if (!info.is_input)
            {
                continue;
            }
            Tensor const* input = window.find(info.name);
            if (input == nullptr)
            {
                throw PackingError("the packed window has no input '" + info.name +
                                   "' that the engine takes (window inputs: " + join_names(given) +
                                   "); build the Packer with the scorer's input_specs()");
            }
            check_shape(info, *input);
        }
        // Stage every input in its pinned buffer (in the engine's dtype) and set its shape, then
        // upload them all: the H2D time measured between the events is the copies' alone.
        std::vector<std::size_t> in_bytes(tensors.size(), 0);
        for (std::size_t i = 0; i < tensors.size(); ++i)
        {
            TrtTensorInfo const& info = tensors[i];
            if (!info.is_input)
            {
                continue;
            }
            Tensor const& input = *window.find(info.name);
            in_bytes[i] = static_cast<std::size_t>(input.numel()) * dtype_size(info.dtype);
            convert_into(input, info.dtype, static_cast<std::uint8_t*>(host[i].data()));
            if (!context->setInputShape(info.name.c_str(), to_dims(input.shape, info.name)))
            {
                throw std::runtime_error(
                    with_trt_error("TensorRT setInputShape refused " + input.describe(), logger));
            }
        }
        cuda_check(cudaEventRecord(events[0], stream), "cudaEventRecord");
        for (std::size_t i = 0; i < tensors.size(); ++i)
        {
            if (tensors[i].is_input && in_bytes[i] > 0)
            {
                cuda_check(cudaMemcpyAsync(device[i].data(), host[i].data(), in_bytes[i],
                                           cudaMemcpyHostToDevice, stream),
                           "cudaMemcpyAsync (host to device)");
            }
        }
        if (!context->allInputDimensionsSpecified())
        {
            throw std::runtime_error("TensorRT: not every input shape is set for " + engine_path);
        }
        cuda_check(cudaEventRecord(events[1], stream), "cudaEventRecord");
        // Output shapes follow from the input shapes.
        std::vector<std::size_t> out_bytes(tensors.size(), 0);
        std::vector<std::int64_t> scores_shape;
        for (std::size_t i = 0; i < tensors.size(); ++i)
        {
            if (tensors[i].is_input)
            {
                continue;
            }
            std::vector<std::int64_t> shape =
                to_vector(context->getTensorShape(tensors[i].name.c_str()));
            std::int64_t n = numel(shape);
            out_bytes[i] = static_cast<std::size_t>(std::max<std::int64_t>(n, 0)) *
                           dtype_size(tensors[i].dtype);
            if (n < 0 || out_bytes[i] > device[i].nbytes())
            {
                throw std::runtime_error("TensorRT output '" + tensors[i].name + "' has shape " +
                                         format_shape(shape) + ", larger than its buffer (" +
                                         std::to_string(device[i].nbytes()) + " bytes)");
            }
            if (i == scores_index)
            {
                scores_shape = shape;
            }
        }
        if (!context->enqueueV3(stream))
        {
            throw std::runtime_error(
                with_trt_error("TensorRT enqueueV3 failed on " + engine_path, logger));
        }
        cuda_check(cudaEventRecord(events[2], stream), "cudaEventRecord");
        for (std::size_t i = 0; i < tensors.size(); ++i)
        {
            if (!tensors[i].is_input && out_bytes[i] > 0)
            {
                cuda_check(cudaMemcpyAsync(host[i].data(), device[i].data(), out_bytes[i],
                                           cudaMemcpyDeviceToHost, stream),
                           "cudaMemcpyAsync (device to host)");
            }
        }
        cuda_check(cudaEventRecord(events[3], stream), "cudaEventRecord");
        cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (inference)");
        cuda_check(cudaEventElapsedTime(&timings.h2d_ms, events[0], events[1]),
                   "cudaEventElapsedTime");
        cuda_check(cudaEventElapsedTime(&timings.compute_ms, events[1], events[2]),
                   "cudaEventElapsedTime");
        cuda_check(cudaEventElapsedTime(&timings.d2h_ms, events[2], events[3]),
                   "cudaEventElapsedTime");

        std::size_t n = static_cast<std::size_t>(numel(scores_shape));
        std::int64_t expected = window.batch * window.num_gallery;
        if (static_cast<std::int64_t>(n) != expected)
        {
            throw std::runtime_error(
                "TensorRT output scores " + format_shape(scores_shape) +
                " does not hold batch x num_gallery = " + std::to_string(window.batch) + " x " +
                std::to_string(window.num_gallery) + " logits");
        }
        std::vector<float> scores(n);
        void const* raw = host[scores_index].data();
        if (tensors[scores_index].dtype == DType::Float32)
        {
            std::memcpy(scores.data(), raw, n * sizeof(float));
        }
        else if (tensors[scores_index].dtype == DType::Float16)
        {
            auto const* half = static_cast<std::uint16_t const*>(raw);
            for (std::size_t i = 0; i < n; ++i)
            {
                scores[i] = half_to_float(half[i]);
            }
        }
        else
        {
            throw ConfigError("engine output scores is " +
                              std::string(dtype_name(tensors[scores_index].dtype)) +
                              ", expected float32 or float16");
        }
        return scores;
    }
};

TrtScorer::TrtScorer(std::string const& engine_path, TrtScorerOptions options)
    : impl_(std::make_unique<Impl>(engine_path, std::move(options)))
{
    impl_->load();
}

namespace
{
TrtScorerOptions with_plugin(std::string const& plugin_library, int device)
{
    TrtScorerOptions options;
    options.plugin_library = plugin_library;
    options.device = device;
    return options;
}
} // namespace

TrtScorer::TrtScorer(std::string const& engine_path, std::string const& plugin_library, int device)
    : TrtScorer(engine_path, with_plugin(plugin_library, device))
{
}

TrtScorer::~TrtScorer() = default;

std::vector<float> TrtScorer::score(PackedWindow const& window)
{
    if (window.batch == 0 || window.num_gallery == 0)
    {
        return {}; // nothing to score; TensorRT profiles start at one gallery image
    }
    return impl_->score(window);
}

std::vector<TensorSpec> TrtScorer::input_specs() const
{
    std::vector<TensorSpec> specs;
    for (TrtTensorInfo const& info : impl_->tensors)
    {
        if (!info.is_input)
        {
            continue;
        }
        TensorSpec spec;
        spec.name = info.name;
        spec.dtype = dtype_name(info.dtype);
        for (std::size_t axis = 0; axis < info.shape.size(); ++axis)
        {
            spec.shape.push_back(info.shape[axis] >= 0
                                     ? Dim::fixed(info.shape[axis])
                                     : Dim::dynamic(impl_->recorded_dim_name(info.name, axis)));
        }
        if (impl_->model.has_recorded_graph_io)
        {
            if (TensorSpec const* recorded = impl_->model.graph_io.find_input(info.name))
            {
                spec.description = recorded->description;
            }
        }
        specs.push_back(std::move(spec));
    }
    return specs;
}

std::int64_t TrtScorer::max_gallery() const
{
    for (TrtTensorInfo const& info : impl_->tensors)
    {
        if (info.is_input && info.name == kGalleryDesc)
        {
            for (std::size_t axis = 0; axis < info.shape.size(); ++axis)
            {
                if (info.shape[axis] < 0 &&
                    impl_->recorded_dim_name(info.name, axis) == kGalleryDim)
                {
                    return info.max_shape[axis];
                }
            }
            // No recorded dim names (no sidecar): the contract's [batch, num_gallery, Nd, Dl].
            return info.max_shape.size() > 1 ? info.max_shape[1] : 0;
        }
    }
    return 0;
}

DType TrtScorer::float_dtype() const
{
    for (TrtTensorInfo const& info : impl_->tensors)
    {
        if (info.is_input && info.name == kQueryDesc)
        {
            return info.dtype;
        }
    }
    return DType::Float32;
}

ModelInfo const& TrtScorer::model() const
{
    return impl_->model;
}
bool TrtScorer::has_sidecar() const
{
    return impl_->has_sidecar;
}
EngineSidecar const& TrtScorer::sidecar() const
{
    return impl_->sidecar;
}
std::vector<TrtTensorInfo> const& TrtScorer::tensors() const
{
    return impl_->tensors;
}
MachineFacts const& TrtScorer::machine() const
{
    return impl_->machine;
}
TrtTimings TrtScorer::last_timings() const
{
    return impl_->timings;
}

} // namespace locore
