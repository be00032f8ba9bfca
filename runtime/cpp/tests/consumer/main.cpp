// A user's app on the installed locore C++ runtime: re-rank a shortlist of 300 images with
// sliding windows and a stand-in scorer (a real app uses locore::TrtScorer on an engine).
#include "locore/runtime.hpp"

#include <cstdio>
#include <vector>

// Stand-in for a model: more valid descriptors -> higher logit.
class CountingScorer : public locore::Scorer
{
public:
    std::vector<float> score(locore::PackedWindow const& window) override
    {
        locore::Tensor const& mask = window.input(locore::kGalleryMask); // [1, G, Nd]
        std::int64_t const nd = mask.shape[2];
        std::vector<float> logits(static_cast<std::size_t>(window.num_gallery), 0.0F);
        // (bool mask bytes: 0 or 1)
        for (std::size_t i = 0; i < mask.data.size(); ++i)
        {
            logits[i / static_cast<std::size_t>(nd)] += static_cast<float>(mask.data[i]);
        }
        return logits;
    }
};

int main()
{
    locore::LocoreConfig config; // 48 descriptors of 128 dims, 8 scales
    locore::Packer packer(config);
    std::vector<locore::LocalFeatures> database;
    for (int i = 0; i < 300; ++i)
    {
        locore::LocalFeatures f = locore::LocalFeatures::empty(48, 128);
        for (int r = 0; r < (i * 7) % 49; ++r)
        {
            f.mask[static_cast<std::size_t>(r)] = 1; // image i has (7 i mod 49) valid rows
        }
        database.push_back(f);
    }
    locore::LocalFeatures query = locore::LocalFeatures::empty(48, 128);
    query.mask[0] = 1;
    std::vector<std::int64_t> ids;
    std::vector<double> sims;
    for (int i = 0; i < 300; ++i)
    {
        ids.push_back(i);
        sims.push_back(1.0 - i / 300.0);
    }
    CountingScorer scorer;
    locore::RerankParams params; // LOCORE: window 100, top 400, stride 50, end-to-start
    locore::Reranker reranker(scorer, packer, params);
    locore::RerankResult const result = reranker.rerank(query, database, ids, sims);
    std::printf("locore %s: %lld scorer calls, best image %lld (fused score %.4f)\n",
                LOCORE_RUNTIME_VERSION, static_cast<long long>(reranker.calls()),
                static_cast<long long>(result.ids[0]), result.scores[0]);
    // 300 positions, window 100, stride 50: windows at 250, 200, 150, 100, 50, 0 minus the one at
    // 250 (it lies inside [200, 300)): 5 calls
    return reranker.calls() == 5 && result.ids.size() == 300 ? 0 : 1;
}
