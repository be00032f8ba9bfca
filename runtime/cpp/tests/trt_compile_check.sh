#!/usr/bin/env bash
# Compile-check the C++ runtime's TensorRT scorer (runtime/cpp/src/trt_scorer.cpp) against one or
# more sets of TensorRT headers, with -Werror.
#
# Usage:
#   runtime/cpp/tests/trt_compile_check.sh [--emulate] [--cmake] [HEADER_SET ...]
#
# Each HEADER_SET is a folder holding NvInfer.h, or a TensorRT root whose include/ (JetPack:
# include/aarch64-linux-gnu/ or include/x86_64-linux-gnu/; CUDA-style: targets/*/include/) holds
# it, e.g. /tmp/trt-headers/10.3.0 made from NVIDIA/TensorRT's public include/ folder:
#   git --git-dir=<mirror> archive v10.3.0 include | tar -x -C /tmp/trt-headers/10.3.0
# Without arguments every set under $LOCORE_TRT_HEADERS (default /tmp/trt-headers) is checked.
# No TensorRT library and no GPU are needed: the file is compiled (g++ -c, output discarded) with
# -std=c++17 -Wall -Wextra -Wpedantic -Wshadow -Werror, the runtime's warning flags, TensorRT and
# CUDA headers included as system headers; a deprecated TensorRT call fails the check.
# With --emulate it also builds tests/trt_scorer_emulation.cpp with each set and runs it: the
# scorer on the CPU against a fake TensorRT (tests/gen_trt_fakes.py implements the set's
# apiv::VRuntime/VCudaEngine/VExecutionContext by aborting; the test overrides the calls the scorer
# makes) and a host emulation of the CUDA runtime. It checks the scorer's logic (sidecar checks,
# I/O discovery, profile shapes, dtype conversion, scores read back), not TensorRT or a GPU.
# Needs python3; about 20 s per set.
# With --cmake it also configures and builds runtime/cpp (the library and locore_trt_scorer_check)
# against each set with a stub libnvinfer (the three C entry points, all failing), which checks
# the CMake detection (LOCORE_RUNTIME_HAS_TENSORRT 1) and that the scorer links, then runs the
# check tool on a missing engine (it must say so, before any CUDA call). Needs cmake and the CUDA
# toolkit; about a minute per set with -j1 (LOCORE_CI_JOBS jobs, default 2).
#
# Environment:
#   CXX                 C++ compiler (default g++)
#   CUDA_INCLUDE        folder holding cuda_runtime_api.h (default: from nvcc, /usr/local/cuda*)
#   LOCORE_TRT_HEADERS  where header sets are looked for when none is given (/tmp/trt-headers)
#
# Prints "ok <version> <file>" per set, "SKIP: <reason>" (exit 0) when there are no header sets
# or no CUDA headers. Exit status: 0 when every set compiles (or SKIP), 1 on a compile error,
# 2 on a usage error (a given folder without NvInfer.h).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cxx="${CXX:-g++}"
sources=(src/trt_scorer.cpp tests/trt_scorer_check.cpp)

with_cmake=0
with_emulation=0
args=()
for arg in "$@"; do
    case "$arg" in
    -h | --help)
        sed -n '2,/^set /{/^#/p}' "$0"
        exit 0
        ;;
    --cmake) with_cmake=1 ;;
    --emulate) with_emulation=1 ;;
    *) args+=("$arg") ;;
    esac
done
set -- "${args[@]+"${args[@]}"}"

find_trt_include() {
    local dir="$1" candidate
    for candidate in "$dir" "$dir/include" "$dir/include/aarch64-linux-gnu" \
        "$dir/include/x86_64-linux-gnu" "$dir"/targets/*/include; do
        if [ -f "$candidate/NvInfer.h" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# One CUDA-include lookup for both compile checks (the plugin's sits beside its sources; the
# same relative path holds in a checkout and in the installed package).
# shellcheck source=../../../plugins/tests/find_cuda_include.sh
. "$here/../../../plugins/tests/find_cuda_include.sh"

sets=("$@")
if [ "${#sets[@]}" -eq 0 ]; then
    base="${LOCORE_TRT_HEADERS:-/tmp/trt-headers}"
    for dir in "$base"/*; do
        if [ -d "$dir" ] && find_trt_include "$dir" >/dev/null; then
            sets+=("$dir")
        fi
    done
    if [ "${#sets[@]}" -eq 0 ]; then
        echo "SKIP: TensorRT scorer compile check: no TensorRT header sets under $base (one folder per version holding include/NvInfer.h; set LOCORE_TRT_HEADERS or pass folders)"
        exit 0
    fi
fi

if ! cuda_include="$(find_cuda_include)"; then
    echo "SKIP: TensorRT scorer compile check: cuda_runtime_api.h not found (install the CUDA toolkit or set CUDA_INCLUDE)"
    exit 0
fi

# --emulate: the scorer against a fake TensorRT and a host CUDA runtime, on the CPU.
emulation_check() {
    local trt_include="$1" version="$2" work ok=1 core=()
    work="$(mktemp -d)"
    local src
    for src in "$root"/src/*.cpp; do
        case "$src" in
        */trt_scorer.cpp | */hdf5_features.cpp) ;;
        *) core+=("$src") ;;
        esac
    done
    if ! python3 "$here/gen_trt_fakes.py" "$trt_include" "$work/fakes.inc" >"$work/log" 2>&1 ||
        ! "$cxx" -std=c++17 -O1 -w -I"$root/include" -isystem "$trt_include" -isystem "$cuda_include" \
            "-DLOCORE_FAKES_INC=\"$work/fakes.inc\"" "$here/trt_scorer_emulation.cpp" \
            "$root/src/trt_scorer.cpp" "${core[@]}" -o "$work/emulation" >>"$work/log" 2>&1; then
        echo "FAIL  TensorRT $version: building the emulation test:"
        tail -n 30 "$work/log"
        ok=0
    elif (cd "$work" && ./emulation >>"$work/log" 2>&1); then
        echo "ok    TensorRT $version: $(tail -n 1 "$work/log")"
    else
        echo "FAIL  TensorRT $version: the emulation test:"
        tail -n 30 "$work/log"
        ok=0
    fi
    rm -rf "$work"
    [ "$ok" -eq 1 ]
}

# --cmake: build runtime/cpp against a fake TensorRT root (the header set + a stub libnvinfer).
cmake_check() {
    local trt_include="$1" version="$2" work ok=1
    work="$(mktemp -d)"
    local log="$work/log"
    mkdir -p "$work/trt/lib"
    ln -s "$trt_include" "$work/trt/include"
    printf '%s\n' '#include <cstdint>' 'namespace nvinfer1 { class IPluginRegistry; }' \
        'extern "C" void* createInferRuntime_INTERNAL(void*, int32_t) noexcept { return nullptr; }' \
        'extern "C" nvinfer1::IPluginRegistry* getPluginRegistry() noexcept { return nullptr; }' \
        'extern "C" int32_t getInferLibVersion() noexcept { return 0; }' >"$work/stub.cpp"
    "$cxx" -shared -fPIC -o "$work/trt/lib/libnvinfer.so" "$work/stub.cpp" >"$log" 2>&1 || ok=0
    if [ "$ok" -eq 1 ]; then
        cmake -S "$root" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DTENSORRT_ROOT="$work/trt" \
            -DLOCORE_WITH_HDF5=OFF -DLOCORE_RUNTIME_BUILD_TESTS=ON \
            "-DCUDAToolkit_ROOT=$(dirname "$cuda_include")" >>"$log" 2>&1 || ok=0
    fi
    if [ "$ok" -eq 1 ] && ! grep -q "LOCORE_RUNTIME_HAS_TENSORRT 1" "$work/build/include/locore/version.hpp"; then
        echo "CMake did not enable the TensorRT scorer" >>"$log"
        ok=0
    fi
    if [ "$ok" -eq 1 ]; then
        cmake --build "$work/build" --target locore_trt_scorer_check \
            --parallel "${LOCORE_CI_JOBS:-2}" >>"$log" 2>&1 || ok=0
    fi
    if [ "$ok" -eq 1 ]; then
        echo '{"tolerance": 1, "windows": []}' >"$work/v.json"
        local said
        said="$("$work/build/locore_trt_scorer_check" "$work/missing.plan" "$work/v.json" 2>&1 || true)"
        if grep -q "missing.plan cannot be opened" <<<"$said"; then
            echo "ok    TensorRT $version: CMake finds it; the library and locore_trt_scorer_check link (stub libnvinfer)"
        else
            echo "FAIL  TensorRT $version: locore_trt_scorer_check did not report the missing engine: $said"
            ok=0
        fi
    else
        echo "FAIL  TensorRT $version: CMake build against the header set (stub libnvinfer):"
        tail -n 30 "$log"
    fi
    rm -rf "$work"
    [ "$ok" -eq 1 ]
}

status=0
for set in "${sets[@]}"; do
    if ! trt_include="$(find_trt_include "$set")"; then
        echo "trt_compile_check: no NvInfer.h under $set (tried ., include/, include/<arch>-linux-gnu/, targets/*/include/)" >&2
        exit 2
    fi
    version="$(sed -n 's/^#define \(NV_TENSORRT_MAJOR\|TRT_MAJOR_ENTERPRISE\|NV_TENSORRT_MINOR\|TRT_MINOR_ENTERPRISE\|NV_TENSORRT_PATCH\|TRT_PATCH_ENTERPRISE\) \([0-9][0-9]*\).*/\2/p' \
        "$trt_include/NvInferVersion.h" | head -3 | paste -sd. -)"
    for src in "${sources[@]}"; do
        if "$cxx" -std=c++17 -Wall -Wextra -Wpedantic -Wshadow -Werror -c -o /dev/null \
            -I"$root/include" -isystem "$trt_include" -isystem "$cuda_include" "$root/$src"; then
            echo "ok    TensorRT ${version:-?} ($trt_include): $src"
        else
            echo "FAIL  TensorRT ${version:-?} ($trt_include): $src"
            status=1
        fi
    done
    if [ "$with_emulation" -eq 1 ]; then
        emulation_check "$trt_include" "${version:-unknown}" || status=1
    fi
    if [ "$with_cmake" -eq 1 ]; then
        cmake_check "$trt_include" "${version:-unknown}" || status=1
    fi
done
exit "$status"
