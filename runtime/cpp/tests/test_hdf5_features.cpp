// The AMES HDF5 feature reader: files written here with the HDF5 C API (expected values written
// out by hand), every refusal, and a --dump mode for files written by Python.
//
//   locore_runtime_hdf5_tests                      the unit tests (ctest)
//   locore_runtime_hdf5_tests --dump FILE [ROWS]   every image of FILE as JSON on stdout
//                                                  (tests/test_cpp_hdf5.py compares it with
//                                                  locore.runtime.ames.FeatureFile.read)
#include "check.hpp"
#include "locore/errors.hpp"
#include "locore/hdf5_features.hpp"

#include <hdf5.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

namespace
{

using locore_test::check;
using locore_test::expect_throw;

//! Writes `data` (row-major, `dims`) as dataset `name` of a new file `path`, stored as
//! `file_type` (H5T_IEEE_F32LE, H5T_IEEE_F64LE, H5T_STD_I32LE) from memory type `mem_type`.
void write_dataset(std::string const& path, std::string const& name,
                   std::vector<hsize_t> const& dims, hid_t file_type, hid_t mem_type,
                   void const* data)
{
    hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    hid_t dset =
        H5Dcreate2(file, name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0 || space < 0 || dset < 0 ||
        H5Dwrite(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    {
        std::cerr << "could not write the test file " << path << '\n';
        std::exit(2);
    }
    H5Dclose(dset);
    H5Sclose(space);
    H5Fclose(file);
}

// Three images, four rows each, D = 3. Row r of image i (hand-chosen values):
//   xy = (0.1 * i, 0.01 * r), scale id = r, mask = 1 (padding) for r == 3 else 0,
//   weight = 1 - 0.25 * r, descriptor = (100 * i + 10 * r + 0, ... + 1, ... + 2).
constexpr int kN = 3, kT = 4, kD = 3, kW = 5 + kD;
std::vector<float> sample_rows()
{
    std::vector<float> rows(kN * kT * kW);
    for (int i = 0; i < kN; ++i)
    {
        for (int r = 0; r < kT; ++r)
        {
            float* row = &rows[(i * kT + r) * kW];
            row[0] = 0.1F * static_cast<float>(i);
            row[1] = 0.01F * static_cast<float>(r);
            row[2] = static_cast<float>(r);
            row[3] = r == 3 ? 1.0F : 0.0F;
            row[4] = 1.0F - 0.25F * static_cast<float>(r);
            for (int d = 0; d < kD; ++d)
            {
                row[5 + d] = static_cast<float>(100 * i + 10 * r + d);
            }
        }
    }
    return rows;
}

void test_reads()
{
    std::string path = "hdf5_test_features.h5";
    std::vector<float> rows = sample_rows();
    write_dataset(path, "features", {kN, kT, kW}, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rows.data());
    locore::Hdf5FeatureFile file(path);
    check(file.num_images() == 3 && file.num_rows() == 4 && file.desc_dim() == 3 &&
              file.row_width() == 8,
          "N, T, D of the file");
    locore::LocalFeatures f = file.read(1);
    check(f.num_rows == 4 && f.desc_dim == 3, "image 1: [4, 3]");
    check(f.descriptors[0] == 100.0F && f.descriptors[1] == 101.0F && f.descriptors[5] == 112.0F &&
              f.descriptors[8] == 122.0F,
          "image 1 descriptors are 100 + 10 r + d");
    check(f.mask == std::vector<std::uint8_t>{1, 1, 1, 0}, "mask: column 3 inverted (0 = valid)");
    check(f.scales == std::vector<std::int64_t>{0, 1, 2, 3}, "scale ids");
    check(f.weights == std::vector<float>{1.0F, 0.75F, 0.5F, 0.25F}, "weights");
    check(f.xy.size() == 8 && f.xy[0] == 0.1F && f.xy[1] == 0.0F && f.xy[3] == 0.01F,
          "xy of image 1");
    locore::LocalFeatures first2 = file.read(2, 2);
    check(first2.num_rows == 2 && first2.descriptors.size() == 6 &&
              first2.descriptors[0] == 200.0F && first2.descriptors[5] == 212.0F,
          "the first 2 rows of image 2 (a hyperslab)");
    check(file.read(0, 99).num_rows == 4, "num_rows beyond T reads T rows");
    std::vector<locore::LocalFeatures> batch = file.read(std::vector<std::int64_t>{2, 0, 2}, 1);
    check(batch.size() == 3 && batch[0].descriptors[0] == 200.0F &&
              batch[1].descriptors[0] == 0.0F && batch[2].descriptors[0] == 200.0F,
          "several images in the order asked, repeats allowed");
    std::vector<float> raw = file.read_rows(1, 1);
    check(raw.size() == 8 && raw[3] == 0.0F && raw[5] == 100.0F, "raw rows");

    expect_throw<locore::UsageError>([&] { file.read(3); },
                                     {"image index 3", "[0, 3)", "hdf5_test_features.h5"},
                                     "index past N");
    expect_throw<locore::UsageError>([&] { file.read(-1); }, {"image index -1"}, "negative index");
    expect_throw<locore::UsageError>([&] { file.read(0, 0); }, {"num_rows"}, "zero rows");

    // float64 data is read as float32, as Python's reader converts it
    std::string wide_path = "hdf5_test_float64.h5";
    std::vector<double> wide(rows.begin(), rows.end());
    write_dataset(wide_path, "features", {kN, kT, kW}, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE,
                  wide.data());
    check(locore::Hdf5FeatureFile(wide_path).read(2).descriptors[4] == 211.0F, "float64 rows");
    std::remove(wide_path.c_str());

    // a bad mask value names the file, the image and the row
    std::string bad_path = "hdf5_test_bad_mask.h5";
    rows[(1 * kT + 2) * kW + 3] = 0.5F;
    write_dataset(bad_path, "features", {kN, kT, kW}, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                  rows.data());
    locore::Hdf5FeatureFile bad(bad_path);
    check(bad.read(0).num_rows == 4, "other images still read");
    expect_throw<locore::FeatureError>([&] { bad.read(1); },
                                       {"hdf5_test_bad_mask.h5 image 1", "mask", "row 2"},
                                       "a mask value of 0.5");
    std::remove(bad_path.c_str());
    std::remove(path.c_str());
}

void test_refusals()
{
    std::string path = "hdf5_test_refusals.h5";
    expect_throw<std::runtime_error>([] { locore::Hdf5FeatureFile("no/such/features.h5"); },
                                     {"no/such/features.h5", "cannot be opened"}, "missing file");
    {
        std::ofstream out(path);
        out << "not an HDF5 file\n";
    }
    expect_throw<locore::FeatureError>([&] { locore::Hdf5FeatureFile{path}; },
                                       {path, "is not an HDF5 file", "'features' [N, T, 5 + D]"},
                                       "a text file");
    std::vector<float> rows = sample_rows();
    write_dataset(path, "desc", {kN, kT, kW}, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rows.data());
    expect_throw<locore::FeatureError>([&] { locore::Hdf5FeatureFile{path}; },
                                       {"has no dataset 'features'", "(it has ['desc'])"},
                                       "no features dataset");
    check(locore::Hdf5FeatureFile(path, "desc").num_images() == 3, "another dataset name");
    write_dataset(path, "features", {kN * kT, kW}, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, rows.data());
    expect_throw<locore::FeatureError>([&] { locore::Hdf5FeatureFile{path}; },
                                       {"must be [N, T, 5 + D]", "got shape [12, 8]"}, "rank 2");
    write_dataset(path, "features", {kN, kT * kW / 5, 5}, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                  rows.data());
    expect_throw<locore::FeatureError>([&] { locore::Hdf5FeatureFile{path}; },
                                       {"got shape [3, 6, 5]"}, "no descriptor columns");
    std::vector<int> ints(rows.size(), 0);
    write_dataset(path, "features", {kN, kT, kW}, H5T_STD_I32LE, H5T_NATIVE_INT, ints.data());
    expect_throw<locore::FeatureError>([&] { locore::Hdf5FeatureFile{path}; },
                                       {"must hold float32 rows, got integer data"},
                                       "integer rows");
    std::remove(path.c_str());
}

void print_floats(std::vector<float> const& values)
{
    std::cout << '[';
    for (std::size_t i = 0; i < values.size(); ++i)
    {
        char text[32];
        std::snprintf(text, sizeof(text), "%.9g", static_cast<double>(values[i]));
        std::cout << (i ? "," : "") << text;
    }
    std::cout << ']';
}

template <typename T> void print_ints(std::vector<T> const& values)
{
    std::cout << '[';
    for (std::size_t i = 0; i < values.size(); ++i)
    {
        std::cout << (i ? "," : "") << static_cast<long long>(values[i]);
    }
    std::cout << ']';
}

int dump(std::string const& path, std::int64_t num_rows)
{
    try
    {
        locore::Hdf5FeatureFile file(path);
        std::cout << "{\"num_images\":" << file.num_images() << ",\"num_rows\":" << file.num_rows()
                  << ",\"desc_dim\":" << file.desc_dim() << ",\"images\":[";
        for (std::int64_t i = 0; i < file.num_images(); ++i)
        {
            locore::LocalFeatures f = file.read(i, num_rows);
            std::cout << (i ? "," : "") << "{\"num_rows\":" << f.num_rows << ",\"descriptors\":";
            print_floats(f.descriptors);
            std::cout << ",\"scales\":";
            print_ints(f.scales);
            std::cout << ",\"mask\":";
            print_ints(f.mask);
            std::cout << ",\"xy\":";
            print_floats(f.xy);
            std::cout << ",\"weights\":";
            print_floats(f.weights);
            std::cout << '}';
        }
        std::cout << "]}\n";
        return 0;
    }
    catch (std::exception const& error)
    {
        std::cerr << error.what() << '\n';
        return 1;
    }
}

} // namespace

int main(int argc, char** argv)
{
    if (argc >= 3 && std::string(argv[1]) == "--dump")
    {
        return dump(argv[2], argc >= 4 ? std::stoll(argv[3]) : -1);
    }
    test_reads();
    test_refusals();
    if (locore_test::failures() != 0)
    {
        std::cerr << locore_test::failures() << " check(s) failed\n";
        return 1;
    }
    std::cout << "hdf5 feature reader tests: ok\n";
    return 0;
}
