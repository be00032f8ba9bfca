#include "gallery_features.hpp"

#include <stdexcept>

#include <opencv2/core.hpp>

#include "locore/version.hpp"

#if LOCORE_RUNTIME_HAS_HDF5
#include "locore/hdf5_features.hpp"
#elif defined(CAMERA_APP_WITH_OPENCV_HDF)
#include <opencv2/hdf.hpp>
#endif

namespace camera_app
{

#if LOCORE_RUNTIME_HAS_HDF5
struct GalleryFeatures::File
{
    explicit File(const std::string& path) : reader(path) {}
    locore::LocalFeatures read(int row, int num_desc) { return reader.read(row, num_desc); }
    locore::Hdf5FeatureFile reader;
};
#elif defined(CAMERA_APP_WITH_OPENCV_HDF)
struct GalleryFeatures::File
{
    explicit File(const std::string& path_) : path(path_), h5(cv::hdf::open(path_))
    {
        dims = h5->dsgetsize("features");
        if (dims.size() != 3 || dims[2] < 6)
            throw std::runtime_error(path + ": dataset 'features' must be [N, T, 5 + D] float32");
    }
    ~File() { h5->close(); }
    locore::LocalFeatures read(int row, int num_desc)
    {
        const int rows = num_desc > 0 ? std::min(num_desc, dims[1]) : dims[1];
        cv::Mat block;
        h5->dsread(block, "features", {row, 0, 0}, {1, rows, dims[2]});
        if (block.type() != CV_32F || !block.isContinuous())
            throw std::runtime_error(path + ": dataset 'features' is not float32");
        return locore::from_ames_rows(block.ptr<float>(), rows, dims[2],
                                      path + " image " + std::to_string(row));
    }
    std::string path;
    cv::Ptr<cv::hdf::HDF5> h5;
    std::vector<int> dims;
};
#else
struct GalleryFeatures::File
{
    explicit File(const std::string&) {}
    locore::LocalFeatures read(int, int) { return {}; }
};
#endif

GalleryFeatures::GalleryFeatures(const ImageIndex& index) : index_(index) {}
GalleryFeatures::~GalleryFeatures() = default;

bool GalleryFeatures::available(std::string* why)
{
#if LOCORE_RUNTIME_HAS_HDF5
    if (why)
        *why = "locore::Hdf5FeatureFile";
    return true;
#elif defined(CAMERA_APP_WITH_OPENCV_HDF)
    if (why)
        *why = "OpenCV's hdf module (the runtime was built without its HDF5 reader)";
    return true;
#else
    if (why)
        *why = "neither the runtime's HDF5 reader (build runtime/cpp with libhdf5-dev installed) "
               "nor OpenCV's hdf module is available";
    return false;
#endif
}

locore::LocalFeatures GalleryFeatures::read(std::size_t id, int num_desc)
{
    std::string why;
    if (!available(&why))
        throw std::runtime_error("cannot read the index's local features: " + why);
    const IndexRow& where = index_.row(id);
    auto& file = files_[where.segment];
    if (!file)
        file = std::make_unique<File>(index_.segment_h5(where.segment));
    locore::LocalFeatures features = file->read(where.row, num_desc);
    features.global_desc = index_.global_vector(id);
    return features;
}

} // namespace camera_app
