/*
 * SelectiveScan kernel core: the arithmetic shared by the CPU library (selectiveScanCpu.cpp)
 * and the CUDA kernel (selectiveScanKernel.cu). Every function here is plain C++ when compiled
 * by a host compiler and __host__ __device__ under nvcc (LOCORE_HD), so the CPU build, its
 * tests and the CUDA build run the same element-wise math. Semantics: docs/design.md section 3.
 *
 * Structure of a scan (both back ends):
 *   - the work is split into independent "rows": (head h, channel p) pairs of one group g
 *     (mamba2: row r of group g is h = g * H/G + r / P, p = r % P; mamba1: P = 1, a row is a
 *     channel). Rows never interact, so any tiling of rows over threads/blocks is exact;
 *   - time is processed in chunks of Q tokens ("logical time" tau = 0..L-1; the token read is
 *     t = tau, or L-1-tau for reverse=1). For each chunk the per-token scalars are prepared once
 *     (chunkPrepare: dt' and exp(dt' * A)), inputs are converted to float once, then the
 *     chunk-local scan runs token by token on the FP32 state (stateUpdate, readout), the state
 *     at the chunk's end is carried into the next chunk, and outputs are finished
 *     (finishOutput: + D * x, * silu(z)).
 */
#ifndef LOCORE_SELECTIVE_SCAN_CORE_H
#define LOCORE_SELECTIVE_SCAN_CORE_H

#include "selectiveScan.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define LOCORE_HD __host__ __device__ __forceinline__
#else
#define LOCORE_HD inline
#endif

namespace locore
{
namespace scan
{

/* Largest chunk used for staging; chunkSize is a hint and is clamped to [1, kMaxChunk]. */
constexpr int kMaxChunk = 256;
/* F.softplus(x) with beta = 1 returns x above this threshold (as torch does). */
constexpr float kSoftplusThreshold = 20.0f;

/* ---- element-wise math (identical on host and device) ---------------------------------- */

/* dt' = softplus(dt + dt_bias) if softplus else dt + dt_bias. */
LOCORE_HD float effectiveDt(float dt, float bias, bool softplus)
{
    float v = dt + bias;
    if (softplus)
    {
        v = v > kSoftplusThreshold ? v : log1pf(expf(v));
    }
    return v;
}

/* exp(dt' * A): the decay of one token (A <= 0, so the result is in [0, 1]). */
LOCORE_HD float decayFactor(float dtEff, float a)
{
    return expf(dtEff * a);
}

/* One state element: S = exp(dt' A) * S + (dt' * x) * B. V is float, or a vector of floats
 * (the CPU library updates 16 rows at once) with a scalar B. */
template <typename V, typename S>
LOCORE_HD V stateUpdate(V s, V decay, V xdt, S b)
{
    return decay * s + xdt * b;
}

/* One term of the readout y = S @ C: acc + S[n] * C[n] (V as in stateUpdate). */
template <typename V, typename S>
LOCORE_HD V readoutAdd(V acc, V s, S c)
{
    return acc + s * c;
}

/* silu(z) = z * sigmoid(z) = z / (1 + exp(-z)). */
LOCORE_HD float silu(float z)
{
    return z / (1.0f + expf(-z));
}

/* y = (S @ C + D * x) * silu(z) (the gate only when z is present). */
LOCORE_HD float finishOutput(float acc, float x, float d, bool hasZ, float z)
{
    float y = acc + d * x;
    if (hasZ)
    {
        y = y * silu(z);
    }
    return y;
}

/* ---- sizes of one call ------------------------------------------------------------------ */

/* The sizes and flags of one call, read the same way by every back end:
 *   const auto [L, H, P, G, N, rep, reverse, softplus] = scanDims(p); */
struct ScanDims
{
    int64_t L;     /* seqlen */
    int H;         /* nheads: heads (mamba2) or channels (mamba1) */
    int P;         /* headdim: channels per head (1 for mamba1) */
    int G;         /* ngroups */
    int N;         /* dstate */
    int rep;       /* heads (channels) per group: H / G */
    bool reverse;  /* the recurrence runs from the last token to the first */
    bool softplus; /* dt' = softplus(dt + dt_bias) */
};

LOCORE_HD ScanDims scanDims(const LocoreScanParams& p)
{
    return ScanDims{p.seqlen, p.nheads, p.headdim, p.ngroups, p.dstate, p.nheads / p.ngroups, p.reverse != 0,
        p.dtSoftplus != 0};
}

/* Rows of one group: its (head, channel) pairs, (H / G) * P, multiplied in 64 bits (each factor is
 * 32-bit, their product need not be; validateParams() refuses products past INT32_MAX, so callers
 * that index rows with int may narrow it after validation). */
LOCORE_HD int64_t rowsPerGroup(const LocoreScanParams& p)
{
    return static_cast<int64_t>(p.nheads / p.ngroups) * static_cast<int64_t>(p.headdim);
}

/* ---- indexing (token-major layouts of docs/design.md section 3) ------------------------------ */

/* Token read at logical step tau (the recurrence visits tau = 0, 1, ..). */
LOCORE_HD int64_t tokenAt(int64_t tau, int64_t seqlen, bool reverse)
{
    return reverse ? seqlen - 1 - tau : tau;
}

/* x / z / y: [B, L, H, P]. */
LOCORE_HD int64_t xIndex(int64_t b, int64_t t, int64_t h, int64_t p, int64_t L, int64_t H, int64_t P)
{
    return ((b * L + t) * H + h) * P + p;
}

/* dt: [B, L, H]. */
LOCORE_HD int64_t dtIndex(int64_t b, int64_t t, int64_t h, int64_t L, int64_t H)
{
    return (b * L + t) * H + h;
}

/* B / C: [B, L, G, N]; returns the index of element n = 0. */
LOCORE_HD int64_t bcIndex(int64_t b, int64_t t, int64_t g, int64_t L, int64_t G, int64_t N)
{
    return ((b * L + t) * G + g) * N;
}

/* Row r of group g -> head and channel. */
LOCORE_HD void rowToHeadChannel(int g, int r, int headsPerGroup, int P, int* h, int* p)
{
    *h = g * headsPerGroup + r / P;
    *p = r % P;
}

/* ---- FP16 <-> FP32 on the host (portable, round to nearest even) ------------------------ */

inline float halfBitsToFloat(uint16_t hbits)
{
    uint32_t sign = static_cast<uint32_t>(hbits & 0x8000u) << 16;
    uint32_t exp = (hbits >> 10) & 0x1fu;
    uint32_t man = hbits & 0x3ffu;
    uint32_t bits;
    if (exp == 0)
    {
        if (man == 0)
        {
            bits = sign; /* +-0 */
        }
        else
        { /* subnormal half -> normal float */
            int e = -1;
            do
            {
                ++e;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    }
    else if (exp == 0x1f)
    {
        bits = sign | 0x7f800000u | (man << 13); /* inf / nan */
    }
    else
    {
        bits = sign | ((exp + (127 - 15)) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

inline uint16_t floatToHalfBits(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u)
    { /* inf or nan (keep nan quiet) */
        return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
    }
    if (absx >= 0x477ff000u)
    { /* rounds to >= 65520: overflow to inf */
        return static_cast<uint16_t>(sign | 0x7c00u);
    }
    if (absx < 0x38800000u)
    { /* below the smallest normal half (2^-14): subnormal or zero */
        if (absx < 0x33000000u)
        { /* < 2^-25: rounds to zero */
            return static_cast<uint16_t>(sign);
        }
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14..24 */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t mid = 1u << (shift - 1u);
        if (rem > mid || (rem == mid && (half & 1u)))
        {
            ++half;
        }
        return static_cast<uint16_t>(sign | half);
    }
    uint32_t h = ((absx >> 13) - ((127u - 15u) << 10));
    uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
    {
        ++h; /* may carry into the exponent: still correct */
    }
    return static_cast<uint16_t>(sign | h);
}

/* ---- argument checks shared by every entry point (host) --------------------------------- */

inline int64_t elementCount(const LocoreScanParams& p)
{
    return static_cast<int64_t>(p.batch) * p.seqlen * p.nheads * p.headdim;
}

/* Returns LOCORE_SCAN_OK or LOCORE_SCAN_BAD_ARGUMENT (never touches tensor memory). */
inline int validateParams(const LocoreScanParams* p)
{
    if (p == nullptr)
    {
        return LOCORE_SCAN_BAD_ARGUMENT;
    }
    if (p->batch < 0 || p->seqlen < 0 || p->nheads < 1 || p->headdim < 1 || p->ngroups < 1
        || p->dstate < 1 || p->chunkSize < 1)
    {
        return LOCORE_SCAN_BAD_ARGUMENT;
    }
    if (p->nheads % p->ngroups != 0)
    {
        return LOCORE_SCAN_BAD_ARGUMENT;
    }
    if (rowsPerGroup(*p) > INT32_MAX)
    {
        return LOCORE_SCAN_BAD_ARGUMENT; /* (H / G) * P rows of one group must fit 32-bit indices */
    }
    if (p->variant != LOCORE_SCAN_MAMBA2 && p->variant != LOCORE_SCAN_MAMBA1)
    {
        return LOCORE_SCAN_BAD_ARGUMENT;
    }
    if (p->variant == LOCORE_SCAN_MAMBA1 && p->headdim != 1)
    {
        return LOCORE_SCAN_BAD_ARGUMENT;
    }
    if (p->dtype != LOCORE_SCAN_FLOAT32 && p->dtype != LOCORE_SCAN_FLOAT16)
    {
        return LOCORE_SCAN_BAD_ARGUMENT;
    }
    if (p->weightDtype != LOCORE_SCAN_FLOAT32 && p->weightDtype != LOCORE_SCAN_FLOAT16)
    {
        return LOCORE_SCAN_BAD_ARGUMENT;
    }
    if ((p->dtSoftplus != 0 && p->dtSoftplus != 1) || (p->reverse != 0 && p->reverse != 1))
    {
        return LOCORE_SCAN_BAD_ARGUMENT;
    }
    /* Element counts must fit in int64 comfortably (and in size_t). */
    const double total = static_cast<double>(p->batch) * p->seqlen
        * (static_cast<double>(p->nheads) * p->headdim + 2.0 * p->ngroups * p->dstate);
    if (total > 9.0e15)
    {
        return LOCORE_SCAN_BAD_ARGUMENT;
    }
    if (elementCount(*p) > 0
        && (p->x == nullptr || p->dt == nullptr || p->A == nullptr || p->B == nullptr
            || p->C == nullptr || p->y == nullptr))
    {
        return LOCORE_SCAN_BAD_ARGUMENT;
    }
    return LOCORE_SCAN_OK;
}

/* Chunk length actually used for staging. */
inline int chunkLength(const LocoreScanParams& p)
{
    int q = p.chunkSize < kMaxChunk ? p.chunkSize : kMaxChunk;
    if (p.seqlen > 0 && q > p.seqlen)
    {
        q = p.seqlen;
    }
    return q < 1 ? 1 : q;
}

} // namespace scan
} // namespace locore

#endif /* LOCORE_SELECTIVE_SCAN_CORE_H */
