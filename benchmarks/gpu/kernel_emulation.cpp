/*
 * Runs the CUDA kernel's code (selectiveScanKernel.cu, compiled as C++ against the host
 * emulation in emulation/) on the CPU and compares it with the CPU library, for shapes that
 * exercise every code path: several chunks and a tail, both directions, FP32/FP16, groups,
 * rows per warp 4/2/1 (through the emulated multiprocessor count), N up to 256, mamba1, no D,
 * no z, L = 0 and 1, and bad arguments. Built and run by kernel_emulation.sh (.ci/native).
 * Same arithmetic on both sides, so the tolerance is tight: 1e-5 of the output scale (fp32),
 * one fp16 ulp of it (fp16).
 *
 * Since both sides share selectiveScanCore.h, mamba2 cases are also checked against an
 * independent float64 loop of docs/design.md section 3 written here (referenceMamba2, not using the
 * shared header; it decodes fp16 inputs itself). Tolerance, per output element, for an FP32
 * state (u32 = 2^-24) and an output rounded once to the I/O dtype (u_io = 2^-11 for fp16, 0
 * for fp32): each step commits a few (<= 5, with softplus) roundings to each state entry, and
 * earlier errors decay with the state, so the state error is <= 5 L u32 max|S|; y = S C + D x
 * sums N + 1 products; hence |y - y64| <= u_io |y64| + (5 L + N + 1) u32 mag, where
 * mag = max over t of (sum_n |S_t C_t| + |D x_t|) |silu(z_t)|, from the float64 loop.
 */
#include "cuda_runtime_api.h"
#include "scanCase.h"
#include "selectiveScan.h"
#include "selectiveScanCore.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace
{

struct Case
{
    const char* name;
    int batch, seqlen, heads, headdim, groups, dstate, variant, dtype, reverse, softplus, chunk;
    bool gated, withD;
    int sms;
    int weights = -1; /* dtype of A, D, dt_bias: -1 = x's dtype (plugin version 1), else FP32 (version 2) */

    int weightDtype() const
    {
        return weights < 0 ? dtype : weights;
    }
};

std::vector<uint8_t> randomTensor(size_t n, int dtype, std::mt19937& rng, float lo, float hi, bool normal)
{
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_real_distribution<float> ud(lo, hi);
    const size_t es = dtype == LOCORE_SCAN_FLOAT16 ? 2 : 4;
    std::vector<uint8_t> out(n * es);
    for (size_t i = 0; i < n; ++i)
    {
        const float v = normal ? nd(rng) : ud(rng);
        if (dtype == LOCORE_SCAN_FLOAT16)
        {
            const uint16_t h = locore::scan::floatToHalfBits(v);
            std::memcpy(out.data() + 2 * i, &h, 2);
        }
        else
        {
            std::memcpy(out.data() + 4 * i, &v, 4);
        }
    }
    return out;
}

float valueAt(const std::vector<uint8_t>& t, size_t i, int dtype)
{
    if (dtype == LOCORE_SCAN_FLOAT16)
    {
        uint16_t h;
        std::memcpy(&h, t.data() + 2 * i, 2);
        return locore::scan::halfBitsToFloat(h);
    }
    float f;
    std::memcpy(&f, t.data() + 4 * i, 4);
    return f;
}

/* Decode an IEEE binary16 value exactly (independent of selectiveScanCore.h). */
double halfToDouble(uint16_t h)
{
    const int sign = (h >> 15) & 1, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    double v;
    if (exponent == 0)
    {
        v = std::ldexp(static_cast<double>(mantissa), -24);
    }
    else if (exponent == 31)
    {
        v = mantissa ? NAN : INFINITY;
    }
    else
    {
        v = std::ldexp(static_cast<double>(mantissa + 1024), exponent - 25);
    }
    return sign ? -v : v;
}

double value64(const std::vector<uint8_t>& t, size_t i, int dtype)
{
    if (dtype == LOCORE_SCAN_FLOAT16)
    {
        uint16_t h;
        std::memcpy(&h, t.data() + 2 * i, 2);
        return halfToDouble(h);
    }
    float f;
    std::memcpy(&f, t.data() + 4 * i, 4);
    return f;
}

/* docs/design.md section 3, variant mamba2, one token at a time in float64. Returns y [B, L, H, P]
 * and sets mag (see the file comment). */
std::vector<double> referenceMamba2(const Case& c, const std::vector<uint8_t>& x, const std::vector<uint8_t>& dtv,
    const std::vector<uint8_t>& A, const std::vector<uint8_t>& B, const std::vector<uint8_t>& C,
    const std::vector<uint8_t>& D, const std::vector<uint8_t>& bias, const std::vector<uint8_t>& z, double& mag)
{
    const int L = c.seqlen, H = c.heads, P = c.headdim, G = c.groups, N = c.dstate, dt = c.dtype;
    const int wdt = c.weightDtype();
    std::vector<double> y(static_cast<size_t>(c.batch) * L * H * P, 0.0);
    mag = 0;
    for (int b = 0; b < c.batch; ++b)
    {
        for (int h = 0; h < H; ++h)
        {
            const int g = h / (H / G);
            std::vector<double> S(static_cast<size_t>(P) * N, 0.0);
            for (int step = 0; step < L; ++step)
            {
                const int t = c.reverse ? L - 1 - step : step;
                const size_t bt = static_cast<size_t>(b) * L + t;
                double d = value64(dtv, bt * H + h, dt);
                if (c.softplus)
                {
                    d += value64(bias, h, wdt);
                    d = d > 30 ? d : std::log1p(std::exp(d));
                }
                const double decay = std::exp(d * value64(A, h, wdt));
                for (int p = 0; p < P; ++p)
                {
                    const size_t xi = (bt * H + h) * P + p;
                    const double xv = value64(x, xi, dt);
                    double acc = 0, accAbs = 0;
                    for (int n = 0; n < N; ++n)
                    {
                        const size_t bi = (bt * G + g) * N + n;
                        double& s = S[static_cast<size_t>(p) * N + n];
                        s = decay * s + d * xv * value64(B, bi, dt);
                        acc += s * value64(C, bi, dt);
                        accAbs += std::fabs(s * value64(C, bi, dt));
                    }
                    const double skip = c.withD ? value64(D, h, wdt) * xv : 0.0;
                    double gate = 1.0;
                    if (c.gated)
                    {
                        const double zv = value64(z, xi, dt);
                        gate = zv / (1.0 + std::exp(-zv));
                    }
                    y[xi] = (acc + skip) * gate;
                    mag = std::max(mag, (accAbs + std::fabs(skip)) * std::fabs(gate));
                }
            }
        }
    }
    return y;
}

bool runCase(const Case& c, uint32_t seed)
{
    std::mt19937 rng(seed);
    const size_t bl = static_cast<size_t>(c.batch) * c.seqlen;
    const size_t xn = bl * c.heads * c.headdim;
    const int dt = c.dtype;
    const int wdt = c.weightDtype();
    auto x = randomTensor(xn, dt, rng, 0, 0, true);
    auto dtv = c.softplus ? randomTensor(bl * c.heads, dt, rng, -4.0f, 0.5f, false)
                          : randomTensor(bl * c.heads, dt, rng, 0.01f, 0.3f, false);
    auto A = randomTensor(c.variant == LOCORE_SCAN_MAMBA1 ? static_cast<size_t>(c.heads) * c.dstate : c.heads, wdt,
        rng, -2.7f, -0.37f, false);
    auto B = randomTensor(bl * c.groups * c.dstate, dt, rng, 0, 0, true);
    auto C = randomTensor(bl * c.groups * c.dstate, dt, rng, 0, 0, true);
    auto D = randomTensor(c.heads, wdt, rng, 0, 0, true);
    auto bias = randomTensor(c.heads, wdt, rng, -1.0f, 1.0f, false);
    auto z = randomTensor(xn, dt, rng, 0, 0, true);
    const size_t es = dt == LOCORE_SCAN_FLOAT16 ? 2 : 4;
    std::vector<uint8_t> yCpu(xn * es + 1), yEmu(xn * es + 1, 0xff);

    LocoreScanParams p = caseParams(c, c.chunk);
    p.weightDtype = wdt;
    p.x = x.data();
    p.dt = dtv.data();
    p.A = A.data();
    p.B = B.data();
    p.C = C.data();
    p.D = c.withD ? D.data() : nullptr;
    p.dtBias = c.softplus ? bias.data() : nullptr;
    p.z = c.gated ? z.data() : nullptr;
    p.y = yCpu.data();
    const int s1 = locore_selective_scan_cpu(&p, 1);
    p.y = yEmu.data();
    emu::gSmCount = c.sms;
    const int s2 = locore_selective_scan_cuda(&p, nullptr, nullptr);
    if (s1 != LOCORE_SCAN_OK || s2 != LOCORE_SCAN_OK)
    {
        std::printf("FAIL %-40s status cpu %d, kernel %d (%s)\n", c.name, s1, s2, locore_scan_status_string(s2));
        return false;
    }
    double scale = 0;
    for (size_t i = 0; i < xn; ++i)
    {
        scale = std::max(scale, static_cast<double>(std::fabs(valueAt(yCpu, i, dt))));
    }
    scale = scale > 0 ? scale : 1.0;
    const double tol = dt == LOCORE_SCAN_FLOAT16 ? 1.0 / 1024 : 1e-5;
    double worst = 0;
    for (size_t i = 0; i < xn; ++i)
    {
        const double e = std::fabs(static_cast<double>(valueAt(yEmu, i, dt)) - valueAt(yCpu, i, dt)) / scale;
        worst = std::isnan(e) ? 1e30 : std::max(worst, e);
    }
    bool ok = worst <= tol;
    std::printf("%s %-40s max |err|/scale %.2e\n", ok ? "ok  " : "FAIL", c.name, worst);
    if (c.variant == LOCORE_SCAN_MAMBA2)
    {
        double mag = 0;
        const std::vector<double> ref = referenceMamba2(c, x, dtv, A, B, C, D, bias, z, mag);
        const double uio = dt == LOCORE_SCAN_FLOAT16 ? std::ldexp(1.0, -11) : 0.0;
        const double fp32Part = (5.0 * c.seqlen + c.dstate + 1) * std::ldexp(1.0, -24) * mag;
        double worstRatio = 0;
        for (size_t i = 0; i < xn; ++i)
        {
            const double e = std::fabs(value64(yEmu, i, dt) - ref[i]);
            const double bound = uio * std::fabs(ref[i]) + fp32Part;
            worstRatio = std::isnan(e) ? 1e30 : std::max(worstRatio, e / bound);
        }
        const bool refOk = worstRatio <= 1.0;
        std::printf("%s %-40s vs float64 loop: max |err|/bound %.2f\n", refOk ? "ok  " : "FAIL", c.name, worstRatio);
        ok = ok && refOk;
    }
    return ok;
}

} // namespace

int main()
{
    const int F32 = LOCORE_SCAN_FLOAT32, F16 = LOCORE_SCAN_FLOAT16, M2 = LOCORE_SCAN_MAMBA2,
              M1 = LOCORE_SCAN_MAMBA1;
    /* name, B, L, H, P, G, N, variant, dtype, reverse, softplus, chunk, z, D, SMs */
    const Case cases[] = {
        {"m2 f32 fwd L=1", 1, 1, 2, 8, 1, 16, M2, F32, 0, 1, 64, true, true, 1},
        {"m2 f32 fwd L=130 rpw=4 chunk 64", 2, 130, 4, 16, 2, 16, M2, F32, 0, 1, 64, true, true, 1},
        {"m2 f32 rev L=130 rpw=2", 1, 130, 4, 16, 1, 16, M2, F32, 1, 0, 64, false, true, 4},
        {"m2 f32 rev L=77 rpw=1 chunk 5", 1, 77, 2, 16, 2, 33, M2, F32, 1, 1, 5, true, false, 100},
        {"m2 f16 fwd L=70 P=5 N=7 G=3", 1, 70, 6, 5, 3, 7, M2, F16, 0, 1, 64, true, true, 1},
        {"m2 f16 rev L=70 P=70 N=100", 1, 70, 2, 70, 1, 100, M2, F16, 1, 1, 64, true, true, 2},
        {"m2 f32 fwd L=40 N=256", 1, 40, 2, 4, 1, 256, M2, F32, 0, 1, 64, true, true, 1},
        {"m2 f32 fwd L=66 N=64 P=64 chunk 1000", 1, 66, 2, 64, 1, 64, M2, F32, 0, 1, 1000, false, true, 1},
        {"m1 f32 fwd L=65 Dc=24 G=2", 2, 65, 24, 1, 2, 16, M1, F32, 0, 1, 64, true, true, 1},
        {"m1 f16 rev L=65 Dc=40", 1, 65, 40, 1, 1, 20, M1, F16, 1, 1, 64, true, true, 8},
        /* plugin version 2: FP16 x with FP32 A, D, dt_bias */
        {"m2 f16 fp32-weights fwd L=70 G=3", 1, 70, 6, 5, 3, 7, M2, F16, 0, 1, 64, true, true, 1, F32},
        {"m2 f16 fp32-weights rev L=130", 2, 130, 4, 16, 2, 16, M2, F16, 1, 1, 64, false, true, 4, F32},
        {"m1 f16 fp32-weights fwd L=65 Dc=24", 2, 65, 24, 1, 2, 16, M1, F16, 0, 1, 64, true, true, 1, F32},
    };
    int failures = 0;
    uint32_t seed = 7;
    for (const Case& c : cases)
    {
        failures += runCase(c, seed++) ? 0 : 1;
    }
    /* L = 0: nothing to do, success; bad arguments: a status, no crash. */
    LocoreScanParams p{};
    p.batch = 1;
    p.nheads = 2;
    p.headdim = 4;
    p.ngroups = 1;
    p.dstate = 8;
    p.chunkSize = 64;
    if (locore_selective_scan_cuda(&p, nullptr, nullptr) != LOCORE_SCAN_OK)
    {
        std::printf("FAIL L=0 is not a no-op\n");
        ++failures;
    }
    p.seqlen = 3; /* NULL tensors */
    if (locore_selective_scan_cuda(&p, nullptr, nullptr) != LOCORE_SCAN_BAD_ARGUMENT
        || locore_selective_scan_cuda(nullptr, nullptr, nullptr) != LOCORE_SCAN_BAD_ARGUMENT)
    {
        std::printf("FAIL bad arguments are not rejected\n");
        ++failures;
    }
    p.dstate = 300;
    std::vector<float> buf(3 * 2 * 4 * 300 * 2);
    p.x = p.dt = p.A = p.B = p.C = buf.data();
    p.y = buf.data();
    if (locore_selective_scan_cuda(&p, nullptr, nullptr) != LOCORE_SCAN_UNSUPPORTED)
    {
        std::printf("FAIL dstate 300 is not reported as unsupported\n");
        ++failures;
    }
    std::printf("%s: CUDA kernel code (emulated on the CPU) vs CPU library, %d failure(s)\n",
        failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
