"""LOCORE-Mamba: a list-wise re-ranker that reads the query and its whole shortlist at once."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from locore.config import LocoreConfig
from locore.model.mamba import BiMamba2Block, RMSNorm, ScanFn


def _query_first(query: Tensor, gallery: Tensor) -> Tensor:
    """The query's tensor [B, ...] and the gallery's [B, G, ...] as one [B, G+1, ...]."""
    return torch.cat([query[:, None], gallery], dim=1)


class LocoreReranker(nn.Module):
    """Scores every gallery image of a shortlist against a query in one sequence.

    Sequence, per batch item: ``[IMG q][q descriptors][SEP] [IMG g1][g1 descriptors][SEP] ...``,
    ``(G + 1) * (Nd + 2)`` tokens. Descriptor tokens are the projected local descriptors plus a
    scale embedding and a query/gallery type embedding; IMG tokens carry the image type (and the
    projected global descriptor when ``config.use_global``). A stack of bidirectional Mamba-2
    blocks mixes the tokens; a token classifier gives one logit per token, and the tokens of
    each gallery image are aggregated (``config.aggregation``) into its score.

    Padded descriptors (mask 0) are zeroed and get dt = 0 in every scan. A gallery image with no
    valid descriptor is padding as a whole (its IMG and SEP tokens are masked too).
    """

    def __init__(self, config: LocoreConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d = config.d_model
        self.desc_proj = nn.Linear(config.desc_dim, d)
        self.scale_emb = nn.Embedding(config.num_scales, d)
        self.type_emb = nn.Embedding(2, d)  # 0 = query, 1 = gallery
        self.img_token = nn.Parameter(torch.randn(2, d) * 0.02)
        self.sep_token = nn.Parameter(torch.randn(d) * 0.02)
        self.global_proj = nn.Linear(config.global_dim, d) if config.use_global else None
        self.match_proj = nn.Linear(config.match_bins, d) if config.match_features else None
        self.layers = nn.ModuleList(BiMamba2Block(config) for _ in range(config.n_layers))
        self.norm_f = RMSNorm(d)
        self.classifier = nn.Linear(d, 1)
        self.scan: ScanFn | None = None  # None: the chunked PyTorch scan

    def _check(self, name: str, t: Tensor, shape: tuple[int | None, ...]) -> None:
        if t.dim() != len(shape) or any(
            s is not None and s != ts for s, ts in zip(shape, t.shape, strict=True)
        ):
            want = ", ".join("*" if s is None else str(s) for s in shape)
            raise ValueError(
                f"{name} must be [{want}], got {list(t.shape)}; this model was built for "
                f"{self.config.num_desc} descriptors of dimension {self.config.desc_dim} per image"
            )

    def embed(
        self,
        desc: Tensor,
        dmask: Tensor,
        scale: Tensor | None = None,
        glob: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Token embeddings [B, L, d] and token mask [B, L] bool of a query and its gallery.

        Per image, query first (see :meth:`forward`): descriptors ``desc`` [B, G+1, Nd, Dl],
        descriptor mask ``dmask`` [B, G+1, Nd] bool, scale indices ``scale`` [B, G+1, Nd]
        (optional) and global descriptors ``glob`` [B, G+1, Dg] (when ``config.use_global``).
        """
        bsz, nimg = dmask.shape[:2]
        dtype = self.desc_proj.weight.dtype
        desc = desc.to(dtype)
        img_type = torch.ones(nimg, dtype=torch.long, device=desc.device)
        img_type[0] = 0
        tok = self.desc_proj(desc) + self.type_emb(img_type)[None, :, None, :]
        if scale is not None:
            tok = tok + self.scale_emb(scale)
        if self.match_proj is not None:
            tok = tok + self.match_proj(self.match_embedding(desc, dmask))
        tok = tok * dmask[..., None].to(dtype)
        img = self.img_token[img_type][None].expand(bsz, -1, -1)  # [B, G+1, d]
        if self.global_proj is not None:
            if glob is None:
                raise ValueError("this model uses global descriptors (use_global=True)")
            img = img + self.global_proj(glob.to(dtype))
        sep = self.sep_token.to(dtype).expand(bsz, nimg, 1, -1)
        seq = torch.cat([img[:, :, None], tok, sep], dim=2)  # [B, G+1, Nd+2, d]
        length = nimg * self.config.tokens_per_image
        return seq.reshape(bsz, length, -1), self.token_mask(dmask)

    @staticmethod
    def token_mask(dmask: Tensor) -> Tensor:
        """Token validity [B, L] from descriptor masks [B, G+1, Nd] (query first): IMG and SEP
        tokens are valid when their image has at least one valid descriptor."""
        image_valid = dmask.any(dim=-1, keepdim=True)  # [B, G+1, 1]
        tmask = torch.cat([image_valid, dmask, image_valid], dim=2)  # [B, G+1, Nd+2]
        return tmask.reshape(dmask.shape[0], -1)

    def match_embedding(self, desc: Tensor, dmask: Tensor) -> Tensor:
        """RBF embedding [B, G+1, Nd, bins] of each descriptor's best cosine similarity to the
        query's valid descriptors (-1 when the query has none)."""
        unit = F.normalize(desc.float(), dim=-1, eps=1e-6)  # [B, G+1, Nd, Dl]
        query = unit[:, 0]  # [B, Nd, Dl]
        sims = torch.matmul(unit, query[:, None].transpose(-1, -2))  # [B, G+1, Nd, Nd]
        qvalid = dmask[:, 0][:, None, None, :]  # [B, 1, 1, Nd]
        best = torch.where(qvalid, sims, torch.full_like(sims, -1.0)).amax(-1)  # [B, G+1, Nd]
        bins = self.config.match_bins
        centers = torch.linspace(-1.0, 1.0, bins, device=desc.device)
        width = 2.0 / (bins - 1) if bins > 1 else 1.0
        rbf = torch.exp(-(((best[..., None] - centers) / width) ** 2))
        return rbf.to(desc.dtype)

    def aggregate(self, token_logits: Tensor, dmask: Tensor) -> Tensor:
        """Per-image scores [B, G] float32 from token logits [B, L] and descriptor masks."""
        cfg = self.config
        bsz, ngal1 = dmask.shape[:2]
        per_img = token_logits.float().reshape(bsz, ngal1, cfg.tokens_per_image)[:, 1:]
        gmask = dmask[:, 1:]
        desc_logits = per_img[..., 1:-1]
        if cfg.aggregation == "start":
            return per_img[..., 0]
        if cfg.aggregation == "end":
            return per_img[..., -1]
        if cfg.aggregation == "mean":
            w = gmask.float()
            return (desc_logits * w).sum(-1) / w.sum(-1).clamp_min(1.0)
        masked = desc_logits.masked_fill(~gmask, float("-inf")).amax(-1)
        return torch.where(gmask.any(-1), masked, torch.zeros_like(masked))

    def forward(
        self,
        query_desc: Tensor,
        query_mask: Tensor,
        gallery_desc: Tensor,
        gallery_mask: Tensor,
        query_scale: Tensor | None = None,
        gallery_scale: Tensor | None = None,
        query_global: Tensor | None = None,
        gallery_global: Tensor | None = None,
        return_token_logits: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """query_desc [B, Nd, Dl], query_mask [B, Nd], gallery_desc [B, G, Nd, Dl],
        gallery_mask [B, G, Nd] (True/1 = valid) -> scores [B, G] float32 (raw logits).

        With ``return_token_logits`` also returns token logits [B, (G+1)*(Nd+2)] float32.
        """
        cfg = self.config
        nd, dl = cfg.num_desc, cfg.desc_dim
        self._check("query_desc", query_desc, (None, nd, dl))
        bsz = query_desc.shape[0]
        self._check("query_mask", query_mask, (bsz, nd))
        self._check("gallery_desc", gallery_desc, (bsz, None, nd, dl))
        ngal = gallery_desc.shape[1]
        self._check("gallery_mask", gallery_mask, (bsz, ngal, nd))
        if (query_scale is None) != (gallery_scale is None):
            raise ValueError("give both query_scale and gallery_scale, or neither")
        scale = None
        if query_scale is not None and gallery_scale is not None:
            self._check("query_scale", query_scale, (bsz, nd))
            self._check("gallery_scale", gallery_scale, (bsz, ngal, nd))
            scale = _query_first(query_scale, gallery_scale).long()
        glob = None
        if self.global_proj is not None:
            if query_global is None or gallery_global is None:
                raise ValueError(
                    "this model uses global descriptors (use_global=True): pass query_global "
                    f"[B, {cfg.global_dim}] and gallery_global [B, G, {cfg.global_dim}]"
                )
            self._check("query_global", query_global, (bsz, cfg.global_dim))
            self._check("gallery_global", gallery_global, (bsz, ngal, cfg.global_dim))
            glob = _query_first(query_global, gallery_global)
        dmask = _query_first(query_mask, gallery_mask).bool()  # [B, G+1, Nd]
        h, tmask = self.embed(_query_first(query_desc, gallery_desc), dmask, scale, glob)
        for layer in self.layers:
            h = layer(h, tmask, self.scan)
        token_logits = self.classifier(self.norm_f(h)).squeeze(-1).float()
        scores = self.aggregate(token_logits, dmask)
        if return_token_logits:
            return scores, token_logits
        return scores
