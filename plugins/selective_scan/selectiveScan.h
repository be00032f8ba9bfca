/*
 * SelectiveScan: the shared C++ interface of the CPU library, the CUDA kernel and the
 * TensorRT plugin. Semantics: docs/design.md section 3 (token-major [B, L, ...], FP32 state).
 * The contract is written once in locore/scan_spec.py; tests/test_scan_spec.py checks this
 * header (enums, status codes, LocoreScanParams, the input list below) against it.
 *
 * Inputs, in this fixed order (the ONNX node `locore::SelectiveScan` has the same order):
 *   0 x       mamba2: [B, L, H, P]      mamba1: u [B, L, Dc]   (then H = Dc, P = 1)
 *   1 dt      [B, L, H]                 (delta for mamba1)
 *   2 A       mamba2: [H]               mamba1: [Dc, N]
 *   3 B       [B, L, G, N]
 *   4 C       [B, L, G, N]
 *   5 D       [H]                       (zeros when the model has no skip term)
 *   6 dt_bias [H]                       (zeros when the model has no bias)
 *   7 z       same shape as x           (optional: a node with 7 inputs has no z)
 * Output: y, same shape and dtype as x.
 * x, dt, B, C, z and y share one dtype (`dtype`), FP32 or FP16; A, D and dt_bias have the
 * dtype `weightDtype`: FP32 for plugin version "2" (the weights stay FP32 in every precision),
 * x's dtype for version "1". State and accumulation are FP32.
 */
#ifndef LOCORE_SELECTIVE_SCAN_H
#define LOCORE_SELECTIVE_SCAN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum LocoreScanDType
{
    LOCORE_SCAN_FLOAT32 = 0,
    LOCORE_SCAN_FLOAT16 = 1
} LocoreScanDType;

typedef enum LocoreScanVariant
{
    LOCORE_SCAN_MAMBA2 = 0,
    LOCORE_SCAN_MAMBA1 = 1
} LocoreScanVariant;

typedef struct LocoreScanParams
{
    int32_t batch;      /* B */
    int32_t seqlen;     /* L, any value >= 0 */
    int32_t nheads;     /* H (mamba2) or Dc (mamba1) */
    int32_t headdim;    /* P (mamba2); 1 for mamba1 */
    int32_t ngroups;    /* G, divides nheads */
    int32_t dstate;     /* N */
    int32_t variant;    /* LocoreScanVariant */
    int32_t dtSoftplus; /* 0 or 1 */
    int32_t reverse;    /* 0 or 1 */
    int32_t chunkSize;  /* hint, > 0 */
    int32_t dtype;       /* LocoreScanDType of x, dt, B, C, z and y */
    int32_t weightDtype; /* LocoreScanDType of A, D and dtBias */
    const void* x;
    const void* dt;
    const void* A;
    const void* B;
    const void* C;
    const void* D;      /* may be NULL: treated as zeros */
    const void* dtBias; /* may be NULL: treated as zeros */
    const void* z;      /* may be NULL: no gating */
    void* y;
} LocoreScanParams;

/* Status codes shared by every entry point. */
#define LOCORE_SCAN_OK 0
#define LOCORE_SCAN_BAD_ARGUMENT 1
#define LOCORE_SCAN_UNSUPPORTED 2
#define LOCORE_SCAN_CUDA_ERROR 3

/* CPU library entry point (liblocore_scan_cpu). Returns a status code. */
int locore_selective_scan_cpu(const LocoreScanParams* params, int32_t numThreads);

/* CUDA entry points (the CUDA kernel library / the TensorRT plugin). `stream` is a
 * cudaStream_t, `workspace` device memory of at least locore_selective_scan_cuda_workspace()
 * bytes (may be NULL when that is 0). One kernel launch per scan; pointers are device pointers.
 * Declared here so host-only code (the plugin glue) needs no CUDA headers to call them. */
size_t locore_selective_scan_cuda_workspace(const LocoreScanParams* params);
int locore_selective_scan_cuda(const LocoreScanParams* params, void* workspace, void* stream);

/* Human-readable text for a status code (static storage). */
const char* locore_scan_status_string(int status);

/* Layout version of LocoreScanParams: 2 since weightDtype was added (plugin version 2). A caller
 * (the ctypes binding) refuses a library that reports another version or lacks this function. */
int locore_scan_abi_version(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LOCORE_SELECTIVE_SCAN_H */
