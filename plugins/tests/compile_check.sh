#!/usr/bin/env bash
# Compile-check the SelectiveScan TensorRT plugin sources against a set of TensorRT headers.
#
# Usage:
#   plugins/tests/compile_check.sh [--glue-test] TRT_INCLUDE_DIR_OR_TENSORRT_ROOT [more ...]
#   TENSORRT_ROOT=/opt/tensorrt plugins/tests/compile_check.sh [--glue-test]
#
# Each argument is either a directory holding NvInfer.h or a TensorRT root whose include/ (or, for
# JetPack, include/aarch64-linux-gnu/ or include/x86_64-linux-gnu/) holds it. No TensorRT library
# and no GPU are needed: every source of the plugin library (common/ entry points and logger, the
# plugin glue of selective_scan/) is compiled with -fsyntax-only, one file at a time, with
# -Wall -Wextra -Werror (TensorRT and CUDA headers are included as system headers).
# With --glue-test it also links those sources with tests/pluginGlueTest.cpp (a stub in place of
# the CUDA kernel) and runs it: a host-only test of the plugin glue, still without TensorRT
# libraries or a GPU; and links the sources (tests/kernelStub.cpp for the kernel) into a shared
# library with common/pluginExports.map and checks that `nm -D` shows only getCreators and
# setLoggerFinder.
#
# Environment:
#   CXX            C++ compiler (default g++)
#   CUDA_INCLUDE   directory holding cuda_runtime_api.h (default: found from nvcc or /usr/local/cuda*)
#   EXTRA_DEFINES  extra -D flags, e.g. "-DLOCORE_STATIC_PLUGIN_REGISTRATION=1"
#
# Exit status: 0 when every source compiles against every header set (and the glue test passes),
# 1 on a compile error or a failed glue test,
# 2 on a usage error (no headers found, no CUDA headers found).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
plugins="$(cd "$here/.." && pwd)"
cxx="${CXX:-g++}"
# The sources of liblocore_trt_plugins (common/tensorrt_plugin.cmake), relative to plugins/.
sources=(common/pluginLogger.cpp selective_scan/selectiveScanPlugin.cpp common/pluginLibrary.cpp)
includes=(-I"$plugins/common" -I"$plugins/selective_scan")

glue_test=0
roots=()
for arg in "$@"; do
    case "$arg" in
    --glue-test) glue_test=1 ;;
    -h | --help)
        sed -n '2,/^set /{/^#/p}' "$0"
        exit 0
        ;;
    *) roots+=("$arg") ;;
    esac
done
if [ "${#roots[@]}" -eq 0 ]; then
    if [ -n "${TENSORRT_ROOT:-}" ]; then
        roots=("${TENSORRT_ROOT}")
    else
        echo "usage: $0 [--glue-test] TRT_INCLUDE_DIR_OR_TENSORRT_ROOT [...]   (or set TENSORRT_ROOT)" >&2
        exit 2
    fi
fi

find_trt_include() {
    local root="$1" candidate
    for candidate in "$root" "$root/include" "$root/include/aarch64-linux-gnu" "$root/include/x86_64-linux-gnu" \
        "$root"/targets/*/include; do
        if [ -f "$candidate/NvInfer.h" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# shellcheck source=find_cuda_include.sh
. "$here/find_cuda_include.sh"

if ! cuda_include="$(find_cuda_include)"; then
    echo "compile_check: cuda_runtime_api.h not found (install the CUDA toolkit or set CUDA_INCLUDE)" >&2
    exit 2
fi

status=0
workdir=""
if [ "$glue_test" -eq 1 ]; then
    workdir="$(mktemp -d)"
    trap 'rm -rf "$workdir"' EXIT
fi
for root in "${roots[@]}"; do
    if ! trt_include="$(find_trt_include "$root")"; then
        echo "compile_check: no NvInfer.h under $root (tried ., include/, include/<arch>-linux-gnu/, targets/*/include/)" >&2
        exit 2
    fi
    version="$(sed -n 's/^#define \(NV_TENSORRT_MAJOR\|TRT_MAJOR_ENTERPRISE\|NV_TENSORRT_MINOR\|TRT_MINOR_ENTERPRISE\|NV_TENSORRT_PATCH\|TRT_PATCH_ENTERPRISE\) \([0-9][0-9]*\).*/\2/p' \
        "$trt_include/NvInferVersion.h" | head -3 | paste -sd. -)"
    echo "compile_check: TensorRT ${version:-?} headers at $trt_include"
    for src in "${sources[@]}"; do
        # shellcheck disable=SC2086
        if "$cxx" -std=c++17 -fsyntax-only -Wall -Wextra -Werror \
            ${EXTRA_DEFINES:-} "${includes[@]}" -isystem "$trt_include" -isystem "$cuda_include" "$plugins/$src"; then
            echo "  ok    $src"
        else
            echo "  FAIL  $src (TensorRT ${version:-?})"
            status=1
        fi
    done
    if [ "$glue_test" -eq 1 ]; then
        # Without EXTRA_DEFINES: static registration needs libnvinfer's getPluginRegistry().
        if "$cxx" -std=c++17 -O1 -Wall -Wextra -Werror "${includes[@]}" -isystem "$trt_include" -isystem "$cuda_include" \
            "$here/pluginGlueTest.cpp" "${sources[@]/#/$plugins/}" -o "$workdir/pluginGlueTest" \
            && "$workdir/pluginGlueTest"; then
            echo "  ok    pluginGlueTest"
        else
            echo "  FAIL  pluginGlueTest (TensorRT ${version:-?})"
            status=1
        fi
        # The shared library as common/tensorrt_plugin.cmake links it (hidden visibility, the
        # export map), with tests/kernelStub.cpp in place of the CUDA kernel: `nm -D` must show
        # exactly the two entry points TensorRT looks up.
        lib="$workdir/liblocore_trt_plugins.so"
        if "$cxx" -std=c++17 -O1 -shared -fPIC -fvisibility=hidden -fvisibility-inlines-hidden -Wall -Wextra -Werror \
            "${includes[@]}" -isystem "$trt_include" -isystem "$cuda_include" "${sources[@]/#/$plugins/}" \
            "$here/kernelStub.cpp" -Wl,--version-script="$plugins/common/pluginExports.map" -Wl,--no-undefined -o "$lib"; then
            exported="$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TWDBVRi]$/ {print $3}' | sort | paste -sd' ' -)"
            if [ "$exported" = "getCreators setLoggerFinder" ]; then
                echo "  ok    nm -D: exports only getCreators setLoggerFinder"
            else
                echo "  FAIL  nm -D exports: $exported (expected getCreators setLoggerFinder)"
                status=1
            fi
        else
            echo "  FAIL  shared library link with the export map (TensorRT ${version:-?})"
            status=1
        fi
    fi
done
exit "$status"
