/*
 * SelectiveScan CPU library (liblocore_scan_cpu): locore_selective_scan_cpu().
 *
 * Work items are (batch, group, tile of rows) where a row is one (head, channel) pair of the
 * group (see selectiveScanCore.h); by default a tile is one head, split further when there are
 * fewer items than twice the thread count. Each item keeps its FP32 state tile transposed,
 * S^T [N, rows] (64 x 64 floats = 16 KB stays in L1), stages one chunk of inputs as float
 * (B, C, x, dt' * x, exp(dt' A) per row), then runs the chunk-local scan token by token: one
 * fused pass over the state updates it and accumulates y = S @ C, vectorised over blocks of
 * rows (no horizontal sums).
 *
 * Exact IEEE arithmetic in a fixed order (no -ffast-math; FMA contraction allowed). On x86-64
 * with GCC/Clang the hot function exists for AVX-512, AVX2+FMA and the baseline, each with its
 * native vector width, picked at run time (pickRunItem), unless the library is built with
 * LOCORE_NATIVE_ARCH (then -march=native, one version).
 */
#include "selectiveScan.h"
#include "selectiveScanCore.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <thread>
#include <vector>

/* x86-64 with GCC/Clang: the hot functions are compiled for AVX-512, AVX2+FMA and the baseline,
 * each with vectors of its native width, and picked at run time from the CPU's features. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(LOCORE_NO_CPU_DISPATCH)
#define LOCORE_X86_DISPATCH 1
#define LOCORE_TARGET_V4 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")))
#define LOCORE_TARGET_V3 __attribute__((target("avx2,fma,f16c")))
#else
#define LOCORE_X86_DISPATCH 0
#endif

#if defined(__GNUC__)
#define LOCORE_ALWAYS_INLINE inline __attribute__((always_inline))
#define LOCORE_RESTRICT __restrict__
#else
#define LOCORE_ALWAYS_INLINE inline
#define LOCORE_RESTRICT
#endif

namespace
{

using namespace locore::scan;

/* Bring [p, p + bytes) towards the cache ahead of use (no-op where unsupported). */
inline void prefetchRange(const void* p, size_t bytes)
{
#if defined(__GNUC__)
    const char* c = static_cast<const char*>(p);
    for (size_t off = 0; off < bytes; off += 64)
    {
        __builtin_prefetch(c + off, 0, 2);
    }
#else
    (void) p;
    (void) bytes;
#endif
}

struct WorkItem
{
    int b;
    int g;
    int rowBegin;
    int rowEnd;
};

/* Per-thread scratch, reused across the items a thread runs. */
struct Scratch
{
    std::vector<float> state; /* [N, ld]: S^T of the tile, rows contiguous (ld = padded rows) */
    std::vector<float> bq;    /* [Q, N] */
    std::vector<float> cq;    /* [Q, N] */
    std::vector<float> xq;    /* [Q, ld] x */
    std::vector<float> xdq;   /* [Q, ld] dt' * x */
    std::vector<float> decq;  /* [Q, ld] exp(dt' A) (mamba2) or dt' (mamba1) */
    std::vector<float> dec1;  /* [N, kRows] per-element decay of one token (mamba1) */
    std::vector<float> aT;    /* [N, ld] A^T of the tile's channels (mamba1) */
    std::vector<float> acc;   /* [ld] S @ C of the current token */
};

LOCORE_ALWAYS_INLINE float load(const float* p, int64_t i)
{
    return p[i];
}

LOCORE_ALWAYS_INLINE float load(const uint16_t* p, int64_t i)
{
    return halfBitsToFloat(p[i]);
}

/* Element i of a weight tensor (A, D, dt_bias) of LocoreScanDType `dtype`, as float: the weights
 * are FP32 with FP16 x (plugin version 2) or share x's dtype (version 1). Read once per work
 * item, off the hot loop. */
float loadWeight(const void* p, int32_t dtype, int64_t i)
{
    return dtype == LOCORE_SCAN_FLOAT16 ? load(static_cast<const uint16_t*>(p), i) : load(static_cast<const float*>(p), i);
}

LOCORE_ALWAYS_INLINE void store(float* p, int64_t i, float v)
{
    p[i] = v;
}

LOCORE_ALWAYS_INLINE void store(uint16_t* p, int64_t i, float v)
{
    p[i] = floatToHalfBits(v);
}

/*
 * One token on one block of kRows rows, fused in a single pass over the state:
 *   S[n, k] = dec[k] * S[n, k] + xd[k] * B[n];   out[k] = sum_n S[n, k] * C[n]
 * summed as (even n) + (odd n), each in order of n. kPerElement: dec is [N, kRows] (mamba1,
 * exp(dt' A[h, n])) instead of [kRows]. With GCC/Clang the rows are held in vector registers of
 * W floats (the target's native width), so the accumulators never go through memory.
 */
#if defined(__GNUC__)
template <int W>
struct VecOf;
template <>
struct VecOf<4>
{
    typedef float type __attribute__((vector_size(16)));
};
template <>
struct VecOf<8>
{
    typedef float type __attribute__((vector_size(32)));
};
template <>
struct VecOf<16>
{
    typedef float type __attribute__((vector_size(64)));
};

template <typename V>
LOCORE_ALWAYS_INLINE V vload(const float* p)
{
    V v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

template <typename V>
LOCORE_ALWAYS_INLINE void vstore(float* p, V v)
{
    std::memcpy(p, &v, sizeof(v));
}

template <int W, int kRows, bool kPerElement>
LOCORE_ALWAYS_INLINE void stepBlock(float* LOCORE_RESTRICT state, int ld, int N,
    const float* LOCORE_RESTRICT bv, const float* LOCORE_RESTRICT cv,
    const float* LOCORE_RESTRICT dec, const float* LOCORE_RESTRICT xd, float* LOCORE_RESTRICT out)
{
    typedef typename VecOf<W>::type V;
    constexpr int kVecs = kRows / W;
    V ya[kVecs]; /* sum over even n */
    V yb[kVecs]; /* sum over odd n (two chains halve the FMA latency per n) */
    V d[kVecs];
    V xv[kVecs];
    for (int v = 0; v < kVecs; ++v)
    {
        ya[v] = V{};
        yb[v] = V{};
        d[v] = kPerElement ? V{} : vload<V>(dec + W * v);
        xv[v] = vload<V>(xd + W * v);
    }
    int n = 0;
    for (; n + 2 <= N; n += 2)
    {
        float* s0 = state + static_cast<size_t>(n) * ld;
        float* s1 = s0 + ld;
        for (int v = 0; v < kVecs; ++v)
        {
            const V d0 = kPerElement ? vload<V>(dec + static_cast<size_t>(n) * kRows + W * v) : d[v];
            const V d1 = kPerElement ? vload<V>(dec + static_cast<size_t>(n + 1) * kRows + W * v) : d[v];
            const V u0 = stateUpdate(vload<V>(s0 + W * v), d0, xv[v], bv[n]);
            const V u1 = stateUpdate(vload<V>(s1 + W * v), d1, xv[v], bv[n + 1]);
            vstore(s0 + W * v, u0);
            vstore(s1 + W * v, u1);
            ya[v] = readoutAdd(ya[v], u0, cv[n]);
            yb[v] = readoutAdd(yb[v], u1, cv[n + 1]);
        }
    }
    if (n < N)
    {
        float* s0 = state + static_cast<size_t>(n) * ld;
        for (int v = 0; v < kVecs; ++v)
        {
            const V d0 = kPerElement ? vload<V>(dec + static_cast<size_t>(n) * kRows + W * v) : d[v];
            const V u0 = stateUpdate(vload<V>(s0 + W * v), d0, xv[v], bv[n]);
            vstore(s0 + W * v, u0);
            ya[v] = readoutAdd(ya[v], u0, cv[n]);
        }
    }
    for (int v = 0; v < kVecs; ++v)
    {
        vstore(out + W * v, ya[v] + yb[v]);
    }
}
#else
template <int W, int kRows, bool kPerElement>
inline void stepBlock(float* state, int ld, int N, const float* bv, const float* cv,
    const float* dec, const float* xd, float* out)
{
    float ya[kRows] = {};
    float yb[kRows] = {};
    for (int n = 0; n < N; ++n)
    {
        float* s = state + static_cast<size_t>(n) * ld;
        float* y = (n % 2 == 0) ? ya : yb;
        for (int k = 0; k < kRows; ++k)
        {
            const float dk = kPerElement ? dec[static_cast<size_t>(n) * kRows + k] : dec[k];
            const float v = stateUpdate(s[k], dk, xd[k], bv[n]);
            s[k] = v;
            y[k] = readoutAdd(y[k], v, cv[n]);
        }
    }
    for (int k = 0; k < kRows; ++k)
    {
        out[k] = ya[k] + yb[k];
    }
}
#endif

template <typename T, int W, int kRows>
LOCORE_ALWAYS_INLINE void runItemImpl(const LocoreScanParams& p, const WorkItem& item, Scratch& sc)
{
    const auto [L, H, P, G, N, rep, reverse, softplus] = scanDims(p);
    const int Q = chunkLength(p);
    const int rows = item.rowEnd - item.rowBegin;
    const int ld = (rows + kRows - 1) / kRows * kRows;
    const int hFirst = item.g * rep + item.rowBegin / P;
    const int nh = item.g * rep + (item.rowEnd - 1) / P - hFirst + 1;
    const bool mamba1 = p.variant == LOCORE_SCAN_MAMBA1;

    const T* x = static_cast<const T*>(p.x);
    const T* dt = static_cast<const T*>(p.dt);
    const void* A = p.A; /* A, D, dt_bias: weightDtype (loadWeight) */
    const T* Bm = static_cast<const T*>(p.B);
    const T* Cm = static_cast<const T*>(p.C);
    const void* D = p.D;
    const void* bias = p.dtBias;
    const int32_t wdt = p.weightDtype;
    const T* z = static_cast<const T*>(p.z);
    T* y = static_cast<T*>(p.y);

    /* Padded rows keep x = dt' = decay = 0, so their state stays 0 and is never written. */
    sc.state.assign(static_cast<size_t>(N) * ld, 0.0f);
    sc.bq.resize(static_cast<size_t>(Q) * N);
    sc.cq.resize(static_cast<size_t>(Q) * N);
    sc.xq.assign(static_cast<size_t>(Q) * ld, 0.0f);
    sc.xdq.assign(static_cast<size_t>(Q) * ld, 0.0f);
    sc.decq.assign(static_cast<size_t>(Q) * ld, 0.0f);
    sc.acc.assign(static_cast<size_t>(ld), 0.0f);

    /* Rows of a group are contiguous in x / z / y: row r of this tile sits at offset
     * rowBase + r of a token's [H * P] block. Head j of the tile owns rows [seg[j], seg[j+1]). */
    const int64_t rowBase = static_cast<int64_t>(item.g) * rep * P + item.rowBegin;
    const int64_t tokenStride = static_cast<int64_t>(H) * P;
    std::vector<int> seg(static_cast<size_t>(nh) + 1);
    std::vector<float> headA(static_cast<size_t>(nh)), headD(static_cast<size_t>(nh)),
        headBias(static_cast<size_t>(nh)), headDt(static_cast<size_t>(nh)),
        headDec(static_cast<size_t>(nh));
    for (int j = 0; j < nh; ++j)
    {
        const int h = hFirst + j;
        const int first = (h - item.g * rep) * P - item.rowBegin;
        seg[j] = std::max(first, 0);
        seg[j + 1] = std::min(first + P, rows);
        headA[j] = mamba1 ? 0.0f : loadWeight(A, wdt, h);
        headD[j] = D ? loadWeight(D, wdt, h) : 0.0f;
        headBias[j] = bias ? loadWeight(bias, wdt, h) : 0.0f;
    }
    if (mamba1)
    {
        /* A^T of the tile's channels (a row is a channel: h = hFirst + r). */
        sc.aT.assign(static_cast<size_t>(N) * ld, 0.0f);
        sc.dec1.assign(static_cast<size_t>(N) * kRows, 0.0f);
        for (int r = 0; r < rows; ++r)
        {
            for (int n = 0; n < N; ++n)
            {
                sc.aT[static_cast<size_t>(n) * ld + r] = loadWeight(A, wdt, static_cast<int64_t>(hFirst + r) * N + n);
            }
        }
    }

    float* state = sc.state.data();
    float* bq = sc.bq.data();
    float* cq = sc.cq.data();
    float* xq = sc.xq.data();
    float* xdq = sc.xdq.data();
    float* decq = sc.decq.data();
    float* acc = sc.acc.data();

    for (int64_t c0 = 0; c0 < L; c0 += Q)
    {
        const int q = static_cast<int>(std::min<int64_t>(Q, L - c0));
        /* 1) stage the chunk as float: B, C (group g), x, dt' * x, exp(dt' A) per row. */
        for (int i = 0; i < q; ++i)
        {
            const int64_t t = tokenAt(c0 + i, L, reverse);
            const int64_t bc = bcIndex(item.b, t, item.g, L, G, N);
            float* bi = bq + static_cast<size_t>(i) * N;
            float* ci = cq + static_cast<size_t>(i) * N;
            for (int n = 0; n < N; ++n)
            {
                bi[n] = load(Bm, bc + n);
            }
            for (int n = 0; n < N; ++n)
            {
                ci[n] = load(Cm, bc + n);
            }
            const T* dtt = dt + dtIndex(item.b, t, hFirst, L, H);
            for (int j = 0; j < nh; ++j)
            {
                headDt[j] = effectiveDt(load(dtt, j), headBias[j], softplus);
                headDec[j] = mamba1 ? headDt[j] : decayFactor(headDt[j], headA[j]);
            }
            const T* xt = x + (static_cast<int64_t>(item.b) * L + t) * tokenStride + rowBase;
            float* xi = xq + static_cast<size_t>(i) * ld;
            float* xdi = xdq + static_cast<size_t>(i) * ld;
            float* di = decq + static_cast<size_t>(i) * ld;
            for (int j = 0; j < nh; ++j)
            {
                const float d = headDt[j];
                const float e = headDec[j];
                for (int r = seg[j]; r < seg[j + 1]; ++r)
                {
                    const float xv = load(xt, r);
                    xi[r] = xv;
                    xdi[r] = d * xv;
                    di[r] = e;
                }
            }
        }
        /* Prefetch the next chunk's x and z rows while this chunk computes (strided rows). */
        for (int64_t tau = c0 + q; tau < std::min<int64_t>(c0 + q + Q, L); ++tau)
        {
            const int64_t o = (static_cast<int64_t>(item.b) * L + tokenAt(tau, L, reverse)) * tokenStride + rowBase;
            prefetchRange(x + o, sizeof(T) * static_cast<size_t>(rows));
            if (z)
            {
                prefetchRange(z + o, sizeof(T) * static_cast<size_t>(rows));
            }
        }
        /* 2) chunk-local scan on the carried state, token by token; 3) finish the outputs. */
        for (int i = 0; i < q; ++i)
        {
            const int64_t t = tokenAt(c0 + i, L, reverse);
            const float* bi = bq + static_cast<size_t>(i) * N;
            const float* ci = cq + static_cast<size_t>(i) * N;
            const float* xi = xq + static_cast<size_t>(i) * ld;
            const float* xdi = xdq + static_cast<size_t>(i) * ld;
            const float* di = decq + static_cast<size_t>(i) * ld;
            for (int r0 = 0; r0 < ld; r0 += kRows)
            {
                if (!mamba1)
                {
                    stepBlock<W, kRows, false>(state + r0, ld, N, bi, ci, di + r0, xdi + r0, acc + r0);
                }
                else
                {
                    float* dec1 = sc.dec1.data();
                    for (int n = 0; n < N; ++n)
                    {
                        const float* an = sc.aT.data() + static_cast<size_t>(n) * ld + r0;
                        for (int k = 0; k < kRows; ++k)
                        {
                            dec1[n * kRows + k] = decayFactor(di[r0 + k], an[k]);
                        }
                    }
                    stepBlock<W, kRows, true>(state + r0, ld, N, bi, ci, dec1, xdi + r0, acc + r0);
                }
            }
            const int64_t o = (static_cast<int64_t>(item.b) * L + t) * tokenStride + rowBase;
            T* yt = y + o;
            for (int j = 0; j < nh; ++j)
            {
                const float dj = headD[j];
                if (z)
                {
                    const T* zt = z + o;
                    for (int r = seg[j]; r < seg[j + 1]; ++r)
                    {
                        store(yt, r, finishOutput(acc[r], xi[r], dj, true, load(zt, r)));
                    }
                }
                else
                {
                    for (int r = seg[j]; r < seg[j + 1]; ++r)
                    {
                        store(yt, r, finishOutput(acc[r], xi[r], dj, false, 0.0f));
                    }
                }
            }
        }
    }
}

using RunItemFn = void (*)(const LocoreScanParams&, const WorkItem&, Scratch&);

/* Baseline: 4-float vectors (SSE2, NEON), two per row block. With -march=native
 * (LOCORE_NATIVE_ARCH) the compile-time target picks the width instead. */
#if !LOCORE_X86_DISPATCH && defined(__AVX512F__)
constexpr int kBaseWidth = 16;
#elif !LOCORE_X86_DISPATCH && defined(__AVX2__)
constexpr int kBaseWidth = 8;
#else
constexpr int kBaseWidth = 4;
#endif

void runItemF32Base(const LocoreScanParams& p, const WorkItem& item, Scratch& sc)
{
    runItemImpl<float, kBaseWidth, 2 * kBaseWidth>(p, item, sc);
}

void runItemF16Base(const LocoreScanParams& p, const WorkItem& item, Scratch& sc)
{
    runItemImpl<uint16_t, kBaseWidth, 2 * kBaseWidth>(p, item, sc);
}

#if LOCORE_X86_DISPATCH
LOCORE_TARGET_V4 void runItemF32V4(const LocoreScanParams& p, const WorkItem& item, Scratch& sc)
{
    runItemImpl<float, 16, 32>(p, item, sc);
}

LOCORE_TARGET_V4 void runItemF16V4(const LocoreScanParams& p, const WorkItem& item, Scratch& sc)
{
    runItemImpl<uint16_t, 16, 32>(p, item, sc);
}

LOCORE_TARGET_V3 void runItemF32V3(const LocoreScanParams& p, const WorkItem& item, Scratch& sc)
{
    runItemImpl<float, 8, 16>(p, item, sc);
}

LOCORE_TARGET_V3 void runItemF16V3(const LocoreScanParams& p, const WorkItem& item, Scratch& sc)
{
    runItemImpl<uint16_t, 8, 16>(p, item, sc);
}
#endif

/* The widest version this CPU runs; $LOCORE_SCAN_CPU_ISA = baseline | avx2 | avx512 caps it
 * (for tests and comparisons; it never selects what the CPU lacks). */
RunItemFn pickRunItem(bool half)
{
#if LOCORE_X86_DISPATCH
    const char* cap = std::getenv("LOCORE_SCAN_CPU_ISA");
    const int limit = !cap ? 2 : std::strcmp(cap, "baseline") == 0 ? 0 : std::strcmp(cap, "avx2") == 0 ? 1 : 2;
    __builtin_cpu_init();
    const bool v3 = limit >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool v4 = v3 && limit >= 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    if (v4)
    {
        return half ? runItemF16V4 : runItemF32V4;
    }
    if (v3)
    {
        return half ? runItemF16V3 : runItemF32V3;
    }
#endif
    return half ? runItemF16Base : runItemF32Base;
}

std::vector<WorkItem> planItems(const LocoreScanParams& p, int threads)
{
    const int groupRows = static_cast<int>(rowsPerGroup(p)); /* <= INT32_MAX: validateParams() */
    /* One head per item (mamba2) or 64 channels (mamba1) ... */
    int tile = p.variant == LOCORE_SCAN_MAMBA1 ? std::min(groupRows, 64) : p.headdim;
    /* ... split further while there are fewer items than 2 x threads (tiles stay >= 4 rows). */
    const int64_t groupsTotal = static_cast<int64_t>(p.batch) * p.ngroups;
    while (tile > 4 && groupsTotal * ((groupRows + tile - 1) / tile) < 2LL * threads)
    {
        tile = std::max(4, (tile / 2 + 3) / 4 * 4);
    }
    std::vector<WorkItem> items;
    items.reserve(static_cast<size_t>(groupsTotal) * ((groupRows + tile - 1) / tile));
    for (int b = 0; b < p.batch; ++b)
    {
        for (int g = 0; g < p.ngroups; ++g)
        {
            for (int r = 0; r < groupRows; r += tile)
            {
                items.push_back(WorkItem{b, g, r, std::min(r + tile, groupRows)});
            }
        }
    }
    return items;
}

int runAll(const LocoreScanParams& p, int32_t numThreads)
{
    int threads = numThreads > 0 ? numThreads : static_cast<int>(std::thread::hardware_concurrency());
    threads = std::max(threads, 1);
    const std::vector<WorkItem> items = planItems(p, threads);
    threads = std::min<int>(threads, static_cast<int>(items.size()));
    const RunItemFn runItem = pickRunItem(p.dtype == LOCORE_SCAN_FLOAT16);
    std::atomic<size_t> next{0};
    std::atomic<int> failed{0};
    auto worker = [&]() {
        try
        {
            Scratch sc;
            for (size_t i = next.fetch_add(1); i < items.size(); i = next.fetch_add(1))
            {
                runItem(p, items[i], sc);
            }
        }
        catch (const std::exception&)
        {
            failed.store(1);
            next.store(items.size());
        }
    };
    if (threads <= 1)
    {
        worker();
    }
    else
    {
        std::vector<std::thread> pool;
        pool.reserve(static_cast<size_t>(threads - 1));
        try
        {
            for (int i = 1; i < threads; ++i)
            {
                pool.emplace_back(worker);
            }
        }
        catch (const std::exception&)
        {
            /* Could not start more threads: run with those that started. */
        }
        worker();
        for (auto& th : pool)
        {
            th.join();
        }
    }
    return failed.load() ? LOCORE_SCAN_UNSUPPORTED : LOCORE_SCAN_OK;
}

} // namespace

extern "C" int locore_selective_scan_cpu(const LocoreScanParams* params, int32_t numThreads)
{
    const int status = validateParams(params);
    if (status != LOCORE_SCAN_OK)
    {
        return status;
    }
    if (numThreads < 0)
    {
        return LOCORE_SCAN_BAD_ARGUMENT;
    }
    if (elementCount(*params) == 0)
    {
        return LOCORE_SCAN_OK;
    }
    try
    {
        return runAll(*params, numThreads);
    }
    catch (const std::exception&)
    {
        return LOCORE_SCAN_UNSUPPORTED; /* out of memory or no threads */
    }
}
