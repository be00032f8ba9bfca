"""The LOCORE-Mamba re-ranker and its checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from locore import ConfigError, LocoreConfig
from locore.model import (
    CheckpointError,
    LocoreReranker,
    load_checkpoint,
    save_checkpoint,
    selective_scan_ref,
)


def _inputs(cfg: LocoreConfig, batch: int, ngal: int, seed: int = 0, scales: bool = True):
    g = torch.Generator().manual_seed(seed)
    nd, dl = cfg.num_desc, cfg.desc_dim
    out = {
        "query_desc": torch.randn(batch, nd, dl, generator=g),
        "query_mask": torch.rand(batch, nd, generator=g) > 0.2,
        "gallery_desc": torch.randn(batch, ngal, nd, dl, generator=g),
        "gallery_mask": torch.rand(batch, ngal, nd, generator=g) > 0.2,
    }
    if scales:
        out["query_scale"] = torch.randint(0, cfg.num_scales, (batch, nd), generator=g)
        out["gallery_scale"] = torch.randint(0, cfg.num_scales, (batch, ngal, nd), generator=g)
    return out


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = LocoreConfig.preset("tiny", num_desc=12, desc_dim=32)
    return LocoreReranker(cfg).eval()


@pytest.mark.parametrize("ngal", [1, 7, 100])
def test_output_shape_and_dtype(tiny, ngal):
    with torch.no_grad():
        scores, tokens = tiny(**_inputs(tiny.config, 2, ngal), return_token_logits=True)
    assert scores.shape == (2, ngal) and scores.dtype == torch.float32
    assert tokens.shape == (2, tiny.config.sequence_length(ngal))
    assert torch.isfinite(scores).all()


def test_batch_equals_per_item_runs(tiny):
    inp = _inputs(tiny.config, 3, 9, seed=1)
    with torch.no_grad():
        batched = tiny(**inp)
        for i in range(3):
            single = tiny(**{k: v[i : i + 1] for k, v in inp.items()})
            torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-5, atol=1e-5)


def _scores_before_and_after(model, inp, edit):
    """Scores of ``inp``, and of a copy of it whose tensors ``edit`` changes in place."""
    changed = {k: v.clone() for k, v in inp.items()}
    edit(changed)
    with torch.no_grad():
        return model(**inp), model(**changed)


def test_scores_depend_on_gallery_content(tiny):
    def new_image_3(t):
        t["gallery_desc"][0, 3] = torch.randn_like(t["gallery_desc"][0, 3])

    before, after = _scores_before_and_after(tiny, _inputs(tiny.config, 1, 5, seed=2), new_image_3)
    assert not torch.allclose(before[0, 3], after[0, 3]), "image 3's own score must change"
    # List-wise: the bidirectional scans let other images' scores see image 3 too.
    assert not torch.allclose(before[0, :3], after[0, :3])
    assert before.std() > 0, "a constant model"


def test_padded_descriptors_do_not_matter(tiny):
    """Content of masked descriptors never reaches the scores."""

    def noisy_padding(t):
        pad = ~t["gallery_mask"]
        t["gallery_desc"][pad] = torch.randn_like(t["gallery_desc"][pad]) * 100
        t["query_desc"][~t["query_mask"]] = 55.0

    before, after = _scores_before_and_after(
        tiny, _inputs(tiny.config, 1, 4, seed=3), noisy_padding
    )
    torch.testing.assert_close(before, after, rtol=1e-5, atol=1e-5)


def test_fully_padded_image_is_inert(tiny):
    """An all-padding gallery image changes no other score (batches of ragged windows)."""
    inp = _inputs(tiny.config, 1, 4, seed=4)
    extra = _inputs(tiny.config, 1, 5, seed=4)
    for k in ("gallery_desc", "gallery_mask", "gallery_scale"):
        extra[k] = torch.cat([inp[k], inp[k][:, :1]], dim=1)
    extra["gallery_mask"][:, 4] = False
    for k in ("query_desc", "query_mask", "query_scale"):
        extra[k] = inp[k]
    with torch.no_grad():
        torch.testing.assert_close(tiny(**extra)[:, :4], tiny(**inp), rtol=1e-5, atol=1e-5)


def test_reference_scan_gives_same_scores(tiny):
    inp = _inputs(tiny.config, 1, 3, seed=5)
    with torch.no_grad():
        fast = tiny(**inp)
        tiny.scan = lambda **kw: selective_scan_ref(**kw)
        try:
            slow = tiny(**inp)
        finally:
            tiny.scan = None
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("aggregation", ["start", "end", "mean", "max"])
def test_aggregation_modes(aggregation):
    cfg = LocoreConfig.preset("tiny", num_desc=6, desc_dim=8, aggregation=aggregation)
    model = LocoreReranker(cfg).eval()
    with torch.no_grad():
        scores = model(**_inputs(cfg, 2, 3, scales=False))
    assert scores.shape == (2, 3) and torch.isfinite(scores).all()


def test_global_token_and_errors():
    cfg = LocoreConfig.preset("tiny", num_desc=6, desc_dim=8, use_global=True, global_dim=16)
    model = LocoreReranker(cfg).eval()
    inp = _inputs(cfg, 1, 3)
    with pytest.raises(ValueError, match="global"):
        model(**inp)
    with torch.no_grad():
        s = model(**inp, query_global=torch.randn(1, 16), gallery_global=torch.randn(1, 3, 16))
    assert s.shape == (1, 3)
    bad = dict(inp, gallery_desc=torch.randn(1, 3, 6, 768))
    with pytest.raises(
        ValueError, match=r"gallery_desc must be \[1, \*, 6, 8\], got \[1, 3, 6, 768\]"
    ):
        model(**bad)


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    cfg = LocoreConfig.preset("tiny", num_desc=8, desc_dim=16)
    model = LocoreReranker(cfg)
    inp = _inputs(cfg, 2, 6, seed=7)
    target = torch.tensor([[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 1]], dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**inp), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_config_json_round_trip_and_presets():
    for name in ("tiny", "small", "base"):
        cfg = LocoreConfig.preset(name)
        assert LocoreConfig.from_json(cfg.to_json()) == cfg
        assert cfg.head_dim * cfg.n_heads == cfg.d_inner
    with pytest.raises(ConfigError, match="unknown preset"):
        LocoreConfig.preset("huge")
    with pytest.raises(ConfigError, match="unknown LocoreConfig keys"):
        LocoreConfig.from_dict({"d_model": 8, "wings": 2})
    with pytest.raises(ConfigError, match="divisible"):
        LocoreConfig(d_model=10, n_heads=3)


def test_checkpoint_round_trip_is_bit_exact(tiny, tmp_path):
    save_checkpoint(tiny, tmp_path / "ckpt", extra={"note": "test"})
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == tiny.config
    for (k1, v1), (k2, v2) in zip(
        tiny.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k1 == k2 and v1.dtype == v2.dtype and torch.equal(v1, v2), k1
    inp = _inputs(tiny.config, 1, 4, seed=8)
    with torch.no_grad():
        assert torch.equal(tiny(**inp), loaded(**inp))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]


def test_corrupt_or_mismatched_checkpoint_errors(tiny, tmp_path):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(tiny, ckpt)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    # Truncated weights file.
    weights = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(ckpt)
    (ckpt / "model.safetensors").write_bytes(weights)
    # Config that does not match the weights.
    meta = json.loads((ckpt / "config.json").read_text())
    meta["config"]["d_model"] = 32
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(ckpt)
    meta["config"]["d_model"] = tiny.config.d_model
    meta["format_version"] = 99
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(ckpt)
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ckpt)
    # A pickle never gets unpickled: only safetensors is read.
    (ckpt / "config.json").write_text(json.dumps(dict(meta, format_version=1)))
    (ckpt / "model.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_fully_padded_image_scores_zero(aggregation):
    """An image without one valid descriptor has no descriptor logit to aggregate: its score is
    0 (documented; not -inf, not NaN), and the other images' scores do not depend on it."""
    torch.manual_seed(0)
    cfg = LocoreConfig.preset("tiny", num_desc=6, desc_dim=16, aggregation=aggregation)
    model = LocoreReranker(cfg).eval()
    inp = _inputs(cfg, 2, 3, seed=9)
    inp["gallery_mask"][:, 1] = False
    with torch.no_grad():
        scores = model(**inp)
    assert torch.isfinite(scores).all(), scores
    torch.testing.assert_close(scores[:, 1], torch.zeros(2), rtol=0, atol=0)
