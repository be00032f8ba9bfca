"""Bidirectional Mamba-2 blocks built on the SelectiveScan op."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from locore.config import LocoreConfig
from locore.model.selective_scan import ScanFn, selective_scan_chunked


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


class BiMamba2Mixer(nn.Module):
    """One bidirectional Mamba-2 mixer: a forward and a reverse scan over the same tokens.

    in_proj gives, per token, the gate z, the scan input x, and per direction its own B, C
    and dt; the two scan outputs are summed, normalised, gated by silu(z) and projected back.
    Padding tokens (mask = 0) get dt = 0, so they leave both scan states untouched.
    """

    def __init__(self, config: LocoreConfig) -> None:
        super().__init__()
        self.config = config
        h, g, n, di = config.n_heads, config.n_groups, config.d_state, config.d_inner
        self.sizes = [di, di] + [g * n] * 4 + [h, h]  # z, x, Bf, Cf, Bb, Cb, dtf, dtb
        self.in_proj = nn.Linear(config.d_model, sum(self.sizes))
        # dt initialised in [1e-3, 1e-1] (log-uniform) through the inverse softplus, as Mamba.
        dt = torch.exp(torch.rand(2, h) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # [2, H]
        self.A_log = nn.Parameter(torch.log(torch.empty(2, h).uniform_(1.0, 16.0)))  # [2, H]
        self.D = nn.Parameter(torch.ones(2, h))
        self.norm = RMSNorm(di)
        self.out_proj = nn.Linear(di, config.d_model)

    def forward(self, u: Tensor, mask: Tensor, scan: ScanFn | None = None) -> Tensor:
        """u: [B, L, d_model]; mask: [B, L] bool (True = valid). Returns [B, L, d_model]."""
        cfg = self.config
        scan = scan or selective_scan_chunked
        bsz, length, _ = u.shape
        h, g, n, p = cfg.n_heads, cfg.n_groups, cfg.d_state, cfg.head_dim
        z, x, bf, cf, bb, cb, dtf, dtb = torch.split(self.in_proj(u), self.sizes, dim=-1)
        x = F.silu(x).reshape(bsz, length, h, p)
        keep = mask[..., None].to(u.dtype)
        A = -torch.exp(self.A_log.float())  # [2, H]
        ys = []
        for k, (b_, c_, dt_raw, rev) in enumerate(((bf, cf, dtf, False), (bb, cb, dtb, True))):
            # dt' is computed here so that padded tokens get exactly dt' = 0.
            dt = F.softplus(dt_raw.float() + self.dt_bias[k].float()) * keep.float()
            ys.append(
                scan(
                    x=x,
                    dt=dt.to(x.dtype),
                    A=A[k],
                    B=b_.reshape(bsz, length, g, n),
                    C=c_.reshape(bsz, length, g, n),
                    D=self.D[k],
                    reverse=rev,
                    chunk_size=cfg.chunk_size,
                )
            )
        y = (ys[0] + ys[1]).reshape(bsz, length, cfg.d_inner)
        y = self.norm(y) * F.silu(z)
        return self.out_proj(y) * keep


class BiMamba2Block(nn.Module):
    """Pre-norm residual block: h + mixer(norm(h))."""

    def __init__(self, config: LocoreConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(config.d_model)
        self.mixer = BiMamba2Mixer(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, h: Tensor, mask: Tensor, scan: ScanFn | None = None) -> Tensor:
        return h + self.dropout(self.mixer(self.norm(h), mask, scan))
