/*
 * locore::Hdf5FeatureFile: AMES/LOCORE local-feature files read from C++ (Python twin:
 * locore.runtime.ames.FeatureFile).
 *
 * Compiled when the runtime is built with the HDF5 C library (LOCORE_RUNTIME_HAS_HDF5 in
 * locore/version.hpp; Debian/Ubuntu/JetPack: apt-get install libhdf5-dev). This header needs no
 * HDF5 header: HDF5 stays private to the library.
 *
 * Layout (docs/design.md section 8): dataset `features` [N, T, 5 + D] (float32; any HDF5 float
 * type is read as float32), one row per local feature, each image's rows sorted by detector
 * weight, best first:
 *   columns 0:2 xy in [0, 1], 2 scale id, 3 mask (0 = valid, 1 = padding), 4 detector weight,
 *   5: descriptor.
 * read() takes one image's first rows (a hyperslab: only those bytes are read) and turns them
 * into LocalFeatures with the checks of locore::from_ames_rows (mask values, integer scale ids,
 * finite values on valid rows).
 *
 * Errors say what was expected and what the file holds: std::runtime_error for a missing or
 * unreadable file, locore::FeatureError for a file of another layout (not HDF5, no `features`
 * dataset, wrong rank, integer data, bad rows), locore::UsageError for an image index outside
 * [0, N). HDF5's own error stack is not printed. Not thread-safe (nor is a default HDF5 build):
 * one reader per thread, or a lock around it.
 */
#ifndef LOCORE_HDF5_FEATURES_HPP
#define LOCORE_HDF5_FEATURES_HPP

#include "locore/features.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace locore
{

//! The dataset of AMES/LOCORE feature files (runtime/ames.py FEATURES_DATASET).
inline constexpr char const* kFeaturesDataset = "features";

class Hdf5FeatureFile
{
public:
    //! Opens `path` read-only and checks the dataset's layout ([N, T, 5 + D], a float type).
    explicit Hdf5FeatureFile(std::string const& path,
                             std::string const& dataset = kFeaturesDataset);
    ~Hdf5FeatureFile();
    Hdf5FeatureFile(Hdf5FeatureFile&&) noexcept;
    Hdf5FeatureFile& operator=(Hdf5FeatureFile&&) noexcept;
    Hdf5FeatureFile(Hdf5FeatureFile const&) = delete;
    Hdf5FeatureFile& operator=(Hdf5FeatureFile const&) = delete;

    std::string const& path() const;
    std::int64_t num_images() const; //!< N
    std::int64_t num_rows() const;   //!< T, rows stored per image
    std::int64_t desc_dim() const;   //!< D
    std::int64_t row_width() const { return kAmesDescStart + desc_dim(); }

    //! The raw rows [T', 5 + D] float32 (row-major) of image `index`, T' = min(num_rows, T);
    //! num_rows < 0 reads all T rows, 0 is a UsageError.
    std::vector<float> read_rows(std::int64_t index, std::int64_t num_rows = -1) const;

    //! Image `index` as LocalFeatures [T', ...] (xy and weights filled, no global descriptor).
    //! FeatureError names the file, the image and the row of a bad value.
    LocalFeatures read(std::int64_t index, std::int64_t num_rows = -1) const;

    //! Several images, in the order asked (repeats allowed).
    std::vector<LocalFeatures> read(std::vector<std::int64_t> const& indices,
                                    std::int64_t num_rows = -1) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace locore

#endif // LOCORE_HDF5_FEATURES_HPP
