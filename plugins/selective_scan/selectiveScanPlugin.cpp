/*
 * TensorRT plugin `SelectiveScan` (IPluginV3): see selectiveScanPlugin.h and README.md.
 */
#include "selectiveScanPlugin.h"

#include "pluginLogger.h"
#include "selectiveScan.h"

#include <cstring>
#include <exception>
#include <initializer_list>
#include <limits>
#include <new>
#include <sstream>

namespace locore
{
namespace plugin
{
namespace
{

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::ILogger;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::TensorFormat;

// Input positions, fixed by the op contract (selectiveScan.h).
constexpr int32_t kX{0};
constexpr int32_t kDT{1};
constexpr int32_t kA{2};
constexpr int32_t kB{3};
constexpr int32_t kC{4};
constexpr int32_t kD{5};
constexpr int32_t kDT_BIAS{6};
constexpr int32_t kZ{7};

constexpr char const* kINPUT_NAMES[kSELECTIVE_SCAN_MAX_INPUTS]{"x", "dt", "A", "B", "C", "D", "dt_bias", "z"};
constexpr char const* kVARIANT_NAMES[2]{"mamba2", "mamba1"};

// Unknown extent: a runtime dimension (-1 in desc.dims) or a value the check does not constrain.
constexpr int64_t kANY{-1};

//! Log `message`, prefixed with the plugin's name (unprefixed if that fails).
void logMessage(ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::string const text = std::string{kSELECTIVE_SCAN_PLUGIN_NAME} + " plugin: " + message;
        logPluginMessage(severity, text.c_str());
    }
    catch (...)
    {
        logPluginMessage(severity, message.c_str());
    }
}

void logError(std::string const& message) noexcept
{
    logMessage(ILogger::Severity::kERROR, message);
}

void logWarning(std::string const& message) noexcept
{
    logMessage(ILogger::Severity::kWARNING, message);
}

char const* variantName(int32_t variant) noexcept
{
    return variant == LOCORE_SCAN_MAMBA1 ? kVARIANT_NAMES[1] : kVARIANT_NAMES[0];
}

std::string dimsToString(Dims const& dims)
{
    std::ostringstream os;
    os << "[";
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        os << (i ? ", " : "") << dims.d[i];
    }
    os << "]";
    return os.str();
}

std::string expectedToString(std::initializer_list<int64_t> extents, char const* symbols)
{
    std::ostringstream os;
    os << symbols << " = [";
    int32_t i = 0;
    for (int64_t const e : extents)
    {
        os << (i++ ? ", " : "");
        if (e < 0)
        {
            os << "?";
        }
        else
        {
            os << e;
        }
    }
    os << "]";
    return os.str();
}

bool sameExtent(int64_t a, int64_t b) noexcept
{
    return a < 0 || b < 0 || a == b;
}

//! The first known extent among `a` and `b`, else kANY.
int64_t known(int64_t a, int64_t b) noexcept
{
    return a >= 0 ? a : b;
}

//! Check that `got` has the rank and (where known on both sides) the extents of `expected`.
bool expectShape(int32_t input, Dims const& got, std::initializer_list<int64_t> expected, char const* symbols,
    char const* variant, std::string& error)
{
    bool ok = got.nbDims == static_cast<int32_t>(expected.size());
    if (ok)
    {
        int32_t i = 0;
        for (int64_t const e : expected)
        {
            ok = ok && sameExtent(got.d[i++], e);
        }
    }
    if (!ok)
    {
        std::ostringstream os;
        os << variant << " input " << input << " (" << kINPUT_NAMES[input] << ") must be "
           << expectedToString(expected, symbols) << ", got " << dimsToString(got);
        error = os.str();
    }
    return ok;
}

//!
//! Validate the shapes of all inputs against the op contract. Extents equal to -1 (runtime dimensions
//! in the build-time descriptors) match anything. On success, `params` receives the problem sizes
//! (with -1 where unknown).
//!
bool validateShapes(SelectiveScanAttributes const& attributes, Dims const* dims, int32_t nbInputs,
    LocoreScanParams& params, std::string& error)
{
    char const* const variant = variantName(attributes.variant);
    bool const mamba2 = attributes.variant == LOCORE_SCAN_MAMBA2;
    if (nbInputs != kSELECTIVE_SCAN_MIN_INPUTS && nbInputs != kSELECTIVE_SCAN_MAX_INPUTS)
    {
        error = "expected 7 inputs (x, dt, A, B, C, D, dt_bias) or 8 (with z), got " + std::to_string(nbInputs);
        return false;
    }
    Dims const& x = dims[kX];
    Dims const& bm = dims[kB];
    int32_t const xRank = mamba2 ? 4 : 3;
    if (x.nbDims != xRank)
    {
        error = std::string{variant} + " input 0 (x) must have rank " + std::to_string(xRank) + " ("
            + (mamba2 ? "[B, L, H, P]" : "[B, L, Dc]") + "), got " + dimsToString(x);
        return false;
    }
    if (bm.nbDims != 4)
    {
        error = std::string{variant} + " input 3 (B) must have rank 4 ([B, L, G, N]), got " + dimsToString(bm);
        return false;
    }
    int64_t const batch = known(x.d[0], bm.d[0]);
    int64_t const seqlen = known(x.d[1], bm.d[1]);
    int64_t const groups = bm.d[2];
    int64_t const dstate = bm.d[3];
    int64_t heads = x.d[2];
    int64_t const headdim = mamba2 ? x.d[3] : 1;

    bool ok = expectShape(kB, bm, {batch, seqlen, kANY, kANY}, "[B, L, G, N]", variant, error)
        && expectShape(kC, dims[kC], {batch, seqlen, groups, dstate}, "[B, L, G, N]", variant, error);
    if (ok)
    {
        heads = known(heads, dims[kDT].nbDims == 3 ? dims[kDT].d[2] : kANY);
        ok = expectShape(kDT, dims[kDT], {batch, seqlen, heads}, mamba2 ? "[B, L, H]" : "[B, L, Dc]", variant, error);
    }
    if (ok && mamba2)
    {
        ok = expectShape(kA, dims[kA], {heads}, "[H]", variant, error);
    }
    else if (ok)
    {
        ok = expectShape(kA, dims[kA], {heads, known(dstate, dims[kC].d[3])}, "[Dc, N]", variant, error);
    }
    ok = ok && expectShape(kD, dims[kD], {heads}, mamba2 ? "[H]" : "[Dc]", variant, error)
        && expectShape(kDT_BIAS, dims[kDT_BIAS], {heads}, mamba2 ? "[H]" : "[Dc]", variant, error);
    if (ok && nbInputs == kSELECTIVE_SCAN_MAX_INPUTS)
    {
        Dims const& z = dims[kZ];
        ok = mamba2 ? expectShape(kZ, z, {batch, seqlen, heads, headdim}, "[B, L, H, P] (same as x)", variant, error)
                    : expectShape(kZ, z, {batch, seqlen, heads}, "[B, L, Dc] (same as x)", variant, error);
    }
    if (!ok)
    {
        return false;
    }
    if (groups == 0 || (groups > 0 && heads >= 0 && heads % groups != 0))
    {
        error = std::string{variant} + ": " + std::to_string(heads) + (mamba2 ? " heads" : " channels")
            + " are not divisible by " + std::to_string(groups) + " groups (input 3, B, is [B, L, G, N])";
        return false;
    }
    int64_t const state = known(dstate, dims[kC].d[3]);
    if (state > kSELECTIVE_SCAN_MAX_STATE)
    {
        // Refused when the engine is built, not at every enqueue: the CUDA kernel keeps the state
        // in registers, 32 lanes x 8 elements (kScanMaxDState in selectiveScanKernel.h).
        error = std::string{variant} + ": state size N = " + std::to_string(state)
            + " (input 3, B, is [B, L, G, N]) exceeds the CUDA kernel's maximum "
            + std::to_string(kSELECTIVE_SCAN_MAX_STATE) + "; export the model with d_state <= "
            + std::to_string(kSELECTIVE_SCAN_MAX_STATE);
        return false;
    }
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        for (int32_t k = 0; k < dims[i].nbDims; ++k)
        {
            if (dims[i].d[k] > std::numeric_limits<int32_t>::max())
            {
                error = std::string{"input "} + std::to_string(i) + " (" + kINPUT_NAMES[i] + ") extent "
                    + std::to_string(dims[i].d[k]) + " exceeds the kernel's 32-bit sizes";
                return false;
            }
        }
    }
    params.batch = static_cast<int32_t>(batch);
    params.seqlen = static_cast<int32_t>(seqlen);
    params.nheads = static_cast<int32_t>(heads);
    params.headdim = static_cast<int32_t>(headdim);
    params.ngroups = static_cast<int32_t>(groups);
    params.dstate = static_cast<int32_t>(known(dstate, dims[kC].d[3]));
    return true;
}

bool toScanDType(DataType type, int32_t& dtype) noexcept
{
    switch (type)
    {
    case DataType::kFLOAT: dtype = LOCORE_SCAN_FLOAT32; return true;
    case DataType::kHALF: dtype = LOCORE_SCAN_FLOAT16; return true;
    default: return false;
    }
}

//! A, D and dt_bias: FP32 in every precision from version 2 on.
bool isWeightInput(int32_t input) noexcept
{
    return input == kA || input == kD || input == kDT_BIAS;
}

//! The data type input `input` must have, given x's type.
DataType expectedInputType(SelectiveScanVersion version, int32_t input, DataType xType) noexcept
{
    return version == SelectiveScanVersion::kV2 && isWeightInput(input) ? DataType::kFLOAT : xType;
}

//! params.dtype and params.weightDtype from x's type; false when x is neither FP32 nor FP16.
bool setScanDTypes(SelectiveScanVersion version, DataType xType, LocoreScanParams& params) noexcept
{
    if (!toScanDType(xType, params.dtype))
    {
        return false;
    }
    params.weightDtype = version == SelectiveScanVersion::kV2 ? LOCORE_SCAN_FLOAT32 : params.dtype;
    return true;
}

LocoreScanParams makeParams(SelectiveScanAttributes const& attributes) noexcept
{
    LocoreScanParams params{};
    params.variant = attributes.variant;
    params.dtSoftplus = attributes.dtSoftplus;
    params.reverse = attributes.reverse;
    params.chunkSize = attributes.chunkSize;
    params.dtype = LOCORE_SCAN_FLOAT32;
    params.weightDtype = LOCORE_SCAN_FLOAT32;
    return params;
}

//! The sizes (validateShapes) and attributes of a call whose input shapes are dimsOf(in[i]);
//! false, with `error` set, when a shape breaks the op contract.
template <typename Desc, typename DimsOf>
bool shapesToParams(SelectiveScanAttributes const& attributes, Desc const* in, int32_t nbInputs, DimsOf dimsOf,
    LocoreScanParams& params, std::string& error)
{
    Dims dims[kSELECTIVE_SCAN_MAX_INPUTS]{};
    for (int32_t i = 0; i < nbInputs && i < kSELECTIVE_SCAN_MAX_INPUTS; ++i)
    {
        dims[i] = dimsOf(in[i]);
    }
    params = makeParams(attributes);
    return validateShapes(attributes, dims, nbInputs, params, error);
}

//! The shapes shapesToParams() reads: declared at build time (-1 for a runtime extent), the
//! optimization profile's maximum, or the actual shapes at run time.
Dims declaredDims(nvinfer1::DynamicPluginTensorDesc const& desc) noexcept
{
    return desc.desc.dims;
}

Dims maximumDims(nvinfer1::DynamicPluginTensorDesc const& desc) noexcept
{
    return desc.max;
}

Dims runtimeDims(nvinfer1::PluginTensorDesc const& desc) noexcept
{
    return desc.dims;
}

//! configurePlugin() and onShapeChange() (`where`) see 7 or 8 input descriptors and 1 output;
//! false, logged, otherwise.
bool checkIoCounts(char const* where, void const* in, int32_t nbInputs, void const* out, int32_t nbOutputs)
{
    if (in != nullptr && out != nullptr && nbOutputs == 1 && nbInputs >= 1 && nbInputs <= kSELECTIVE_SCAN_MAX_INPUTS)
    {
        return true;
    }
    logError(std::string{where} + ": expected 7 or 8 inputs and 1 output, got " + std::to_string(nbInputs)
        + " inputs and " + std::to_string(nbOutputs) + " outputs");
    return false;
}

//! Read a string field: kCHAR data of `length` bytes, NUL-terminated or not.
bool readString(PluginField const& field, std::string& value)
{
    if (field.type != PluginFieldType::kCHAR)
    {
        return false;
    }
    char const* chars = static_cast<char const*>(field.data);
    value.assign(chars, static_cast<size_t>(field.length));
    size_t const nul = value.find('\0');
    if (nul != std::string::npos)
    {
        value.resize(nul);
    }
    return true;
}

//! Read the first element of an integer field (the ONNX parser passes INT attributes as kINT32).
bool readInt(PluginField const& field, int64_t& value) noexcept
{
    switch (field.type)
    {
    case PluginFieldType::kINT32: value = *static_cast<int32_t const*>(field.data); return true;
    case PluginFieldType::kINT64: value = *static_cast<int64_t const*>(field.data); return true;
    case PluginFieldType::kINT16: value = *static_cast<int16_t const*>(field.data); return true;
    case PluginFieldType::kINT8: value = *static_cast<int8_t const*>(field.data); return true;
    default: return false;
    }
}

bool parseFlag(PluginField const& field, int32_t& flag, std::string& error)
{
    int64_t value{0};
    if (!readInt(field, value) || (value != 0 && value != 1))
    {
        error = std::string{"field '"} + field.name + "' must be an integer 0 or 1 (kINT32)";
        return false;
    }
    flag = static_cast<int32_t>(value);
    return true;
}

} // namespace

char const* selectiveScanVersionString(SelectiveScanVersion version) noexcept
{
    return version == SelectiveScanVersion::kV1 ? kSELECTIVE_SCAN_PLUGIN_VERSION_1 : kSELECTIVE_SCAN_PLUGIN_VERSION;
}

bool parseSelectiveScanFields(PluginFieldCollection const* fc, SelectiveScanAttributes& attributes, std::string& error,
    SelectiveScanVersion version)
{
    if (fc == nullptr)
    {
        return true;
    }
    if (fc->nbFields > 0 && fc->fields == nullptr)
    {
        error = "the plugin field collection has " + std::to_string(fc->nbFields) + " fields but no field array";
        return false;
    }
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& field = fc->fields[i];
        if (field.name == nullptr || field.data == nullptr || field.length <= 0)
        {
            continue; // an absent value keeps its default
        }
        std::string const name{field.name};
        if (name == "variant")
        {
            std::string text;
            int64_t number{0};
            if (readString(field, text))
            {
                if (text == kVARIANT_NAMES[0])
                {
                    attributes.variant = LOCORE_SCAN_MAMBA2;
                }
                else if (text == kVARIANT_NAMES[1])
                {
                    attributes.variant = LOCORE_SCAN_MAMBA1;
                }
                else
                {
                    error = "field 'variant' must be \"mamba2\" or \"mamba1\", got \"" + text + "\"";
                    return false;
                }
            }
            else if (readInt(field, number) && (number == LOCORE_SCAN_MAMBA2 || number == LOCORE_SCAN_MAMBA1))
            {
                attributes.variant = static_cast<int32_t>(number);
            }
            else
            {
                error = "field 'variant' must be the string \"mamba2\"/\"mamba1\" (kCHAR) or the integer 0/1 (kINT32)";
                return false;
            }
        }
        else if (name == "dt_softplus")
        {
            if (!parseFlag(field, attributes.dtSoftplus, error))
            {
                return false;
            }
        }
        else if (name == "reverse")
        {
            if (!parseFlag(field, attributes.reverse, error))
            {
                return false;
            }
        }
        else if (name == "chunk_size")
        {
            int64_t value{0};
            if (!readInt(field, value) || value < 1 || value > std::numeric_limits<int32_t>::max())
            {
                error = "field 'chunk_size' must be a positive integer (kINT32)";
                return false;
            }
            attributes.chunkSize = static_cast<int32_t>(value);
        }
        else if (name == "plugin_version")
        {
            std::string text;
            char const* const expected = selectiveScanVersionString(version);
            if (readString(field, text) && !text.empty() && text != expected)
            {
                error = "field 'plugin_version' is \"" + text + "\" but this creator makes version \"" + expected
                    + "\"";
                return false;
            }
        }
        else if (name == "plugin_namespace")
        {
            // Routing attribute of the ONNX node: the registry already matched it. Nothing to do.
        }
        else
        {
            logWarning("ignoring unknown plugin field '" + name + "'");
        }
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// SelectiveScanPlugin
// ---------------------------------------------------------------------------------------------

SelectiveScanPlugin::SelectiveScanPlugin(SelectiveScanAttributes const& attributes, SelectiveScanVersion version)
    : SelectiveScanIdentity<nvinfer1::IPluginV3OneCore>(version)
    , mAttributes(attributes)
{
    std::ostringstream os;
    os << "version=" << selectiveScanVersionString(version) << ";variant=" << variantName(mAttributes.variant) << ";dt_softplus=" << mAttributes.dtSoftplus
       << ";reverse=" << mAttributes.reverse << ";chunk_size=" << mAttributes.chunkSize;
    mMetadata = os.str();
}

SelectiveScanPlugin::SelectiveScanPlugin(SelectiveScanPlugin const& other)
    : nvinfer1::IPluginV3(other)
    , SelectiveScanIdentity<nvinfer1::IPluginV3OneCore>(other)
    , nvinfer1::IPluginV3OneBuild(other)
    , nvinfer1::IPluginV3OneRuntime(other)
    , mAttributes(other.mAttributes)
    , mNbInputs(other.mNbInputs)
    , mMetadata(other.mMetadata)
{
    // mFieldsToSerialize points into the object that owns it: rebuilt by getFieldsToSerialize().
}

nvinfer1::IPluginCapability* SelectiveScanPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* SelectiveScanPlugin::clone() noexcept
{
    try
    {
        return new SelectiveScanPlugin(*this);
    }
    catch (std::exception const& e)
    {
        logError(std::string{"clone failed: "} + e.what());
    }
    return nullptr;
}

int32_t SelectiveScanPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t SelectiveScanPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != 1 || nbInputs < 1)
    {
        logError("getOutputDataTypes: expected 1 output and at least 1 input");
        return 1;
    }
    int32_t dtype{0};
    if (!toScanDType(inputTypes[kX], dtype))
    {
        logError("input 0 (x) must be FP32 or FP16, got DataType "
            + std::to_string(static_cast<int32_t>(inputTypes[kX])) + "; cast the inputs of the SelectiveScan node");
        return 1;
    }
    outputTypes[0] = inputTypes[kX];
    return 0;
}

int32_t SelectiveScanPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /* shapeInputs */, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /* exprBuilder */) noexcept
{
    try
    {
        if (inputs == nullptr || outputs == nullptr || nbOutputs != 1 || nbShapeInputs != 0
            || (nbInputs != kSELECTIVE_SCAN_MIN_INPUTS && nbInputs != kSELECTIVE_SCAN_MAX_INPUTS))
        {
            logError("expected 7 or 8 tensor inputs, no shape inputs and 1 output; got " + std::to_string(nbInputs)
                + " inputs, " + std::to_string(nbShapeInputs) + " shape inputs, " + std::to_string(nbOutputs)
                + " outputs");
            return 1;
        }
        bool const mamba2 = mAttributes.variant == LOCORE_SCAN_MAMBA2;
        int32_t const expectedRanks[kSELECTIVE_SCAN_MAX_INPUTS]{
            mamba2 ? 4 : 3, 3, mamba2 ? 1 : 2, 4, 4, 1, 1, mamba2 ? 4 : 3};
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            if (inputs[i].nbDims != expectedRanks[i])
            {
                logError(std::string{variantName(mAttributes.variant)} + " input " + std::to_string(i) + " ("
                    + kINPUT_NAMES[i] + ") must have rank " + std::to_string(expectedRanks[i]) + ", got rank "
                    + std::to_string(inputs[i].nbDims) + "; see the plugin README for the input shapes");
                return 1;
            }
        }
        outputs[0] = inputs[kX]; // y has the shape of x
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string{"getOutputShapes failed: "} + e.what());
    }
    return 1;
}

bool SelectiveScanPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || pos < 0 || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == 0)
    {
        return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    }
    // Version 2: A, D and dt_bias are FP32; every other input and the output share the type of x
    // (decided at pos 0). Version 1: all share x's type.
    return desc.type == expectedInputType(version(), pos < nbInputs ? pos : -1, inOut[0].desc.type);
}

int32_t SelectiveScanPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (!checkIoCounts("configurePlugin", in, nbInputs, out, nbOutputs))
        {
            return 1;
        }
        LocoreScanParams params{};
        std::string error;
        if (!shapesToParams(mAttributes, in, nbInputs, declaredDims, params, error))
        {
            logError(error);
            return 1;
        }
        if (!shapesToParams(mAttributes, in, nbInputs, maximumDims, params, error))
        {
            logError("in the optimization profile's maximum shapes: " + error);
            return 1;
        }
        mNbInputs = nbInputs;
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string{"configurePlugin failed: "} + e.what());
    }
    return 1;
}

size_t SelectiveScanPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /* outputs */, int32_t /* nbOutputs */) const noexcept
{
    try
    {
        if (inputs == nullptr || nbInputs < 1 || nbInputs > kSELECTIVE_SCAN_MAX_INPUTS)
        {
            return 0;
        }
        // The largest problem of the profile: a workspace that fits it fits every smaller one.
        LocoreScanParams params{};
        std::string error;
        if (!shapesToParams(mAttributes, inputs, nbInputs, maximumDims, params, error)
            || !setScanDTypes(version(), inputs[kX].desc.type, params))
        {
            return 0; // configurePlugin() reports the problem
        }
        return locore_selective_scan_cuda_workspace(&params);
    }
    catch (std::exception const& e)
    {
        logError(std::string{"getWorkspaceSize failed: "} + e.what());
    }
    return 0;
}

char const* SelectiveScanPlugin::getMetadataString() noexcept
{
    return mMetadata.c_str();
}

int32_t SelectiveScanPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (!checkIoCounts("onShapeChange", in, nbInputs, out, nbOutputs))
        {
            return 1;
        }
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            if (in[i].type != expectedInputType(version(), i, in[kX].type))
            {
                logError("input " + std::to_string(i) + " (" + kINPUT_NAMES[i] + ") must be "
                    + (in[i].type == in[kX].type ? std::string{"FP32"} : std::string{"of the data type of input 0 (x)"})
                    + " for plugin version " + selectiveScanVersionString(version())
                    + " (version 2: A, D, dt_bias FP32; version 1: every input in x's type)");
                return 1;
            }
        }
        LocoreScanParams params{};
        std::string error;
        if (!shapesToParams(mAttributes, in, nbInputs, runtimeDims, params, error))
        {
            logError(error);
            return 1;
        }
        mNbInputs = nbInputs;
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string{"onShapeChange failed: "} + e.what());
    }
    return 1;
}

int32_t SelectiveScanPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs, void* workspace,
    cudaStream_t stream) noexcept
{
    try
    {
        int32_t const nbInputs = mNbInputs;
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr
            || (nbInputs != kSELECTIVE_SCAN_MIN_INPUTS && nbInputs != kSELECTIVE_SCAN_MAX_INPUTS))
        {
            logError("enqueue called before the plugin saw its input shapes (onShapeChange)");
            return LOCORE_SCAN_BAD_ARGUMENT;
        }
        LocoreScanParams params{};
        std::string error;
        if (!shapesToParams(mAttributes, inputDesc, nbInputs, runtimeDims, params, error))
        {
            logError(error);
            return LOCORE_SCAN_BAD_ARGUMENT;
        }
        if (!setScanDTypes(version(), inputDesc[kX].type, params))
        {
            logError("input 0 (x) must be FP32 or FP16");
            return LOCORE_SCAN_UNSUPPORTED;
        }
        if (params.batch == 0 || params.seqlen == 0 || params.nheads == 0 || params.headdim == 0)
        {
            return 0; // empty output: nothing to compute
        }
        params.x = inputs[kX];
        params.dt = inputs[kDT];
        params.A = inputs[kA];
        params.B = inputs[kB];
        params.C = inputs[kC];
        params.D = inputs[kD];
        params.dtBias = inputs[kDT_BIAS];
        params.z = nbInputs == kSELECTIVE_SCAN_MAX_INPUTS ? inputs[kZ] : nullptr;
        params.y = outputs[0];
        int const status = locore_selective_scan_cuda(&params, workspace, static_cast<void*>(stream));
        if (status != LOCORE_SCAN_OK)
        {
            char const* reason = locore_scan_status_string(status);
            logError(std::string{"kernel failed: "} + (reason != nullptr ? reason : "unknown status") + " (status "
                + std::to_string(status) + ")");
        }
        return status;
    }
    catch (std::exception const& e)
    {
        logError(std::string{"enqueue failed: "} + e.what());
    }
    return LOCORE_SCAN_BAD_ARGUMENT;
}

nvinfer1::IPluginV3* SelectiveScanPlugin::attachToContext(nvinfer1::IPluginResourceContext* /* context */) noexcept
{
    // No per-context resources: the workspace comes from TensorRT. A plain clone suffices.
    return clone();
}

PluginFieldCollection const* SelectiveScanPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        char const* const variant = variantName(mAttributes.variant);
        mFieldsToSerialize.clear();
        // Same field names and types as the ONNX node's attributes, so createPlugin() reads both alike.
        mFieldsToSerialize.emplace_back(
            "variant", variant, PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(variant) + 1));
        mFieldsToSerialize.emplace_back("dt_softplus", &mAttributes.dtSoftplus, PluginFieldType::kINT32, 1);
        mFieldsToSerialize.emplace_back("reverse", &mAttributes.reverse, PluginFieldType::kINT32, 1);
        mFieldsToSerialize.emplace_back("chunk_size", &mAttributes.chunkSize, PluginFieldType::kINT32, 1);
        mCollectionToSerialize.nbFields = static_cast<int32_t>(mFieldsToSerialize.size());
        mCollectionToSerialize.fields = mFieldsToSerialize.data();
        return &mCollectionToSerialize;
    }
    catch (std::exception const& e)
    {
        logError(std::string{"getFieldsToSerialize failed: "} + e.what());
    }
    return nullptr;
}

// ---------------------------------------------------------------------------------------------
// SelectiveScanPluginCreator
// ---------------------------------------------------------------------------------------------

SelectiveScanPluginCreator::SelectiveScanPluginCreator(SelectiveScanVersion version)
    : SelectiveScanIdentity<nvinfer1::IPluginCreatorV3One>(version)
{
    // Advertised build-time fields: the ONNX parser passes exactly these node attributes.
    mFieldNames.emplace_back("variant", nullptr, PluginFieldType::kCHAR, 0);
    mFieldNames.emplace_back("dt_softplus", nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.emplace_back("reverse", nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.emplace_back("chunk_size", nullptr, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

PluginFieldCollection const* SelectiveScanPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

nvinfer1::IPluginV3* SelectiveScanPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /* phase */) noexcept
{
    // The same fields arrive in both phases: from the network (kBUILD) or from
    // getFieldsToSerialize() of a serialized engine (kRUNTIME).
    try
    {
        SelectiveScanAttributes attributes{};
        std::string error;
        if (!parseSelectiveScanFields(fc, attributes, error, version()))
        {
            logError(std::string{"cannot create layer '"} + (name != nullptr ? name : "") + "': " + error);
            return nullptr;
        }
        return new SelectiveScanPlugin(attributes, version());
    }
    catch (std::exception const& e)
    {
        logError(std::string{"createPlugin failed: "} + e.what());
    }
    return nullptr;
}

} // namespace plugin
} // namespace locore
