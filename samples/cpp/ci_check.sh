#!/usr/bin/env bash
# Build the C++ camera sample (samples/cpp/camera_app) against an installed locore_runtime and
# check that it starts. .ci/native calls it with the runtime's install prefix:
#
#   samples/cpp/ci_check.sh PREFIX        # PREFIX/lib/cmake/locore_runtime
#
# Without TensorRT the sample's TensorRT branch is compiled as well (not linked), so it cannot
# rot. Prints "SKIP: <why>" and exits 0 when OpenCV's C++ development files are absent (Debian:
# apt-get install libopencv-dev; .ci/run installs it where apt-get is available). The runs on a
# clip and the SIFT comparison with the Python extractor are in tests/test_cpp_camera_app.py.
set -euo pipefail
prefix=$(cd "${1:?usage: samples/cpp/ci_check.sh RUNTIME_INSTALL_PREFIX}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)

opencv_dir=${OpenCV_DIR:-}
if [ -z "$opencv_dir" ]; then
  for config in /usr/lib/*/cmake/opencv4/OpenCVConfig.cmake /usr/lib/cmake/opencv4/OpenCVConfig.cmake \
    /usr/local/lib/cmake/opencv4/OpenCVConfig.cmake /usr/local/lib/*/cmake/opencv4/OpenCVConfig.cmake; do
    if [ -f "$config" ]; then
      opencv_dir=$(dirname "$config")
      break
    fi
  done
fi
if [ -z "$opencv_dir" ]; then
  echo "SKIP: C++ camera sample: OpenCV's C++ development files not found (no OpenCVConfig.cmake;" \
    "Debian: apt-get install libopencv-dev, or set OpenCV_DIR)"
  exit 0
fi

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cmake -S "$here/camera_app" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DOpenCV_DIR="$opencv_dir" -DCAMERA_APP_CHECK_TENSORRT_BRANCH=ON -DCMAKE_COMPILE_WARNING_AS_ERROR=ON \
  >"$build/configure.log" || { cat "$build/configure.log"; exit 1; }
grep "locore_camera_app:" "$build/configure.log" || true
cmake --build "$build" --parallel "${JOBS:-$(nproc 2>/dev/null || echo 2)}"
LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$build/locore_camera_app" --help >/dev/null
echo "OK: C++ camera sample built against $prefix and starts (--help)"
