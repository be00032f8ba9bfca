// camera_app_rerank_check INDEX IMAGE SHORTLIST WINDOW STRIDE
//
// One query through the camera app's pipeline (SiftExtractor, VLAD, ImageIndex::search,
// query_features, RerankStage: gallery features from the .h5 segments, locore::Packer,
// locore::Reranker) with a stand-in scorer instead of a TensorRT engine, printing one JSON
// object: {"shortlist": [[id, sim], ...], "reranked": [[id, fused score], ...], "is_reranked":
// true}. tests/test_cpp_camera_app.py runs the Python Index.search with the same scorer in numpy
// and compares, which checks the re-ranking glue of the app where no TensorRT exists.
//
// The stand-in scorer ("best match"), from the packed window alone, in double:
//   logit(g) = 10 * mean over valid query rows i of max over valid rows j of g of <q_i, g_j>
//              + 2 * mean over valid rows j of g of scale_j
//              + 0.25 * mean over valid query rows i of scale_i
// (0 when g has no valid row; the Reranker then sets it to 0 anyway).
#include <cstdlib>
#include <iostream>
#include <memory>
#include <sstream>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "image_index.hpp"
#include "locore/runtime.hpp"
#include "rerank_stage.hpp"
#include "sift_features.hpp"

namespace
{

class BestMatchScorer : public locore::Scorer
{
public:
    std::vector<float> score(const locore::PackedWindow& window) override
    {
        const locore::Tensor& qd = window.input(locore::kQueryDesc);
        const locore::Tensor& qm = window.input(locore::kQueryMask);
        const locore::Tensor& gd = window.input(locore::kGalleryDesc);
        const locore::Tensor& gm = window.input(locore::kGalleryMask);
        const locore::Tensor& qs = window.input(locore::kQueryScale);
        const locore::Tensor& gs = window.input(locore::kGalleryScale);
        const std::int64_t nd = qd.shape[1], dl = qd.shape[2], g = gd.shape[1];
        const float* q = qd.as<float>();
        const float* gallery = gd.as<float>();
        std::vector<float> logits(static_cast<std::size_t>(g), 0.0f);
        for (std::int64_t k = 0; k < g; ++k)
        {
            double best_sum = 0.0, scale_sum = 0.0, query_scale_sum = 0.0;
            std::int64_t valid_q = 0, valid_g = 0;
            for (std::int64_t j = 0; j < nd; ++j)
                if (gm.value(static_cast<std::size_t>(k * nd + j)) != 0.0)
                {
                    ++valid_g;
                    scale_sum += gs.value(static_cast<std::size_t>(k * nd + j));
                }
            if (valid_g == 0)
                continue;
            for (std::int64_t i = 0; i < nd; ++i)
            {
                if (qm.value(static_cast<std::size_t>(i)) == 0.0)
                    continue;
                ++valid_q;
                query_scale_sum += qs.value(static_cast<std::size_t>(i));
                double best = -1e300;
                for (std::int64_t j = 0; j < nd; ++j)
                {
                    if (gm.value(static_cast<std::size_t>(k * nd + j)) == 0.0)
                        continue;
                    double dot = 0.0;
                    for (std::int64_t c = 0; c < dl; ++c)
                        dot += static_cast<double>(q[i * dl + c]) *
                               static_cast<double>(gallery[(k * nd + j) * dl + c]);
                    best = std::max(best, dot);
                }
                best_sum += best;
            }
            const double n_q = static_cast<double>(std::max<std::int64_t>(valid_q, 1));
            logits[static_cast<std::size_t>(k)] = static_cast<float>(
                10.0 * best_sum / n_q + 2.0 * scale_sum / valid_g + 0.25 * query_scale_sum / n_q);
        }
        return logits;
    }
};

} // namespace

int main(int argc, char** argv)
{
    if (argc != 6)
    {
        std::cerr << "usage: " << argv[0] << " INDEX IMAGE SHORTLIST WINDOW STRIDE\n";
        return 2;
    }
    try
    {
        using namespace camera_app;
        const ImageIndex index = ImageIndex::open(argv[1]);
        const cv::Mat image = cv::imread(argv[2], cv::IMREAD_COLOR);
        if (image.empty())
            throw std::runtime_error(std::string("cannot read ") + argv[2]);
        AppOptions options;
        options.shortlist = std::atoi(argv[3]);
        locore::RerankParams params = rerank_params(options);
        params.window = std::atoi(argv[4]);
        params.stride = std::atoi(argv[5]);
        locore::LocoreConfig config;
        config.num_desc = index.settings().num_desc;
        config.num_scales = index.settings().num_scales;
        RerankStage stage(index, std::make_unique<BestMatchScorer>(), config, params,
                          "the best-match stand-in scorer");

        SiftExtractor extractor(index.settings());
        const Keypoints kps = extractor.detect(image);
        const std::vector<float> global = index.codebook().encode(kps.descriptors);
        const std::vector<Hit> shortlist = index.search(global, options.shortlist);
        const StageResult result = stage.run(query_features(kps, extractor, global), shortlist);
        std::ostringstream out;
        out.precision(17);
        out << "{\"shortlist\": [";
        for (std::size_t r = 0; r < shortlist.size(); ++r)
            out << (r ? ", " : "") << "[" << shortlist[r].id << ", " << shortlist[r].sim << "]";
        out << "], \"reranked\": [";
        for (std::size_t r = 0; r < result.ranking.size(); ++r)
            out << (r ? ", " : "") << "[" << result.ranking[r].id << ", " << result.ranking[r].score
                << "]";
        out << "], \"is_reranked\": " << (result.reranked ? "true" : "false") << "}";
        std::cout << out.str() << "\n";
        return 0;
    }
    catch (const std::exception& e)
    {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
}
