// The local features of indexed images (segments/seg-NNNNNN.h5, the AMES row layout), read for
// the shortlist of each searched frame: with the runtime's HDF5 reader (locore::Hdf5FeatureFile,
// LOCORE_RUNTIME_HAS_HDF5) when the library has it, else with OpenCV's hdf module when this
// OpenCV has one; otherwise not at all (available() says why).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "image_index.hpp"
#include "locore/features.hpp"

namespace camera_app
{

class GalleryFeatures
{
public:
    explicit GalleryFeatures(const ImageIndex& index);
    ~GalleryFeatures();
    GalleryFeatures(const GalleryFeatures&) = delete;
    GalleryFeatures& operator=(const GalleryFeatures&) = delete;

    // Whether this build can read .h5 segments; `why` says what reads them, or why nothing does.
    static bool available(std::string* why = nullptr);

    // The first `num_desc` rows of indexed image `id` (global descriptor attached).
    locore::LocalFeatures read(std::size_t id, int num_desc);

private:
    struct File;
    const ImageIndex& index_;
    std::map<std::string, std::unique_ptr<File>> files_;
};

} // namespace camera_app
