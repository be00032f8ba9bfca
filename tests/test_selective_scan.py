"""SelectiveScan: the reference against an independent float64 loop, and the chunked form
against the reference, per dtype, odd lengths and lengths past several chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from locore.model import selective_scan_chunked, selective_scan_ref

# Per-dtype tolerances (mamba-ssm's test habits), relative to the output scale.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (6e-4, 2e-3),
    torch.float16: (3e-3, 5e-3),
    torch.bfloat16: (3e-2, 5e-2),
}


def _make(variant, batch, length, heads, pdim, groups, nstate, dtype, seed, extras=True):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    if variant == "mamba2":
        x = rnd(batch, length, heads, pdim)
        A = -(torch.rand(heads, generator=g, dtype=torch.float64) * 2 + 0.1).to(dtype)
        z = rnd(batch, length, heads, pdim)
    else:
        x = rnd(batch, length, heads)
        A = -(torch.rand(heads, nstate, generator=g, dtype=torch.float64) * 2 + 0.1).to(dtype)
        z = rnd(batch, length, heads)
    dt = (torch.rand(batch, length, heads, generator=g, dtype=torch.float64) * 0.3).to(dtype)
    B = rnd(batch, length, groups, nstate, scale=0.5)
    C = rnd(batch, length, groups, nstate, scale=0.5)
    D = rnd(heads)
    dt_bias = rnd(heads, scale=0.5)
    return dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)


def _loop64(inp, dt_softplus, reverse, variant):
    """Independent float64 implementation: plain Python loops over time with numpy."""
    a = {k: (v.double().numpy() if v is not None else None) for k, v in inp.items()}
    x, dt, A, B, C = a["x"], a["dt"].copy(), a["A"], a["B"], a["C"]
    if a["dt_bias"] is not None:
        dt = dt + a["dt_bias"]
    if dt_softplus:
        dt = np.log1p(np.exp(dt))
    batch, length, groups, nstate = B.shape
    heads = x.shape[2]
    per = heads // groups
    y = np.zeros_like(x)
    order = range(length - 1, -1, -1) if reverse else range(length)
    for b in range(batch):
        for h in range(heads):
            grp = h // per
            if variant == "mamba2":
                S = np.zeros((x.shape[3], nstate))
            else:
                S = np.zeros(nstate)
            for t in order:
                if variant == "mamba2":
                    S = math.exp(dt[b, t, h] * A[h]) * S + dt[b, t, h] * np.outer(
                        x[b, t, h], B[b, t, grp]
                    )
                    y[b, t, h] = S @ C[b, t, grp]
                else:
                    S = np.exp(dt[b, t, h] * A[h]) * S + dt[b, t, h] * x[b, t, h] * B[b, t, grp]
                    y[b, t, h] = S @ C[b, t, grp]
    if a["D"] is not None:
        D = a["D"]
        y = y + (D[:, None] if variant == "mamba2" else D) * x
    if a["z"] is not None:
        zz = a["z"]
        y = y * zz / (1 + np.exp(-zz))
    return y


def _assert_close(actual, expected, dtype, what=""):
    rtol, atol = TOL[dtype]
    expected = torch.as_tensor(expected, dtype=torch.float64)
    actual = actual.double()
    scale = max(expected.abs().max().item(), 1.0)
    err = (actual - expected).abs().max().item()
    assert err <= atol * scale + rtol * scale, f"{what}: max error {err:.3g}, scale {scale:.3g}"


@pytest.mark.parametrize("variant", ["mamba2", "mamba1"])
@pytest.mark.parametrize("length", [1, 7, 129])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("groups_is_heads", [False, True])
@pytest.mark.parametrize("extras", ["none", "all"])
def test_ref_matches_float64_loop(variant, length, reverse, groups_is_heads, extras):
    heads = 4
    groups = heads if groups_is_heads else 1
    inp = _make(variant, 2, length, heads, 3, groups, 5, torch.float64, seed=length * 7 + reverse)
    softplus = extras == "all"
    if extras == "none":
        inp.update(D=None, z=None, dt_bias=None)
    y = selective_scan_ref(**inp, dt_softplus=softplus, reverse=reverse, variant=variant)
    assert y.dtype == torch.float64 and y.shape == inp["x"].shape
    _assert_close(y, _loop64(inp, softplus, reverse, variant), torch.float64, "ref vs loop")


@pytest.mark.parametrize("variant", ["mamba2", "mamba1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
def test_ref_low_precision_inputs(variant, dtype, reverse):
    """Low-precision I/O, FP32 state: compare with the float64 loop on the same (rounded) inputs."""
    inp = _make(variant, 1, 200, 4, 4, 2, 8, dtype, seed=11)
    y = selective_scan_ref(**inp, dt_softplus=True, reverse=reverse, variant=variant)
    assert y.dtype == dtype
    # Only the output rounding separates y from the exact answer on the same inputs.
    _assert_close(y, _loop64(inp, True, reverse, variant), dtype, f"{variant} {dtype}")


@pytest.mark.parametrize("length", [1, 7, 63, 64, 65, 129, 200])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("groups", [1, 4])
def test_chunked_matches_ref(length, reverse, groups):
    inp = _make("mamba2", 2, length, 4, 8, groups, 16, torch.float32, seed=length + 100 * groups)
    kw = dict(dt_softplus=True, reverse=reverse)
    ref = selective_scan_ref(**inp, **kw)
    for chunk in (16, 64):
        out = selective_scan_chunked(**inp, **kw, chunk_size=chunk)
        assert out.dtype == torch.float32 and out.shape == ref.shape
        _assert_close(out, ref, torch.float32, f"chunk {chunk}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_chunked_matches_ref_per_dtype(dtype):
    inp = _make("mamba2", 1, 150, 4, 8, 2, 16, dtype, seed=5)
    ref = selective_scan_ref(**inp, dt_softplus=True, reverse=True)
    out = selective_scan_chunked(**inp, dt_softplus=True, reverse=True, chunk_size=32)
    assert out.dtype == dtype
    _assert_close(out, ref.double(), dtype, str(dtype))


def test_chunked_long_sequence_without_extras():
    inp = _make("mamba2", 1, 1000, 2, 8, 1, 8, torch.float32, seed=3)
    inp.update(D=None, z=None, dt_bias=None)
    ref = selective_scan_ref(**inp)
    out = selective_scan_chunked(**inp, chunk_size=64)  # 16 chunks, tail of 40
    _assert_close(out, ref, torch.float32, "L=1000")


def test_chunked_gradients_flow_and_match_ref():
    inp = _make("mamba2", 1, 70, 2, 4, 1, 8, torch.float64, seed=9)
    leaves = {k: v.clone().requires_grad_(True) for k, v in inp.items()}
    out = selective_scan_chunked(**leaves, dt_softplus=True, chunk_size=16)
    out.square().sum().backward()
    grads = {k: v.grad.clone() for k, v in leaves.items()}
    leaves_ref = {k: v.clone().requires_grad_(True) for k, v in inp.items()}
    selective_scan_ref(**leaves_ref, dt_softplus=True).square().sum().backward()
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
        assert g.abs().sum() > 0, f"no gradient reaches {name}"
        torch.testing.assert_close(g, leaves_ref[name].grad, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("fn", ["ref", "chunked"])
def test_padding_tokens_leave_state_untouched(reverse, fn):
    """Inserting dt = 0 tokens between valid ones does not change y at the valid tokens."""
    scan = selective_scan_ref if fn == "ref" else selective_scan_chunked
    inp = _make("mamba2", 1, 40, 2, 4, 1, 8, torch.float64, seed=21)
    inp.update(dt_bias=None)  # padding is dt' = 0: give dt' directly, as the model does
    base = scan(**inp, reverse=reverse)
    # Insert 3 padding tokens after every 5th token (random content, dt = 0).
    g = torch.Generator().manual_seed(1)
    keep_idx, parts = [], {k: [] for k in ("x", "dt", "B", "C", "z")}
    pos = 0
    for t in range(40):
        for k in parts:
            parts[k].append(inp[k][:, t : t + 1])
        keep_idx.append(pos)
        pos += 1
        if t % 5 == 4:
            for k in parts:
                pad = torch.randn(inp[k][:, :3].shape, generator=g, dtype=torch.float64) * 5
                parts[k].append(torch.zeros_like(pad) if k == "dt" else pad)
            pos += 3
    padded = dict(inp)
    padded.update({k: torch.cat(v, dim=1) for k, v in parts.items()})
    out = scan(**padded, reverse=reverse)
    torch.testing.assert_close(out[:, keep_idx], base, rtol=1e-10, atol=1e-10)


def test_bad_shapes_raise_clear_errors():
    inp = _make("mamba2", 1, 5, 4, 2, 1, 3, torch.float32, seed=0)
    with pytest.raises(ValueError, match=r"dt must be \[1, 5, 4\]"):
        selective_scan_ref(**{**inp, "dt": inp["dt"][:, :, :2]})
    with pytest.raises(ValueError, match="variant"):
        selective_scan_ref(**inp, variant="s4")
    with pytest.raises(ValueError, match="not divisible"):
        selective_scan_ref(
            **{**inp, "B": inp["B"].repeat(1, 1, 3, 1), "C": inp["C"].repeat(1, 1, 3, 1)}
        )
    with pytest.raises(NotImplementedError, match="mamba1"):
        selective_scan_chunked(**inp, variant="mamba1")


@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_chunked])
def test_wrong_types_and_devices_raise_clear_errors(fn):
    """numpy arrays, integer tensors or tensors on another device than x: TypeError/ValueError
    naming the argument and what to do (not an AttributeError from deep inside)."""
    inp = _make("mamba2", 1, 5, 4, 2, 1, 3, torch.float32, seed=1)
    with pytest.raises(TypeError, match=r"B must be a torch.Tensor, got ndarray.*from_numpy"):
        fn(**{**inp, "B": inp["B"].numpy()})
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got list"):
        fn(**{**inp, "x": inp["x"].tolist()})
    with pytest.raises(TypeError, match="dt must be a floating-point tensor.*torch.int64"):
        fn(**{**inp, "dt": inp["dt"].long()})
    with pytest.raises(TypeError, match="D must be a torch.Tensor"):
        fn(**{**inp, "D": np.ones(4, np.float32)})
    meta = inp["A"].to("meta")
    with pytest.raises(ValueError, match=r"x's device \(cpu\).*A is on meta"):
        fn(**{**inp, "A": meta})
