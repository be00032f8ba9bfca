/*
 * Host-only test of the TensorRT plugin glue: no GPU, no TensorRT library, only its headers.
 *
 * The CUDA entry points of selectiveScan.h are replaced by a stub that records the
 * LocoreScanParams it receives, so the test checks what the plugin hands the kernel: field
 * parsing, shape validation, params from runtime dims, the serialization round trip, and the
 * library entry points. Built and run by `compile_check.sh --glue-test`.
 */
#include "selectiveScan.h"
#include "selectiveScanPlugin.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

using namespace nvinfer1;

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" void setLoggerFinder(ILoggerFinder* finder);

namespace
{

LocoreScanParams gLastParams{};
int gKernelCalls{0};
int gFailures{0};

#define CHECK(cond)                                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                              \
            ++gFailures;                                                                                               \
        }                                                                                                              \
    } while (0)

class TestLogger : public ILogger
{
public:
    void log(Severity severity, char const* message) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            ++messages;
            last = message;
        }
    }
    int messages{0};
    std::string last;
};

class TestLoggerFinder : public ILoggerFinder
{
public:
    explicit TestLoggerFinder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() override
    {
        return mLogger;
    }

private:
    ILogger* mLogger;
};

Dims makeDims(std::initializer_list<int64_t> extents)
{
    Dims dims{};
    for (int64_t const e : extents)
    {
        dims.d[dims.nbDims++] = e;
    }
    return dims;
}

template <typename T>
T* capability(IPluginV3* plugin, PluginCapabilityType type)
{
    return static_cast<T*>(plugin->getCapabilityInterface(type));
}

IPluginV3* create(IPluginCreatorV3One& creator, std::vector<PluginField> const& fields, TensorRTPhase phase)
{
    PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
    return creator.createPlugin("scan", &fc, phase);
}

} // namespace

extern "C" size_t locore_selective_scan_cuda_workspace(LocoreScanParams const* params)
{
    return static_cast<size_t>(params->batch) * params->nheads * sizeof(float);
}

extern "C" int locore_selective_scan_cuda(LocoreScanParams const* params, void* /* workspace */, void* /* stream */)
{
    gLastParams = *params;
    ++gKernelCalls;
    return LOCORE_SCAN_OK;
}

extern "C" char const* locore_scan_status_string(int status)
{
    return status == LOCORE_SCAN_OK ? "ok" : "error";
}

int main()
{
    TestLogger logger;
    TestLoggerFinder finder(&logger);
    setLoggerFinder(&finder);

    int32_t nbCreators{0};
    IPluginCreatorInterface* const* creators = getCreators(nbCreators);
    // Version 2 (A, D, dt_bias FP32) and version 1 (every input in x's dtype), both registered.
    CHECK(nbCreators == 2 && creators != nullptr);
    CHECK(std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
    CHECK(std::strcmp(creators[1]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
    auto& creator = *static_cast<IPluginCreatorV3One*>(creators[0]);
    auto& creatorV1 = *static_cast<IPluginCreatorV3One*>(creators[1]);
    CHECK(std::strcmp(creator.getPluginName(), "SelectiveScan") == 0);
    CHECK(std::strcmp(creator.getPluginVersion(), "2") == 0);
    CHECK(std::strcmp(creatorV1.getPluginName(), "SelectiveScan") == 0);
    CHECK(std::strcmp(creatorV1.getPluginVersion(), "1") == 0);
    CHECK(std::strcmp(creatorV1.getPluginNamespace(), "locore") == 0);
    CHECK(std::strcmp(creator.getPluginNamespace(), "locore") == 0);
    CHECK(creator.getFieldNames()->nbFields == 4);

    // Fields as TensorRT's ONNX parser passes them: NUL-terminated kCHAR strings, kINT32 ints; plus the
    // node's routing attributes and an unknown field (ignored with a warning).
    int32_t const one{1};
    int32_t const zero{0};
    int32_t const chunk{32};
    std::vector<PluginField> fields{{"variant", "mamba2", PluginFieldType::kCHAR, 7},
        {"dt_softplus", &one, PluginFieldType::kINT32, 1}, {"reverse", &zero, PluginFieldType::kINT32, 1},
        {"chunk_size", &chunk, PluginFieldType::kINT32, 1}, {"plugin_version", "2", PluginFieldType::kCHAR, 2},
        {"plugin_namespace", "", PluginFieldType::kCHAR, 1}, {"unknown", &one, PluginFieldType::kINT32, 1}};
    IPluginV3* plugin = create(creator, fields, TensorRTPhase::kBUILD);
    CHECK(plugin != nullptr);
    if (plugin == nullptr)
    {
        return 1;
    }
    CHECK(logger.last.find("unknown") != std::string::npos);
    auto* core = capability<IPluginV3OneCore>(plugin, PluginCapabilityType::kCORE);
    auto* build = capability<IPluginV3OneBuild>(plugin, PluginCapabilityType::kBUILD);
    auto* runtime = capability<IPluginV3OneRuntime>(plugin, PluginCapabilityType::kRUNTIME);
    CHECK(std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0);
    CHECK(std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0);
    CHECK(std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0);
    CHECK(std::strcmp(core->getPluginName(), "SelectiveScan") == 0);
    CHECK(std::strcmp(core->getPluginVersion(), "2") == 0);
    CHECK(std::string{build->getMetadataString()} == "version=2;variant=mamba2;dt_softplus=1;reverse=0;chunk_size=32");
    CHECK(build->getNbOutputs() == 1);

    // Invalid fields: creation fails with a message.
    CHECK(create(creator, {{"variant", "mamba3", PluginFieldType::kCHAR, 6}}, TensorRTPhase::kBUILD) == nullptr);
    CHECK(logger.last.find("mamba3") != std::string::npos);
    CHECK(create(creator, {{"reverse", &chunk, PluginFieldType::kINT32, 1}}, TensorRTPhase::kBUILD) == nullptr);
    CHECK(create(creator, {{"plugin_version", "1", PluginFieldType::kCHAR, 1}}, TensorRTPhase::kBUILD) == nullptr);
    CHECK(create(creatorV1, {{"plugin_version", "2", PluginFieldType::kCHAR, 1}}, TensorRTPhase::kBUILD) == nullptr);
    // A Python-style string without NUL and an integer variant are accepted.
    IPluginV3* pyStyle = create(creator, {{"variant", "mamba1", PluginFieldType::kCHAR, 6}}, TensorRTPhase::kBUILD);
    CHECK(pyStyle != nullptr);
    delete pyStyle;

    // Build phase, mamba2 with z: B=2, L dynamic (max 100), H=4, P=8, G=2, N=16.
    Dims const declared[8]{makeDims({2, -1, 4, 8}), makeDims({2, -1, 4}), makeDims({4}), makeDims({2, -1, 2, 16}),
        makeDims({2, -1, 2, 16}), makeDims({4}), makeDims({4}), makeDims({2, -1, 4, 8})};
    DynamicPluginTensorDesc in[9]{};
    for (int32_t i = 0; i < 8; ++i)
    {
        in[i].desc.dims = declared[i];
        in[i].desc.type = DataType::kHALF;
        in[i].desc.format = TensorFormat::kLINEAR;
        in[i].min = declared[i];
        in[i].opt = declared[i];
        in[i].max = declared[i];
        for (int32_t k = 0; k < declared[i].nbDims; ++k)
        {
            if (declared[i].d[k] < 0)
            {
                in[i].min.d[k] = 1;
                in[i].opt.d[k] = 50;
                in[i].max.d[k] = 100;
            }
        }
    }
    in[8] = in[0];
    for (int32_t i : {2, 5, 6})
    {
        in[i].desc.type = DataType::kFLOAT; // version 2: A, D, dt_bias FP32 with FP16 x
    }
    CHECK(build->configurePlugin(in, 8, &in[8], 1) == 0);
    CHECK(build->getWorkspaceSize(in, 8, &in[8], 1) == 2 * 4 * sizeof(float));
    for (int32_t pos = 0; pos < 9; ++pos)
    {
        CHECK(build->supportsFormatCombination(pos, in, 8, 1));
    }
    in[3].desc.type = DataType::kFLOAT;
    CHECK(!build->supportsFormatCombination(3, in, 8, 1));
    in[3].desc.type = DataType::kHALF;
    in[2].desc.type = DataType::kHALF; // FP16 A: version 1's contract, refused by version 2
    CHECK(!build->supportsFormatCombination(2, in, 8, 1));
    in[2].desc.type = DataType::kFLOAT;
    in[5].desc.format = TensorFormat::kHWC8;
    CHECK(!build->supportsFormatCombination(5, in, 8, 1));
    in[5].desc.format = TensorFormat::kLINEAR;
    DataType inputTypes[8];
    for (DataType& t : inputTypes)
    {
        t = DataType::kHALF;
    }
    DataType outputType{DataType::kFLOAT};
    CHECK(build->getOutputDataTypes(&outputType, 1, inputTypes, 8) == 0 && outputType == DataType::kHALF);
    inputTypes[0] = DataType::kINT8;
    CHECK(build->getOutputDataTypes(&outputType, 1, inputTypes, 8) != 0);
    in[4].desc.dims = makeDims({2, -1, 3, 16}); // C's groups differ from B's
    CHECK(build->configurePlugin(in, 8, &in[8], 1) != 0);
    CHECK(logger.last.find("input 4 (C)") != std::string::npos);
    in[4].desc.dims = declared[4];
    // State size N = 512 > 256: refused when the engine is built (configurePlugin), not at enqueue.
    for (int32_t i : {3, 4})
    {
        in[i].desc.dims = makeDims({2, -1, 2, 512});
        in[i].max = makeDims({2, 100, 2, 512});
    }
    CHECK(build->configurePlugin(in, 8, &in[8], 1) != 0);
    CHECK(logger.last.find("state size N = 512") != std::string::npos);
    for (int32_t i : {3, 4})
    {
        in[i].desc.dims = declared[i];
        in[i].max = declared[i];
        in[i].max.d[1] = 100;
    }
    CHECK(build->configurePlugin(in, 8, &in[8], 1) == 0);

    // Runtime phase: a clone attached to a context sees L = 37 and runs.
    IPluginV3* attached = runtime->attachToContext(nullptr);
    CHECK(attached != nullptr);
    auto* contextRuntime = capability<IPluginV3OneRuntime>(attached, PluginCapabilityType::kRUNTIME);
    PluginTensorDesc actual[8]{};
    for (int32_t i = 0; i < 8; ++i)
    {
        actual[i] = in[i].desc;
        if (actual[i].dims.nbDims > 1)
        {
            actual[i].dims.d[1] = 37;
        }
    }
    PluginTensorDesc output = actual[0];
    CHECK(contextRuntime->onShapeChange(actual, 8, &output, 1) == 0);
    void const* inputs[8];
    for (int32_t i = 0; i < 8; ++i)
    {
        inputs[i] = reinterpret_cast<void const*>(static_cast<uintptr_t>(0x1000 + 0x100 * i));
    }
    void* outputs[1]{reinterpret_cast<void*>(static_cast<uintptr_t>(0x9000))};
    CHECK(contextRuntime->enqueue(actual, &output, inputs, outputs, nullptr, nullptr) == 0);
    CHECK(gKernelCalls == 1);
    LocoreScanParams const& p = gLastParams;
    CHECK(p.batch == 2 && p.seqlen == 37 && p.nheads == 4 && p.headdim == 8 && p.ngroups == 2 && p.dstate == 16);
    CHECK(p.variant == LOCORE_SCAN_MAMBA2 && p.dtSoftplus == 1 && p.reverse == 0 && p.chunkSize == 32);
    CHECK(p.dtype == LOCORE_SCAN_FLOAT16 && p.weightDtype == LOCORE_SCAN_FLOAT32);
    CHECK(p.x == inputs[0] && p.dt == inputs[1] && p.A == inputs[2] && p.B == inputs[3] && p.C == inputs[4]);
    CHECK(p.D == inputs[5] && p.dtBias == inputs[6] && p.z == inputs[7] && p.y == outputs[0]);
    actual[6].type = DataType::kHALF; // FP16 dt_bias: refused by version 2
    CHECK(contextRuntime->onShapeChange(actual, 8, &output, 1) != 0);
    CHECK(logger.last.find("input 6 (dt_bias) must be FP32") != std::string::npos);
    actual[6].type = DataType::kFLOAT;
    actual[2].dims = makeDims({5}); // A no longer matches H
    CHECK(contextRuntime->onShapeChange(actual, 8, &output, 1) != 0);

    // Version 1: every input in x's dtype (FP16 A, D, dt_bias), passed to the kernel as such.
    IPluginV3* v1 = create(creatorV1, {{"plugin_version", "1", PluginFieldType::kCHAR, 2}}, TensorRTPhase::kBUILD);
    CHECK(v1 != nullptr);
    if (v1 != nullptr)
    {
        CHECK(std::strcmp(capability<IPluginV3OneCore>(v1, PluginCapabilityType::kCORE)->getPluginVersion(), "1") == 0);
        auto* v1Build = capability<IPluginV3OneBuild>(v1, PluginCapabilityType::kBUILD);
        auto* v1Runtime = capability<IPluginV3OneRuntime>(v1, PluginCapabilityType::kRUNTIME);
        DynamicPluginTensorDesc half[9];
        PluginTensorDesc halfActual[8];
        for (int32_t i = 0; i < 9; ++i)
        {
            half[i] = in[i < 8 ? i : 0];
            half[i].desc.type = DataType::kHALF;
        }
        for (int32_t pos = 0; pos < 9; ++pos)
        {
            CHECK(v1Build->supportsFormatCombination(pos, half, 8, 1));
        }
        half[2].desc.type = DataType::kFLOAT;
        CHECK(!v1Build->supportsFormatCombination(2, half, 8, 1));
        for (int32_t i = 0; i < 8; ++i)
        {
            halfActual[i] = half[i].desc;
            halfActual[i].type = DataType::kHALF;
            if (halfActual[i].dims.nbDims > 1)
            {
                halfActual[i].dims.d[1] = 5;
            }
        }
        PluginTensorDesc halfOut = halfActual[0];
        CHECK(v1Runtime->onShapeChange(halfActual, 8, &halfOut, 1) == 0);
        CHECK(v1Runtime->enqueue(halfActual, &halfOut, inputs, outputs, nullptr, nullptr) == 0);
        CHECK(p.dtype == LOCORE_SCAN_FLOAT16 && p.weightDtype == LOCORE_SCAN_FLOAT16 && p.seqlen == 5);
    }
    delete v1;

    // Serialization round trip: the runtime-phase plugin has the same attributes.
    PluginFieldCollection const* serialized = runtime->getFieldsToSerialize();
    CHECK(serialized != nullptr && serialized->nbFields == 4);
    IPluginV3* restored = creator.createPlugin("scan", serialized, TensorRTPhase::kRUNTIME);
    CHECK(restored != nullptr);
    if (restored != nullptr)
    {
        CHECK(std::string{capability<IPluginV3OneBuild>(restored, PluginCapabilityType::kBUILD)->getMetadataString()}
            == build->getMetadataString());
    }

    // mamba1 from an integer variant, 7 inputs (no z), FP32.
    int32_t const mamba1{1};
    IPluginV3* m1 = create(creator, {{"variant", &mamba1, PluginFieldType::kINT32, 1}}, TensorRTPhase::kBUILD);
    CHECK(m1 != nullptr);
    if (m1 != nullptr)
    {
        auto* m1Runtime = capability<IPluginV3OneRuntime>(m1, PluginCapabilityType::kRUNTIME);
        Dims const dims1[7]{makeDims({3, 5, 6}), makeDims({3, 5, 6}), makeDims({6, 4}), makeDims({3, 5, 3, 4}),
            makeDims({3, 5, 3, 4}), makeDims({6}), makeDims({6})};
        PluginTensorDesc desc1[7]{};
        for (int32_t i = 0; i < 7; ++i)
        {
            desc1[i].dims = dims1[i];
            desc1[i].type = DataType::kFLOAT;
            desc1[i].format = TensorFormat::kLINEAR;
        }
        PluginTensorDesc out1 = desc1[0];
        CHECK(m1Runtime->onShapeChange(desc1, 7, &out1, 1) == 0);
        CHECK(m1Runtime->enqueue(desc1, &out1, inputs, outputs, nullptr, nullptr) == 0);
        CHECK(p.batch == 3 && p.seqlen == 5 && p.nheads == 6 && p.headdim == 1 && p.ngroups == 3 && p.dstate == 4);
        CHECK(p.variant == LOCORE_SCAN_MAMBA1 && p.dtype == LOCORE_SCAN_FLOAT32 && p.z == nullptr);
        CHECK(p.weightDtype == LOCORE_SCAN_FLOAT32);
        desc1[2].dims = makeDims({6, 5}); // A's N differs from B's
        CHECK(m1Runtime->onShapeChange(desc1, 7, &out1, 1) != 0);
        // An empty sequence launches nothing.
        for (int32_t i : {0, 1, 3, 4})
        {
            desc1[i].dims.d[1] = 0;
        }
        desc1[2].dims = dims1[2];
        out1 = desc1[0];
        int const before = gKernelCalls;
        CHECK(m1Runtime->onShapeChange(desc1, 7, &out1, 1) == 0);
        CHECK(m1Runtime->enqueue(desc1, &out1, inputs, outputs, nullptr, nullptr) == 0);
        CHECK(gKernelCalls == before);
    }

    delete m1;
    delete restored;
    delete attached;
    delete plugin;
    if (gFailures != 0)
    {
        std::fprintf(stderr, "pluginGlueTest: %d check(s) failed\n", gFailures);
        return 1;
    }
    std::printf("pluginGlueTest: all checks passed\n");
    return 0;
}
