/*
 * Shared by the SelectiveScan kernel checks: scan_check.cu (on a GPU) and kernel_emulation.cpp
 * (the kernel's code on the CPU). Each has its own Case struct; both name the sizes and flags
 * of a case alike.
 */
#ifndef LOCORE_BENCHMARKS_SCAN_CASE_H
#define LOCORE_BENCHMARKS_SCAN_CASE_H

#include "selectiveScan.h"

/* The LocoreScanParams of case c (sizes, variant, dtype and attributes; no tensors yet). */
template <typename Case>
LocoreScanParams caseParams(const Case& c, int chunkSize)
{
    LocoreScanParams p{};
    p.batch = c.batch;
    p.seqlen = c.seqlen;
    p.nheads = c.heads;
    p.headdim = c.headdim;
    p.ngroups = c.groups;
    p.dstate = c.dstate;
    p.variant = c.variant;
    p.dtSoftplus = c.softplus;
    p.reverse = c.reverse;
    p.chunkSize = chunkSize;
    p.dtype = c.dtype;
    p.weightDtype = c.dtype; /* A, D, dt_bias in x's dtype (plugin version 1); callers may override */
    return p;
}

#endif /* LOCORE_BENCHMARKS_SCAN_CASE_H */
