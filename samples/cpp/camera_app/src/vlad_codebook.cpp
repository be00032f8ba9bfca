#include "vlad_codebook.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>

#include "npy_file.hpp"
#include "sift_features.hpp"

namespace camera_app
{

void l2_normalize(float* v, std::size_t n)
{
    std::vector<float> sq(n);
    for (std::size_t i = 0; i < n; ++i)
        sq[i] = v[i] * v[i];
    const float norm = std::sqrt(numpy_sum(sq.data(), n));
    if (norm > 0.0f)
    {
        const float div = std::max(norm, 1e-12f);
        for (std::size_t i = 0; i < n; ++i)
            v[i] /= div;
    }
    else
    {
        for (std::size_t i = 0; i < n; ++i)
            v[i] = 0.0f;
    }
}

VladCodebook VladCodebook::load(const std::string& path)
{
    const auto arrays = read_npz(path);
    const auto format = arrays.find("format");
    if (format == arrays.end())
        throw std::runtime_error(path + " is not a locore codebook (no 'format' member); expected "
                                        "the codebook.npz of an index built by `locore index`");
    const auto centroids = arrays.find("centroids");
    if (centroids == arrays.end() || centroids->second.shape.size() != 2)
        throw std::runtime_error(path + ": expected 'centroids' [K, D] float32");
    VladCodebook book;
    const auto& c = centroids->second;
    const int k = static_cast<int>(c.shape[0]), d = static_cast<int>(c.shape[1]);
    book.centroids_ = cv::Mat(k, d, CV_32F);
    const auto values = c.to_float32(path + ": centroids");
    std::copy(values.begin(), values.end(), book.centroids_.ptr<float>());
    book.centroid_sq_.resize(k);
    std::vector<float> sq(d);
    for (int i = 0; i < k; ++i)
    {
        const float* row = book.centroids_.ptr<float>(i);
        for (int j = 0; j < d; ++j)
            sq[j] = row[j] * row[j];
        book.centroid_sq_[i] = numpy_sum(sq.data(), d);
    }
    const auto mean = arrays.find("pca_mean"), proj = arrays.find("pca_proj");
    if ((mean == arrays.end()) != (proj == arrays.end()))
        throw std::runtime_error(path + ": pca_mean and pca_proj must be given together");
    if (mean != arrays.end())
    {
        const auto& p = proj->second;
        if (p.shape.size() != 2 || p.shape[0] != static_cast<std::int64_t>(k) * d ||
            mean->second.size() != p.shape[0])
            throw std::runtime_error(path + ": PCA must map " + std::to_string(k * d) +
                                     "-d VLAD vectors");
        const auto m = mean->second.to_float32(path + ": pca_mean");
        const auto pv = p.to_float32(path + ": pca_proj");
        book.pca_mean_ = cv::Mat(1, k * d, CV_32F);
        std::copy(m.begin(), m.end(), book.pca_mean_.ptr<float>());
        book.pca_proj_ =
            cv::Mat(static_cast<int>(p.shape[0]), static_cast<int>(p.shape[1]), CV_32F);
        std::copy(pv.begin(), pv.end(), book.pca_proj_.ptr<float>());
    }
    return book;
}

int VladCodebook::output_dim() const
{
    return pca_proj_.empty() ? num_words() * desc_dim() : pca_proj_.cols;
}

std::vector<float> VladCodebook::encode(const cv::Mat& descriptors) const
{
    const int k = num_words(), d = desc_dim();
    if (descriptors.type() != CV_32F || (descriptors.rows > 0 && descriptors.cols != d))
        throw std::invalid_argument("descriptors must be [N, " + std::to_string(d) +
                                    "] float32 to match the codebook");
    std::vector<float> out(static_cast<std::size_t>(k) * d, 0.0f);
    if (descriptors.rows == 0)
        return std::vector<float>(output_dim(), 0.0f);
    std::vector<float> sq(d);
    for (int r = 0; r < descriptors.rows; ++r)
    {
        const float* x = descriptors.ptr<float>(r);
        for (int j = 0; j < d; ++j)
            sq[j] = x[j] * x[j];
        const float x_sq = numpy_sum(sq.data(), d);
        // Nearest word by |x|^2 - 2 x.c + |c|^2 (clipped at 0), first index on ties (argmin).
        int best = 0;
        float best_dist = std::numeric_limits<float>::infinity();
        for (int c = 0; c < k; ++c)
        {
            const float* w = centroids_.ptr<float>(c);
            double dot = 0.0;
            for (int j = 0; j < d; ++j)
                dot += static_cast<double>(x[j]) * w[j];
            const float dist =
                std::max(x_sq - 2.0f * static_cast<float>(dot) + centroid_sq_[c], 0.0f);
            if (dist < best_dist)
                best_dist = dist, best = c;
        }
        const float* w = centroids_.ptr<float>(best);
        float* acc = &out[static_cast<std::size_t>(best) * d];
        for (int j = 0; j < d; ++j)
            acc[j] += x[j] - w[j];
    }
    for (auto& v : out)
        v = (v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f)) * std::sqrt(std::fabs(v));
    for (int c = 0; c < k; ++c)
        l2_normalize(&out[static_cast<std::size_t>(c) * d], d);
    l2_normalize(out.data(), out.size());
    if (pca_proj_.empty())
        return out;
    bool any = false;
    for (float v : out)
        any = any || v != 0.0f;
    if (!any)
        return std::vector<float>(output_dim(), 0.0f);
    std::vector<float> proj(output_dim(), 0.0f);
    const float* mean = pca_mean_.ptr<float>();
    for (int i = 0; i < pca_proj_.rows; ++i)
    {
        const float centered = out[i] - mean[i];
        const float* row = pca_proj_.ptr<float>(i);
        for (int j = 0; j < pca_proj_.cols; ++j)
            proj[j] += centered * row[j];
    }
    l2_normalize(proj.data(), proj.size());
    return proj;
}

} // namespace camera_app
