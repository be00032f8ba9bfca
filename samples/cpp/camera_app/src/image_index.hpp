// An index folder written by `locore index` (runtime/search_index.py), opened read-only:
//
//   manifest.json              format "locore-index", version 1, extractor settings, codebook,
//                              segments [{name, count, dropped}] (the truth)
//   codebook.npz               the VLAD codebook
//   segments/seg-NNNNNN.npy    global descriptors [count, Dg] float32
//   segments/seg-NNNNNN.json   {"images": [{key, file, sha256, size, ...}]} (count entries)
//   segments/seg-NNNNNN.h5     local features (read by the re-ranking path only)
//
// Global ids are the live rows (not dropped) of the segments in manifest order, as the Python
// Index numbers them, so ids printed here are the ids `locore search` prints.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sift_features.hpp"
#include "vlad_codebook.hpp"

namespace camera_app
{

struct IndexImage
{
    std::string key;  // absolute path, or "video#frame=N"
    std::string file; // where to read it: absolute, or relative to the index folder
    std::string name; // short display name (file name, with "#frame=N" for video frames)
};

// Where global id i lives: segment file stem and row inside it.
struct IndexRow
{
    std::string segment;
    int row = 0;
};

struct Hit
{
    std::int64_t id = 0;
    float sim = 0.0f;
};

class ImageIndex
{
public:
    // Throws std::runtime_error with what was expected and what to do (build it with
    // `locore index ...`) for a missing folder, manifest, segment or codebook.
    static ImageIndex open(const std::string& root);

    const std::string& root() const { return root_; }
    std::size_t size() const { return images_.size(); }
    const SiftSettings& settings() const { return settings_; }
    const VladCodebook& codebook() const { return codebook_; }
    int global_dim() const { return global_dim_; }
    const IndexImage& image(std::size_t id) const { return images_.at(id); }
    const IndexRow& row(std::size_t id) const { return rows_.at(id); }
    std::string image_path(std::size_t id) const;
    std::string segment_h5(const std::string& segment) const;
    // The stored global descriptor of image `id`: [Dg] float32.
    std::vector<float> global_vector(std::size_t id) const;

    // Exact inner-product top k (k' = min(k, N)), best first; ties keep database order (a
    // stable sort, as runtime/shortlist.py search_shortlist).
    std::vector<Hit> search(const std::vector<float>& query, int k) const;

private:
    std::string root_;
    SiftSettings settings_;
    VladCodebook codebook_;
    int global_dim_ = 0;
    std::vector<IndexImage> images_;
    std::vector<IndexRow> rows_;
    std::vector<float> global_; // [N, Dg] row-major
};

} // namespace camera_app
