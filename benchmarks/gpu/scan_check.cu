/*
 * GPU check of the SelectiveScan CUDA kernel (run by benchmarks/gpu/scan_check.sh on a CUDA
 * machine): compares locore_selective_scan_cuda with the CPU library (locore_selective_scan_cpu,
 * itself tested against the torch reference) on random inputs, then times the benchmark case
 * against the bytes-moved floor.
 *
 * Tolerances relative to the output scale s = max |y_cpu| (as tests/test_scan_cpu.py):
 *   fp32: |y - y_cpu| <= (2e-3 + 6e-4 |y_cpu| / s) s;  fp16: (5e-3 + 3e-3 |y_cpu| / s) s.
 * Exit status 0 when every case passes.
 */
#include "scanCase.h"
#include "selectiveScan.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#define CHECK_CUDA(call)                                                                           \
    do                                                                                             \
    {                                                                                              \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess)                                                                   \
        {                                                                                          \
            std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(err_), __FILE__,   \
                __LINE__, cudaGetErrorString(err_));                                               \
            std::exit(2);                                                                          \
        }                                                                                          \
    } while (0)

namespace
{

struct Case
{
    const char* name;
    int batch, seqlen, heads, headdim, groups, dstate;
    int variant, dtype, reverse, softplus;
    bool gated, withD;
};

struct HostTensor
{
    std::vector<float> f;      /* values as float (already rounded to the I/O dtype) */
    std::vector<uint16_t> h;   /* fp16 bits when dtype is fp16 */
    void* dev = nullptr;

    size_t bytes(int dtype) const
    {
        return f.size() * (dtype == LOCORE_SCAN_FLOAT16 ? 2 : 4);
    }
    const void* host(int dtype) const
    {
        return dtype == LOCORE_SCAN_FLOAT16 ? static_cast<const void*>(h.data())
                                            : static_cast<const void*>(f.data());
    }
};

void fill(HostTensor& t, size_t n, int dtype, std::mt19937& rng, float lo, float hi, bool normal)
{
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_real_distribution<float> ud(lo, hi);
    t.f.resize(n);
    t.h.resize(dtype == LOCORE_SCAN_FLOAT16 ? n : 0);
    for (size_t i = 0; i < n; ++i)
    {
        float v = normal ? nd(rng) : ud(rng);
        if (dtype == LOCORE_SCAN_FLOAT16)
        {
            __half hv = __float2half_rn(v);
            std::memcpy(&t.h[i], &hv, 2);
            v = __half2float(hv);
        }
        t.f[i] = v;
    }
}

void upload(HostTensor& t, int dtype)
{
    if (t.f.empty())
    {
        return;
    }
    CHECK_CUDA(cudaMalloc(&t.dev, t.bytes(dtype)));
    CHECK_CUDA(cudaMemcpy(t.dev, t.host(dtype), t.bytes(dtype), cudaMemcpyHostToDevice));
}

std::vector<float> toFloat(const std::vector<uint8_t>& raw, size_t n, int dtype)
{
    std::vector<float> out(n);
    for (size_t i = 0; i < n; ++i)
    {
        if (dtype == LOCORE_SCAN_FLOAT16)
        {
            __half hv;
            std::memcpy(&hv, raw.data() + 2 * i, 2);
            out[i] = __half2float(hv);
        }
        else
        {
            std::memcpy(&out[i], raw.data() + 4 * i, 4);
        }
    }
    return out;
}

struct Inputs
{
    HostTensor x, dt, A, B, C, D, bias, z;
    size_t xCount = 0;

    /* Every tensor, in the order of LocoreScanParams. */
    std::array<HostTensor*, 8> all()
    {
        return {&x, &dt, &A, &B, &C, &D, &bias, &z};
    }
};

Inputs makeInputs(const Case& c, uint32_t seed)
{
    std::mt19937 rng(seed);
    Inputs in;
    const size_t bl = static_cast<size_t>(c.batch) * c.seqlen;
    in.xCount = bl * c.heads * c.headdim;
    fill(in.x, in.xCount, c.dtype, rng, 0, 0, true);
    if (c.softplus)
    {
        fill(in.dt, bl * c.heads, c.dtype, rng, -4.0f, 0.5f, false);
        fill(in.bias, c.heads, c.dtype, rng, -1.0f, 1.0f, false);
    }
    else
    {
        fill(in.dt, bl * c.heads, c.dtype, rng, 0.01f, 0.3f, false);
    }
    const size_t aCount = c.variant == LOCORE_SCAN_MAMBA1 ? static_cast<size_t>(c.heads) * c.dstate : c.heads;
    fill(in.A, aCount, c.dtype, rng, -2.7f, -0.37f, false);
    fill(in.B, bl * c.groups * c.dstate, c.dtype, rng, 0, 0, true);
    fill(in.C, bl * c.groups * c.dstate, c.dtype, rng, 0, 0, true);
    if (c.withD)
    {
        fill(in.D, c.heads, c.dtype, rng, 0, 0, true);
    }
    if (c.gated)
    {
        fill(in.z, in.xCount, c.dtype, rng, 0, 0, true);
    }
    return in;
}

LocoreScanParams paramsFor(const Case& c)
{
    return caseParams(c, 64);
}

/* Points p's inputs at the host copies of the tensors (NULL for an absent one), or with device
 * at their device copies (uploadAll). */
void bindInputs(LocoreScanParams& p, const Inputs& in, int dtype, bool device)
{
    auto at = [&](const HostTensor& t) -> const void* {
        return device ? t.dev : (t.f.empty() ? nullptr : t.host(dtype));
    };
    p.x = at(in.x);
    p.dt = at(in.dt);
    p.A = at(in.A);
    p.B = at(in.B);
    p.C = at(in.C);
    p.D = at(in.D);
    p.dtBias = at(in.bias);
    p.z = at(in.z);
}

void uploadAll(Inputs& in, int dtype)
{
    for (HostTensor* t : in.all())
    {
        upload(*t, dtype);
    }
}

void freeAll(Inputs& in)
{
    for (HostTensor* t : in.all())
    {
        if (t->dev)
        {
            CHECK_CUDA(cudaFree(t->dev));
        }
    }
}

/* Returns true when the CUDA output matches the CPU library within the dtype's tolerance. */
bool checkCase(const Case& c, uint32_t seed)
{
    Inputs in = makeInputs(c, seed);
    const size_t esize = c.dtype == LOCORE_SCAN_FLOAT16 ? 2 : 4;
    LocoreScanParams p = paramsFor(c);

    std::vector<uint8_t> yCpu(in.xCount * esize), yGpu(in.xCount * esize);
    bindInputs(p, in, c.dtype, false);
    p.y = yCpu.data();
    int st = locore_selective_scan_cpu(&p, 0);
    if (st != LOCORE_SCAN_OK)
    {
        std::printf("FAIL %-34s CPU library: %s\n", c.name, locore_scan_status_string(st));
        return false;
    }

    uploadAll(in, c.dtype);
    void* yDev = nullptr;
    CHECK_CUDA(cudaMalloc(&yDev, std::max<size_t>(yGpu.size(), 1)));
    CHECK_CUDA(cudaMemset(yDev, 0xff, std::max<size_t>(yGpu.size(), 1))); /* NaN fill */
    bindInputs(p, in, c.dtype, true);
    p.y = yDev;
    void* ws = nullptr;
    const size_t wsBytes = locore_selective_scan_cuda_workspace(&p);
    if (wsBytes)
    {
        CHECK_CUDA(cudaMalloc(&ws, wsBytes));
    }
    st = locore_selective_scan_cuda(&p, ws, nullptr);
    CHECK_CUDA(cudaDeviceSynchronize());
    if (st != LOCORE_SCAN_OK)
    {
        std::printf("FAIL %-34s CUDA: %s\n", c.name, locore_scan_status_string(st));
        return false;
    }
    if (!yGpu.empty())
    {
        CHECK_CUDA(cudaMemcpy(yGpu.data(), yDev, yGpu.size(), cudaMemcpyDeviceToHost));
    }
    freeAll(in);
    CHECK_CUDA(cudaFree(yDev));
    if (ws)
    {
        CHECK_CUDA(cudaFree(ws));
    }

    const std::vector<float> a = toFloat(yGpu, in.xCount, c.dtype);
    const std::vector<float> r = toFloat(yCpu, in.xCount, c.dtype);
    const double rtol = c.dtype == LOCORE_SCAN_FLOAT16 ? 3e-3 : 6e-4;
    const double atol = c.dtype == LOCORE_SCAN_FLOAT16 ? 5e-3 : 2e-3;
    double scale = 0.0;
    for (float v : r)
    {
        scale = std::max(scale, static_cast<double>(std::fabs(v)));
    }
    scale = scale > 0 ? scale : 1.0;
    double worst = 0.0;
    size_t bad = 0;
    for (size_t i = 0; i < a.size(); ++i)
    {
        const double err = std::fabs(static_cast<double>(a[i]) - r[i]) / scale;
        const double allowed = atol + rtol * std::fabs(r[i]) / scale;
        worst = std::max(worst, std::isnan(err) ? 1e30 : err);
        if (!(err <= allowed))
        {
            ++bad;
        }
    }
    std::printf("%s %-34s max |err|/scale %.2e (atol %.0e)%s\n", bad ? "FAIL" : "ok  ", c.name, worst,
        atol, bad ? " <- mismatches" : "");
    return bad == 0;
}

void timeCase(const Case& c, double peakGBs)
{
    Inputs in = makeInputs(c, 1234);
    const size_t esize = c.dtype == LOCORE_SCAN_FLOAT16 ? 2 : 4;
    uploadAll(in, c.dtype);
    void* yDev = nullptr;
    CHECK_CUDA(cudaMalloc(&yDev, in.xCount * esize));
    LocoreScanParams p = paramsFor(c);
    bindInputs(p, in, c.dtype, true);
    p.y = yDev;
    cudaStream_t stream;
    CHECK_CUDA(cudaStreamCreate(&stream));
    for (int i = 0; i < 5; ++i)
    {
        if (locore_selective_scan_cuda(&p, nullptr, stream) != LOCORE_SCAN_OK)
        {
            std::printf("FAIL timing launch\n");
            std::exit(1);
        }
    }
    cudaEvent_t e0, e1;
    CHECK_CUDA(cudaEventCreate(&e0));
    CHECK_CUDA(cudaEventCreate(&e1));
    std::vector<float> ms;
    for (int i = 0; i < 30; ++i)
    {
        CHECK_CUDA(cudaEventRecord(e0, stream));
        locore_selective_scan_cuda(&p, nullptr, stream);
        CHECK_CUDA(cudaEventRecord(e1, stream));
        CHECK_CUDA(cudaEventSynchronize(e1));
        float t = 0;
        CHECK_CUDA(cudaEventElapsedTime(&t, e0, e1));
        ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    const double med = ms[ms.size() / 2];
    /* Bytes that must move at least once: read x, dt, B, C (z), write y. */
    double bytes = 0;
    for (const HostTensor* t : in.all())
    {
        bytes += t->bytes(c.dtype);
    }
    bytes += in.xCount * esize;
    const double gbs = bytes / (med * 1e-3) / 1e9;
    std::printf("time %-34s median %.3f ms  %.1f MB moved  %.1f GB/s", c.name, med, bytes / 1e6, gbs);
    if (peakGBs > 0)
    {
        std::printf("  (floor %.3f ms at %.0f GB/s peak: %.1f%% of peak)", bytes / (peakGBs * 1e9) * 1e3,
            peakGBs, 100.0 * gbs / peakGBs);
    }
    std::printf("\n");
    freeAll(in);
    CHECK_CUDA(cudaFree(yDev));
    CHECK_CUDA(cudaStreamDestroy(stream));
}

} // namespace

int main()
{
    int device = 0;
    CHECK_CUDA(cudaGetDevice(&device));
    cudaDeviceProp prop{};
    CHECK_CUDA(cudaGetDeviceProperties(&prop, device));
    int memClockKHz = 0;
    int busBits = 0;
    double peakGBs = 0;
    if (cudaDeviceGetAttribute(&memClockKHz, cudaDevAttrMemoryClockRate, device) == cudaSuccess
        && cudaDeviceGetAttribute(&busBits, cudaDevAttrGlobalMemoryBusWidth, device) == cudaSuccess)
    {
        peakGBs = 2.0 * memClockKHz * 1e3 * (busBits / 8.0) / 1e9;
    }
    (void) cudaGetLastError();
    std::printf("device %s (sm_%d%d, %d SMs), theoretical DRAM bandwidth %.0f GB/s\n", prop.name, prop.major,
        prop.minor, prop.multiProcessorCount, peakGBs);

    const int F32 = LOCORE_SCAN_FLOAT32, F16 = LOCORE_SCAN_FLOAT16, M2 = LOCORE_SCAN_MAMBA2,
              M1 = LOCORE_SCAN_MAMBA1;
    const Case cases[] = {
        {"mamba2 fp32 fwd L=1", 2, 1, 4, 8, 1, 16, M2, F32, 0, 1, true, true},
        {"mamba2 fp32 fwd L=63 G=H", 2, 63, 4, 8, 4, 16, M2, F32, 0, 1, true, true},
        {"mamba2 fp32 rev L=65", 2, 65, 4, 8, 1, 16, M2, F32, 1, 0, false, true},
        {"mamba2 fp16 fwd L=65 z", 2, 65, 4, 8, 2, 16, M2, F16, 0, 1, true, true},
        {"mamba2 fp16 rev L=777 noD", 1, 777, 6, 5, 3, 7, M2, F16, 1, 1, true, false},
        {"mamba2 fp32 fwd L=129 P=70 N=100", 1, 129, 2, 70, 1, 100, M2, F32, 0, 1, false, true},
        {"mamba2 fp32 fwd L=64 N=256", 1, 64, 2, 16, 1, 256, M2, F32, 0, 1, true, true},
        {"mamba1 fp32 fwd L=65", 2, 65, 24, 1, 2, 16, M1, F32, 0, 1, true, true},
        {"mamba1 fp16 rev L=300", 1, 300, 130, 1, 1, 16, M1, F16, 1, 1, true, true},
        {"bench fp32 fwd L=5050", 1, 5050, 8, 64, 1, 64, M2, F32, 0, 1, false, true},
        {"bench fp32 rev L=5050", 1, 5050, 8, 64, 1, 64, M2, F32, 1, 1, true, true},
        {"bench fp16 fwd L=5050", 1, 5050, 8, 64, 1, 64, M2, F16, 0, 1, false, true},
        {"bench fp16 rev L=5050", 1, 5050, 8, 64, 1, 64, M2, F16, 1, 1, true, true},
    };
    int failures = 0;
    uint32_t seed = 1;
    for (const Case& c : cases)
    {
        failures += checkCase(c, seed++) ? 0 : 1;
    }
    /* Bad arguments come back as a status, not a crash. */
    LocoreScanParams bad = paramsFor(cases[0]);
    if (locore_selective_scan_cuda(&bad, nullptr, nullptr) != LOCORE_SCAN_BAD_ARGUMENT
        || locore_selective_scan_cuda(nullptr, nullptr, nullptr) != LOCORE_SCAN_BAD_ARGUMENT)
    {
        std::printf("FAIL bad arguments are not rejected\n");
        ++failures;
    }
    for (int i = 9; i < 13; ++i)
    {
        timeCase(cases[i], peakGBs);
    }
    std::printf("%s: %d of %zu checks failed\n", failures ? "FAIL" : "PASS", failures,
        sizeof(cases) / sizeof(cases[0]) + 1);
    return failures ? 1 : 0;
}
