#include "image_index.hpp"

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <set>
#include <stdexcept>

#include "locore/json.hpp"
#include "npy_file.hpp"

namespace fs = std::filesystem;

namespace camera_app
{
namespace
{

std::string display_name(const std::string& key)
{
    const auto hash = key.find('#');
    const std::string path = key.substr(0, hash);
    std::string name = fs::path(path).filename().string();
    if (hash != std::string::npos)
        name += key.substr(hash);
    return name;
}

} // namespace

ImageIndex ImageIndex::open(const std::string& root)
{
    const fs::path dir(root);
    const fs::path manifest_path = dir / "manifest.json";
    if (!fs::is_regular_file(manifest_path))
    {
        if (fs::exists(dir))
            throw std::runtime_error(root +
                                     " is not a locore index (no manifest.json); build one with "
                                     "`locore index IMAGES_DIR --output " +
                                     root + "`");
        throw std::runtime_error("index folder " + root +
                                 " does not exist; build it with "
                                 "`locore index IMAGES_DIR --output " +
                                 root + "`");
    }
    const locore::json::Value manifest = locore::json::parse_file(manifest_path.string());
    if (!manifest.find("format") || manifest.at("format").as_string() != "locore-index")
        throw std::runtime_error(manifest_path.string() + " is not a locore index manifest "
                                                          "(format must be \"locore-index\")");
    if (manifest.at("version").as_int() != 1)
        throw std::runtime_error(
            manifest_path.string() + " has index version " +
            std::to_string(manifest.at("version").as_int()) +
            "; this sample reads version 1. Rebuild it with `locore index ... --rebuild`");
    ImageIndex index;
    index.root_ = root;
    const locore::json::Value& ex = manifest.at("extractor");
    if (ex.find("extractor") && ex.at("extractor").as_string() != "sift")
        throw std::runtime_error(manifest_path.string() + ": extractor " +
                                 ex.at("extractor").as_string() +
                                 "; this sample computes SIFT features only");
    if (ex.find("global_desc") && ex.at("global_desc").as_string() != "vlad")
        throw std::runtime_error(
            manifest_path.string() + ": global descriptor " + ex.at("global_desc").as_string() +
            "; this sample computes VLAD only (index with the default settings)");
    index.settings_.num_desc = static_cast<int>(ex.at("num_desc").as_int());
    index.settings_.num_scales = static_cast<int>(ex.at("num_scales").as_int());
    index.settings_.max_side = static_cast<int>(ex.at("max_side").as_int());
    index.settings_.max_keypoints = static_cast<int>(ex.at("max_keypoints").as_int());
    if (manifest.at("codebook").is_null())
        throw std::runtime_error(manifest_path.string() +
                                 " names no codebook; the index holds no images yet");
    index.codebook_ = VladCodebook::load((dir / manifest.at("codebook").as_string()).string());
    index.global_dim_ = static_cast<int>(manifest.at("global_dim").as_int());
    if (index.codebook_.output_dim() != index.global_dim_)
        throw std::runtime_error(manifest_path.string() + ": global_dim " +
                                 std::to_string(index.global_dim_) + " but the codebook gives " +
                                 std::to_string(index.codebook_.output_dim()) +
                                 "-d vectors; rebuild the index");
    const locore::json::Value& segments = manifest.at("segments");
    for (std::size_t s = 0; s < segments.size(); ++s)
    {
        const std::string name = segments.at(s).at("name").as_string();
        const auto count = segments.at(s).at("count").as_int();
        std::set<std::int64_t> dropped;
        for (std::size_t d = 0; d < segments.at(s).at("dropped").size(); ++d)
            dropped.insert(segments.at(s).at("dropped").at(d).as_int());
        const fs::path base = dir / "segments" / name;
        const std::string npy = base.string() + ".npy", js = base.string() + ".json";
        if (!fs::is_regular_file(npy) || !fs::is_regular_file(js))
            throw std::runtime_error("segment " + name + " of " + root + " is missing (" + npy +
                                     " / .json); rebuild the index");
        const NpyArray glob = read_npy(npy);
        if (glob.shape.size() != 2 || glob.shape[0] != count || glob.shape[1] != index.global_dim_)
            throw std::runtime_error(npy + " does not hold [" + std::to_string(count) + ", " +
                                     std::to_string(index.global_dim_) +
                                     "] global descriptors; rebuild the index");
        const auto vectors = glob.to_float32(npy);
        const locore::json::Value entries = locore::json::parse_file(js);
        if (static_cast<std::int64_t>(entries.at("images").size()) != count)
            throw std::runtime_error(js + " lists " + std::to_string(entries.at("images").size()) +
                                     " images, the manifest says " + std::to_string(count));
        for (std::int64_t r = 0; r < count; ++r)
        {
            if (dropped.count(r))
                continue;
            const locore::json::Value& e = entries.at("images").at(static_cast<std::size_t>(r));
            index.images_.push_back({e.at("key").as_string(), e.at("file").as_string(),
                                     display_name(e.at("key").as_string())});
            index.rows_.push_back({name, static_cast<int>(r)});
            const auto* v = vectors.data() + r * index.global_dim_;
            index.global_.insert(index.global_.end(), v, v + index.global_dim_);
        }
    }
    return index;
}

std::string ImageIndex::image_path(std::size_t id) const
{
    const fs::path file(images_.at(id).file);
    return file.is_absolute() ? file.string() : (fs::path(root_) / file).string();
}

std::string ImageIndex::segment_h5(const std::string& segment) const
{
    return (fs::path(root_) / "segments" / (segment + ".h5")).string();
}

std::vector<float> ImageIndex::global_vector(std::size_t id) const
{
    const auto* v = &global_.at(id * static_cast<std::size_t>(global_dim_));
    return std::vector<float>(v, v + global_dim_);
}

std::vector<Hit> ImageIndex::search(const std::vector<float>& query, int k) const
{
    if (static_cast<int>(query.size()) != global_dim_)
        throw std::invalid_argument("the query's global descriptor is " +
                                    std::to_string(query.size()) + "-d, the index holds " +
                                    std::to_string(global_dim_) + "-d descriptors");
    const std::size_t n = images_.size();
    std::vector<float> sims(n);
    for (std::size_t i = 0; i < n; ++i)
    {
        const float* row = &global_[i * global_dim_];
        double dot = 0.0;
        for (int j = 0; j < global_dim_; ++j)
            dot += static_cast<double>(query[j]) * row[j];
        sims[i] = static_cast<float>(dot);
    }
    std::vector<std::int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    const std::size_t top = std::min<std::size_t>(static_cast<std::size_t>(std::max(k, 0)), n);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::int64_t a, std::int64_t b) { return sims[a] > sims[b]; });
    std::vector<Hit> hits(top);
    for (std::size_t i = 0; i < top; ++i)
        hits[i] = {order[i], sims[order[i]]};
    return hits;
}

} // namespace camera_app
