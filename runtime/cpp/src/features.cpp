/*
 * LocalFeatures checks and the AMES row layout (see locore/features.hpp; Python:
 * locore.runtime.local_features and locore.runtime.ames.from_rows).
 */
#include "locore/features.hpp"
#include "locore/errors.hpp"

#include "format.hpp"

#include <cmath>

namespace locore
{

LocalFeatures LocalFeatures::empty(std::int64_t num_rows_, std::int64_t desc_dim_)
{
    if (num_rows_ < 0 || desc_dim_ < 1)
    {
        throw FeatureError("LocalFeatures::empty needs num_rows >= 0 and desc_dim >= 1, got " +
                           std::to_string(num_rows_) + " and " + std::to_string(desc_dim_));
    }
    LocalFeatures f;
    f.num_rows = num_rows_;
    f.desc_dim = desc_dim_;
    f.descriptors.assign(static_cast<std::size_t>(num_rows_ * desc_dim_), 0.0F);
    f.scales.assign(static_cast<std::size_t>(num_rows_), 0);
    f.mask.assign(static_cast<std::size_t>(num_rows_), 0);
    return f;
}

void LocalFeatures::validate(std::string const& what) const
{
    if (num_rows < 0 || desc_dim < 1)
    {
        throw FeatureError(what + ": num_rows must be >= 0 and desc_dim >= 1, got num_rows " +
                           std::to_string(num_rows) + ", desc_dim " + std::to_string(desc_dim));
    }
    auto const rows = static_cast<std::size_t>(num_rows);
    auto check =
        [&](char const* field, std::size_t size, std::size_t want, std::string const& shape)
    {
        if (size != want)
        {
            throw FeatureError(what + ": " + field + " must have " + std::to_string(want) +
                               " values (" + shape + "), got " + std::to_string(size));
        }
    };
    std::string const t = std::to_string(num_rows);
    check("descriptors", descriptors.size(), rows * static_cast<std::size_t>(desc_dim),
          "[" + t + ", " + std::to_string(desc_dim) + "]");
    check("scales", scales.size(), rows, "[" + t + "]");
    check("mask", mask.size(), rows, "[" + t + "]");
    if (!xy.empty())
    {
        check("xy", xy.size(), rows * 2, "[" + t + ", 2], or empty");
    }
    if (!weights.empty())
    {
        check("weights", weights.size(), rows, "[" + t + "], or empty");
    }
    for (std::size_t r = 0; r < rows; ++r)
    {
        if (mask[r] > 1)
        {
            throw FeatureError(what +
                               ": mask must hold only 0 (padding) and 1 (valid descriptor), "
                               "got " +
                               std::to_string(static_cast<int>(mask[r])) + " at row " +
                               std::to_string(r));
        }
    }
}

std::int64_t LocalFeatures::num_valid() const
{
    std::int64_t n = 0;
    for (std::uint8_t const m : mask)
    {
        n += m != 0 ? 1 : 0;
    }
    return n;
}

LocalFeatures from_ames_rows(float const* rows, std::int64_t num_rows, std::int64_t row_width,
                             std::string const& source)
{
    if (num_rows < 0 || row_width <= kAmesDescStart || (rows == nullptr && num_rows > 0))
    {
        throw FeatureError(source +
                           ": rows must be [..., T, 5 + D] (xy, scale, mask, weight, descriptor), "
                           "got shape [" +
                           std::to_string(num_rows) + ", " + std::to_string(row_width) + "]");
    }
    auto const n = static_cast<std::size_t>(num_rows);
    auto const width = static_cast<std::size_t>(row_width);
    auto const dim = width - static_cast<std::size_t>(kAmesDescStart);
    auto row = [&](std::size_t r) { return rows + r * width; };
    for (std::size_t r = 0; r < n; ++r)
    {
        float const m = row(r)[3];
        if (m != 0.0F && m != 1.0F)
        {
            throw FeatureError(source + ": column 3 (mask) must be 0 (valid) or 1 (padding), got " +
                               detail::py_g(m) + " at row " + std::to_string(r) +
                               "; is this an AMES/LOCORE feature file?");
        }
    }
    std::vector<float> scales(n);
    for (std::size_t r = 0; r < n; ++r)
    {
        float const raw = row(r)[2];
        scales[r] = std::nearbyint(std::isfinite(raw) ? raw : -1.0F);
    }
    for (std::size_t r = 0; r < n; ++r)
    {
        float const raw = row(r)[2];
        bool const valid = row(r)[3] == 0.0F;
        if (valid && (!std::isfinite(raw) || std::fabs(raw - scales[r]) > 1e-3F))
        {
            throw FeatureError(source + ": column 2 (scale id) must hold integers, got e.g. " +
                               detail::py_g(raw) + " at row " + std::to_string(r) +
                               "; is this an AMES/LOCORE feature file?");
        }
    }
    auto const max_id = static_cast<float>(kAmesMaxScaleId);
    for (std::size_t r = 0; r < n; ++r)
    {
        bool const valid = row(r)[3] == 0.0F;
        if (valid && (scales[r] < 0.0F || scales[r] >= max_id))
        {
            throw FeatureError(source + ": column 2 (scale id) must be in [0, " +
                               std::to_string(kAmesMaxScaleId) + "), got " +
                               detail::py_g(row(r)[2]) + " at row " + std::to_string(r));
        }
    }
    for (std::size_t r = 0; r < n; ++r)
    {
        if (row(r)[3] != 0.0F)
        {
            continue;
        }
        bool finite =
            std::isfinite(row(r)[0]) && std::isfinite(row(r)[1]) && std::isfinite(row(r)[4]);
        for (std::size_t c = 0; c < dim && finite; ++c)
        {
            finite = std::isfinite(row(r)[kAmesDescStart + static_cast<std::int64_t>(c)]);
        }
        if (!finite)
        {
            throw FeatureError(source +
                               ": a valid row holds NaN or infinite values (xy, weight or "
                               "descriptor) at row " +
                               std::to_string(r) +
                               "; the features are corrupt: re-extract them, or mark the row as "
                               "padding (column 3 = 1)");
        }
    }
    LocalFeatures f;
    f.num_rows = num_rows;
    f.desc_dim = static_cast<std::int64_t>(dim);
    f.descriptors.resize(n * dim);
    f.scales.resize(n);
    f.mask.resize(n);
    f.xy.resize(n * 2);
    f.weights.resize(n);
    for (std::size_t r = 0; r < n; ++r)
    {
        float const* src = row(r);
        bool const valid = src[3] == 0.0F;
        f.mask[r] = valid ? 1 : 0;
        bool const is_id = scales[r] >= 0.0F && scales[r] < max_id;
        f.scales[r] = (valid || is_id) ? static_cast<std::int64_t>(scales[r]) : 0;
        f.xy[2 * r] = src[0];
        f.xy[2 * r + 1] = src[1];
        f.weights[r] = src[4];
        for (std::size_t c = 0; c < dim; ++c)
        {
            f.descriptors[r * dim + c] = src[kAmesDescStart + static_cast<std::int64_t>(c)];
        }
    }
    return f;
}

} // namespace locore
