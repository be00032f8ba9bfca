// locore::Hdf5FeatureFile: AMES/LOCORE feature files through the HDF5 C library (1.10+).
#include "locore/hdf5_features.hpp"

#include "locore/errors.hpp"

#include <hdf5.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

namespace locore
{

namespace
{

char const* const kFileLayout =
    "an HDF5 file with dataset 'features' [N, T, 5 + D] float32 (columns: xy, scale id, mask 0 = "
    "valid / 1 = padding, detector weight, descriptor)";

//! Silences HDF5's automatic error-stack printing while alive and restores the previous handler
//! (the application's choice stays in force outside the reader's calls).
class QuietHdf5Errors
{
public:
    QuietHdf5Errors()
    {
        saved_ = H5Eget_auto2(H5E_DEFAULT, &func_, &data_) >= 0;
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    }
    ~QuietHdf5Errors()
    {
        if (saved_)
        {
            H5Eset_auto2(H5E_DEFAULT, func_, data_);
        }
    }
    QuietHdf5Errors(QuietHdf5Errors const&) = delete;
    QuietHdf5Errors& operator=(QuietHdf5Errors const&) = delete;

private:
    H5E_auto2_t func_ = nullptr;
    void* data_ = nullptr;
    bool saved_ = false;
};

//! An HDF5 identifier closed by `close` on destruction.
class Handle
{
public:
    using Closer = herr_t (*)(hid_t);
    Handle() = default;
    Handle(hid_t id, Closer close) : id_(id), close_(close) {}
    ~Handle() { reset(); }
    Handle(Handle&& other) noexcept
        : id_(std::exchange(other.id_, H5I_INVALID_HID)), close_(other.close_)
    {
    }
    Handle& operator=(Handle&& other) noexcept
    {
        if (this != &other)
        {
            reset();
            id_ = std::exchange(other.id_, H5I_INVALID_HID);
            close_ = other.close_;
        }
        return *this;
    }
    Handle(Handle const&) = delete;
    Handle& operator=(Handle const&) = delete;

    hid_t get() const { return id_; }
    bool valid() const { return id_ >= 0; }
    void reset()
    {
        if (id_ >= 0 && close_ != nullptr)
        {
            static_cast<void>(close_(id_));
        }
        id_ = H5I_INVALID_HID;
    }

private:
    hid_t id_ = H5I_INVALID_HID;
    Closer close_ = nullptr;
};

//! Names of the objects in the file's root group, for "it has [...]" messages (H5Gget_info and
//! H5Lget_name_by_idx: the same signatures in HDF5 1.10, 1.12 and 1.14).
std::string root_names(hid_t file)
{
    std::string out = "[";
    H5G_info_t info{};
    if (H5Gget_info(file, &info) >= 0)
    {
        for (hsize_t i = 0; i < info.nlinks; ++i)
        {
            ssize_t size = H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0,
                                              H5P_DEFAULT);
            if (size < 0)
            {
                continue;
            }
            std::string name(static_cast<std::size_t>(size) + 1, '\0');
            H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(),
                               H5P_DEFAULT);
            name.resize(static_cast<std::size_t>(size));
            out += (i ? ", '" : "'") + name + "'";
        }
    }
    return out + "]";
}

std::string shape_text(std::vector<hsize_t> const& dims)
{
    std::string out = "[";
    for (std::size_t i = 0; i < dims.size(); ++i)
    {
        out += (i ? ", " : "") + std::to_string(dims[i]);
    }
    return out + "]";
}

} // namespace

struct Hdf5FeatureFile::Impl
{
    std::string path;
    std::string dataset_name;
    Handle file;
    Handle dataset;
    std::int64_t n = 0;
    std::int64_t t = 0;
    std::int64_t width = 0;

    std::string where() const { return path + ":" + dataset_name; }
};

Hdf5FeatureFile::Hdf5FeatureFile(std::string const& path, std::string const& dataset)
    : impl_(std::make_unique<Impl>())
{
    impl_->path = path;
    impl_->dataset_name = dataset;
    if (dataset.empty())
    {
        throw UsageError("dataset must be the name of an HDF5 dataset, got ''");
    }
    {
        std::ifstream probe(path, std::ios::binary);
        if (!probe)
        {
            throw std::runtime_error("feature file " + path + " cannot be opened (" +
                                     std::strerror(errno) + "); expected " + kFileLayout);
        }
    }
    QuietHdf5Errors quiet;
    htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
    if (is_hdf5 <= 0)
    {
        throw FeatureError(path + " is not an HDF5 file; expected " + std::string(kFileLayout) +
                           ". Is the file truncated or of another format?");
    }
    impl_->file = Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (!impl_->file.valid())
    {
        throw FeatureError(path + " is not a readable HDF5 file (H5Fopen failed); expected " +
                           std::string(kFileLayout));
    }
    htri_t exists = H5Lexists(impl_->file.get(), dataset.c_str(), H5P_DEFAULT);
    if (exists <= 0)
    {
        throw FeatureError(path + " has no dataset '" + dataset + "' (it has " +
                           root_names(impl_->file.get()) +
                           "); AMES/LOCORE feature files store [N, T, 5 + D] float32 in "
                           "'features'");
    }
    impl_->dataset = Handle(H5Dopen2(impl_->file.get(), dataset.c_str(), H5P_DEFAULT), H5Dclose);
    if (!impl_->dataset.valid())
    {
        throw FeatureError(impl_->where() + " is not a dataset (a group?); expected " +
                           std::string(kFileLayout));
    }
    Handle space(H5Dget_space(impl_->dataset.get()), H5Sclose);
    int rank = space.valid() ? H5Sget_simple_extent_ndims(space.get()) : -1;
    std::vector<hsize_t> dims(rank > 0 ? static_cast<std::size_t>(rank) : 0);
    if (rank > 0)
    {
        H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    }
    if (rank != 3 || dims[2] <= static_cast<hsize_t>(kAmesDescStart))
    {
        throw FeatureError(impl_->where() +
                           " must be [N, T, 5 + D] (xy, scale, mask, weight, descriptor), got "
                           "shape " +
                           shape_text(dims));
    }
    Handle type(H5Dget_type(impl_->dataset.get()), H5Tclose);
    H5T_class_t type_class = type.valid() ? H5Tget_class(type.get()) : H5T_NO_CLASS;
    if (type_class != H5T_FLOAT)
    {
        std::string got = type_class == H5T_INTEGER ? "integer data" : "non-float data";
        throw FeatureError(impl_->where() + " must hold float32 rows, got " + got +
                           "; integer rows would turn the descriptors into whole numbers (mostly "
                           "0). Rewrite the file with float32 rows");
    }
    impl_->n = static_cast<std::int64_t>(dims[0]);
    impl_->t = static_cast<std::int64_t>(dims[1]);
    impl_->width = static_cast<std::int64_t>(dims[2]);
}

Hdf5FeatureFile::~Hdf5FeatureFile() = default;
Hdf5FeatureFile::Hdf5FeatureFile(Hdf5FeatureFile&&) noexcept = default;
Hdf5FeatureFile& Hdf5FeatureFile::operator=(Hdf5FeatureFile&&) noexcept = default;

std::string const& Hdf5FeatureFile::path() const
{
    return impl_->path;
}
std::int64_t Hdf5FeatureFile::num_images() const
{
    return impl_->n;
}
std::int64_t Hdf5FeatureFile::num_rows() const
{
    return impl_->t;
}
std::int64_t Hdf5FeatureFile::desc_dim() const
{
    return impl_->width - kAmesDescStart;
}

std::vector<float> Hdf5FeatureFile::read_rows(std::int64_t index, std::int64_t num_rows) const
{
    if (index < 0 || index >= impl_->n)
    {
        throw UsageError("image index " + std::to_string(index) + " is outside [0, " +
                         std::to_string(impl_->n) + ") of " + impl_->path + " (" +
                         std::to_string(impl_->n) + " images)");
    }
    if (num_rows == 0)
    {
        throw UsageError("num_rows must be positive (or negative for all rows), got 0");
    }
    std::int64_t rows = num_rows < 0 ? impl_->t : std::min(num_rows, impl_->t);
    std::vector<float> out(static_cast<std::size_t>(rows * impl_->width));
    if (rows == 0)
    {
        return out;
    }
    QuietHdf5Errors quiet;
    Handle file_space(H5Dget_space(impl_->dataset.get()), H5Sclose);
    hsize_t start[3] = {static_cast<hsize_t>(index), 0, 0};
    hsize_t count[3] = {1, static_cast<hsize_t>(rows), static_cast<hsize_t>(impl_->width)};
    hsize_t mem_dims[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(impl_->width)};
    Handle mem_space(H5Screate_simple(2, mem_dims, nullptr), H5Sclose);
    if (!file_space.valid() || !mem_space.valid() ||
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr) < 0 ||
        H5Dread(impl_->dataset.get(), H5T_NATIVE_FLOAT, mem_space.get(), file_space.get(),
                H5P_DEFAULT, out.data()) < 0)
    {
        throw FeatureError(impl_->where() + ": could not read the rows of image " +
                           std::to_string(index) + "; the file is damaged or truncated. Expected " +
                           kFileLayout);
    }
    return out;
}

LocalFeatures Hdf5FeatureFile::read(std::int64_t index, std::int64_t num_rows) const
{
    std::vector<float> rows = read_rows(index, num_rows);
    std::int64_t count = static_cast<std::int64_t>(rows.size()) / impl_->width;
    return from_ames_rows(rows.data(), count, impl_->width,
                          impl_->path + " image " + std::to_string(index));
}

std::vector<LocalFeatures> Hdf5FeatureFile::read(std::vector<std::int64_t> const& indices,
                                                 std::int64_t num_rows) const
{
    std::vector<LocalFeatures> out;
    out.reserve(indices.size());
    for (std::int64_t index : indices)
    {
        out.push_back(read(index, num_rows));
    }
    return out;
}

} // namespace locore
