#!/usr/bin/env bash
# GPU check of the SelectiveScan CUDA kernel, for a machine with a CUDA GPU:
#   benchmarks/gpu/scan_check.sh [BUILD_DIR]        (default build/gpu-check)
# Builds the CPU library and the CUDA kernel for this GPU's architecture, builds the harness
# (scan_check.cu), checks the kernel against the CPU library (both directions, FP32/FP16, odd
# lengths, L = 5,050, mamba1) and times the 5,050-token case against the bytes-moved floor.
# Exit status 0 when every check passes. Set CUDA_ARCH (e.g. 87) to override the detected one.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD="${1:-build/gpu-check}"
NVCC="${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
[ -x "$NVCC" ] || { echo "nvcc not found: install the CUDA toolkit or set CUDACXX" >&2; exit 2; }

ARCH="${CUDA_ARCH:-}"
if [ -z "$ARCH" ] && command -v nvidia-smi >/dev/null 2>&1; then
  ARCH="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d '. ')"
fi
ARCH="${ARCH:-native}"
echo "== building for CUDA architecture: $ARCH (nvcc: $NVCC)"

GEN=()
if command -v ninja >/dev/null 2>&1 && [ ! -f "$BUILD/CMakeCache.txt" ]; then GEN=(-G Ninja); fi
cmake -S plugins -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DLOCORE_BUILD_CUDA=ON \
  "-DCMAKE_CUDA_COMPILER=$NVCC" "-DLOCORE_CUDA_ARCHITECTURES=$ARCH" -DTENSORRT_ROOT= >/dev/null
cmake --build "$BUILD" --parallel "${JOBS:-8}" --target locore_scan_cpu locore_scan_cuda

BUILD="$(cd "$BUILD" && pwd)"
if [ "$ARCH" = native ]; then ARCH_FLAG=(-arch=native); else ARCH_FLAG=(-arch="sm_$ARCH"); fi
"$NVCC" -std=c++17 -O2 "${ARCH_FLAG[@]}" -Iplugins/selective_scan benchmarks/gpu/scan_check.cu \
  "$BUILD/liblocore_scan_cuda.a" -L"$BUILD" -llocore_scan_cpu -Xlinker -rpath -Xlinker "$BUILD" \
  -o "$BUILD/scan_check"
echo "== running $BUILD/scan_check"
"$BUILD/scan_check"
