"""Low-precision I/O, FP32 state (docs/design.md §3): fp16/bf16 inputs over a long sequence
against an independent float64 loop on the same (already rounded) inputs.

The float64 loop stands in for an exact FP32-state scan; what is left is the error of the
implementation under test. Tolerance, per output element, derived for an FP32 state
(unit roundoff u32 = 2^-24) and an output rounded to the I/O dtype (u_io = 2^-11 for fp16,
2^-8 for bf16):

  * each step S_t = a_t S_{t-1} + dt_t x_t B_t commits at most ~4 roundings (exp, two products,
    the add; dt' = softplus in FP32 adds one more relative error) to each state entry; the
    errors already in the state decay with it, so after t steps the state error is at most
    5 u32 * sum_k |S_k| <= 5 L u32 * max|S|;
  * y_t = S_t @ C_t + D x_t sums N + 1 products in FP32: another (N + 1) u32 * mag, where
    mag = max_t sum_n |S_t[n] C_t[n]| + |D x_t| (the float64 loop returns it);
  * the result is rounded once to the I/O dtype: u_io * |y|.

  |y - y64| <= u_io * |y64| + (5 L + N + 1) * u32 * mag

With L = 2048, N = 8 the second term is ~6e-4 * mag: well inside what an FP32 state allows, and
far below the error of an fp16 or bf16 state (whose roundings are 2^13 / 2^16 times larger,
and accumulate over the ~1 / (1 - a) tokens that a slowly decaying state remembers).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from locore.model.selective_scan import selective_scan_chunked, selective_scan_ref

L, H, P, N = 2048, 2, 4, 8
U32 = 2.0**-24
U_IO = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def _inputs(dtype: torch.dtype, seed: int = 0) -> dict:
    """Slow decay (dt' A ~ -1e-3: the state remembers ~1000 tokens) and a drift in x, so the
    state grows large next to each step's increment (what a low-precision state loses)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(1, L, H, P, generator=g) * 0.5 + 1.0).to(dtype)
    dt = (torch.rand(1, L, H, generator=g) * 0.02 + 0.01).to(dtype)
    # A and D are FP32 tensors (docs/design.md §3) holding values the I/O dtype represents exactly,
    # so the CPU library, which takes them in x's dtype, sees the same values.
    A = (-torch.rand(H, generator=g) * 0.05 - 0.02).to(dtype).float()
    B = (torch.rand(1, L, 1, N, generator=g) + 0.5).to(dtype)
    C = torch.randn(1, L, 1, N, generator=g).to(dtype)
    D = torch.randn(H, generator=g).to(dtype).float()
    return {"x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D}


def _loop64(inp: dict, reverse: bool) -> tuple[np.ndarray, float]:
    """docs/design.md §3 mamba2 recurrence in float64, one token at a time, on the given (rounded)
    values: (y [1, L, H, P], mag) with mag the largest sum_n |S_t C_t| + |D x_t|."""
    f = {k: v.double().numpy() for k, v in inp.items()}
    x, dt, A, Bm, Cm, D = f["x"][0], f["dt"][0], f["A"], f["B"][0, :, 0], f["C"][0, :, 0], f["D"]
    y = np.zeros((L, H, P))
    mag = 0.0
    for h in range(H):
        state = np.zeros((P, N))
        for t in range(L - 1, -1, -1) if reverse else range(L):
            state = np.exp(dt[t, h] * A[h]) * state + dt[t, h] * np.outer(x[t, h], Bm[t])
            y[t, h] = state @ Cm[t] + D[h] * x[t, h]
            mag = max(mag, float((np.abs(state * Cm[t]).sum(-1) + np.abs(D[h] * x[t, h])).max()))
    return y[None], mag


def _check(y: np.ndarray, y64: np.ndarray, mag: float, dtype: torch.dtype) -> None:
    tol = U_IO[dtype] * np.abs(y64) + (5 * L + N + 1) * U32 * mag
    err = np.abs(y.astype(np.float64) - y64)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert (err <= tol).all(), (
        f"{int((err > tol).sum())} of {err.size} outputs exceed the FP32-state tolerance; worst "
        f"at {tuple(int(i) for i in worst)}: |y - y64| = {err[worst]:.3g} > {tol[worst]:.3g} "
        f"(mag {mag:.3g})"
    )


@pytest.fixture(scope="module", params=[torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def case(request: pytest.FixtureRequest) -> tuple[torch.dtype, dict, dict]:
    dtype = request.param
    inp = _inputs(dtype)
    return dtype, inp, {rev: _loop64(inp, rev) for rev in (False, True)}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_chunked], ids=["ref", "chunked"])
def test_long_low_precision_scan_keeps_fp32_state(case, fn, reverse) -> None:
    dtype, inp, loops = case
    y = fn(**inp, reverse=reverse, chunk_size=64)
    assert y.dtype == dtype
    y64, mag = loops[reverse]
    _check(y.float().numpy(), y64, mag, dtype)


@pytest.mark.parametrize("reverse", [False, True])
def test_long_fp16_cpu_library_keeps_fp32_state(case, reverse) -> None:
    dtype, inp, loops = case
    if dtype != torch.float16:
        pytest.skip("the CPU library takes float32 and float16 I/O")
    from test_scan_cpu import _have_toolchain

    from locore import native

    if native.find_cpu_library() is None and not _have_toolchain():
        pytest.skip("the SelectiveScan CPU library is not built and no cmake/C++ compiler exists")
    arrays = {k: v.to(dtype).numpy() for k, v in inp.items()}  # exact: see _inputs
    y = native.selective_scan_cpu(**arrays, reverse=reverse)
    assert y.dtype == np.float16
    y64, mag = loops[reverse]
    _check(y, y64, mag, dtype)
