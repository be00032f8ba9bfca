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

import dataclasses
import logging
import numbers
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from locore.config import GALLERY_MASK, SCORES
from locore.errors import UsageError
from locore.runtime.ames import FeatureFile
from locore.runtime.backends.base import Backend
from locore.runtime.local_features import FeaturesLike, as_image_ids, as_local_features
from locore.runtime.packing import Packer, check_query_mask
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
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if self.stride > self.window:
            raise UsageError(
                f"stride ({self.stride}) must not exceed the window ({self.window}): the "
                f"positions between windows would never be re-ranked. Use stride <= {self.window}"
            )
        if not isinstance(self.order, str) or self.order not in ORDERS:
            raise UsageError(f"order must be one of {list(ORDERS)}, got {self.order!r}")
        for name in ("alpha", "temperature"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool | np.bool_):
                raise UsageError(f"{name} must be a number, got {value!r}")
        if not 0.0 <= self.alpha <= 1.0:  # also refuses NaN
            raise UsageError(
                f"alpha must be in [0, 1] (the weight of the global similarity), got {self.alpha}"
            )
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise UsageError(
                f"temperature must be a finite number > 0 (t in sigmoid(t * logit); 0 would "
                f"ignore the model, < 0 invert it), got {self.temperature}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_starts(length: int, window: int, stride: int, order: str) -> list[int]:
    """Start positions of the windows over the top ``length`` positions, in visiting order.

    Window ``s`` covers ``[s, min(s + min(window, length), length))``; see the module docstring.
    """
    if order not in ORDERS:
        raise UsageError(f"order must be one of {list(ORDERS)}, got {order!r}")
    for name, value in (("length", length), ("window", window), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise UsageError(f"{name} must be an integer, got {value!r}")
    if window < 1 or stride < 1 or stride > window:
        raise UsageError(f"need 1 <= stride <= window, got stride {stride} and window {window}")
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


def check_similarities(sims: np.ndarray, name: str = "the query") -> None:
    """Raise :class:`~locore.errors.UsageError` unless every global similarity is finite.

    The policy: similarities are data, never repaired. NaN has no place in an order (the row
    would silently stay in input order) and +/-inf would pin an image to the top or the bottom
    whatever the model says; the message names ``name`` and the shortlist position.
    """
    sims = np.asarray(sims)
    if sims.dtype.kind not in "iuf":
        raise UsageError(f"global similarities of {name} must be numbers, got dtype {sims.dtype}")
    bad = ~np.isfinite(sims)
    if bad.any():
        pos = np.argwhere(bad)[0]
        where = int(pos[-1]) if len(pos) == 1 else tuple(int(p) for p in pos)
        raise UsageError(
            f"the global similarity of {name} at shortlist position {where} is "
            f"{sims[tuple(pos)]}; similarities must be finite (NaN or inf would silently decide "
            f"the ranking). {int(bad.sum())} of {bad.size} are not; fix the global descriptors "
            "or the shortlist"
        )


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
    name: str = "the query",
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank one shortlist with sliding windows (the algorithm of the module docstring).

    Args:
        ranking: [K0] the shortlist, best first (ids or positions, any integers).
        global_sims: [K0] their global similarities.
        score_fn: ``score_fn(window)`` with ``window`` [w] (items of ``ranking`` in their
            current order) -> [w] logits.
        params: window, topk, stride, order, alpha, temperature.
        name: what the shortlist belongs to, in error messages (``"query 7"``).

    Every global similarity must be finite (:func:`check_similarities`): NaN would leave its
    row unsorted and +inf would force its image to rank 1.

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
    check_similarities(sims, name)
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
                f"the scorer returned non-finite logits for the window at position {start} of "
                f"{name}'s shortlist; check the model and the features (an FP16 overflow?)"
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
        fields = [f.name for f in dataclasses.fields(RerankParams)]
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise UsageError(f"unknown re-ranking parameters {unknown}; RerankParams has {fields}")
        self.params = replace(params, **overrides) if overrides else params
        self.backend = backend
        self.packer = Packer.for_backend(backend, clip_scales=clip_scales)
        limit = backend.max_gallery
        if limit is not None and self.params.window > limit:
            raise UsageError(
                f"window {self.params.window} exceeds the {limit} gallery images this engine "
                f"takes per call; use window <= {limit} or rebuild the engine with a larger "
                "optimization profile"
            )
        self.calls = 0  # backend calls so far
        self._warned_empty = False

    @property
    def num_desc(self) -> int:
        return self.backend.config.num_desc

    def score(self, query: FeaturesLike, gallery: FeaturesLike) -> np.ndarray:
        """Logits [G] float32 of the gallery images [G, T, ...] for one query [T, ...] (models
        with global descriptors take the records' ``global_desc``).

        A gallery image without any valid descriptor gets logit 0 ("no evidence": its local
        term is sigmoid(0) = 0.5), whatever the model would say about an empty image.
        """
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
        logits = np.array(scores[0], dtype=np.float32)
        logits[~np.asarray(feeds[GALLERY_MASK][0], dtype=bool).any(axis=-1)] = 0.0
        return logits

    def rerank(
        self,
        query: FeaturesLike,
        database: FeatureFile | FeaturesLike,
        ids: np.ndarray,
        sims: np.ndarray,
        query_global: np.ndarray | None = None,
        db_global: np.ndarray | None = None,
        *,
        name: str = "the query",
    ) -> RerankResult:
        """Re-rank one query's shortlist.

        query: [T, ...] features of the query (read from a file or extracted);
        database: the feature file (or all database features [N, T, ...], or a list of
        single-image LocalFeatures) that ``ids`` index; ids, sims: [K0] the shortlist;
        query_global [Dg] and db_global [N, Dg] only for models with global descriptors
        (default: the records' ``global_desc``); ``name`` names the query in errors.

        Checked before any model call (:class:`~locore.errors.UsageError`): ids are whole
        numbers in ``[0, N)`` of ``database`` (no wrap-around: -1 is never the last image, see
        :func:`~locore.runtime.local_features.as_image_ids`) and sims are finite
        (:func:`check_similarities`). A query without any valid descriptor raises
        :class:`~locore.runtime.packing.PackingError`; a gallery image without any is scored
        as "no evidence" (see :meth:`score`).
        """
        num_db = database.num_images if isinstance(database, FeatureFile) else None
        if num_db is None:
            database = as_local_features(database)
            if not database.is_batch:
                raise UsageError(
                    "database must be a batch of features [N, T, ...] (or a FeatureFile or a "
                    "list of single-image records), got one image "
                    f"{list(database.descriptors.shape)}"
                )
            num_db = len(database)
        ids = as_image_ids(ids, num_db, f"the shortlist of {name}", "the database")
        sims = np.asarray(sims)
        if ids.ndim != 1 or sims.shape != ids.shape:
            raise UsageError(
                f"ids and sims of {name} must both be [K], got {list(ids.shape)} and "
                f"{list(sims.shape)}"
            )
        check_similarities(sims, name)
        k = min(self.params.topk, ids.shape[0])
        top = ids[:k]
        # Read the top K once; windows index into it by shortlist position (repeats are fine).
        if isinstance(database, FeatureFile):
            gallery = database.read(top, num_desc=self.num_desc)
        else:
            gallery = database[top].first(self.num_desc)
        query = as_local_features(query)
        check_query_mask(query.mask[: self.num_desc] if not query.is_batch else query.mask, name)
        if query_global is not None:
            query = replace(query, global_desc=np.asarray(query_global))
        if db_global is not None:
            db_global = np.asarray(db_global)
            if db_global.ndim != 2 or db_global.shape[0] != num_db:
                raise UsageError(
                    f"db_global must be [N, Dg] with N = {num_db} database images, got "
                    f"{list(db_global.shape)}"
                )
            gallery = replace(gallery, global_desc=db_global[top])
        empty = int(np.count_nonzero(~gallery.mask.any(axis=-1))) if k else 0
        if empty:
            # Once per Reranker at WARNING (a whole run would repeat it), then at DEBUG.
            level = logging.DEBUG if self._warned_empty else logging.WARNING
            self._warned_empty = True
            log.log(
                level,
                "%s: %d of the top %d shortlist images have no valid descriptor; they are "
                "scored as no evidence (logit 0, local term 0.5)",
                name,
                empty,
                k,
            )

        def score_fn(positions: np.ndarray) -> np.ndarray:
            return self.score(query, gallery[positions])

        positions, scores = sliding_window_rerank(
            np.arange(ids.shape[0]), sims, score_fn, self.params, name
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
        """Re-rank every query of ``shortlist`` (row q belongs to query q); yields per query.

        Padded slots (id -1, as faiss writes when the database is smaller than K) are dropped:
        the result of a padded row holds only its valid slots, re-ranked.
        """
        if not isinstance(queries, FeatureFile):
            queries = as_local_features(queries)
        if not isinstance(database, FeatureFile):
            database = as_local_features(database)
        num_queries = len(queries)
        if shortlist.num_queries != num_queries:
            raise UsageError(
                f"the shortlist has {shortlist.num_queries} rows but there are {num_queries} "
                "query images; row q of the shortlist must belong to query q of the query features"
            )
        num_db = len(database)
        if shortlist.ids.size and shortlist.ids.max() >= num_db:
            raise UsageError(
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
            ids, sims = shortlist.row(q)  # padded slots (id -1) dropped
            yield self.rerank(query, database, ids, sims, q_global, db_global, name=f"query {q}")
