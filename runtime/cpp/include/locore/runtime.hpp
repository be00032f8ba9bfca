/*
 * The locore C++ runtime (C++17, standard library only): graph I/O and config from the ONNX
 * metadata or the engine sidecar, descriptor packing, sliding-window re-ranking with score
 * fusion, and the Scorer interface. CMake: find_package(locore_runtime) and link
 * locore::runtime. The TensorRT scorer (locore/trt_scorer.hpp) and the AMES HDF5 reader
 * (locore/hdf5_features.hpp) exist when the library was built with them
 * (LOCORE_RUNTIME_HAS_TENSORRT / LOCORE_RUNTIME_HAS_HDF5 in locore/version.hpp).
 */
#ifndef LOCORE_RUNTIME_HPP
#define LOCORE_RUNTIME_HPP

#include "locore/config.hpp"
#include "locore/errors.hpp"
#include "locore/features.hpp"
#include "locore/json.hpp"
#include "locore/model_info.hpp"
#include "locore/packing.hpp"
#include "locore/reranker.hpp"
#include "locore/scorer.hpp"
#include "locore/sliding_windows.hpp"
#include "locore/tensor.hpp"
#include "locore/version.hpp"

#endif // LOCORE_RUNTIME_HPP
