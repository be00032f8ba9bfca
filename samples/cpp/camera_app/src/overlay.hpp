// The overlay of samples/python/camera_rerank.py: the frame with the top-k gallery thumbnails
// (rank and score) in a column on its right, status lines in the top-left corner.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "image_index.hpp"
#include "rerank_stage.hpp"

namespace camera_app
{

class Overlay
{
public:
    Overlay(const ImageIndex& index, int top, int frame_height);
    cv::Mat draw(const cv::Mat& frame, const std::vector<RankedImage>& hits,
                 const std::vector<std::string>& lines) const;

private:
    const cv::Mat& thumb(std::int64_t id) const;
    const ImageIndex& index_;
    int top_;
    int tile_;
    mutable std::map<std::int64_t, cv::Mat> thumbs_;
};

// `text` in `color` with a black outline, readable on any background.
void outlined_text(cv::Mat& canvas, const std::string& text, cv::Point org, double scale,
                   cv::Scalar color);

} // namespace camera_app
