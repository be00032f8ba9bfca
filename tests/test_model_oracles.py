"""The re-ranker against oracles written from its documentation, not from its code.

Documented layout (README "Model", LocoreConfig docstring): per image, query first,
``[IMG][Nd descriptor tokens][SEP]``, so gallery image g (0-based) owns tokens
``(g + 1) * (Nd + 2) .. (g + 2) * (Nd + 2) - 1``: its IMG token first, its SEP token last.
Aggregation (README): ``mean`` of the image's VALID descriptor tokens; ``start`` reads the
first token of the image (IMG), ``end`` the last (SEP), ``max`` the largest valid descriptor
token. The oracles below read the model's token logits only and index them by hand.
"""

from __future__ import annotations

import pytest
import torch

from locore import LocoreConfig
from locore.model import LocoreReranker, selective_scan_ref


def _inputs(cfg: LocoreConfig, batch: int, ngal: int, seed: int, pad: float = 0.4):
    g = torch.Generator().manual_seed(seed)
    nd, dl = cfg.num_desc, cfg.desc_dim
    q_mask = torch.rand(batch, nd, generator=g) > pad
    g_mask = torch.rand(batch, ngal, nd, generator=g) > pad
    q_mask[..., 0] = True
    g_mask[..., 0] = True  # every image keeps at least one valid descriptor
    return {
        "query_desc": torch.randn(batch, nd, dl, generator=g),
        "query_mask": q_mask,
        "gallery_desc": torch.randn(batch, ngal, nd, dl, generator=g),
        "gallery_mask": g_mask,
        "query_scale": torch.randint(0, cfg.num_scales, (batch, nd), generator=g),
        "gallery_scale": torch.randint(0, cfg.num_scales, (batch, ngal, nd), generator=g),
    }


def _oracle(tokens: torch.Tensor, gallery_mask: torch.Tensor, nd: int, mode: str) -> torch.Tensor:
    """Scores [B, G] from token logits [B, (G+1)(Nd+2)] by plain loops over the layout."""
    bsz, ngal = gallery_mask.shape[:2]
    per = nd + 2
    out = torch.empty(bsz, ngal, dtype=torch.float64)
    for b in range(bsz):
        for g in range(ngal):
            start = (g + 1) * per  # image 0 is the query
            img_tok, sep_tok = tokens[b, start].item(), tokens[b, start + per - 1].item()
            valid = [tokens[b, start + 1 + i].item() for i in range(nd) if gallery_mask[b, g, i]]
            if mode == "start":
                out[b, g] = img_tok
            elif mode == "end":
                out[b, g] = sep_tok
            elif mode == "mean":
                out[b, g] = sum(valid) / len(valid)
            else:
                out[b, g] = max(valid)
    return out


@pytest.mark.parametrize("aggregation", ["start", "end", "mean", "max"])
def test_aggregation_matches_documented_tokens(aggregation: str) -> None:
    torch.manual_seed(0)
    cfg = LocoreConfig.preset("tiny", num_desc=6, desc_dim=8, aggregation=aggregation)
    model = LocoreReranker(cfg).eval()
    inp = _inputs(cfg, 2, 5, seed=1)
    with torch.no_grad():
        scores, tokens = model(**inp, return_token_logits=True)
    expected = _oracle(tokens, inp["gallery_mask"], cfg.num_desc, aggregation)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-6, atol=1e-6)

    # The inputs can tell the modes apart: IMG != SEP, and the padded descriptor tokens hold
    # a larger logit than the valid ones in some image (so a max ignoring the mask differs),
    # and the mean over all descriptor tokens differs from the valid mean.
    per_img = tokens.reshape(2, 6, cfg.num_desc + 2)[:, 1:]  # gallery images only
    desc_tok, gmask = per_img[..., 1:-1], inp["gallery_mask"]
    assert not torch.allclose(per_img[..., 0], per_img[..., -1])
    assert (desc_tok.amax(-1) > desc_tok.masked_fill(~gmask, float("-inf")).amax(-1)).any()
    valid_mean = _oracle(tokens, gmask, cfg.num_desc, "mean").float()
    assert not torch.allclose(desc_tok.mean(-1), valid_mean)


# ---- global descriptors ------------------------------------------------------------------------
def test_global_descriptors_change_scores_only_for_use_global_models() -> None:
    torch.manual_seed(0)
    dg = 5
    cfg = LocoreConfig.preset("tiny", num_desc=6, desc_dim=8, use_global=True, global_dim=dg)
    model = LocoreReranker(cfg).eval()
    inp = _inputs(cfg, 1, 4, seed=2)
    g = torch.Generator().manual_seed(3)
    qg, gg = torch.randn(1, dg, generator=g), torch.randn(1, 4, dg, generator=g)
    gg2 = gg.clone()
    gg2[0, 2] = torch.randn(dg, generator=g)
    qg2 = torch.randn(1, dg, generator=g)
    with torch.no_grad():
        base = model(**inp, query_global=qg, gallery_global=gg)
        new_gallery = model(**inp, query_global=qg, gallery_global=gg2)
        new_query = model(**inp, query_global=qg2, gallery_global=gg)
        again = model(**inp, query_global=qg, gallery_global=gg)
    torch.testing.assert_close(base, again, rtol=0, atol=0)  # deterministic
    assert (base[0, 2] - new_gallery[0, 2]).abs() > 1e-4, "image 2's global must move its score"
    assert ((base - new_query).abs() > 1e-4).any(), "the query's global must move scores"

    # A model without use_global has no global input: the same call with other vectors gives
    # bit-identical scores (and scores equal to a call without them).
    plain = LocoreReranker(LocoreConfig.preset("tiny", num_desc=6, desc_dim=8)).eval()
    with torch.no_grad():
        s0 = plain(**inp)
        s1 = plain(**inp, query_global=qg, gallery_global=gg)
        s2 = plain(**inp, query_global=qg2, gallery_global=gg2)
    torch.testing.assert_close(s0, s1, rtol=0, atol=0)
    torch.testing.assert_close(s0, s2, rtol=0, atol=0)


# ---- a sequence spanning several scan chunks ---------------------------------------------------
def test_chunked_scan_over_several_chunks_matches_reference_scan() -> None:
    """chunk_size 16 and (G + 1)(Nd + 2) = 8 * 8 = 64 tokens: four chunks, so the state must
    be carried (and decayed) across chunk boundaries in both scan directions."""
    torch.manual_seed(0)
    cfg = LocoreConfig.preset("tiny", num_desc=6, desc_dim=8, chunk_size=16)
    model = LocoreReranker(cfg).eval()
    ngal = 7
    assert cfg.sequence_length(ngal) > 3 * cfg.chunk_size
    inp = _inputs(cfg, 2, ngal, seed=4, pad=0.2)
    with torch.no_grad():
        chunked, chunked_tokens = model(**inp, return_token_logits=True)
        model.scan = lambda **kw: selective_scan_ref(**kw)
        try:
            ref, ref_tokens = model(**inp, return_token_logits=True)
        finally:
            model.scan = None
    torch.testing.assert_close(chunked_tokens, ref_tokens, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(chunked, ref, rtol=1e-4, atol=1e-4)
