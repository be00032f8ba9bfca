#!/usr/bin/env bash
# Check the CUDA kernel's logic without a GPU: compile selectiveScanKernel.cu as C++ against a
# host emulation of the CUDA features it uses (emulation/: threads, __syncthreads, warp
# shuffles, shared memory) and compare it with the CPU library (kernel_emulation.cpp).
#   benchmarks/gpu/kernel_emulation.sh [BUILD_DIR]      (default build/kernel-emulation)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-build/kernel-emulation}"
mkdir -p "$OUT"
CXX="${CXX:-g++}"
SRC=plugins/selective_scan
# The only CUDA syntax C++ lacks: the launch <<<...>>> and the extern __shared__ array.
sed -E -e 's/^([[:space:]]*)([A-Za-z_][A-Za-z0-9_:<>, ]*)<<<(.*)>>>\((.*)\);/\1emuLaunch(\2, \3, \4);/' \
       -e 's/extern __shared__ float smem\[\];/float* smem = emuSharedMemory();/' \
       "$SRC/selectiveScanKernel.cu" > "$OUT/selectiveScanKernel_emulated.cpp"
grep -q 'emuLaunch(' "$OUT/selectiveScanKernel_emulated.cpp" || { echo "FAIL: launch not rewritten" >&2; exit 1; }
grep -q '<<<' "$OUT/selectiveScanKernel_emulated.cpp" && { echo "FAIL: a launch was not rewritten" >&2; exit 1; }
"$CXX" -std=c++17 -O1 -g -pthread -Wall -Wno-unknown-pragmas -Wno-unused-function -Wno-psabi \
  -Ibenchmarks/gpu/emulation -I"$SRC" \
  "$OUT/selectiveScanKernel_emulated.cpp" "$SRC/selectiveScanCpu.cpp" "$SRC/selectiveScanStatus.cpp" \
  benchmarks/gpu/kernel_emulation.cpp -o "$OUT/kernel_emulation"
"$OUT/kernel_emulation"
