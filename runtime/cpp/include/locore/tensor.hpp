/*
 * Typed host tensors: what the packer produces and a Scorer consumes.
 *
 * Element types are the numpy dtype names of the graph I/O contract (locore.config.SPEC_DTYPES);
 * "float" in a TensorSpec stands for the engine's float dtype and is resolved to Float32 or
 * Float16 by the Packer. Data are row-major (C order) bytes, ready for a cudaMemcpy.
 */
#ifndef LOCORE_TENSOR_HPP
#define LOCORE_TENSOR_HPP

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace locore
{

enum class DType
{
    Float32,
    Float16,
    Float64,
    Bool, //!< one byte, 0 or 1 (numpy bool_, TensorRT kBOOL)
    Int64,
    Int32,
    Int8,
    UInt8
};

//! Bytes per element.
std::size_t dtype_size(DType dtype);
//! The numpy name: "float32", "float16", "float64", "bool", "int64", "int32", "int8", "uint8".
char const* dtype_name(DType dtype);
//! The inverse of dtype_name (ConfigError for any other name, including "float").
DType parse_dtype(std::string const& name);
//! Float32, Float16 or Float64.
bool is_float(DType dtype);

//! IEEE 754 binary16 bits of `value`, rounded to nearest even (numpy's float32 -> float16
//! astype: overflow gives +-inf, NaN stays NaN).
std::uint16_t float_to_half(float value);
//! The float32 value of binary16 bits (exact).
float half_to_float(std::uint16_t bits);

struct Tensor
{
    std::string name;
    DType dtype = DType::Float32;
    std::vector<std::int64_t> shape;
    std::vector<std::uint8_t> data; //!< numel() * dtype_size(dtype) bytes, row-major

    std::int64_t numel() const;
    std::size_t nbytes() const { return data.size(); }
    //! Element `index` as a double (any dtype; Float16 through half_to_float).
    double value(std::size_t index) const;
    //! Typed pointer to the data; std::logic_error unless sizeof(T) == dtype_size(dtype).
    template <typename T> T const* as() const
    {
        check_element_size(sizeof(T));
        return reinterpret_cast<T const*>(data.data());
    }
    template <typename T> T* as()
    {
        check_element_size(sizeof(T));
        return reinterpret_cast<T*>(data.data());
    }
    //! "name [1, 48, 128] float32", for messages.
    std::string describe() const;

private:
    void check_element_size(std::size_t size) const;
};

//! "[1, 48, 128]".
std::string format_shape(std::vector<std::int64_t> const& shape);

} // namespace locore

#endif // LOCORE_TENSOR_HPP
