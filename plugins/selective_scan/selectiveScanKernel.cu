/*
 * SelectiveScan CUDA kernel; see selectiveScanKernel.h for the design and selectiveScanCore.h
 * for the element-wise math it shares with the CPU library.
 */
#include "selectiveScanKernel.h"

#include "selectiveScanCore.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>

#include <atomic>

namespace locore
{
namespace scan
{
namespace
{

constexpr int kWarp = 32;
constexpr int kThreads = kScanWarpsPerBlock * kWarp;
constexpr int kPartStride = kWarp + 1; /* row stride of the partial sums (bank-conflict free) */

struct LaunchArgs
{
    LocoreScanParams p;
    int rowsPerWarp;   /* 1..kScanMaxRowsPerWarp */
    int rowsPerBlock;  /* kScanWarpsPerBlock * rowsPerWarp */
    int rowsPerGroup;  /* (H / G) * P */
    int tilesPerGroup; /* ceil(rowsPerGroup / rowsPerBlock) */
    int chunk;         /* tokens staged per chunk */
};

__device__ __forceinline__ float toFloat(float v)
{
    return v;
}

__device__ __forceinline__ float toFloat(__half v)
{
    return __half2float(v);
}

/* Element i of a weight tensor (A, D, dt_bias) of LocoreScanDType `dtype`: FP32 whatever x's
 * dtype (plugin version 2) or x's dtype (version 1). */
__device__ __forceinline__ float loadWeight(const void* p, int32_t dtype, int64_t i)
{
    return dtype == LOCORE_SCAN_FLOAT16 ? __half2float(static_cast<const __half*>(p)[i])
                                        : static_cast<const float*>(p)[i];
}

__device__ __forceinline__ void storeAs(float* out, int64_t i, float v)
{
    out[i] = v;
}

__device__ __forceinline__ void storeAs(__half* out, int64_t i, float v)
{
    out[i] = __float2half_rn(v);
}

/*
 * Grid: one block per (batch b, group g, row tile). Shared memory per chunk of Q tokens:
 *   bq [Q, N], cq [Q, N]            B_t, C_t of group g as float
 *   xdtq [Q, R], decq [Q, R]        dt' * x and exp(dt' A) (mamba2) or dt' (mamba1) per row
 *   xq [Q, R]                       x (for D x) per row
 *   part [Q, R, 33]                 per-lane partial sums of S @ C (33: no bank conflicts)
 * The token loop carries only the state update; the readout's sum over the 32 lanes is done
 * after the chunk by the whole block, off the sequential path (no shuffles per token).
 * NPL: state elements per lane (N <= 32 * NPL).
 */
template <typename T, int NPL, bool kMamba1>
__global__ void __launch_bounds__(kThreads) selectiveScanKernel(LaunchArgs args)
{
    extern __shared__ float smem[];
    const LocoreScanParams& p = args.p;
    const auto [L, H, P, G, N, rep, reverse, softplus] = scanDims(p);
    const int R = args.rowsPerBlock;
    const int Q = args.chunk;

    const int tile = blockIdx.x % args.tilesPerGroup;
    const int g = (blockIdx.x / args.tilesPerGroup) % G;
    const int b = blockIdx.x / (args.tilesPerGroup * G);
    const int rowBegin = tile * R;
    const int rowsHere = min(R, args.rowsPerGroup - rowBegin);

    const T* __restrict__ x = static_cast<const T*>(p.x);
    const T* __restrict__ dt = static_cast<const T*>(p.dt);
    const void* A = p.A; /* A, D, dt_bias: weightDtype (loadWeight) */
    const T* __restrict__ Bm = static_cast<const T*>(p.B);
    const T* __restrict__ Cm = static_cast<const T*>(p.C);
    const void* D = p.D;
    const void* bias = p.dtBias;
    const int32_t wdt = p.weightDtype;
    const T* __restrict__ z = static_cast<const T*>(p.z);
    T* __restrict__ y = static_cast<T*>(p.y);

    float* bq = smem;
    float* cq = bq + Q * N;
    float* xdtq = cq + Q * N;
    float* decq = xdtq + Q * R;
    float* xq = decq + Q * R;
    float* part = xq + Q * R;

    const int warp = threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    const int rpw = args.rowsPerWarp;

    /* The FP32 state of this warp's rows, in registers for the whole sequence. */
    float s[kScanMaxRowsPerWarp][NPL];
    float aReg[kScanMaxRowsPerWarp][NPL]; /* mamba1: A[h, n] */
#pragma unroll
    for (int k = 0; k < kScanMaxRowsPerWarp; ++k)
    {
        const int r = warp * rpw + k;
#pragma unroll
        for (int j = 0; j < NPL; ++j)
        {
            s[k][j] = 0.0f;
            aReg[k][j] = 0.0f;
            const int n = lane + kWarp * j;
            if (kMamba1 && k < rpw && r < rowsHere && n < N)
            {
                int h = 0;
                int ch = 0;
                rowToHeadChannel(g, rowBegin + r, rep, P, &h, &ch);
                aReg[k][j] = loadWeight(A, wdt, static_cast<int64_t>(h) * N + n);
            }
        }
    }

    for (int64_t c0 = 0; c0 < L; c0 += Q)
    {
        const int q = static_cast<int>(min(static_cast<int64_t>(Q), L - c0));
        __syncthreads(); /* the previous chunk's outputs have been written */

        /* 1) stage the chunk (coalesced along n and along the tile's rows). */
        for (int idx = threadIdx.x; idx < q * N; idx += kThreads)
        {
            const int i = idx / N;
            const int n = idx - i * N;
            const int64_t t = tokenAt(c0 + i, L, reverse);
            const int64_t o = bcIndex(b, t, g, L, G, N) + n;
            bq[idx] = toFloat(Bm[o]);
            cq[idx] = toFloat(Cm[o]);
        }
        for (int idx = threadIdx.x; idx < q * R; idx += kThreads)
        {
            const int i = idx / R;
            const int r = idx - i * R;
            float xdt = 0.0f;
            float dec = 0.0f;
            float xv = 0.0f;
            if (r < rowsHere)
            {
                int h = 0;
                int ch = 0;
                rowToHeadChannel(g, rowBegin + r, rep, P, &h, &ch);
                const int64_t t = tokenAt(c0 + i, L, reverse);
                xv = toFloat(x[xIndex(b, t, h, ch, L, H, P)]);
                const float bv = bias ? loadWeight(bias, wdt, h) : 0.0f;
                const float d = effectiveDt(toFloat(dt[dtIndex(b, t, h, L, H)]), bv, softplus);
                xdt = d * xv;
                dec = kMamba1 ? d : decayFactor(d, loadWeight(A, wdt, h));
            }
            xdtq[idx] = xdt;
            decq[idx] = dec;
            xq[idx] = xv;
        }
        __syncthreads();

        /* 2) chunk-local scan on the carried state: update, per-lane partial sums of S @ C. */
        for (int i = 0; i < q; ++i)
        {
            float bv[NPL];
            float cv[NPL];
#pragma unroll
            for (int j = 0; j < NPL; ++j)
            {
                const int n = lane + kWarp * j;
                bv[j] = n < N ? bq[i * N + n] : 0.0f;
                cv[j] = n < N ? cq[i * N + n] : 0.0f;
            }
#pragma unroll
            for (int k = 0; k < kScanMaxRowsPerWarp; ++k)
            {
                if (k < rpw)
                {
                    const int r = warp * rpw + k;
                    const float xdt = xdtq[i * R + r];
                    const float dec = decq[i * R + r];
                    float acc = 0.0f;
#pragma unroll
                    for (int j = 0; j < NPL; ++j)
                    {
                        const float decay = kMamba1 ? decayFactor(dec, aReg[k][j]) : dec;
                        s[k][j] = stateUpdate(s[k][j], decay, xdt, bv[j]);
                        acc = readoutAdd(acc, s[k][j], cv[j]);
                    }
                    part[(i * R + r) * kPartStride + lane] = acc;
                }
            }
        }
        __syncthreads();

        /* 3) finish and write the chunk's outputs: y = (S @ C + D x) * silu(z). */
        for (int idx = threadIdx.x; idx < q * R; idx += kThreads)
        {
            const int i = idx / R;
            const int r = idx - i * R;
            if (r < rowsHere)
            {
                int h = 0;
                int ch = 0;
                rowToHeadChannel(g, rowBegin + r, rep, P, &h, &ch);
                const int64_t t = tokenAt(c0 + i, L, reverse);
                const int64_t o = xIndex(b, t, h, ch, L, H, P);
                const float dv = D ? loadWeight(D, wdt, h) : 0.0f;
                const float zv = z ? toFloat(z[o]) : 0.0f;
                const float* pr = part + idx * kPartStride;
                float acc = 0.0f;
#pragma unroll 8
                for (int l = 0; l < kWarp; ++l)
                {
                    acc += pr[l];
                }
                storeAs(y, o, finishOutput(acc, xq[idx], dv, z != nullptr, zv));
            }
        }
    }
}

template <typename T, int NPL>
int launchTyped(const LaunchArgs& args, size_t smemBytes, unsigned blocks, cudaStream_t stream)
{
    if (args.p.variant == LOCORE_SCAN_MAMBA1)
    {
        selectiveScanKernel<T, NPL, true><<<blocks, kThreads, smemBytes, stream>>>(args);
    }
    else
    {
        selectiveScanKernel<T, NPL, false><<<blocks, kThreads, smemBytes, stream>>>(args);
    }
    return cudaGetLastError() == cudaSuccess ? LOCORE_SCAN_OK : LOCORE_SCAN_CUDA_ERROR;
}

template <typename T>
int launchForState(const LaunchArgs& args, size_t smemBytes, unsigned blocks, cudaStream_t stream)
{
    const int N = args.p.dstate;
    if (N <= 32)
    {
        return launchTyped<T, 1>(args, smemBytes, blocks, stream);
    }
    if (N <= 64)
    {
        return launchTyped<T, 2>(args, smemBytes, blocks, stream);
    }
    if (N <= 128)
    {
        return launchTyped<T, 4>(args, smemBytes, blocks, stream);
    }
    return launchTyped<T, 8>(args, smemBytes, blocks, stream);
}

/* Multiprocessor count of `device`, asked of the driver once per device and then cached: a TensorRT
 * enqueue runs this on every call, and the attribute never changes for a device. Thread-safe (two
 * first callers store the same value). -1 on a CUDA error. */
int multiprocessorCount(int device)
{
    constexpr int kMaxDevices = 64;
    static std::atomic<int> sCache[kMaxDevices]; /* static storage: zero = not asked yet */
    const bool cached = device >= 0 && device < kMaxDevices;
    if (cached)
    {
        const int known = sCache[device].load(std::memory_order_relaxed);
        if (known > 0)
        {
            return known;
        }
    }
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    {
        return -1;
    }
    if (cached)
    {
        sCache[device].store(sms, std::memory_order_relaxed);
    }
    return sms;
}

} // namespace

size_t selectiveScanWorkspaceSize(const LocoreScanParams& /*params*/)
{
    return 0;
}

int launchSelectiveScan(const LocoreScanParams& params, void* /*workspace*/, cudaStream_t stream)
{
    const int status = validateParams(&params);
    if (status != LOCORE_SCAN_OK)
    {
        return status;
    }
    if (elementCount(params) == 0)
    {
        return LOCORE_SCAN_OK;
    }
    if (params.dstate > kScanMaxDState)
    {
        return LOCORE_SCAN_UNSUPPORTED;
    }

    LaunchArgs args{};
    args.p = params;
    args.rowsPerGroup = static_cast<int>(rowsPerGroup(params)); /* <= INT32_MAX: validateParams() */
    const int64_t groupsTotal = static_cast<int64_t>(params.batch) * params.ngroups;

    /* Rows per warp: as many as possible (more independent work per warp) while the grid still
     * has >= 2 blocks per multiprocessor. */
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess)
    {
        return LOCORE_SCAN_CUDA_ERROR;
    }
    const int sms = multiprocessorCount(device);
    if (sms <= 0)
    {
        return LOCORE_SCAN_CUDA_ERROR;
    }
    int rpw = kScanMaxRowsPerWarp;
    while (rpw > 1)
    {
        const int64_t rowsPerBlock = static_cast<int64_t>(kScanWarpsPerBlock) * rpw;
        const int64_t blocks = groupsTotal * ((args.rowsPerGroup + rowsPerBlock - 1) / rowsPerBlock);
        if (blocks >= 2LL * sms)
        {
            break;
        }
        rpw /= 2;
    }
    args.rowsPerWarp = rpw;
    args.rowsPerBlock = kScanWarpsPerBlock * rpw;
    args.tilesPerGroup = (args.rowsPerGroup + args.rowsPerBlock - 1) / args.rowsPerBlock;
    const int64_t blocks = groupsTotal * args.tilesPerGroup;
    if (blocks > 0x7fffffffLL)
    {
        return LOCORE_SCAN_UNSUPPORTED;
    }

    /* Chunk length: the hint, at most kScanMaxDeviceChunk, within the shared-memory budget. */
    const size_t perToken = sizeof(float)
        * (2 * static_cast<size_t>(params.dstate) + (3 + kPartStride) * static_cast<size_t>(args.rowsPerBlock));
    int chunk = chunkLength(params);
    chunk = chunk < kScanMaxDeviceChunk ? chunk : kScanMaxDeviceChunk;
    const int fit = static_cast<int>(kScanSharedBudget / perToken);
    chunk = chunk < fit ? chunk : fit;
    chunk = chunk < 1 ? 1 : chunk;
    args.chunk = chunk;
    const size_t smemBytes = perToken * static_cast<size_t>(chunk);

    if (params.dtype == LOCORE_SCAN_FLOAT16)
    {
        return launchForState<__half>(args, smemBytes, static_cast<unsigned>(blocks), stream);
    }
    return launchForState<float>(args, smemBytes, static_cast<unsigned>(blocks), stream);
}

} // namespace scan
} // namespace locore

extern "C" size_t locore_selective_scan_cuda_workspace(const LocoreScanParams* params)
{
    return params ? locore::scan::selectiveScanWorkspaceSize(*params) : 0;
}

extern "C" int locore_selective_scan_cuda(const LocoreScanParams* params, void* workspace, void* stream)
{
    if (params == nullptr)
    {
        return LOCORE_SCAN_BAD_ARGUMENT;
    }
    return locore::scan::launchSelectiveScan(*params, workspace, static_cast<cudaStream_t>(stream));
}
