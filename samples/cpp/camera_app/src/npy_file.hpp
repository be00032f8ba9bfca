// .npy arrays and the .npz archives numpy's np.savez writes (stored, not compressed).
//
// Only what the camera sample reads: little-endian float32 / float64 / int64 arrays in C order
// (an index's segments/seg-NNNNNN.npy global descriptors and its codebook.npz), and the .npy
// files its --dump-features mode writes for the tests.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace camera_app
{

// One array: dtype as numpy spells it ("<f4", "<f8", "<i8", "<U12", ...), shape, raw bytes.
struct NpyArray
{
    std::string dtype;
    std::vector<std::int64_t> shape;
    std::vector<unsigned char> bytes;

    std::int64_t size() const; // number of elements
    // The values as float32 (from <f4 or <f8); throws naming `what` for any other dtype.
    std::vector<float> to_float32(const std::string& what) const;
};

// Throw std::runtime_error naming the file and what was expected.
NpyArray read_npy(const std::string& path);
NpyArray parse_npy(const unsigned char* data, std::size_t size, const std::string& source);

// Members of an np.savez archive by name without ".npy" ("centroids", "pca_mean", ...).
// Compressed members (np.savez_compressed) are refused with a message that says so.
std::map<std::string, NpyArray> read_npz(const std::string& path);

void write_npy(const std::string& path, const float* data, const std::vector<std::int64_t>& shape);
void write_npy(const std::string& path, const std::int64_t* data,
               const std::vector<std::int64_t>& shape);

} // namespace camera_app
