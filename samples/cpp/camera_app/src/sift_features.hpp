// SIFT + RootSIFT local features, computed exactly as the Python extractor computes them
// (runtime/sift.py, SiftExtractor): same detector parameters, same working image, same
// keypoint order and limits, same RootSIFT, same scale ids.
//
//   image [H, W, 3] uint8 BGR (or gray) -> gray -> resized (down only, INTER_AREA) so that the
//   long side is at most max_side, sizes rounded half-to-even as Python's round() does ->
//   cv::SIFT (nfeatures 0, 3 octave layers, contrast 0.04, edge 10, sigma 1.6) -> keypoints
//   sorted by response (descending), then x, y, size, angle (ascending) -> the first
//   max_keypoints -> RootSIFT (L1, sqrt, L2; float32 sums in numpy's pairwise order).
#pragma once

#include <cstdint>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/features2d.hpp>

namespace camera_app
{

// One number per setting of the index manifest's "extractor" block (ExtractorSettings).
struct SiftSettings
{
    int num_desc = 48;        // local descriptors kept per image (strongest first)
    int num_scales = 8;       // scale id = octave, clipped to 0 .. num_scales - 1
    int max_side = 512;       // long side of the working image (resized down only)
    int max_keypoints = 1000; // detections kept for the global descriptor
    double contrast_threshold = 0.04;
    double edge_threshold = 10.0;
    double sigma = 1.6;
};

// Every kept detection of one image, strongest first. K rows each.
struct Keypoints
{
    std::vector<cv::KeyPoint> raw; // OpenCV's keypoints (pixels of the working image)
    cv::Mat xy;                    // [K, 2] float32: x / width, y / height, in [0, 1]
    cv::Mat descriptors;           // [K, 128] float32 RootSIFT (L2 norm 1)
    cv::Mat sift;                  // [K, 128] float32 OpenCV's SIFT descriptors (before RootSIFT)
    cv::Size image_size;           // the input
    cv::Size work_size;            // the resized gray image SIFT ran on
    int count() const { return static_cast<int>(raw.size()); }
};

// Smallest SIFT keypoint diameter: scale id = floor(log2(size / kSiftBaseSize)), clipped.
constexpr double kSiftBaseSize = 1.6;

class SiftExtractor
{
public:
    explicit SiftExtractor(const SiftSettings& settings = SiftSettings());

    const SiftSettings& settings() const { return settings_; }
    // The gray working image of `image` (BGR, BGRA or gray uint8).
    cv::Mat work_image(const cv::Mat& image) const;
    Keypoints detect(const cv::Mat& image);
    // Scale ids of the first n keypoints: [n] int64 in 0 .. num_scales - 1.
    std::vector<std::int64_t> scale_ids(const Keypoints& keypoints, int n) const;

private:
    SiftSettings settings_;
    cv::Ptr<cv::SIFT> sift_;
};

// RootSIFT of raw SIFT descriptors [N, 128] float32, as runtime/sift.py root_sift().
cv::Mat root_sift(const cv::Mat& descriptors, float eps = 1e-7f);

// Sum of n float32 values in numpy's order (pairwise, 8 accumulators per 128-block), so that
// norms computed here equal numpy's bit for bit.
float numpy_sum(const float* values, std::size_t n);

} // namespace camera_app
