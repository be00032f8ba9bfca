// After the shortlist: the query's features packed with the runtime's Packer, and, with a
// TensorRT engine, sliding-window re-ranking (locore::Reranker over locore::TrtScorer).
//
// Without TensorRT (a runtime built without it, or no --engine) the stage still packs the
// query and the first window of the shortlist (so the packing path runs on every searched
// frame) and returns the shortlist unchanged; note() says plainly that re-ranking needs
// TensorRT.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "app_options.hpp"
#include "gallery_features.hpp"
#include "image_index.hpp"
#include "locore/runtime.hpp"
#include "sift_features.hpp"

namespace camera_app
{

struct RankedImage
{
    std::int64_t id = 0;
    double score = 0.0; // fused score (re-ranked) or the global similarity (shortlist)
    float global_sim = 0.0f;
    int global_rank = 0; // 1-based rank in the shortlist
};

struct StageResult
{
    bool reranked = false;
    std::vector<RankedImage> ranking; // re-ranked list, or the shortlist
    double pack_ms = 0.0;
    double rerank_ms = 0.0;
    std::string packed; // packed inputs: "query_desc [1, 48, 128] float32, ..."
};

// The query's LocalFeatures as SiftExtractor.features_from_keypoints builds them: the
// num_desc strongest keypoints (padding rows: mask 0), scale ids, xy, weights, global vector.
locore::LocalFeatures query_features(const Keypoints& keypoints, const SiftExtractor& extractor,
                                     const std::vector<float>& global_desc);

// The re-ranking parameters of the app's flags (window 100, stride 50, end-to-start, the whole
// shortlist re-ranked, the fusion of --alpha / --temperature), as the Python camera app's.
locore::RerankParams rerank_params(const AppOptions& options);

class RerankStage
{
public:
    // From the app's flags: a locore::TrtScorer for --engine (runtimes with TensorRT), else
    // packing only, for --model's graph I/O or the contract's.
    RerankStage(const AppOptions& options, const ImageIndex& index);
    // With the application's own scorer (a remote service, a test double) for a model of
    // `config`; `name` names it in messages.
    RerankStage(const ImageIndex& index, std::unique_ptr<locore::Scorer> scorer,
                const locore::LocoreConfig& config, const locore::RerankParams& params,
                const std::string& name);
    ~RerankStage();
    RerankStage(const RerankStage&) = delete;
    RerankStage& operator=(const RerankStage&) = delete;

    bool reranks() const { return reranker_ != nullptr; }
    // Why re-ranking does not run (empty when it does), for stderr and the overlay.
    const std::string& note() const { return note_; }
    // One line about the scorer / packer in use, for the start-up message.
    const std::string& describe() const { return describe_; }

    StageResult run(const locore::LocalFeatures& query, const std::vector<Hit>& shortlist);

private:
    void start(std::unique_ptr<locore::Scorer> scorer, const locore::LocoreConfig& config,
               locore::DType float_dtype, const std::string& name);

    const ImageIndex& index_;
    GalleryFeatures gallery_;
    bool gallery_readable_ = false;
    std::string reader_; // what reads the .h5 segments, or why nothing can
    std::unique_ptr<locore::Scorer> scorer_;
    std::unique_ptr<locore::Packer> packer_;
    std::unique_ptr<locore::Reranker> reranker_;
    locore::RerankParams params_;
    std::string note_;
    std::string describe_;
};

} // namespace camera_app
