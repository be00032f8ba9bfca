"""Property tests (hypothesis) for packing, sliding windows and the feature-file readers.

Every expected value comes from an independent loop over the documented layout or algorithm,
not from the code under test. Sizes are small and ``max_examples`` bounded, so the file runs in
a few seconds. Inputs are fresh on every run (no example database is written); a failure prints
the falsifying example and the seed to reproduce it with ``@hypothesis.seed``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from locore.config import (
    GALLERY_DESC,
    GALLERY_MASK,
    GALLERY_SCALE,
    QUERY_DESC,
    QUERY_MASK,
    LocoreConfig,
)
from locore.runtime.ames import FeatureFile, from_rows, to_rows, write_features
from locore.runtime.local_features import LocalFeatures
from locore.runtime.packing import Packer
from locore.runtime.sliding_windows import (
    ORDERS,
    RerankParams,
    fuse_scores,
    sliding_window_rerank,
    window_starts,
)

FAST = settings(max_examples=100, deadline=None, database=None)
SLOW = settings(max_examples=40, deadline=None, database=None)


@st.composite
def records(
    draw: st.DrawFn, max_images: int = 5, max_rows: int = 9, max_dim: int = 6
) -> LocalFeatures:
    """A batch of random LocalFeatures [N, T, D] with arbitrary masks (any row may be padding,
    garbage in padded rows) and scale ids in 0..5."""
    n = draw(st.integers(1, max_images))
    t = draw(st.integers(1, max_rows))
    d = draw(st.integers(1, max_dim))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mask = rng.random((n, t)) < draw(st.floats(0.0, 1.0))
    return LocalFeatures(
        descriptors=rng.standard_normal((n, t, d)).astype(np.float32),
        scales=rng.integers(0, 6, size=(n, t)),
        xy=rng.random((n, t, 2)).astype(np.float32),
        weights=rng.random((n, t)).astype(np.float32),
        mask=mask,
    )


# ---- packing ----------------------------------------------------------------------------------
@FAST
@given(feats=records(), nd=st.integers(1, 8), fp16=st.booleans())
def test_packing_matches_a_loop_over_rows(feats: LocalFeatures, nd: int, fp16: bool) -> None:
    """Any row count T against any Nd: the first min(T, Nd) rows, padding zeroed, the rest
    padded; masks and scale ids follow the rows."""
    config = LocoreConfig(desc_dim=feats.desc_dim, num_desc=nd, num_scales=6)
    packer = Packer(config, float_dtype=np.float16 if fp16 else np.float32)
    desc, valid, scale = packer.pack_images(feats)
    n, t = feats.mask.shape
    assert desc.shape == (n, nd, feats.desc_dim) and desc.dtype == packer.float_dtype
    for i in range(n):
        for r in range(nd):
            inside = r < t and bool(feats.mask[i, r])
            assert valid[i, r] == inside
            if inside:
                want = feats.descriptors[i, r].astype(packer.float_dtype)
                np.testing.assert_array_equal(desc[i, r], want)
                assert scale[i, r] == feats.scales[i, r]
            else:
                assert not desc[i, r].any() and scale[i, r] == 0


@FAST
@given(feats=records(max_images=4), nd=st.integers(1, 6))
def test_pack_feeds_are_query_plus_gallery(feats: LocalFeatures, nd: int) -> None:
    config = LocoreConfig(desc_dim=feats.desc_dim, num_desc=nd, num_scales=6)
    query = LocalFeatures(
        descriptors=np.ones((3, feats.desc_dim), np.float32),
        scales=np.zeros(3, np.int64),
        xy=np.zeros((3, 2), np.float32),
        weights=np.ones(3, np.float32),
        mask=np.array([True, False, True]),
    )
    feeds = Packer(config).pack(query, feats)
    g = len(feats)
    assert feeds[QUERY_DESC].shape == (1, nd, feats.desc_dim)
    assert feeds[GALLERY_DESC].shape == (1, g, nd, feats.desc_dim)
    assert feeds[QUERY_MASK][0, : min(3, nd)].tolist() == [True, False, True][: min(3, nd)]
    assert not feeds[QUERY_MASK][0, 3:].any()
    rows = min(nd, feats.num_desc)
    np.testing.assert_array_equal(feeds[GALLERY_MASK][0, :, :rows], feats.mask[:, :rows])
    assert feeds[GALLERY_SCALE].dtype == np.int64


@FAST
@given(feats=records())
def test_rows_round_trip(feats: LocalFeatures) -> None:
    """to_rows -> from_rows gives the record back; the mask column is 0 valid / 1 padding."""
    rows = to_rows(feats)
    for i in range(len(feats)):
        for r in range(feats.num_desc):
            assert rows[i, r, 3] == (0.0 if feats.mask[i, r] else 1.0)
            assert rows[i, r, 2] == feats.scales[i, r]
    back = from_rows(rows)
    for name in ("descriptors", "scales", "xy", "weights", "mask"):
        np.testing.assert_array_equal(getattr(back, name), getattr(feats, name))


@SLOW
@given(feats=records(max_images=7), chunk=st.integers(1, 4), data=st.data())
def test_feature_file_round_trip(feats: LocalFeatures, chunk: int, data: st.DataObject) -> None:
    """write_features -> FeatureFile: read_all, read of any ids (repeats, any order) and of the
    first rows give back exactly what was written."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.h5"
        write_features(path, feats, chunk=chunk)
        n = len(feats)
        ids = data.draw(st.lists(st.integers(0, n - 1), max_size=6))
        rows = data.draw(st.integers(1, feats.num_desc + 2))
        with FeatureFile(path) as ff:
            assert (ff.num_images, ff.num_desc, ff.desc_dim) == (n, feats.num_desc, feats.desc_dim)
            every = ff.read_all(chunk=chunk)
            some = ff.read(np.array(ids, dtype=np.int64), num_desc=rows)
        for name in ("descriptors", "scales", "xy", "weights", "mask"):
            np.testing.assert_array_equal(getattr(every, name), getattr(feats, name))
            want = getattr(feats, name)[ids][:, :rows]
            np.testing.assert_array_equal(getattr(some, name), want)


# ---- sliding windows --------------------------------------------------------------------------
@FAST
@given(
    length=st.integers(0, 60),
    window=st.integers(1, 30),
    data=st.data(),
    order=st.sampled_from(ORDERS),
)
def test_windows_cover_every_position(
    length: int, window: int, data: st.DataObject, order: str
) -> None:
    stride = data.draw(st.integers(1, window))
    starts = window_starts(length, window, stride, order)
    w = min(window, length)
    covered = set()
    for s in starts:
        assert s % stride == 0 and 0 <= s < max(length, 1)
        covered.update(range(s, min(s + w, length)))
    assert covered == set(range(length))
    # the visiting orders of the module docstring, from a plain loop
    forward: list[int] = []
    start = 0
    while length > 0:
        forward.append(start)
        if start + w >= length:  # this window reaches the end
            break
        start += stride
    backward = forward[::-1]
    expected = {
        "start-to-end": forward,
        "end-to-start": backward,
        "start-to-end-to-start": forward + backward[1:],
        "end-to-start-to-end": backward + forward[1:],
    }[order]
    assert starts == expected


class HashScorer:
    """Deterministic logits: a function of each id and of the window it is scored in."""

    def __init__(self, seed: int, ties: bool) -> None:
        self.seed = seed
        self.ties = ties

    def __call__(self, window: np.ndarray) -> np.ndarray:
        context = int(sum((j + 1) * int(i) for j, i in enumerate(window))) % 5
        base = [(int(i) * 2654435761 + self.seed) % 97 for i in window]
        if self.ties:
            return np.array([float(b % 3) for b in base])
        return np.array([b / 10.0 + 0.01 * context for b in base])


@FAST
@given(
    k0=st.integers(0, 40),
    window=st.integers(1, 12),
    topk=st.integers(1, 50),
    data=st.data(),
    order=st.sampled_from(ORDERS),
    ties=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_rerank_is_a_permutation_and_leaves_the_tail(
    k0: int, window: int, topk: int, data: st.DataObject, order: str, ties: bool, seed: int
) -> None:
    stride = data.draw(st.integers(1, window))
    alpha = data.draw(st.sampled_from([0.0, 0.25, 0.5, 1.0]))
    params = RerankParams(window=window, topk=topk, stride=stride, order=order, alpha=alpha)
    rng = np.random.default_rng(seed)
    ids = rng.permutation(1000)[:k0]
    sims = np.sort(rng.random(k0))[::-1]
    if ties and k0:
        sims = np.round(sims, 1)
    new_ids, scores = sliding_window_rerank(ids, sims, HashScorer(seed, ties), params)
    assert sorted(new_ids.tolist()) == sorted(ids.tolist())
    k = min(topk, k0)
    np.testing.assert_array_equal(new_ids[k:], ids[k:])
    np.testing.assert_array_equal(scores[k:], sims[k:])
    again_ids, again_scores = sliding_window_rerank(ids, sims, HashScorer(seed, ties), params)
    np.testing.assert_array_equal(again_ids, new_ids)  # deterministic, ties included
    np.testing.assert_array_equal(again_scores, scores)
    if alpha == 1.0:  # the model has no say: the order of the global similarities stays
        np.testing.assert_array_equal(new_ids, ids)


@FAST
@given(
    sims=st.lists(st.floats(-1, 1), min_size=1, max_size=8),
    logits=st.lists(st.floats(-50, 50), min_size=1, max_size=8),
    alpha=st.floats(0, 1),
    temperature=st.floats(1e-3, 10),
    bump=st.floats(1e-3, 10),
)
def test_fuse_scores_is_monotone_in_the_logit(
    sims: list[float], logits: list[float], alpha: float, temperature: float, bump: float
) -> None:
    n = min(len(sims), len(logits))
    g, z = np.array(sims[:n]), np.array(logits[:n])
    low = fuse_scores(g, z, alpha, temperature)
    high = fuse_scores(g, z + bump, alpha, temperature)
    assert (high >= low).all()
    if alpha < 1:
        expected = alpha * g + (1 - alpha) / (1 + np.exp(-temperature * z))
        np.testing.assert_allclose(low, expected, rtol=1e-12, atol=1e-12)


def test_equal_scores_keep_the_shortlist_order() -> None:
    """All logits equal and all sims equal: a stable sort keeps the input order."""
    ids = np.array([9, 3, 7, 1, 5, 2, 8])
    params = RerankParams(window=3, topk=7, stride=2)
    out, _ = sliding_window_rerank(ids, np.full(7, 0.5), lambda w: np.zeros(len(w)), params)
    np.testing.assert_array_equal(out, ids)
