/*
 * Descriptor packing: local features -> the inputs of one model call
 * (Python: locore.runtime.packing.Packer; the same rules, checked against it by shared test
 * vectors).
 *
 * Each image contributes its first Nd = config.num_desc rows; images with fewer rows are padded
 * with zero descriptors, mask 0 and scale id 0, and masked rows are zeroed too. Descriptors take
 * the engine's float dtype (Float32, or Float16 rounded to nearest even) and must be finite in
 * it on valid rows; masks, scale ids and global vectors take the dtypes of the model's inputs
 * (bool, int64 and float in the contract). A query needs at least one valid descriptor; a
 * gallery image may have none (the Reranker then scores it as "no evidence", logit 0). Scale ids
 * of valid rows must lie in [0, num_scales) unless clip_scales is set (then every id is clamped).
 * Errors are locore::PackingError (a std::invalid_argument).
 */
#ifndef LOCORE_PACKING_HPP
#define LOCORE_PACKING_HPP

#include "locore/config.hpp"
#include "locore/features.hpp"
#include "locore/model_info.hpp"
#include "locore/tensor.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace locore
{

//! The inputs of one call: B queries, G gallery images each.
struct PackedWindow
{
    //! One tensor per model input, in the order of the packer's input specs:
    //! query_desc [B, Nd, Dl], query_mask [B, Nd], gallery_desc [B, G, Nd, Dl],
    //! gallery_mask [B, G, Nd], and when the model takes them query_scale [B, Nd],
    //! gallery_scale [B, G, Nd], query_global [B, Dg], gallery_global [B, G, Dg].
    std::vector<Tensor> inputs;
    std::int64_t batch = 0;       //!< B
    std::int64_t num_gallery = 0; //!< G
    //! [B * G]: 1 when the gallery image has at least one valid descriptor.
    std::vector<std::uint8_t> gallery_has_valid;

    Tensor const* find(std::string const& name) const;
    //! The input `name`; std::out_of_range listing the inputs when absent.
    Tensor const& input(std::string const& name) const;
};

class Packer
{
public:
    //! `input_specs`: the model's inputs (names and dtypes; "float" resolves to `float_dtype`,
    //! Float32 or Float16). They must contain query_desc, query_mask, gallery_desc and
    //! gallery_mask (PackingError otherwise); scale ids are packed when both scale inputs exist,
    //! global vectors when both global inputs exist.
    Packer(LocoreConfig config, std::vector<TensorSpec> input_specs,
           DType float_dtype = DType::Float32, bool clip_scales = false);
    //! graph_io(config) with scale inputs.
    explicit Packer(LocoreConfig config, DType float_dtype = DType::Float32,
                    bool clip_scales = false);
    //! The model's recorded graph I/O.
    explicit Packer(ModelInfo const& model, DType float_dtype = DType::Float32,
                    bool clip_scales = false);

    LocoreConfig const& config() const { return config_; }
    //! The input specs with every "float" resolved.
    std::vector<TensorSpec> const& input_specs() const { return specs_; }
    DType float_dtype() const { return float_dtype_; }
    DType input_dtype(std::string const& name) const;
    bool with_scales() const { return with_scales_; }
    bool with_global() const { return with_global_; }
    bool clip_scales() const { return clip_scales_; }

    //! One query (B = 1) and its gallery images (G = gallery.size(), G >= 0). The global
    //! vectors of models with use_global come from the records' global_desc.
    PackedWindow pack(LocalFeatures const& query,
                      std::vector<LocalFeatures const*> const& gallery) const;
    PackedWindow pack(LocalFeatures const& query, std::vector<LocalFeatures> const& gallery) const;
    //! B queries, each with G gallery images (every galleries[b] of the same size G).
    PackedWindow pack_batch(std::vector<LocalFeatures const*> const& queries,
                            std::vector<std::vector<LocalFeatures const*>> const& galleries) const;

private:
    PackedWindow pack_impl(std::vector<LocalFeatures const*> const& queries,
                           std::vector<std::vector<LocalFeatures const*>> const& galleries,
                           bool query_batch) const;

    LocoreConfig config_;
    std::vector<TensorSpec> specs_;
    DType float_dtype_;
    bool clip_scales_;
    bool with_scales_ = false;
    bool with_global_ = false;
};

} // namespace locore

#endif // LOCORE_PACKING_HPP
