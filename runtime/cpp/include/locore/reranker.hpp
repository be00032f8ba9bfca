/*
 * Sliding-window re-ranking with a Scorer (Python: locore.runtime.sliding_windows.Reranker).
 *
 *   locore::Reranker reranker(scorer, locore::Packer(model), params);
 *   locore::RerankResult r = reranker.rerank(query, database, shortlist_ids, shortlist_sims);
 *
 * Each window packs the query and the window's gallery images (Packer), calls the scorer once
 * and sets the logit of a gallery image without any valid descriptor to 0 ("no evidence": its
 * local term is sigmoid(0) = 0.5), as the Python Reranker does.
 */
#ifndef LOCORE_RERANKER_HPP
#define LOCORE_RERANKER_HPP

#include "locore/features.hpp"
#include "locore/packing.hpp"
#include "locore/scorer.hpp"
#include "locore/sliding_windows.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace locore
{

class Reranker
{
public:
    //! `scorer` must outlive the Reranker. UsageError when params are invalid or the window
    //! exceeds scorer.max_gallery().
    Reranker(Scorer& scorer, Packer packer, RerankParams params = RerankParams{});

    RerankParams const& params() const { return params_; }
    Packer const& packer() const { return packer_; }
    //! Scorer calls so far.
    std::int64_t calls() const { return calls_; }

    //! Logits [G] of the gallery images for one query (0 for images without valid descriptors).
    std::vector<float> score(LocalFeatures const& query,
                             std::vector<LocalFeatures const*> const& gallery);

    //! Re-rank one query's shortlist: `ids` [K0] index `database` (UsageError unless each lies in
    //! [0, database.size())), `sims` [K0] their finite global similarities. Returns a
    //! permutation of ids with each one's fused score (its global similarity beyond the top K).
    RerankResult rerank(LocalFeatures const& query,
                        std::vector<LocalFeatures const*> const& database,
                        std::vector<std::int64_t> const& ids, std::vector<double> const& sims,
                        std::string const& name = "the query");
    RerankResult rerank(LocalFeatures const& query, std::vector<LocalFeatures> const& database,
                        std::vector<std::int64_t> const& ids, std::vector<double> const& sims,
                        std::string const& name = "the query");

private:
    Scorer* scorer_;
    Packer packer_;
    RerankParams params_;
    std::int64_t calls_ = 0;
};

} // namespace locore

#endif // LOCORE_RERANKER_HPP
