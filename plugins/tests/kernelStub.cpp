/*
 * Stand-ins for the CUDA entry points of selectiveScan.h, so that compile_check.sh can link the
 * plugin library's sources into a shared library without a GPU or nvcc and check its exported
 * symbols (`nm -D`) against common/pluginExports.map. Never shipped in a real build.
 */
#include "selectiveScan.h"

#include <cstddef>

extern "C" size_t locore_selective_scan_cuda_workspace(LocoreScanParams const* /* params */)
{
    return 0;
}

extern "C" int locore_selective_scan_cuda(LocoreScanParams const* /* params */, void* /* workspace */, void* /* stream */)
{
    return LOCORE_SCAN_UNSUPPORTED;
}

extern "C" char const* locore_scan_status_string(int /* status */)
{
    return "stub";
}
