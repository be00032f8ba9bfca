# Sourced by plugins/tests/compile_check.sh and runtime/cpp/tests/trt_compile_check.sh:
# find_cuda_include prints the CUDA toolkit's include folder (the one with cuda_runtime_api.h):
# $CUDA_INCLUDE, else next to nvcc on PATH, else the usual install folders; returns 1 if none.
find_cuda_include() {
    local candidate nvcc_path
    if [ -n "${CUDA_INCLUDE:-}" ]; then
        [ -f "$CUDA_INCLUDE/cuda_runtime_api.h" ] && echo "$CUDA_INCLUDE" && return 0
        return 1
    fi
    if nvcc_path="$(command -v nvcc 2>/dev/null)"; then
        candidate="$(cd "$(dirname "$(readlink -f "$nvcc_path")")/.." && pwd)/include"
        if [ -f "$candidate/cuda_runtime_api.h" ]; then
            echo "$candidate"
            return 0
        fi
    fi
    for candidate in /usr/local/cuda/include /usr/local/cuda-*/include /usr/include; do
        if [ -f "$candidate/cuda_runtime_api.h" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}
