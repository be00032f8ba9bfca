/*
 * A tiny host emulation of the CUDA features selectiveScanKernel.cu uses, so that its kernel
 * code can be compiled as C++ and run on the CPU (benchmarks/gpu/kernel_emulation.sh): every
 * thread of a block is a fiber (ucontext) on one OS thread, __syncthreads and the warp shuffles
 * are barriers between fibers, shuffles exchange through a per-warp buffer. Blocks run one
 * after another. For checking the kernel's logic
 * (indexing, synchronisation, reductions, chunk carry) where no GPU exists; not for speed.
 */
#ifndef LOCORE_CUDA_EMULATION_H
#define LOCORE_CUDA_EMULATION_H

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <type_traits>
#include <ucontext.h>
#include <vector>

#define LOCORE_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3
{
    unsigned x = 0, y = 0, z = 0;
};

typedef void* cudaStream_t;
typedef enum
{
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1
} cudaError_t;
enum cudaDeviceAttr
{
    cudaDevAttrMultiProcessorCount = 16
};

namespace emu
{
/* Every CUDA thread of the running block is a fiber (ucontext) on the calling OS thread; a fiber
 * runs until it waits at a barrier, then the scheduler resumes the next one. */
struct Fiber
{
    ucontext_t ctx;
    std::vector<char> stack;
    bool done = false;
};
struct Block
{
    unsigned threads = 0;
    unsigned blockArrived = 0, blockGen = 0;
    std::vector<unsigned> warpArrived, warpGen;
    std::vector<float> lanes; /* [threads] shuffle exchange */
    std::vector<float> shared;
    std::vector<Fiber> fibers;
    ucontext_t scheduler;
    std::function<void()> body;
};
inline dim3 tThread;
inline dim3 tBlock;
inline Block* tCurrent = nullptr;
inline int gSmCount = 132;
inline cudaError_t gLastError = cudaSuccess;

inline void yieldToScheduler()
{
    Block& b = *tCurrent;
    swapcontext(&b.fibers[tThread.x].ctx, &b.scheduler);
}

inline void fiberEntry()
{
    Block& b = *tCurrent;
    b.body();
    b.fibers[tThread.x].done = true;
} /* returns to uc_link = the scheduler */

inline void blockBarrier()
{
    Block& b = *tCurrent;
    const unsigned gen = b.blockGen;
    if (++b.blockArrived == b.threads)
    {
        b.blockArrived = 0;
        ++b.blockGen;
    }
    while (b.blockGen == gen)
    {
        yieldToScheduler();
    }
}

inline void warpBarrier()
{
    Block& b = *tCurrent;
    const unsigned w = tThread.x / 32;
    const unsigned gen = b.warpGen[w];
    if (++b.warpArrived[w] == 32)
    {
        b.warpArrived[w] = 0;
        ++b.warpGen[w];
    }
    while (b.warpGen[w] == gen)
    {
        yieldToScheduler();
    }
}
} // namespace emu

#define threadIdx (emu::tThread)
#define blockIdx (emu::tBlock)

inline void __syncthreads()
{
    emu::blockBarrier();
}

inline float __shfl_xor_sync(unsigned /*mask*/, float v, int laneMask)
{
    emu::Block& b = *emu::tCurrent;
    const unsigned me = threadIdx.x;
    b.lanes[me] = v;
    emu::warpBarrier();
    const float other = b.lanes[(me & ~31u) | ((me & 31u) ^ static_cast<unsigned>(laneMask))];
    emu::warpBarrier();
    return other;
}

inline float* emuSharedMemory()
{
    return emu::tCurrent->shared.data();
}

template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b)
{
    return a < b ? a : b;
}

inline cudaError_t cudaGetLastError()
{
    cudaError_t e = emu::gLastError;
    emu::gLastError = cudaSuccess;
    return e;
}

inline cudaError_t cudaGetDevice(int* d)
{
    *d = 0;
    return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int)
{
    *v = emu::gSmCount;
    return cudaSuccess;
}

/* kernel<<<blocks, threads, smemBytes, stream>>>(args): blocks run one after another. */
template <typename Args>
inline void emuLaunch(void (*kernel)(Args), unsigned blocks, unsigned threads, size_t smemBytes,
    cudaStream_t, Args args)
{
    if (threads % 32 != 0 || threads > 1024 || smemBytes > 48 * 1024)
    {
        emu::gLastError = cudaErrorInvalidValue;
        return;
    }
    for (unsigned bi = 0; bi < blocks; ++bi)
    {
        emu::Block blk;
        blk.threads = threads;
        blk.warpArrived.assign(threads / 32, 0);
        blk.warpGen.assign(threads / 32, 0);
        blk.lanes.assign(threads, 0.0f);
        /* Poison shared memory: reading a slot before writing it shows up as NaN. */
        blk.shared.assign(smemBytes / sizeof(float) + 1, std::numeric_limits<float>::quiet_NaN());
        blk.body = [&]() { kernel(args); };
        blk.fibers.resize(threads);
        emu::tCurrent = &blk;
        emu::tBlock = dim3{bi, 0, 0};
        for (unsigned t = 0; t < threads; ++t)
        {
            emu::Fiber& f = blk.fibers[t];
            f.stack.resize(256 * 1024);
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = f.stack.data();
            f.ctx.uc_stack.ss_size = f.stack.size();
            f.ctx.uc_link = &blk.scheduler;
            makecontext(&f.ctx, emu::fiberEntry, 0);
        }
        /* Sweeps alternate forward and backward over the threads, so that a read of shared
         * memory that lacks a barrier after the write shows up in one of the two orders. */
        for (unsigned sweep = 0, running = 1; running; ++sweep)
        {
            running = 0;
            for (unsigned k = 0; k < threads; ++k)
            {
                const unsigned t = (sweep % 2 == 0) ? k : threads - 1 - k;
                if (!blk.fibers[t].done)
                {
                    emu::tThread = dim3{t, 0, 0};
                    swapcontext(&blk.scheduler, &blk.fibers[t].ctx);
                    running |= blk.fibers[t].done ? 0u : 1u;
                }
            }
        }
        emu::tCurrent = nullptr;
    }
}

/* cuda_fp16 */
#include "selectiveScanCore.h"
struct __half
{
    uint16_t bits;
};
inline float __half2float(__half h)
{
    return locore::scan::halfBitsToFloat(h.bits);
}
inline __half __float2half_rn(float f)
{
    return __half{locore::scan::floatToHalfBits(f)};
}

#endif /* LOCORE_CUDA_EMULATION_H */
