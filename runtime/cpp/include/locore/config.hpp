/*
 * The model's config and graph I/O contract, as the exporter records them.
 *
 * Mirrors locore/config.py: LocoreConfig (the model's hyper-parameters, JSON round trip that
 * refuses unknown keys), TensorSpec / GraphIO (names, shapes with dynamic dims by name,
 * dtypes) and graph_io(config), the contract of an exported re-ranker:
 *
 *   query_desc [batch, Nd, Dl] float    query_mask [batch, Nd] bool
 *   gallery_desc [batch, num_gallery, Nd, Dl] float    gallery_mask [batch, num_gallery, Nd] bool
 *   optional query_scale [batch, Nd] int64, gallery_scale [batch, num_gallery, Nd] int64,
 *   optional query_global [batch, Dg] float, gallery_global [batch, num_gallery, Dg] float
 *   -> scores [batch, num_gallery] float32
 *
 * Where the records come from (model_info.hpp): the ONNX metadata_props `locore.config` and
 * `locore.graph_io` (JSON strings), or the engine sidecar E.plan.json, which keeps them under
 * "metadata".
 */
#ifndef LOCORE_CONFIG_HPP
#define LOCORE_CONFIG_HPP

#include "locore/json.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace locore
{

// ---- graph I/O names (locore.config) ----------------------------------------------------------
inline constexpr char const* kQueryDesc = "query_desc";
inline constexpr char const* kQueryMask = "query_mask";
inline constexpr char const* kGalleryDesc = "gallery_desc";
inline constexpr char const* kGalleryMask = "gallery_mask";
inline constexpr char const* kQueryScale = "query_scale";
inline constexpr char const* kGalleryScale = "gallery_scale";
inline constexpr char const* kQueryGlobal = "query_global";
inline constexpr char const* kGalleryGlobal = "gallery_global";
inline constexpr char const* kScores = "scores";
inline constexpr char const* kTokenLogits = "token_logits";
inline constexpr char const* kBatchDim = "batch";
inline constexpr char const* kGalleryDim = "num_gallery";
inline constexpr char const* kSeqDim = "seq_len";

// ---- ONNX metadata_props keys (locore.config META_*) ------------------------------------------
inline constexpr char const* kMetaConfig = "locore.config";
inline constexpr char const* kMetaGraphIO = "locore.graph_io";
inline constexpr char const* kMetaFlavor = "locore.flavor";
inline constexpr char const* kMetaVersion = "locore.version";
inline constexpr char const* kMetaPrecision = "locore.precision";

//! One axis of a TensorSpec: a fixed size, or a dynamic dim by name ("batch", "num_gallery").
struct Dim
{
    std::int64_t size = -1; //!< the fixed size; -1 for a dynamic dim
    std::string name;       //!< the dynamic dim's name; empty for a fixed one

    bool is_dynamic() const { return !name.empty(); }
    static Dim fixed(std::int64_t size) { return Dim{size, {}}; }
    static Dim dynamic(std::string name) { return Dim{-1, std::move(name)}; }
    bool operator==(Dim const& other) const { return size == other.size && name == other.name; }
};

//! One graph input or output (locore.config.TensorSpec). `dtype` is a numpy dtype name or
//! "float", the engine's float dtype (float32 or float16).
struct TensorSpec
{
    std::string name;
    std::vector<Dim> shape;
    std::string dtype;
    std::string description;

    //! The inverse of to_json; ConfigError naming `where` on bad data (unknown keys, bad dims,
    //! a dtype outside locore.config.SPEC_DTYPES).
    static TensorSpec from_json(json::Value const& value,
                                std::string const& where = "a tensor spec");
    json::Value to_json() const;
    //! "[batch, 48, 128]".
    std::string shape_text() const;
};

//! The named, typed inputs and outputs of a graph, in graph order (locore.config.GraphIO).
struct GraphIO
{
    std::vector<TensorSpec> inputs;
    std::vector<TensorSpec> outputs;

    //! The input `name`, or nullptr.
    TensorSpec const* find_input(std::string const& name) const;
    //! The input `name`; ConfigError listing the inputs when absent.
    TensorSpec const& input(std::string const& name) const;
    TensorSpec const* find_output(std::string const& name) const;
    TensorSpec const& output(std::string const& name) const;

    //! {"inputs": [...], "outputs": [...]} (exactly these keys; distinct names).
    static GraphIO from_json(json::Value const& value);
    //! The `locore.graph_io` metadata string.
    static GraphIO parse(std::string const& text, std::string const& source = "locore.graph_io");
    json::Value to_json() const;
};

//! Hyper-parameters of a LOCORE-Mamba re-ranker (locore.config.LocoreConfig, same defaults).
//! The runtime reads desc_dim, num_desc, num_scales, use_global and global_dim; the others are
//! kept so that the JSON round-trips and validates as in Python.
struct LocoreConfig
{
    std::int64_t desc_dim = 128;
    std::int64_t num_desc = 48;
    std::int64_t num_scales = 8;
    bool use_global = false;
    std::int64_t global_dim = 0;
    std::int64_t d_model = 64;
    std::int64_t n_layers = 2;
    std::int64_t n_heads = 4;
    std::int64_t expand = 2;
    std::int64_t d_state = 16;
    std::int64_t n_groups = 1;
    std::int64_t chunk_size = 64;
    std::string aggregation = "mean";
    bool match_features = true;
    std::int64_t match_bins = 16;
    double dropout = 0.0;
    std::string name = "custom";
    json::Value extra = json::Value::object();

    //! ConfigError unless the values are valid (the checks of LocoreConfig.validate).
    void validate() const;
    //! A JSON object of config keys; unknown keys and wrong types are refused (ConfigError),
    //! missing keys take the defaults; the result is validated.
    static LocoreConfig from_json(json::Value const& value);
    //! The `locore.config` metadata string.
    static LocoreConfig parse(std::string const& text, std::string const& source = "locore.config");
    json::Value to_json() const;

    std::int64_t tokens_per_image() const { return num_desc + 2; }
    std::int64_t sequence_length(std::int64_t num_gallery) const
    {
        return (num_gallery + 1) * tokens_per_image();
    }
};

//! The I/O contract of an exported re-ranker for `config` (locore.config.graph_io).
GraphIO graph_io(LocoreConfig const& config, bool with_scales = true,
                 bool with_token_logits = false);

} // namespace locore

#endif // LOCORE_CONFIG_HPP
