#include "sift_features.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include <opencv2/imgproc.hpp>

namespace camera_app
{

SiftExtractor::SiftExtractor(const SiftSettings& settings) : settings_(settings)
{
    if (settings.num_desc < 1 || settings.num_scales < 1 || settings.max_side < 1 ||
        settings.max_keypoints < settings.num_desc)
        throw std::invalid_argument(
            "SIFT settings need num_desc, num_scales, max_side >= 1 and max_keypoints >= num_desc");
    // cv2.SIFT_create(nfeatures=0, contrastThreshold, edgeThreshold, sigma): 3 octave layers.
    sift_ = cv::SIFT::create(0, 3, settings.contrast_threshold, settings.edge_threshold,
                             settings.sigma);
}

cv::Mat SiftExtractor::work_image(const cv::Mat& image) const
{
    if (image.empty() || image.depth() != CV_8U)
        throw std::invalid_argument("an image must be a non-empty uint8 array");
    cv::Mat gray;
    if (image.channels() == 1)
        gray = image.clone();
    else if (image.channels() == 3)
        cv::cvtColor(image, gray, cv::COLOR_BGR2GRAY);
    else if (image.channels() == 4)
        cv::cvtColor(image, gray, cv::COLOR_BGRA2GRAY); // alpha ignored, as load_image drops it
    else
        throw std::invalid_argument("an image must have 1, 3 or 4 channels");
    const int h = gray.rows, w = gray.cols;
    const double scale = static_cast<double>(settings_.max_side) / std::max(h, w);
    if (scale < 1.0)
    {
        // Python's round(): half to even, which std::nearbyint does in the default FP mode.
        const int nw = std::max(1, static_cast<int>(std::nearbyint(w * scale)));
        const int nh = std::max(1, static_cast<int>(std::nearbyint(h * scale)));
        cv::Mat resized;
        cv::resize(gray, resized, cv::Size(nw, nh), 0, 0, cv::INTER_AREA);
        gray = resized;
    }
    return gray;
}

Keypoints SiftExtractor::detect(const cv::Mat& image)
{
    Keypoints out;
    out.image_size = image.size();
    const cv::Mat gray = work_image(image);
    out.work_size = gray.size();
    std::vector<cv::KeyPoint> kps;
    cv::Mat desc;
    if (std::min(gray.rows, gray.cols) >= 8)
        sift_->detectAndCompute(gray, cv::noArray(), kps, desc);
    if (kps.empty() || desc.empty())
    {
        out.xy = cv::Mat(0, 2, CV_32F);
        out.descriptors = cv::Mat(0, 128, CV_32F);
        out.sift = cv::Mat(0, 128, CV_32F);
        return out;
    }
    // Strongest first; ties by x, y, size, angle (np.lexsort, stable): thread-order independent.
    std::vector<int> order(kps.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b)
                     {
                         const cv::KeyPoint &p = kps[a], &q = kps[b];
                         if (p.response != q.response)
                             return p.response > q.response;
                         if (p.pt.x != q.pt.x)
                             return p.pt.x < q.pt.x;
                         if (p.pt.y != q.pt.y)
                             return p.pt.y < q.pt.y;
                         if (p.size != q.size)
                             return p.size < q.size;
                         return p.angle < q.angle;
                     });
    const int k = std::min<int>(static_cast<int>(order.size()), settings_.max_keypoints);
    cv::Mat raw(k, desc.cols, CV_32F);
    out.raw.resize(k);
    out.xy.create(k, 2, CV_32F);
    const float w = static_cast<float>(gray.cols), h = static_cast<float>(gray.rows);
    for (int i = 0; i < k; ++i)
    {
        out.raw[i] = kps[order[i]];
        desc.row(order[i]).convertTo(raw.row(i), CV_32F);
        out.xy.at<float>(i, 0) = std::clamp(out.raw[i].pt.x / w, 0.0f, 1.0f);
        out.xy.at<float>(i, 1) = std::clamp(out.raw[i].pt.y / h, 0.0f, 1.0f);
    }
    out.sift = raw;
    out.descriptors = root_sift(raw);
    return out;
}

std::vector<std::int64_t> SiftExtractor::scale_ids(const Keypoints& keypoints, int n) const
{
    n = std::min(n, keypoints.count());
    std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
    {
        const double size = std::max(static_cast<double>(keypoints.raw[i].size), 1e-6);
        const double id = std::floor(std::log2(size / kSiftBaseSize));
        ids[i] = static_cast<std::int64_t>(std::clamp(id, 0.0, settings_.num_scales - 1.0));
    }
    return ids;
}

float numpy_sum(const float* a, std::size_t n)
{
    if (n < 8)
    {
        float r = 0.0f;
        for (std::size_t i = 0; i < n; ++i)
            r += a[i];
        return r;
    }
    if (n <= 128)
    {
        float r[8];
        for (int j = 0; j < 8; ++j)
            r[j] = a[j];
        std::size_t i = 8;
        for (; i < n - n % 8; i += 8)
            for (int j = 0; j < 8; ++j)
                r[j] += a[i + j];
        float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; ++i)
            res += a[i];
        return res;
    }
    std::size_t n2 = n / 2;
    n2 -= n2 % 8;
    return numpy_sum(a, n2) + numpy_sum(a + n2, n - n2);
}

cv::Mat root_sift(const cv::Mat& descriptors, float eps)
{
    CV_Assert(descriptors.type() == CV_32F);
    cv::Mat out(descriptors.rows, descriptors.cols, CV_32F);
    const auto d = static_cast<std::size_t>(descriptors.cols);
    std::vector<float> tmp(d);
    for (int r = 0; r < descriptors.rows; ++r)
    {
        const float* src = descriptors.ptr<float>(r);
        float* dst = out.ptr<float>(r);
        for (std::size_t j = 0; j < d; ++j)
            tmp[j] = std::fabs(src[j]);
        const float l1 = numpy_sum(tmp.data(), d) + eps;
        for (std::size_t j = 0; j < d; ++j)
            dst[j] = std::sqrt(std::max(src[j] / l1, 0.0f));
        for (std::size_t j = 0; j < d; ++j)
            tmp[j] = dst[j] * dst[j];
        const float norm = std::max(std::sqrt(numpy_sum(tmp.data(), d)), eps);
        for (std::size_t j = 0; j < d; ++j)
            dst[j] /= norm;
    }
    return out;
}

} // namespace camera_app
