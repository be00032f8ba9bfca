// The VLAD codebook of an index (codebook.npz, written by runtime/global_descriptors.py
// Codebook.save) and the VLAD global descriptor, computed as Codebook.encode computes it.
#pragma once

#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace camera_app
{

class VladCodebook
{
public:
    // Reads centroids [K, D] and, when present, pca_mean [K*D] and pca_proj [K*D, Dg].
    static VladCodebook load(const std::string& path);

    int num_words() const { return centroids_.rows; }
    int desc_dim() const { return centroids_.cols; }
    int output_dim() const;

    // VLAD of one image's descriptors [N, D] float32: residual sums per nearest word, signed
    // square root, per-word L2, global L2 (then PCA-whitening + L2 when the codebook has one).
    // All zeros for N = 0. Returns [output_dim] float32.
    std::vector<float> encode(const cv::Mat& descriptors) const;

private:
    cv::Mat centroids_; // [K, D] float32
    std::vector<float> centroid_sq_;
    cv::Mat pca_mean_; // [1, K*D] or empty
    cv::Mat pca_proj_; // [K*D, Dg] or empty
};

// L2-normalise n float32 values in place (numpy's summation order); all-zero stays zero.
void l2_normalize(float* values, std::size_t n);

} // namespace camera_app
