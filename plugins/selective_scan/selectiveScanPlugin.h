/*
 * TensorRT plugin `SelectiveScan`, versions "2" and "1", namespace "": the glue between TensorRT's
 * IPluginV3 interface and the CUDA kernel declared in selectiveScan.h. Version "2" takes A, D and
 * dt_bias in FP32 whatever x's dtype; version "1" (every input in x's dtype) stays registered for
 * engines built with it, as TensorRT OSS keeps old plugin versions.
 *
 * The op contract (inputs, attributes, semantics) is in README.md beside this file and in
 * docs/design.md section 3; in code, locore/scan_spec.py, which tests/test_scan_spec.py checks the
 * names, fields and defaults of this plugin against. This file uses only the IPluginV3 family
 * of interfaces, so that it builds against the headers of TensorRT 10.x (10.3 and later) and
 * 11.x alike.
 */
#ifndef LOCORE_SELECTIVE_SCAN_PLUGIN_H
#define LOCORE_SELECTIVE_SCAN_PLUGIN_H

#include "NvInferRuntime.h"

#include <cstdint>
#include <string>
#include <vector>

namespace locore
{
namespace plugin
{

//! Plugin name, versions and namespace: the ONNX node `locore::SelectiveScan` with
//! plugin_version="2" (what the exporter writes) or "1" and plugin_namespace="locore" resolves to the
//! creator of that version.
constexpr char const* kSELECTIVE_SCAN_PLUGIN_NAME{"SelectiveScan"};
constexpr char const* kSELECTIVE_SCAN_PLUGIN_VERSION{"2"};
constexpr char const* kSELECTIVE_SCAN_PLUGIN_VERSION_1{"1"};
//! The namespace both creators register under: "locore" (locore.scan_spec.PLUGIN_NAMESPACE, what the
//! exporter writes), so that the generic name cannot collide with another library's SelectiveScan.
//! Settable at build time (CMake -DLOCORE_PLUGIN_NAMESPACE=..., for models exported with another).
constexpr char const* kSELECTIVE_SCAN_DEFAULT_PLUGIN_NAMESPACE{"locore"};
#ifdef LOCORE_PLUGIN_NAMESPACE
constexpr char const* kSELECTIVE_SCAN_PLUGIN_NAMESPACE{LOCORE_PLUGIN_NAMESPACE};
#else
constexpr char const* kSELECTIVE_SCAN_PLUGIN_NAMESPACE{kSELECTIVE_SCAN_DEFAULT_PLUGIN_NAMESPACE};
#endif

//! The I/O contract of a plugin version: 2 = A, D and dt_bias are FP32 whatever x's dtype;
//! 1 = every input has x's dtype.
enum class SelectiveScanVersion : int32_t
{
    kV1 = 1,
    kV2 = 2,
};

//! "1" or "2".
char const* selectiveScanVersionString(SelectiveScanVersion version) noexcept;

//! Number of inputs without / with the optional gate z.
constexpr int32_t kSELECTIVE_SCAN_MIN_INPUTS{7};
constexpr int32_t kSELECTIVE_SCAN_MAX_INPUTS{8};
//! Largest state size N the CUDA kernel supports (= kScanMaxDState of selectiveScanKernel.h); a
//! larger N is refused by configurePlugin(), when the engine is built.
constexpr int64_t kSELECTIVE_SCAN_MAX_STATE{256};

//! The attributes of one SelectiveScan node (plugin fields), already validated.
struct SelectiveScanAttributes
{
    int32_t variant{0};    //!< LocoreScanVariant: 0 = mamba2, 1 = mamba1
    int32_t dtSoftplus{0}; //!< 0 or 1
    int32_t reverse{0};    //!< 0 or 1
    int32_t chunkSize{64}; //!< hint, > 0
};

//!
//! \brief The name, version and namespace above, for each interface that reports them: the
//! plugin's core capability (IPluginV3OneCore) and its creator (IPluginCreatorV3One).
//!
template <typename Interface>
class SelectiveScanIdentity : public Interface
{
public:
    explicit SelectiveScanIdentity(SelectiveScanVersion version) noexcept
        : mVersion(version)
    {
    }
    char const* getPluginName() const noexcept override
    {
        return kSELECTIVE_SCAN_PLUGIN_NAME;
    }
    char const* getPluginVersion() const noexcept override
    {
        return selectiveScanVersionString(mVersion);
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kSELECTIVE_SCAN_PLUGIN_NAMESPACE;
    }
    SelectiveScanVersion version() const noexcept
    {
        return mVersion;
    }

private:
    SelectiveScanVersion mVersion;
};

//!
//! \brief The SelectiveScan plugin object: one class for the core, build and runtime capabilities.
//!
class SelectiveScanPlugin : public nvinfer1::IPluginV3,
                            public SelectiveScanIdentity<nvinfer1::IPluginV3OneCore>,
                            public nvinfer1::IPluginV3OneBuild,
                            public nvinfer1::IPluginV3OneRuntime
{
public:
    SelectiveScanPlugin(SelectiveScanAttributes const& attributes, SelectiveScanVersion version);
    SelectiveScanPlugin(SelectiveScanPlugin const& other);
    SelectiveScanPlugin& operator=(SelectiveScanPlugin const&) = delete;
    ~SelectiveScanPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore: name, version and namespace from SelectiveScanIdentity

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
        int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getMetadataString() noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    SelectiveScanAttributes const& attributes() const noexcept
    {
        return mAttributes;
    }

private:
    SelectiveScanAttributes mAttributes;
    //! Number of inputs (7 or 8) seen by the last configurePlugin()/onShapeChange(); enqueue() has no count.
    int32_t mNbInputs{0};
    std::string mMetadata;
    std::vector<nvinfer1::PluginField> mFieldsToSerialize;
    nvinfer1::PluginFieldCollection mCollectionToSerialize{};
};

//!
//! \brief Creator of SelectiveScan plugins, for the build phase (fields from the ONNX node or the
//! application) and the runtime phase (fields from getFieldsToSerialize()).
//!
class SelectiveScanPluginCreator : public SelectiveScanIdentity<nvinfer1::IPluginCreatorV3One>
{
public:
    explicit SelectiveScanPluginCreator(SelectiveScanVersion version = SelectiveScanVersion::kV2);
    ~SelectiveScanPluginCreator() override = default;

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

//!
//! \brief The creator of version "1" (every input in x's dtype), default-constructible for
//! REGISTER_TENSORRT_PLUGIN; getCreators() returns both versions.
//!
class SelectiveScanPluginCreatorV1 : public SelectiveScanPluginCreator
{
public:
    SelectiveScanPluginCreatorV1()
        : SelectiveScanPluginCreator(SelectiveScanVersion::kV1)
    {
    }
};

//!
//! \brief Parse plugin fields into validated attributes.
//!
//! Known fields: `variant` (kCHAR "mamba2"/"mamba1", or an integer 0/1), `dt_softplus`, `reverse`
//! (integers 0/1), `chunk_size` (integer > 0). `plugin_version` (must be `version`'s string when
//! present) and `plugin_namespace` (the ONNX node's routing attributes) are accepted and checked;
//! other fields are ignored with a warning. Absent fields keep their defaults. Returns false and
//! sets `error` on an invalid value.
//!
bool parseSelectiveScanFields(nvinfer1::PluginFieldCollection const* fc, SelectiveScanAttributes& attributes,
    std::string& error, SelectiveScanVersion version = SelectiveScanVersion::kV2);

} // namespace plugin
} // namespace locore

#endif // LOCORE_SELECTIVE_SCAN_PLUGIN_H
