#include "rerank_stage.hpp"

#include <algorithm>
#include <chrono>
#include <sstream>

// The TensorRT branch is compiled when the runtime has locore::TrtScorer; CMake's
// CAMERA_APP_CHECK_TENSORRT_BRANCH compiles it (without linking) on machines without TensorRT.
#ifndef CAMERA_APP_TENSORRT
#define CAMERA_APP_TENSORRT LOCORE_RUNTIME_HAS_TENSORRT
#endif
#if CAMERA_APP_TENSORRT
#include "locore/trt_scorer.hpp"
#endif

namespace camera_app
{
namespace
{

double ms_since(std::chrono::steady_clock::time_point t0)
{
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string describe_window(const locore::PackedWindow& window)
{
    std::ostringstream out;
    for (std::size_t i = 0; i < window.inputs.size(); ++i)
    {
        const auto& t = window.inputs[i];
        out << (i ? ", " : "") << t.name << " [";
        for (std::size_t d = 0; d < t.shape.size(); ++d)
            out << (d ? ", " : "") << t.shape[d];
        out << "] " << locore::dtype_name(t.dtype);
    }
    return out.str();
}

void check_model(const locore::LocoreConfig& config, const ImageIndex& index,
                 const std::string& model)
{
    if (config.desc_dim != 128)
        throw std::runtime_error(
            model + " takes " + std::to_string(config.desc_dim) +
            "-d local descriptors, but the index " + index.root() +
            " holds 128-d SIFT descriptors; use a model trained on SIFT features");
    if (config.use_global && config.global_dim != index.global_dim())
        throw std::runtime_error(model + " takes " + std::to_string(config.global_dim) +
                                 "-d global descriptors, the index holds " +
                                 std::to_string(index.global_dim()) + "-d ones");
}

} // namespace

locore::LocalFeatures query_features(const Keypoints& keypoints, const SiftExtractor& extractor,
                                     const std::vector<float>& global_desc)
{
    const int nd = extractor.settings().num_desc;
    const int n = std::min(nd, keypoints.count());
    locore::LocalFeatures f = locore::LocalFeatures::empty(nd, 128);
    f.xy.assign(static_cast<std::size_t>(nd) * 2, 0.0f);
    f.weights.assign(static_cast<std::size_t>(nd), 0.0f);
    const auto scales = extractor.scale_ids(keypoints, n);
    for (int i = 0; i < n; ++i)
    {
        const float* d = keypoints.descriptors.ptr<float>(i);
        std::copy(d, d + 128, f.descriptors.begin() + static_cast<std::ptrdiff_t>(i) * 128);
        f.xy[2 * i] = keypoints.xy.at<float>(i, 0);
        f.xy[2 * i + 1] = keypoints.xy.at<float>(i, 1);
        f.weights[i] = keypoints.raw[i].response;
        f.scales[i] = scales[i];
        f.mask[i] = 1;
    }
    f.global_desc = global_desc;
    return f;
}

locore::RerankParams rerank_params(const AppOptions& options)
{
    locore::RerankParams params; // the Python camera app's: window 100, stride 50, end-to-start
    params.window = 100;
    params.stride = 50;
    params.topk = options.shortlist;
    params.alpha = options.alpha;
    params.temperature = options.temperature;
    params.order = locore::Order::EndToStart;
    params.validate();
    return params;
}

RerankStage::RerankStage(const AppOptions& options, const ImageIndex& index)
    : index_(index), gallery_(index), params_(rerank_params(options))
{
    gallery_readable_ = GalleryFeatures::available(&reader_);
#if CAMERA_APP_TENSORRT
    if (!options.engine.empty())
    {
        locore::TrtScorerOptions trt;
        trt.plugin_library = options.plugin;
        auto scorer = std::make_unique<locore::TrtScorer>(options.engine, trt);
        const locore::DType float_dtype = scorer->float_dtype();
        const locore::LocoreConfig config = scorer->model().config;
        start(std::move(scorer), config, float_dtype, "TensorRT engine " + options.engine);
        return;
    }
    note_ =
        "re-ranking needs a TensorRT engine: pass --engine model.plan (built by `locore build`); "
        "showing the global shortlist";
#else
    note_ = "re-ranking needs TensorRT: this locore_runtime was built without it "
            "(LOCORE_RUNTIME_HAS_TENSORRT 0)";
    if (!options.engine.empty())
        note_ += ", so --engine " + options.engine + " is not used";
    note_ += "; showing the global shortlist";
#endif
    // No scorer: pack what a scorer would get, for the model of --model or the contract of
    // an index-shaped model (128-d SIFT, the index's Nd and scale count).
    if (!options.model.empty())
    {
        const locore::ModelInfo model = locore::read_model_info(options.model);
        check_model(model.config, index, options.model);
        packer_ = std::make_unique<locore::Packer>(model, locore::DType::Float32, true);
    }
    else
    {
        locore::LocoreConfig config;
        config.desc_dim = 128;
        config.num_desc = index.settings().num_desc;
        config.num_scales = index.settings().num_scales;
        config.validate();
        packer_ = std::make_unique<locore::Packer>(config, locore::DType::Float32, true);
    }
    describe_ = "packing for " +
                (options.model.empty() ? std::string("the graph I/O contract") : options.model) +
                (gallery_readable_ ? " (gallery features via " + reader_ + ")"
                                   : " (query only: " + reader_ + ")");
}

RerankStage::RerankStage(const ImageIndex& index, std::unique_ptr<locore::Scorer> scorer,
                         const locore::LocoreConfig& config, const locore::RerankParams& params,
                         const std::string& name)
    : index_(index), gallery_(index), params_(params)
{
    params_.validate();
    gallery_readable_ = GalleryFeatures::available(&reader_);
    start(std::move(scorer), config, locore::DType::Float32, name);
}

void RerankStage::start(std::unique_ptr<locore::Scorer> scorer, const locore::LocoreConfig& config,
                        locore::DType float_dtype, const std::string& name)
{
    if (!gallery_readable_)
        throw std::runtime_error(
            "re-ranking needs the index's local features (.h5 segments), but " + reader_);
    check_model(config, index_, name);
    // A scorer without its own input specs takes the graph I/O contract, float32.
    std::vector<locore::TensorSpec> specs = scorer->input_specs();
    if (specs.empty())
        specs = locore::graph_io(config).inputs;
    packer_ = std::make_unique<locore::Packer>(config, specs, float_dtype, /*clip_scales=*/true);
    if (scorer->max_gallery() > 0 && params_.window > scorer->max_gallery())
    {
        params_.window = scorer->max_gallery(); // the engine's profile takes fewer per call
        params_.stride = std::max<std::int64_t>(1, std::min(params_.stride, params_.window / 2));
    }
    scorer_ = std::move(scorer);
    reranker_ = std::make_unique<locore::Reranker>(*scorer_, *packer_, params_);
    describe_ = "re-ranking with " + name + " (window " + std::to_string(params_.window) +
                ", stride " + std::to_string(params_.stride) + ", " +
                locore::order_name(params_.order) + "; gallery features via " + reader_ + ")";
}

RerankStage::~RerankStage() = default;

StageResult RerankStage::run(const locore::LocalFeatures& query, const std::vector<Hit>& shortlist)
{
    StageResult out;
    out.ranking.reserve(shortlist.size());
    for (std::size_t r = 0; r < shortlist.size(); ++r)
        out.ranking.push_back(
            {shortlist[r].id, shortlist[r].sim, shortlist[r].sim, static_cast<int>(r) + 1});
    if (shortlist.empty())
        return out;
    if (query.num_valid() == 0)
    { // a blank frame: nothing to pack or to re-rank with
        out.packed = "nothing (the frame has no SIFT keypoints)";
        return out;
    }
    const int nd = static_cast<int>(packer_->config().num_desc);
    std::vector<locore::LocalFeatures> gallery;
    const auto t0 = std::chrono::steady_clock::now();
    if (reranker_)
    {
        gallery.reserve(shortlist.size());
        std::vector<std::int64_t> positions(shortlist.size());
        std::vector<double> sims(shortlist.size());
        for (std::size_t r = 0; r < shortlist.size(); ++r)
        {
            gallery.push_back(gallery_.read(static_cast<std::size_t>(shortlist[r].id), nd));
            positions[r] = static_cast<std::int64_t>(r);
            sims[r] = shortlist[r].sim;
        }
        const locore::RerankResult result = reranker_->rerank(query, gallery, positions, sims);
        std::vector<RankedImage> ranked;
        for (std::size_t r = 0; r < result.ids.size(); ++r)
        {
            const auto pos = static_cast<std::size_t>(result.ids[r]);
            ranked.push_back({shortlist[pos].id, result.scores[r], shortlist[pos].sim,
                              static_cast<int>(pos) + 1});
        }
        out.ranking = std::move(ranked);
        out.reranked = true;
        out.rerank_ms = ms_since(t0);
        return out;
    }
    // Pack the query and the first window of the shortlist, as the first scorer call would.
    const std::size_t window =
        std::min<std::size_t>(shortlist.size(), static_cast<std::size_t>(params_.window));
    if (gallery_readable_)
        for (std::size_t r = 0; r < window; ++r)
            gallery.push_back(gallery_.read(static_cast<std::size_t>(shortlist[r].id), nd));
    const locore::PackedWindow packed = packer_->pack(query, gallery);
    out.pack_ms = ms_since(t0);
    out.packed = describe_window(packed);
    return out;
}

} // namespace camera_app
