/*
 * The local features of one image (Python: locore.runtime.local_features.LocalFeatures).
 *
 *   descriptors [T, D] float32   rows sorted by detector weight, best first
 *   scales      [T] int64        scale id in 0 .. num_scales - 1
 *   mask        [T] uint8        1 = valid descriptor, 0 = padding (only 0 and 1)
 *   xy          [T, 2] float32   optional (empty): keypoint x / width, y / height in [0, 1]
 *   weights     [T] float32      optional (empty): detector weight
 *   global_desc [Dg] float32     optional (empty): the image's global descriptor
 *
 * Unlike a Python batch, the images of a gallery may have different row counts T: the packer
 * truncates or pads each image to the model's Nd rows on its own.
 */
#ifndef LOCORE_FEATURES_HPP
#define LOCORE_FEATURES_HPP

#include <cstdint>
#include <string>
#include <vector>

namespace locore
{

struct LocalFeatures
{
    std::int64_t num_rows = 0; //!< T
    std::int64_t desc_dim = 0; //!< D
    std::vector<float> descriptors;
    std::vector<std::int64_t> scales;
    std::vector<std::uint8_t> mask;
    std::vector<float> xy;
    std::vector<float> weights;
    std::vector<float> global_desc;

    //! Zero descriptors, scale 0, every row padding (mask 0); xy and weights empty.
    static LocalFeatures empty(std::int64_t num_rows, std::int64_t desc_dim);

    //! FeatureError unless the vectors have the sizes above and the mask holds only 0 and 1
    //! (`what` names the record in the message).
    void validate(std::string const& what = "features") const;
    std::int64_t num_valid() const;
    bool has_global() const { return !global_desc.empty(); }
};

//! AMES/LOCORE file layout (runtime/ames.py): one row per descriptor, [T, 5 + D] float32,
//! columns 0:2 xy, 2 scale id (integer stored as float), 3 mask (0 = valid, 1 = padding),
//! 4 detector weight, 5: descriptor.
inline constexpr std::int64_t kAmesDescStart = 5;
inline constexpr std::int64_t kAmesMaxScaleId = std::int64_t{1} << 20;

//! One image's AMES rows `rows` [num_rows, row_width] float32 as LocalFeatures, with the checks
//! of locore.runtime.ames.from_rows (FeatureError naming `source` and the row): mask values
//! exactly 0 or 1, scale ids whole numbers (within 1e-3) in [0, 2^20) on valid rows, finite xy,
//! weight and descriptor on valid rows. Padding rows keep their scale id when it is one, else 0.
LocalFeatures from_ames_rows(float const* rows, std::int64_t num_rows, std::int64_t row_width,
                             std::string const& source = "features");

} // namespace locore

#endif // LOCORE_FEATURES_HPP
