#include "overlay.hpp"

#include <cstdio>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace camera_app
{

void outlined_text(cv::Mat& canvas, const std::string& text, cv::Point org, double scale,
                   cv::Scalar color)
{
    cv::putText(canvas, text, org, cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar(0, 0, 0), 3,
                cv::LINE_AA);
    cv::putText(canvas, text, org, cv::FONT_HERSHEY_SIMPLEX, scale, color, 1, cv::LINE_AA);
}

Overlay::Overlay(const ImageIndex& index, int top, int frame_height)
    : index_(index), top_(top), tile_(std::max(48, frame_height / std::max(1, top)))
{
}

const cv::Mat& Overlay::thumb(std::int64_t id) const
{
    auto it = thumbs_.find(id);
    if (it != thumbs_.end())
        return it->second;
    cv::Mat img = cv::imread(index_.image_path(static_cast<std::size_t>(id)), cv::IMREAD_COLOR);
    cv::Mat tile;
    if (img.empty())
        tile = cv::Mat(tile_, tile_, CV_8UC3, cv::Scalar(64, 64, 64)); // moved or deleted
    else
        cv::resize(img, tile, cv::Size(tile_, tile_), 0, 0, cv::INTER_AREA);
    return thumbs_.emplace(id, tile).first->second;
}

cv::Mat Overlay::draw(const cv::Mat& frame, const std::vector<RankedImage>& hits,
                      const std::vector<std::string>& lines) const
{
    const int h = frame.rows, w = frame.cols;
    cv::Mat canvas(h, w + tile_, CV_8UC3, cv::Scalar(0, 0, 0));
    cv::Mat bgr = frame;
    if (frame.channels() == 1)
        cv::cvtColor(frame, bgr, cv::COLOR_GRAY2BGR);
    if (frame.channels() == 4)
        cv::cvtColor(frame, bgr, cv::COLOR_BGRA2BGR);
    bgr.copyTo(canvas(cv::Rect(0, 0, w, h)));
    for (int k = 0; k < std::min<int>(top_, static_cast<int>(hits.size())); ++k)
    {
        const int y = k * tile_;
        if (y + tile_ > h)
            break;
        thumb(hits[k].id).copyTo(canvas(cv::Rect(w, y, tile_, tile_)));
        char label[64];
        std::snprintf(label, sizeof label, "#%d %.2f", k + 1, hits[k].score);
        outlined_text(canvas, label, cv::Point(w + 3, y + 16), 0.45, cv::Scalar(255, 255, 255));
    }
    for (std::size_t k = 0; k < lines.size(); ++k)
        outlined_text(canvas, lines[k], cv::Point(8, 20 + 20 * static_cast<int>(k)), 0.5,
                      cv::Scalar(80, 255, 80));
    return canvas;
}

} // namespace camera_app
