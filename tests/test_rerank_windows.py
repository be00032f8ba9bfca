"""Sliding-window re-ranking: the window algorithm against an independent reference.

The scorer here is a deterministic fake (a function of the window's ids and their order), so
these tests check the window logic, not a model; test_backend_ort.py runs it with ONNX Runtime.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from locore.runtime.sliding_windows import (
    ORDERS,
    RerankParams,
    fuse_scores,
    sliding_window_rerank,
    window_starts,
)


class FakeScorer:
    """Logit of an image = its base logit + a small term depending on the whole window
    (its ids and their order), so that the visiting order matters. Records every window."""

    def __init__(self, num_ids: int, seed: int = 0) -> None:
        self.base = np.random.default_rng(seed).normal(0.0, 20.0, size=num_ids)
        self.calls: list[list[int]] = []

    def __call__(self, window: np.ndarray) -> np.ndarray:
        ids = [int(i) for i in window]
        self.calls.append(ids)
        context = sum((j + 1) * i for j, i in enumerate(ids)) % 11
        return np.array([self.base[i] + 0.3 * context for i in ids])


def reference_rerank(
    ranking: list[int],
    sims: list[float],
    score_fn: FakeScorer,
    window: int,
    topk: int,
    stride: int,
    order: str,
    alpha: float,
    temperature: float,
) -> tuple[list[int], list[float]]:
    """Straightforward loops: the algorithm as written in the sliding_windows docstring."""
    items = [[i, s, s] for i, s in zip(ranking, sims, strict=True)]  # id, global sim, score
    k = min(topk, len(items))
    w = min(window, k)
    forward: list[int] = []
    start = 0
    while k > 0:
        forward.append(start)
        if start + w >= k:  # this window reaches the end of the top K
            break
        start += stride
    backward = list(reversed(forward))
    visits = {
        "start-to-end": forward,
        "end-to-start": backward,
        "start-to-end-to-start": forward + backward[1:],
        "end-to-start-to-end": backward + forward[1:],
    }[order]
    for start in visits:
        stop = min(start + w, k)
        chunk = items[start:stop]
        logits = score_fn(np.array([item[0] for item in chunk]))
        rescored = []
        for item, logit in zip(chunk, logits, strict=True):
            fused = alpha * item[1] + (1 - alpha) / (1 + math.exp(-temperature * logit))
            rescored.append([item[0], item[1], fused])
        rescored.sort(key=lambda item: -item[2])  # stable
        items[start:stop] = rescored
    return [item[0] for item in items], [item[2] for item in items]


def shortlist(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(10 * n)[:n]
    sims = np.sort(rng.random(n))[::-1]
    return ids, sims


CASES = [
    # (shortlist length, window, topk, stride)
    (400, 100, 400, 50),  # LOCORE's setting
    (60, 10, 45, 5),
    (60, 10, 47, 4),  # K not a multiple of the stride: a shorter last window
    (30, 100, 400, 50),  # fewer images than K and than W
    (101, 100, 400, 50),  # K = W + 1
    (50, 8, 50, 8),  # stride == window: abutting windows
    (40, 7, 33, 1),  # stride 1
    (12, 5, 3, 2),  # K < W
    (1, 4, 4, 2),  # a single image
]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(("n", "window", "topk", "stride"), CASES)
def test_matches_reference(order: str, n: int, window: int, topk: int, stride: int) -> None:
    ids, sims = shortlist(n)
    params = RerankParams(window=window, topk=topk, stride=stride, order=order)
    scorer, ref_scorer = FakeScorer(10 * n), FakeScorer(10 * n)
    got_ids, got_scores = sliding_window_rerank(ids, sims, scorer, params)
    ref_ids, ref_scores = reference_rerank(
        list(ids), list(sims), ref_scorer, window, topk, stride, order, 0.5, 0.1
    )
    assert scorer.calls == ref_scorer.calls  # the same windows, in the same order and content
    assert got_ids.tolist() == ref_ids
    np.testing.assert_allclose(got_scores, ref_scores, rtol=0, atol=1e-12)
    # a permutation of the shortlist; positions past K untouched
    assert sorted(got_ids.tolist()) == sorted(ids.tolist())
    k = min(topk, n)
    assert got_ids[k:].tolist() == ids[k:].tolist()
    np.testing.assert_array_equal(got_scores[k:], sims[k:])
    # every top-K position was in some window
    covered = {i for call in scorer.calls for i in call}
    assert set(ids[:k].tolist()) <= covered


@pytest.mark.parametrize("order", ORDERS)
def test_window_at_least_k_is_one_shot(order: str) -> None:
    ids, sims = shortlist(80)
    scorer = FakeScorer(800)
    got_ids, got_scores = sliding_window_rerank(
        ids, sims, scorer, RerankParams(window=50, topk=50, stride=10, order=order)
    )
    assert len(scorer.calls) == 1 and scorer.calls[0] == ids[:50].tolist()
    logits = FakeScorer(800)(ids[:50])
    fused = fuse_scores(sims[:50], logits, 0.5, 0.1)
    best = np.argsort(-fused, kind="stable")
    assert got_ids[:50].tolist() == ids[:50][best].tolist()
    np.testing.assert_allclose(got_scores[:50], fused[best])
    assert got_ids[50:].tolist() == ids[50:].tolist()


def test_window_starts() -> None:
    assert window_starts(400, 100, 50, "start-to-end") == [0, 50, 100, 150, 200, 250, 300]
    assert window_starts(400, 100, 50, "end-to-start") == [300, 250, 200, 150, 100, 50, 0]
    assert window_starts(420, 100, 50, "start-to-end")[-1] == 350  # last window [350, 420)
    assert window_starts(101, 100, 50, "end-to-start") == [50, 0]  # [50, 101), then [0, 100)
    assert window_starts(30, 100, 50, "end-to-start") == [0]
    assert window_starts(10, 4, 3, "start-to-end-to-start") == [0, 3, 6, 3, 0]
    assert window_starts(10, 4, 3, "end-to-start-to-end") == [6, 3, 0, 3, 6]
    assert window_starts(8, 4, 4, "start-to-end") == [0, 4]
    assert window_starts(0, 4, 2, "start-to-end") == []


def test_end_to_start_bubbles_the_best_image_to_the_top() -> None:
    n = 400
    ids = np.arange(n)
    sims = np.linspace(0.9, 0.5, n)

    def score_fn(window: np.ndarray) -> np.ndarray:
        return np.where(window == 390, 100.0, -100.0)

    top = sliding_window_rerank(ids, sims, score_fn, RerankParams(order="end-to-start"))[0]
    assert top[0] == 390
    forward = sliding_window_rerank(ids, sims, score_fn, RerankParams(order="start-to-end"))[0]
    assert forward.tolist().index(390) == 300  # the top of the last window only


def test_alpha_extremes() -> None:
    ids, sims = shortlist(30)
    logits = np.random.default_rng(3).normal(size=1000)
    only_global = sliding_window_rerank(
        ids, sims, lambda w: logits[w], RerankParams(window=10, stride=5, alpha=1.0)
    )[0]
    assert only_global.tolist() == ids.tolist()
    only_model = sliding_window_rerank(
        ids, sims, lambda w: logits[w], RerankParams(window=30, stride=5, alpha=0.0)
    )[0]
    assert only_model.tolist() == ids[np.argsort(-logits[ids], kind="stable")].tolist()


def test_fusion_formula() -> None:
    fused = fuse_scores(np.array([0.8, 0.2]), np.array([0.0, 50.0]), alpha=0.25, temperature=0.1)
    expected = [0.25 * 0.8 + 0.75 * 0.5, 0.25 * 0.2 + 0.75 / (1 + math.exp(-5.0))]
    np.testing.assert_allclose(fused, expected)
    assert np.isfinite(fuse_scores(np.zeros(2), np.array([-1e6, 1e6]), 0.5, 1.0)).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(window=10, stride=11), "stride \\(11\\) must not exceed the window \\(10\\)"),
        (dict(stride=0), "stride must be a positive integer"),
        (dict(stride=-5), "stride must be a positive integer"),
        (dict(window=0), "window must be a positive integer"),
        (dict(topk=0), "topk must be a positive integer"),
        (dict(order="middle-out"), "order must be one of"),
        (dict(alpha=1.5), "alpha must be in"),
    ],
)
def test_invalid_params_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RerankParams(**kwargs)  # type: ignore[arg-type]


def test_bad_scorer_output_is_reported() -> None:
    ids, sims = shortlist(10)
    params = RerankParams(window=4, stride=2)
    with pytest.raises(ValueError, match="one logit per image"):
        sliding_window_rerank(ids, sims, lambda w: np.zeros(len(w) + 1), params)
    with pytest.raises(ValueError, match="non-finite logits"):
        sliding_window_rerank(ids, sims, lambda w: np.full(len(w), np.nan), params)
    with pytest.raises(ValueError, match="must both be \\[K\\]"):
        sliding_window_rerank(ids, sims[:5], lambda w: np.zeros(len(w)), params)


@pytest.mark.parametrize("order", ORDERS)
def test_equal_fused_scores_keep_the_current_order(order: str) -> None:
    """Ties keep the shortlist's order (a stable re-sort): with constant logits and equal
    similarities every fused score is equal, so nothing may move."""
    ranking = np.array([7, 3, 9, 1, 4, 8, 2, 6, 0, 5])
    sims = np.full(len(ranking), 0.25)
    params = RerankParams(window=4, topk=10, stride=2, order=order)
    ids, scores = sliding_window_rerank(ranking, sims, lambda w: np.zeros(len(w)), params)
    np.testing.assert_array_equal(ids, ranking)
    # alpha * sim + (1 - alpha) * sigmoid(0) = 0.5 * 0.25 + 0.5 * 0.5, by hand
    np.testing.assert_allclose(scores, 0.375)
