"""Sliding-window re-ranking of shortlists with a list-wise re-ranker.

The algorithm (:func:`sliding_window_rerank`), for one query with a shortlist ranked by global
similarity:

1. Only the top ``K = min(topk, len(shortlist))`` positions are re-ranked; positions ``>= K``
   keep their images and their global similarities as scores.
2. Windows are ``W = min(window, K)`` consecutive positions of the *current* ranking. A window
   starts at every multiple of ``stride`` (``0, stride, 2*stride, ...``) and covers
   ``[s, min(s + W, K))``; a start is skipped when its window lies inside the previous one
   (``s - stride + W >= K``), so the last window may be shorter than W when K is not a multiple
   of the stride, and never re-scores a tail that the previous window already covered.
   ``stride <= W`` guarantees the windows overlap or abut, so every position is visited.
3. Orders: ``start-to-end`` visits the windows by increasing start; ``end-to-start`` by
   decreasing start, ending with the window at position 0 (so good images found deep in the
   list bubble up, a stride at a time); ``start-to-end-to-start`` and ``end-to-start-to-end``
   make one pass each way, visiting the turning window once.
4. Each window is one call of the scorer: the query and the window's images in their current
   order -> one logit per image. Each image's fused score
   ``alpha * global_sim + (1 - alpha) * sigmoid(temperature * logit)`` replaces its sort key,
   and the window's positions are re-sorted by fused score, descending (stable: ties keep the
   current order).
5. With ``W >= K`` there is a single window: one-shot re-ranking of the top K, for every order.

The result is a permutation of the shortlist, with each image's last fused score (the global
similarity for positions ``>= K``). LOCORE's evaluation uses window 100, top 400, stride 50,
end-to-start, alpha 0.5, temperature 0.1 (the defaults).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from locore.config import SCORES
from locore.runtime.ames import FeatureFile
from locore.runtime.backends.base import Backend
from locore.runtime.local_features import FeaturesLike, as_local_features
from locore.runtime.packing import Packer
from locore.runtime.shortlist import Shortlist

log = logging.getLogger(__name__)

ORDERS = ("start-to-end", "end-to-start", "start-to-end-to-start", "end-to-start-to-end")

ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RerankParams:
    """Sliding-window parameters (defaults: LOCORE's evaluation settings)."""

    window: int = 100  # W: gallery images per model call
    topk: int = 400  # K: how much of the shortlist is re-ranked
    stride: int = 50  # positions between consecutive window starts (<= window)
    order: str = "end-to-start"  # one of ORDERS
    alpha: float = 0.5  # weight of the global similarity in the fused score
    temperature: float = 0.1  # t in sigmoid(t * logit)

    def __post_init__(self) -> None:
        for name in ("window", "topk", "stride"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.stride > self.window:
            raise ValueError(
                f"stride ({self.stride}) must not exceed the window ({self.window}): the "
                f"positions between windows would never be re-ranked. Use stride <= {self.window}"
            )
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {list(ORDERS)}, got {self.order!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not np.isfinite(self.temperature):
            raise ValueError(f"temperature must be finite, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_starts(length: int, window: int, stride: int, order: str) -> list[int]:
    """Start positions of the windows over the top ``length`` positions, in visiting order.

    Window ``s`` covers ``[s, min(s + min(window, length), length))``; see the module docstring.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)}, got {order!r}")
    if window < 1 or stride < 1 or stride > window:
        raise ValueError(f"need 1 <= stride <= window, got stride {stride} and window {window}")
    if length <= 0:
        return []
    w = min(window, length)
    forward = [s for s in range(0, length, stride) if s == 0 or s - stride + w < length]
    backward = forward[::-1]
    if order == "start-to-end":
        return forward
    if order == "end-to-start":
        return backward
    if order == "start-to-end-to-start":
        return forward + backward[1:]
    return backward + forward[1:]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def fuse_scores(
    global_sims: np.ndarray, logits: np.ndarray, alpha: float, temperature: float
) -> np.ndarray:
    """``alpha * global_sims + (1 - alpha) * sigmoid(temperature * logits)`` (float64)."""
    g = np.asarray(global_sims, dtype=np.float64)
    return alpha * g + (1.0 - alpha) * sigmoid(temperature * np.asarray(logits, dtype=np.float64))


def sliding_window_rerank(
    ranking: np.ndarray,
    global_sims: np.ndarray,
    score_fn: ScoreFn,
    params: RerankParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank one shortlist with sliding windows (the algorithm of the module docstring).

    Args:
        ranking: [K0] the shortlist, best first (ids or positions, any integers).
        global_sims: [K0] their global similarities.
        score_fn: ``score_fn(window)`` with ``window`` [w] (items of ``ranking`` in their
            current order) -> [w] logits.
        params: window, topk, stride, order, alpha, temperature.

    Returns:
        (ranking [K0], scores [K0] float64): a permutation of ``ranking`` and each item's fused
        score (its global similarity beyond the top K).
    """
    params = params or RerankParams()
    ranking = np.asarray(ranking)
    sims = np.asarray(global_sims, dtype=np.float64)
    if ranking.ndim != 1 or sims.shape != ranking.shape:
        raise ValueError(
            f"ranking and global_sims must both be [K], got {list(ranking.shape)} and "
            f"{list(sims.shape)}"
        )
    ids = ranking.copy()
    sims = sims.copy()
    scores = sims.copy()
    k = min(params.topk, ids.shape[0])
    w = min(params.window, k)
    for start in window_starts(k, params.window, params.stride, params.order):
        pos = slice(start, min(start + w, k))
        window = ids[pos].copy()
        logits = np.asarray(score_fn(window), dtype=np.float64)
        if logits.shape != window.shape:
            raise ValueError(
                f"the scorer returned {list(logits.shape)} logits for a window of "
                f"{window.shape[0]} images; it must return one logit per image"
            )
        if not np.isfinite(logits).all():
            raise ValueError(
                f"the scorer returned non-finite logits for the window at position {start}; "
                "check the model and the features (an FP16 overflow?)"
            )
        fused = fuse_scores(sims[pos], logits, params.alpha, params.temperature)
        order = np.argsort(-fused, kind="stable")
        ids[pos] = window[order]
        sims[pos] = sims[pos][order]
        scores[pos] = fused[order]
    return ids, scores


@dataclass
class RerankResult:
    """One query's re-ranked shortlist: ids [K0] int64 and fused scores [K0] float64."""

    ids: np.ndarray
    scores: np.ndarray


class Reranker:
    """Sliding-window re-ranking with a backend.

    >>> reranker = Reranker(create_backend("model.onnx"), window=100, topk=400)
    >>> result = reranker.rerank(query_features, db_file, shortlist.ids[q], shortlist.sims[q])

    Args:
        backend: a loaded model (:func:`locore.runtime.create_backend`).
        params: :class:`RerankParams`; keyword ``overrides`` replace single fields.
        clip_scales: clamp scale ids into the model's range instead of raising.
    """

    def __init__(
        self,
        backend: Backend,
        params: RerankParams | None = None,
        *,
        clip_scales: bool = False,
        **overrides: Any,
    ) -> None:
        params = params or RerankParams()
        self.params = replace(params, **overrides) if overrides else params
        self.backend = backend
        self.packer = Packer.for_backend(backend, clip_scales=clip_scales)
        limit = backend.max_gallery
        if limit is not None and self.params.window > limit:
            raise ValueError(
                f"window {self.params.window} exceeds the {limit} gallery images this engine "
                f"takes per call; use window <= {limit} or rebuild the engine with a larger "
                "optimization profile"
            )
        self.calls = 0  # backend calls so far

    @property
    def num_desc(self) -> int:
        return self.backend.config.num_desc

    def score(self, query: FeaturesLike, gallery: FeaturesLike) -> np.ndarray:
        """Logits [G] float32 of the gallery images [G, T, ...] for one query [T, ...] (models
        with global descriptors take the records' ``global_desc``)."""
        gallery = as_local_features(gallery)
        feeds = self.packer.pack(query, gallery)
        scores = self.backend.infer(feeds)[SCORES]
        ngal = gallery.descriptors.shape[0]
        if scores.shape != (1, ngal):
            raise RuntimeError(
                f"the model returned scores of shape {list(scores.shape)} for 1 query and {ngal} "
                f"gallery images; expected [1, {ngal}]"
            )
        self.calls += 1
        return np.asarray(scores[0], dtype=np.float32)

    def rerank(
        self,
        query: FeaturesLike,
        database: FeatureFile | FeaturesLike,
        ids: np.ndarray,
        sims: np.ndarray,
        query_global: np.ndarray | None = None,
        db_global: np.ndarray | None = None,
    ) -> RerankResult:
        """Re-rank one query's shortlist.

        query: [T, ...] features of the query (read from a file or extracted);
        database: the feature file (or all database features [N, T, ...], or a list of
        single-image LocalFeatures) that ``ids`` index; ids, sims: [K0] the shortlist;
        query_global [Dg] and db_global [N, Dg] only for models with global descriptors
        (default: the records' ``global_desc``).
        """
        ids = np.asarray(ids, dtype=np.int64)
        sims = np.asarray(sims)
        k = min(self.params.topk, ids.shape[0])
        top = ids[:k]
        # Read the top K once; windows index into it by shortlist position (repeats are fine).
        if isinstance(database, FeatureFile):
            gallery = database.read(top, num_desc=self.num_desc)
        else:
            gallery = as_local_features(database)[top].first(self.num_desc)
        query = as_local_features(query)
        if query_global is not None:
            query = replace(query, global_desc=np.asarray(query_global))
        if db_global is not None:
            gallery = replace(gallery, global_desc=np.asarray(db_global)[top])

        def score_fn(positions: np.ndarray) -> np.ndarray:
            return self.score(query, gallery[positions])

        positions, scores = sliding_window_rerank(
            np.arange(ids.shape[0]), sims, score_fn, self.params
        )
        return RerankResult(ids[positions], scores)

    def rerank_many(
        self,
        queries: FeatureFile | FeaturesLike,
        database: FeatureFile | FeaturesLike,
        shortlist: Shortlist,
        query_global: np.ndarray | None = None,
        db_global: np.ndarray | None = None,
    ) -> Iterator[RerankResult]:
        """Re-rank every query of ``shortlist`` (row q belongs to query q); yields per query."""
        if not isinstance(queries, FeatureFile):
            queries = as_local_features(queries)
        if not isinstance(database, FeatureFile):
            database = as_local_features(database)
        num_queries = len(queries)
        if shortlist.num_queries != num_queries:
            raise ValueError(
                f"the shortlist has {shortlist.num_queries} rows but there are {num_queries} "
                "query images; row q of the shortlist must belong to query q of the query features"
            )
        num_db = len(database)
        if shortlist.ids.size and shortlist.ids.max() >= num_db:
            raise ValueError(
                f"the shortlist refers to database image {int(shortlist.ids.max())} but the "
                f"database features hold {num_db} images; do the files belong together?"
            )
        log.info(
            "re-ranking %d queries: top %d of %d, %s",
            num_queries,
            min(self.params.topk, shortlist.length),
            shortlist.length,
            self.params,
        )
        for q in range(num_queries):
            if isinstance(queries, FeatureFile):
                query = queries.read(q, num_desc=self.num_desc)
            else:
                query = queries[q].first(self.num_desc)
            q_global = None if query_global is None else np.asarray(query_global)[q]
            yield self.rerank(
                query, database, shortlist.ids[q], shortlist.sims[q], q_global, db_global
            )
