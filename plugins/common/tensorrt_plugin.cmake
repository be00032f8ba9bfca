# TensorRT plugin library liblocore_trt_plugins.so (IPluginV3 `SelectiveScan`).
#
# Included by plugins/CMakeLists.txt when TENSORRT_ROOT is set, after the CUDA kernel target
# `locore_scan_cuda` exists and LOCORE_PLUGIN_SOURCES / LOCORE_PLUGIN_INCLUDE_DIRS list the glue
# of every plugin. The library is the entry points and logger of this folder plus that glue.
# TENSORRT_ROOT may be
#   - a tar/zip install:       <root>/include/NvInfer.h, <root>/lib/libnvinfer.so
#   - a CUDA-style layout:     <root>/targets/<arch>-linux/include, <root>/targets/<arch>-linux/lib
#   - JetPack / Debian packages: TENSORRT_ROOT=/usr, with /usr/include/aarch64-linux-gnu/NvInfer.h and
#     /usr/lib/aarch64-linux-gnu/libnvinfer.so (x86_64-linux-gnu likewise).
#
# Options:
#   LOCORE_STATIC_PLUGIN_REGISTRATION (OFF)  also register the creator from a static initializer
#       (REGISTER_TENSORRT_PLUGIN). Leave OFF for loadLibrary()/load_library()/--dynamicPlugins,
#       which register the creators returned by getCreators() and refuse duplicates.

option(LOCORE_STATIC_PLUGIN_REGISTRATION
       "Register the TensorRT plugin creators from a static initializer when the library loads" OFF)

set(_locore_trt_arch_dirs)
if(CMAKE_LIBRARY_ARCHITECTURE)
  list(APPEND _locore_trt_arch_dirs ${CMAKE_LIBRARY_ARCHITECTURE})
endif()
list(APPEND _locore_trt_arch_dirs aarch64-linux-gnu x86_64-linux-gnu)
list(REMOVE_DUPLICATES _locore_trt_arch_dirs)

set(_locore_trt_include_hints ${TENSORRT_ROOT}/include)
set(_locore_trt_lib_hints ${TENSORRT_ROOT}/lib ${TENSORRT_ROOT}/lib64)
foreach(_arch IN LISTS _locore_trt_arch_dirs)
  list(APPEND _locore_trt_include_hints ${TENSORRT_ROOT}/include/${_arch})
  list(APPEND _locore_trt_lib_hints ${TENSORRT_ROOT}/lib/${_arch})
endforeach()
file(GLOB _locore_trt_targets LIST_DIRECTORIES true ${TENSORRT_ROOT}/targets/*)
foreach(_target IN LISTS _locore_trt_targets)
  list(APPEND _locore_trt_include_hints ${_target}/include)
  list(APPEND _locore_trt_lib_hints ${_target}/lib)
endforeach()

find_path(LOCORE_TENSORRT_INCLUDE_DIR NvInfer.h
  PATHS ${_locore_trt_include_hints}
  NO_DEFAULT_PATH)
# TensorRT 10 and 11 on Linux ship libnvinfer.so; Windows builds name it nvinfer_<major>.
find_library(LOCORE_TENSORRT_LIBRARY
  NAMES nvinfer nvinfer_11 nvinfer_10
  PATHS ${_locore_trt_lib_hints}
  NO_DEFAULT_PATH)

if(NOT LOCORE_TENSORRT_INCLUDE_DIR)
  message(FATAL_ERROR "TENSORRT_ROOT=${TENSORRT_ROOT}: NvInfer.h not found in "
                      "${_locore_trt_include_hints}")
endif()
if(NOT LOCORE_TENSORRT_LIBRARY)
  message(FATAL_ERROR "TENSORRT_ROOT=${TENSORRT_ROOT}: libnvinfer not found in "
                      "${_locore_trt_lib_hints}")
endif()
if(NOT TARGET locore_scan_cuda)
  message(FATAL_ERROR "the TensorRT plugin needs the CUDA kernel target locore_scan_cuda "
                      "(configure with LOCORE_BUILD_CUDA=ON)")
endif()

# The TensorRT version, for the configure log.
set(_locore_trt_version "unknown")
if(EXISTS ${LOCORE_TENSORRT_INCLUDE_DIR}/NvInferVersion.h)
  file(STRINGS ${LOCORE_TENSORRT_INCLUDE_DIR}/NvInferVersion.h _locore_trt_version_lines
       REGEX "^#define (NV_TENSORRT|TRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? +[0-9]+")
  set(_locore_trt_parts)
  foreach(_part MAJOR MINOR PATCH)
    foreach(_line IN LISTS _locore_trt_version_lines)
      if(_line MATCHES "_${_part}(_ENTERPRISE)? +([0-9]+)")
        list(APPEND _locore_trt_parts ${CMAKE_MATCH_2})
        break()
      endif()
    endforeach()
  endforeach()
  if(_locore_trt_parts)
    string(REPLACE ";" "." _locore_trt_version "${_locore_trt_parts}")
  endif()
endif()

find_package(CUDAToolkit REQUIRED)

add_library(locore_trt_plugins SHARED
  ${CMAKE_CURRENT_LIST_DIR}/pluginLibrary.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pluginLogger.cpp
  ${LOCORE_PLUGIN_SOURCES})
target_include_directories(locore_trt_plugins PRIVATE ${CMAKE_CURRENT_LIST_DIR} ${LOCORE_PLUGIN_INCLUDE_DIRS})
# TensorRT and CUDA headers are system headers: their own warnings are not ours.
target_include_directories(locore_trt_plugins SYSTEM PRIVATE ${LOCORE_TENSORRT_INCLUDE_DIR})
# The CUDA runtime linked statically, as TensorRT OSS's plugins do: the library then runs wherever
# the driver does, and a version-compatible engine can carry it (plugins_to_serialize).
target_link_libraries(locore_trt_plugins PRIVATE locore_scan_cuda ${LOCORE_TENSORRT_LIBRARY} CUDA::cudart_static)
set(LOCORE_PLUGIN_NAMESPACE "locore" CACHE STRING
    "TensorRT plugin namespace of the creators (the exporter writes plugin_namespace=\"locore\")")
target_compile_definitions(locore_trt_plugins PRIVATE
  LOCORE_STATIC_PLUGIN_REGISTRATION=$<BOOL:${LOCORE_STATIC_PLUGIN_REGISTRATION}>
  LOCORE_PLUGIN_NAMESPACE="${LOCORE_PLUGIN_NAMESPACE}")
set_target_properties(locore_trt_plugins PROPERTIES
  OUTPUT_NAME locore_trt_plugins
  CXX_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON
  POSITION_INDEPENDENT_CODE ON
  LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}
  RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(locore_trt_plugins PRIVATE -Wall -Wextra)
  if(NOT APPLE)
    # Fail at link time, not at dlopen() time, on a missing kernel symbol; keep the kernel's own
    # symbols (static locore_scan_cuda) private, so that only getCreators/setLoggerFinder are exported.
    target_link_options(locore_trt_plugins PRIVATE -Wl,--no-undefined -Wl,--exclude-libs,ALL
      -Wl,--version-script=${CMAKE_CURRENT_LIST_DIR}/pluginExports.map)
    set_property(TARGET locore_trt_plugins APPEND PROPERTY LINK_DEPENDS
      ${CMAKE_CURRENT_LIST_DIR}/pluginExports.map)
  endif()
endif()

message(STATUS "locore: TensorRT ${_locore_trt_version} plugin library liblocore_trt_plugins "
               "(headers ${LOCORE_TENSORRT_INCLUDE_DIR}, library ${LOCORE_TENSORRT_LIBRARY}, "
               "static registration ${LOCORE_STATIC_PLUGIN_REGISTRATION})")
