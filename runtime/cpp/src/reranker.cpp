/*
 * Sliding-window re-ranking with a Scorer (see locore/reranker.hpp; Python:
 * locore.runtime.sliding_windows.Reranker).
 */
#include "locore/reranker.hpp"
#include "locore/errors.hpp"

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace locore
{

Reranker::Reranker(Scorer& scorer, Packer packer, RerankParams params)
    : scorer_(&scorer), packer_(std::move(packer)), params_(params)
{
    params_.validate();
    std::int64_t const limit = scorer.max_gallery();
    if (limit > 0 && params_.window > limit)
    {
        throw UsageError(
            "window " + std::to_string(params_.window) + " exceeds the " + std::to_string(limit) +
            " gallery images this engine takes per call; use window <= " + std::to_string(limit) +
            " or rebuild the engine with a larger optimization profile");
    }
}

std::vector<float> Reranker::score(LocalFeatures const& query,
                                   std::vector<LocalFeatures const*> const& gallery)
{
    PackedWindow const window = packer_.pack(query, gallery);
    std::vector<float> logits = scorer_->score(window);
    auto const ngal = static_cast<std::int64_t>(gallery.size());
    if (static_cast<std::int64_t>(logits.size()) != ngal)
    {
        throw std::runtime_error("the model returned " + std::to_string(logits.size()) +
                                 " scores for 1 query and " + std::to_string(ngal) +
                                 " gallery images; expected [1, " + std::to_string(ngal) + "]");
    }
    ++calls_;
    for (std::size_t i = 0; i < logits.size(); ++i)
    {
        if (window.gallery_has_valid[i] == 0)
        {
            logits[i] = 0.0F; // no evidence: local term sigmoid(0) = 0.5
        }
    }
    return logits;
}

RerankResult Reranker::rerank(LocalFeatures const& query,
                              std::vector<LocalFeatures const*> const& database,
                              std::vector<std::int64_t> const& ids, std::vector<double> const& sims,
                              std::string const& name)
{
    auto const num_db = static_cast<std::int64_t>(database.size());
    for (std::size_t i = 0; i < ids.size(); ++i)
    {
        std::int64_t const id = ids[i];
        if (id < 0 || id >= num_db)
        {
            std::string const hint =
                id == -1 ? "; -1 is the padding id of faiss shortlists: drop padded slots first "
                           "(locore.runtime.shortlist.Shortlist does)"
                         : "";
            throw UsageError(
                "image index " + std::to_string(id) + " is out of range for the database with " +
                std::to_string(num_db) + " images (the shortlist of " + name + " at position " +
                std::to_string(i) + "; valid ids are 0 to " + std::to_string(num_db - 1) + ")" +
                hint + "; do the ids belong to these features?");
        }
    }
    if (ids.size() != sims.size())
    {
        throw UsageError("ids and sims of " + name + " must both be [K], got [" +
                         std::to_string(ids.size()) + "] and [" + std::to_string(sims.size()) +
                         "]");
    }
    check_similarities(sims, name);
    // the query's first num_desc rows need a valid descriptor
    std::int64_t const nd = packer_.config().num_desc;
    query.validate("the query");
    auto const rows = static_cast<std::size_t>(std::min(query.num_rows, nd));
    if (std::none_of(query.mask.begin(), query.mask.begin() + static_cast<std::ptrdiff_t>(rows),
                     [](std::uint8_t v) { return v != 0; }))
    {
        throw PackingError(name +
                           " has no valid descriptor (every row is masked as padding), so there "
                           "is nothing to match its gallery against. Re-extract its features (an "
                           "image without keypoints cannot be re-ranked; keep its global ranking "
                           "instead)");
    }
    for (LocalFeatures const* f : database)
    {
        if (f == nullptr)
        {
            throw UsageError("the database holds a null pointer");
        }
    }
    std::vector<std::int64_t> positions(ids.size());
    std::iota(positions.begin(), positions.end(), std::int64_t{0});
    std::vector<LocalFeatures const*> gallery;
    auto score_fn = [&](std::vector<std::int64_t> const& window)
    {
        gallery.clear();
        for (std::int64_t const p : window)
        {
            gallery.push_back(database[static_cast<std::size_t>(ids[static_cast<std::size_t>(p)])]);
        }
        return score(query, gallery);
    };
    RerankResult result = sliding_window_rerank(positions, sims, score_fn, params_, name);
    for (std::int64_t& p : result.ids)
    {
        p = ids[static_cast<std::size_t>(p)];
    }
    return result;
}

RerankResult Reranker::rerank(LocalFeatures const& query,
                              std::vector<LocalFeatures> const& database,
                              std::vector<std::int64_t> const& ids, std::vector<double> const& sims,
                              std::string const& name)
{
    std::vector<LocalFeatures const*> pointers;
    pointers.reserve(database.size());
    for (LocalFeatures const& f : database)
    {
        pointers.push_back(&f);
    }
    return rerank(query, pointers, ids, sims, name);
}

} // namespace locore
