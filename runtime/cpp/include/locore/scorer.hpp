/*
 * The one interface between packing and a model: a Scorer turns a packed window into logits.
 *
 * Implementations: locore::TrtScorer (trt_scorer.hpp, built with LOCORE_WITH_TENSORRT), the
 * apps' own (a remote service, a test double). A Scorer is used from one thread at a time.
 */
#ifndef LOCORE_SCORER_HPP
#define LOCORE_SCORER_HPP

#include "locore/config.hpp"
#include "locore/packing.hpp"

#include <cstdint>
#include <vector>

namespace locore
{

class Scorer
{
public:
    virtual ~Scorer() = default;

    //! Logits [B * G] float32 (row-major [B, G], the model's `scores` output) of the packed
    //! window; std::runtime_error when the model fails.
    virtual std::vector<float> score(PackedWindow const& window) = 0;

    //! The inputs the scorer takes (names, shapes, dtypes with "float" resolved), so that a
    //! Packer produces exactly them; empty (the default) means "the model's recorded graph I/O
    //! with float32".
    virtual std::vector<TensorSpec> input_specs() const { return {}; }

    //! Most gallery images per call (the engine's profile); 0 (the default) means unlimited.
    virtual std::int64_t max_gallery() const { return 0; }
};

} // namespace locore

#endif // LOCORE_SCORER_HPP
