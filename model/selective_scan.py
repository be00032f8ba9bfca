"""The SelectiveScan op (docs/design.md §3): the sequential reference and the chunked SSD form.

Layout is token-major, [B, L, ...]. State and accumulation are float32 (float64 when the
inputs are float64) whatever the I/O dtype; outputs have the dtype of ``x``.

Variant ``mamba2`` (scalar decay per head)::

    x [B, L, H, P], dt [B, L, H], A [H] (negative), B, C [B, L, G, N], D [H], dt_bias [H],
    z [B, L, H, P]; head h reads group g = h // (H // G).
    dt' = softplus(dt + dt_bias) if dt_softplus else dt + dt_bias
    S_t = exp(dt'_t * A) * S_{t-1} + dt'_t * outer(x_t, B_t)     (S is [P, N], S_{-1} = 0)
    y_t = S_t @ C_t + D * x_t;  y_t *= silu(z_t) when z is given
    reverse=True runs the recurrence from t = L - 1 down to 0.

Variant ``mamba1`` (S6, per-channel diagonal A)::

    u [B, L, Dc], delta [B, L, Dc], A [Dc, N], B, C [B, L, G, N], D [Dc], delta_bias [Dc],
    z [B, L, Dc]; channel d reads group g = d // (Dc // G).
    S_t[d, n] = exp(delta'_t[d] * A[d, n]) * S_{t-1}[d, n] + delta'_t[d] * B_t[g, n] * u_t[d]
    y_t[d] = sum_n S_t[d, n] * C_t[g, n] + D[d] * u_t[d]

A token with dt' = 0 (padding) neither changes the state nor adds to it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec

import torch
import torch.nn.functional as F
from torch import Tensor

from locore.scan_spec import VARIANTS

# A scan implementation: called with the arguments of ScanArgs (by keyword, as the blocks do).
ScanFn = Callable[..., Tensor]

_P = ParamSpec("_P")


@dataclass(frozen=True)
class ScanArgs:
    """The arguments of one SelectiveScan call, declared once for every implementation.

    As in mamba-ssm, the fused scans and the reference share one signature::

        f(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, reverse=False,
          variant="mamba2", chunk_size=64)

    the fields below, in this order. :func:`scan_entry_point` turns a function of a
    ``ScanArgs`` into a function with that signature (:func:`selective_scan_ref`,
    :func:`selective_scan_chunked`, ``locore.export.scan_op.plugin_scan``). ``chunk_size`` is
    the op's hint attribute: it never changes the result, and the reference ignores it.
    """

    x: Tensor
    dt: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor | None = None
    z: Tensor | None = None
    dt_bias: Tensor | None = None
    dt_softplus: bool = False
    reverse: bool = False
    variant: str = "mamba2"
    chunk_size: int = 64

    def check(self) -> None:
        """Raise ValueError unless the variant and every shape are those of docs/design.md §3."""
        variant, x, dt, A, B, C = self.variant, self.x, self.dt, self.A, self.B, self.C
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self._check_types()
        if B.dim() != 4 or C.shape != B.shape:
            raise ValueError(
                f"B and C must both be [B, L, G, N], got {tuple(B.shape)} and {tuple(C.shape)}"
            )
        batch, length, groups, _ = B.shape
        if variant == "mamba2":
            if x.dim() != 4:
                raise ValueError(f"mamba2 x must be [B, L, H, P], got {tuple(x.shape)}")
            heads = x.shape[2]
            expect = {
                "dt": (dt, (batch, length, heads)),
                "A": (A, (heads,)),
                "D": (self.D, (heads,)),
                "dt_bias": (self.dt_bias, (heads,)),
                "z": (self.z, tuple(x.shape)),
            }
        else:
            if x.dim() != 3:
                raise ValueError(f"mamba1 u must be [B, L, Dc], got {tuple(x.shape)}")
            heads = x.shape[2]
            expect = {
                "delta": (dt, (batch, length, heads)),
                "A": (A, (heads, B.shape[3])),
                "D": (self.D, (heads,)),
                "delta_bias": (self.dt_bias, (heads,)),
                "z": (self.z, tuple(x.shape)),
            }
        if tuple(x.shape[:2]) != (batch, length):
            raise ValueError(
                f"x is {tuple(x.shape)} but B is {tuple(B.shape)}: batch and length must agree"
            )
        if heads % groups:
            raise ValueError(f"{heads} heads/channels are not divisible by {groups} groups")
        for name, (tensor, shape) in expect.items():
            if tensor is not None and tuple(tensor.shape) != shape:
                raise ValueError(
                    f"{variant} {name} must be {list(shape)}, got {list(tensor.shape)}"
                )

    def _check_types(self) -> None:
        """TypeError unless every tensor argument is a floating-point torch.Tensor; ValueError
        unless they all sit on x's device."""
        named = {
            "x": self.x, "dt": self.dt, "A": self.A, "B": self.B, "C": self.C,
            "D": self.D, "z": self.z, "dt_bias": self.dt_bias,
        }  # fmt: skip
        for name, value in named.items():
            if value is None and name in ("D", "z", "dt_bias"):
                continue
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"SelectiveScan: {name} must be a torch.Tensor, got {type(value).__name__}; "
                    "convert with torch.from_numpy(array) (or use locore.native.selective_scan_cpu "
                    "for numpy arrays)"
                )
            if not value.is_floating_point():
                raise TypeError(
                    f"SelectiveScan: {name} must be a floating-point tensor (float32, float16, "
                    f"bfloat16 or float64), got {value.dtype}; cast with .float()"
                )
            if value.device != self.x.device:
                raise ValueError(
                    f"SelectiveScan: every tensor must be on x's device ({self.x.device}), but "
                    f"{name} is on {value.device}; move it with .to(x.device)"
                )

    @property
    def state_dtype(self) -> torch.dtype:
        """float32 state and accumulation (float64 when x is float64)."""
        return torch.float64 if self.x.dtype == torch.float64 else torch.float32

    def effective_dt(self) -> Tensor:
        """dt' = softplus(dt + dt_bias) or dt + dt_bias, in the state dtype."""
        sdt = self.state_dtype
        dt = self.dt.to(sdt)
        if self.dt_bias is not None:
            dt = dt + self.dt_bias.to(sdt)
        if self.dt_softplus:
            dt = F.softplus(dt)
        return dt

    def finish(self, y: Tensor, xs: Tensor) -> Tensor:
        """Add the skip term D * x, apply the optional silu(z) gate (in the state dtype of
        ``y`` and ``xs``) and cast to x's dtype."""
        sdt = self.state_dtype
        if self.D is not None:
            Ds = self.D.to(sdt)
            y = y + (Ds[:, None] if self.variant == "mamba2" else Ds) * xs
        if self.z is not None:
            y = y * F.silu(self.z.to(sdt))
        return y.to(self.x.dtype)


def _signature_of(
    args_type: Callable[_P, ScanArgs],
) -> Callable[[Callable[[ScanArgs], Tensor]], Callable[_P, Tensor]]:
    """A decorator that gives a function of a ``ScanArgs`` the signature of ``ScanArgs``."""
    signature = inspect.signature(args_type).replace(return_annotation="Tensor")

    def decorate(impl: Callable[[ScanArgs], Tensor]) -> Callable[_P, Tensor]:
        @functools.wraps(impl)
        def entry_point(*args: _P.args, **kwargs: _P.kwargs) -> Tensor:
            return impl(args_type(*args, **kwargs))

        entry_point.__signature__ = signature  # type: ignore[attr-defined]
        return entry_point

    return decorate


scan_entry_point = _signature_of(ScanArgs)
"""Decorator: ``impl(args: ScanArgs) -> Tensor`` becomes ``f(x, dt, A, B, C, D=None, ...)``,
typed and introspectable with the fields of :class:`ScanArgs` as its parameters."""


@scan_entry_point
def selective_scan_ref(args: ScanArgs) -> Tensor:
    """Sequential reference of SelectiveScan: one step per token, state in FP32 (or FP64).

    ``chunk_size`` is the op's hint attribute; the reference ignores it.
    Returns y with the shape and dtype of ``x``: [B, L, H, P] (mamba2) or [B, L, Dc] (mamba1).
    """
    args.check()
    sdt = args.state_dtype
    batch, length, groups, nstate = args.B.shape
    heads = args.x.shape[2]
    rep = heads // groups
    dtp = args.effective_dt()  # [B, L, H]
    xs = args.x.to(sdt)
    # Expand groups to heads/channels: [B, L, H, N].
    Bh = args.B.to(sdt).repeat_interleave(rep, dim=2)
    Ch = args.C.to(sdt).repeat_interleave(rep, dim=2)
    A_s = args.A.to(sdt)
    mamba2 = args.variant == "mamba2"
    if mamba2:
        state = xs.new_zeros(batch, heads, args.x.shape[3], nstate)  # [B, H, P, N]
    else:
        state = xs.new_zeros(batch, heads, nstate)  # [B, Dc, N]
    ys = [xs.new_empty(0)] * length
    steps = range(length - 1, -1, -1) if args.reverse else range(length)
    for t in steps:
        d_t = dtp[:, t]  # [B, H]
        if mamba2:
            decay = torch.exp(d_t * A_s)[:, :, None, None]  # [B, H, 1, 1]
            upd = (d_t[:, :, None] * xs[:, t])[:, :, :, None] * Bh[:, t, :, None, :]
            state = decay * state + upd
            ys[t] = torch.einsum("bhpn,bhn->bhp", state, Ch[:, t])
        else:
            decay = torch.exp(d_t[:, :, None] * A_s)  # [B, Dc, N]
            state = decay * state + (d_t * xs[:, t])[:, :, None] * Bh[:, t]
            ys[t] = (state * Ch[:, t]).sum(-1)
    y = torch.stack(ys, dim=1) if length else xs.clone()
    return args.finish(y, xs)


def _segsum_exp(a: Tensor) -> Tensor:
    """exp of segment sums: out[..., i, j] = exp(sum_{k=j+1..i} a[..., k]) for i >= j, else 0.

    ``a`` is [..., T] with non-positive entries; the exponent is never positive.
    """
    t = a.shape[-1]
    cs = torch.cumsum(a, dim=-1)
    diff = cs[..., :, None] - cs[..., None, :]  # [..., T, T]
    causal = torch.ones(t, t, dtype=torch.bool, device=a.device).tril()
    return torch.exp(diff.masked_fill(~causal, float("-inf")))


@scan_entry_point
def selective_scan_chunked(args: ScanArgs) -> Tensor:
    """Chunked state-space-duality form of the mamba2 scan; no Python loop over L.

    Same semantics and signature as :func:`selective_scan_ref` (``chunk_size`` tokens per
    chunk); works for any L (the tail chunk is padded with dt = 0). Differentiable; exportable
    to ONNX with standard ops (CumSum, Exp, MatMul, no Loop/Scan).
    """
    if args.variant != "mamba2":
        raise NotImplementedError(
            "selective_scan_chunked implements the mamba2 variant; use selective_scan_ref "
            "for mamba1"
        )
    args.check()
    if args.chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {args.chunk_size}")
    sdt = args.state_dtype
    batch, length, heads, hdim = args.x.shape
    groups, nstate = args.B.shape[2], args.B.shape[3]
    rep = heads // groups
    xs = args.x.to(sdt)
    dtp = args.effective_dt()
    Bs, Cs = args.B.to(sdt), args.C.to(sdt)
    xin = xs
    if args.reverse:  # a reverse scan is a forward scan of the time-flipped sequence
        xin, dtp, Bs, Cs = (t.flip(1) for t in (xin, dtp, Bs, Cs))
    # Pad L up to a multiple of the chunk (padded tokens: dt = 0). No branch on L, so the
    # function exports with a dynamic L.
    q = args.chunk_size
    nchunks = (length + q - 1) // q
    pad = nchunks * q - length
    xin = F.pad(xin, (0, 0, 0, 0, 0, pad))
    dtp = F.pad(dtp, (0, 0, 0, pad))
    Bs = F.pad(Bs, (0, 0, 0, 0, 0, pad))
    Cs = F.pad(Cs, (0, 0, 0, 0, 0, pad))
    c = nchunks
    # Heads as (group, rep): X [b, c, q, g, r, p]; decays a [b, g, r, c, q].
    X = (xin * dtp[..., None]).reshape(batch, c, q, groups, rep, hdim)
    a = (dtp * args.A.to(sdt)).reshape(batch, c, q, groups, rep).permute(0, 3, 4, 1, 2)
    Bc = Bs.reshape(batch, c, q, groups, nstate).permute(0, 3, 1, 2, 4)  # [b, g, c, q, n]
    Cc = Cs.reshape(batch, c, q, groups, nstate).permute(0, 3, 1, 2, 4)  # [b, g, c, q, n]
    Xg = X.permute(0, 3, 4, 1, 2, 5)  # [b, g, r, c, q, p]
    a_cum = torch.cumsum(a, dim=-1)  # [b, g, r, c, q]

    # 1) within each chunk: y = (C B^T * L) X, L[i, j] = exp(a_{j+1} + .. + a_i) for i >= j.
    CB = torch.matmul(Cc, Bc.transpose(-1, -2))  # [b, g, c, q, q], shared by the group's heads
    Lmat = _segsum_exp(a)  # [b, g, r, c, q, q]
    y_diag = torch.matmul(CB[:, :, None] * Lmat, Xg)  # [b, g, r, c, q, p]

    # 2) state of each chunk at its end: sum_s exp(a_cum[-1] - a_cum[s]) X_s B_s^T.
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # [b, g, r, c, q]
    states = torch.matmul((Xg * decay_to_end[..., None]).transpose(-1, -2), Bc[:, :, None])
    # states: [b, g, r, c, p, n]

    # 3) carry across chunks: incoming state of chunk k = sum_{j<k} exp(A_{j+1..k-1}) states_j.
    chunk_decay = a_cum[..., -1]  # [b, g, r, c]
    # carry_w[k, j] = exp(chunk decays j+1 .. k-1) for j < k, else 0 (row k reads chunks < k).
    carry_w = _segsum_exp(F.pad(chunk_decay, (1, 0)))[..., :-1, 1:]  # [b, g, r, c, c]
    flat = states.reshape(*states.shape[:4], hdim * nstate)
    incoming = torch.matmul(carry_w, flat).reshape(states.shape)  # [b, g, r, c, p, n]

    # 4) contribution of the incoming state to every token of the chunk.
    decay_in = torch.exp(a_cum)  # [b, g, r, c, q]
    y_off = torch.matmul(Cc[:, :, None], incoming.transpose(-1, -2)) * decay_in[..., None]

    y = (y_diag + y_off).permute(0, 3, 4, 1, 2, 5).reshape(batch, c * q, heads, hdim)
    y = y[:, :length]
    if args.reverse:
        y = y.flip(1)
    return args.finish(y, xs)
