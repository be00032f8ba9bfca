/*
 * SelectiveScan CUDA kernel: C++ launch interface (the C ABI is in selectiveScan.h:
 * locore_selective_scan_cuda_workspace / locore_selective_scan_cuda).
 *
 * Design (selectiveScanKernel.cu): one kernel launch per scan. A thread block owns a tile of
 * rows ((head, channel) pairs of one group, see selectiveScanCore.h) of one batch item; each
 * warp owns up to kScanMaxRowsPerWarp rows and its lanes own the state elements n = lane + 32 j
 * (FP32, in registers for the whole sequence). Time runs in chunks: the block stages the
 * chunk's B, C, dt' * x and exp(dt' A) in shared memory, the warps step through the chunk's
 * tokens (state update and per-lane partial sums of S @ C into shared memory: the sequential
 * path carries only the state), then the block sums the partials over the lanes and writes the
 * chunk's outputs (+ D x, * silu(z)) coalesced. Both directions, FP32/FP16 I/O, dstate <= 256.
 * The kernel code is also run on the CPU by benchmarks/gpu/kernel_emulation.sh (no GPU needed).
 */
#ifndef LOCORE_SELECTIVE_SCAN_KERNEL_H
#define LOCORE_SELECTIVE_SCAN_KERNEL_H

#include "selectiveScan.h"

#include <cuda_runtime_api.h>
#include <stddef.h>

namespace locore
{
namespace scan
{

constexpr int kScanWarpsPerBlock = 4;
constexpr int kScanMaxRowsPerWarp = 4;
constexpr int kScanMaxDState = 256;
/* Tokens staged in shared memory per chunk at most (the chunkSize hint may lower it). */
constexpr int kScanMaxDeviceChunk = 64;
/* Shared-memory budget of the staging buffers (below the 48 KB default limit). */
constexpr size_t kScanSharedBudget = 40 * 1024;

/* Device workspace needed by launchSelectiveScan (bytes); currently 0. */
size_t selectiveScanWorkspaceSize(const LocoreScanParams& params);

/* Validates, then enqueues the scan on `stream`; returns a LOCORE_SCAN_* status. */
int launchSelectiveScan(const LocoreScanParams& params, void* workspace, cudaStream_t stream);

} // namespace scan
} // namespace locore

#endif /* LOCORE_SELECTIVE_SCAN_KERNEL_H */
