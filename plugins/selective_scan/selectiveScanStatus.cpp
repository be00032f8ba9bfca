/* Status strings and ABI version of the SelectiveScan C ABI (selectiveScan.h); compiled into
 * each library. */
#include "selectiveScan.h"

extern "C" int locore_scan_abi_version(void)
{
    return 2; /* LocoreScanParams with weightDtype (plugin version 2); locore/scan_spec.py ABI_VERSION */
}

extern "C" const char* locore_scan_status_string(int status)
{
    switch (status)
    {
    case LOCORE_SCAN_OK: return "ok";
    case LOCORE_SCAN_BAD_ARGUMENT:
        return "bad argument: a NULL tensor pointer, a negative or inconsistent shape (H must be "
               "a multiple of G, mamba1 needs headdim 1), chunkSize < 1, or an unknown "
               "variant/dtype/flag value";
    case LOCORE_SCAN_UNSUPPORTED:
        return "unsupported: the configuration is valid but this implementation cannot run it "
               "(for example dstate above the CUDA kernel's limit, or out of host memory/threads)";
    case LOCORE_SCAN_CUDA_ERROR: return "CUDA error: a kernel launch or CUDA runtime call failed";
    default: return "unknown status code";
    }
}
