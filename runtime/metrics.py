"""Retrieval evaluation: revisitop mAP and mP@k, GLDv2 mAP@100, Recall@K, shortlist recall.

Rankings are ``ranks: [Nq, K] int`` database indices, best first, or a sequence of Nq rows of
any lengths (``K`` may be the whole database or a shortlist). The shortlist padding id -1
(:data:`locore.runtime.shortlist.PAD_ID`) and any other negative id is dropped from a row
before scoring, so a padded slot is neither a hit nor a miss. Ground truth is revisitop's, per
query ``{"easy", "hard", "junk"}`` (and GLDv2's ``ok``) of database indices, lists or int
arrays (see :mod:`locore.runtime.ground_truth`).

Definitions (references: revisitop ``python/evaluate.py`` — github filipradenovic/revisitop —
and the copies in AMES ``src/utils/revisited.py`` and LOCORE ``common_utils/revisited.py``):

- **Protocols** (:func:`protocol_lists`): ``easy``: positives = easy, junk = junk + hard;
  ``medium``: positives = easy + hard (+ ok), junk = junk; ``hard``: positives = hard,
  junk = junk + easy. Junk images are removed from the ranking before scoring. An id listed
  both as a positive and as junk counts as a positive (revisitop scores it at its rank).
- **AP** (:func:`average_precision`): revisitop's trapezoidal AP, divided by the number of
  positives of the query; positives missing from a truncated list count as misses (AP < 1).
  AMES's and LOCORE's copies divide by ``min(#positives, len(ranking))`` instead, which differs
  only when a query has more positives than the list is long. revisitop's own
  ``compute_map`` raises ``ValueError`` when a query has positives but none in the list (it
  takes ``max`` of an empty array); here that query gets AP 0 and mP@k 0 (AMES's guard).
- **mP@k**: revisitop's ``compute_map``: precision at ``min(k, rank of the last positive
  found)``.
- Queries without positives are skipped; the mean over no query is NaN.
- **mAP@k** (:func:`map_at_k`, GLDv2's official metric, "mAP@100"): the first ``k`` entries
  of the ranking, junk removed, ``sum_i P(i) rel(i) / min(#positives, k)`` (the Kaggle
  definition; AMES's copy divides by ``min(#positives, len(list))``).
- **Recall@K** (:func:`query_recall_at_k`, SOP/In-Shop/CUB): fraction of queries with at least
  one positive in the top K once junk (e.g. the query itself) is removed.
- :func:`recall_at_k`: shortlist recall, the mean fraction of a query's positives inside the
  raw top ``k``, junk included (it takes a shortlist slot exactly as it would for a re-ranker).
- **Confidence intervals** (:func:`bootstrap_ci`): the mean of per-query values (APs from
  :func:`compute_map_per_query`, or the paired differences of two methods' APs on the same
  queries) and its percentile bootstrap interval, queries resampled with replacement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from locore.runtime.ground_truth import positives as entry_positives

GroundTruthRows = Sequence[Mapping[str, Any]]
Rankings = np.ndarray | Sequence[np.ndarray]
PROTOCOLS = ("easy", "medium", "hard")


def _ids(g: Mapping[str, Any], key: str) -> np.ndarray:
    return np.asarray(g.get(key, ()), dtype=np.int64).ravel()


def protocol_lists(g: Mapping[str, Any], protocol: str = "medium") -> tuple[np.ndarray, np.ndarray]:
    """(positives, junk) [int64] of one ground-truth entry under a revisitop ``protocol``.

    ``ok`` (GLDv2) counts as a positive in ``medium`` only. Ids that are both positive and junk
    are positives (removed from junk)."""
    if protocol == "medium":
        pos, junk = entry_positives(g), _ids(g, "junk")
    elif protocol == "easy":
        pos, junk = _ids(g, "easy"), np.concatenate([_ids(g, "junk"), _ids(g, "hard")])
    elif protocol == "hard":
        pos, junk = _ids(g, "hard"), np.concatenate([_ids(g, "junk"), _ids(g, "easy")])
    else:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    pos = np.unique(pos)
    return pos, np.setdiff1d(junk, pos)


def ranking_rows(ranks: Rankings, num_queries: int) -> list[np.ndarray]:
    """Each query's ranking [k_q] int64 with padding (negative ids) dropped."""
    if isinstance(ranks, np.ndarray):
        if ranks.ndim != 2 or ranks.shape[0] != num_queries:
            raise ValueError(
                f"ranks must be [Nq={num_queries}, K] (one row per ground-truth entry), got "
                f"shape {list(ranks.shape)}"
            )
    elif len(ranks) != num_queries:
        raise ValueError(
            f"ranks must hold one row per ground-truth entry ({num_queries}), got {len(ranks)}"
        )
    rows = []
    for row in ranks:
        row = np.asarray(row, dtype=np.int64).ravel()
        rows.append(row[row >= 0])
    return rows


def positive_ranks(ranking: np.ndarray, pos: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """0-based ranks of ``pos`` in ``ranking`` once ``junk`` is removed; sorted."""
    clean = ranking[~np.isin(ranking, junk)]
    return np.flatnonzero(np.isin(clean, pos))


def average_precision(pos_ranks: np.ndarray, num_pos: int) -> float:
    """Revisitop AP (trapezoidal precision between recall steps).

    pos_ranks: [P] sorted 0-based ranks of the positives found; num_pos: all positives of the
    query (those not found count as misses). NaN when ``num_pos`` is 0.
    """
    if num_pos == 0:
        return float("nan")
    ap = 0.0
    step = 1.0 / num_pos
    for j, rank in enumerate(pos_ranks):
        p0 = j / rank if rank > 0 else 1.0
        p1 = (j + 1) / (rank + 1)
        ap += (p0 + p1) * step / 2.0
    return ap


def compute_map_per_query(
    ranks: Rankings,
    gnd: GroundTruthRows,
    kappas: Sequence[int] = (1, 5, 10),
    protocol: str = "medium",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query AP [Nq] and precision at ``kappas`` [Nq, len(kappas)] under ``protocol``
    (definitions in the module docstring); NaN rows for queries without positives."""
    rows = ranking_rows(ranks, len(gnd))
    aps = np.full(len(gnd), np.nan)
    prs = np.full((len(gnd), len(kappas)), np.nan)
    for q, (row, g) in enumerate(zip(rows, gnd, strict=True)):
        pos, junk = protocol_lists(g, protocol)
        if pos.size == 0:
            continue
        found = positive_ranks(row, pos, junk)
        aps[q] = average_precision(found, int(pos.size))
        prs[q] = 0.0
        if found.size:
            pos1 = found + 1
            for j, k in enumerate(kappas):
                kq = min(int(pos1.max()), int(k))
                prs[q, j] = (pos1 <= kq).sum() / kq
    return aps, prs


def compute_map(
    ranks: Rankings,
    gnd: GroundTruthRows,
    kappas: Sequence[int] = (1, 5, 10),
    protocol: str = "medium",
) -> tuple[float, np.ndarray]:
    """mAP and mP@k over queries under a revisitop ``protocol`` (default ``medium``).

    ranks: [Nq, K] database indices, best first (or Nq rows of any length); gnd: Nq revisitop
    entries. Queries without positives are skipped. Returns ``(mAP, mP [len(kappas)]
    float64)``; NaNs when no query has a positive.
    """
    aps, prs = compute_map_per_query(ranks, gnd, kappas, protocol)
    scored = ~np.isnan(aps)
    if not scored.any():
        return float("nan"), np.full(len(kappas), np.nan)
    return float(aps[scored].mean()), prs[scored].mean(axis=0)


def map_at_k(ranks: Rankings, gnd: GroundTruthRows, k: int = 100) -> tuple[float, np.ndarray]:
    """GLDv2's mAP@k: ``(mean, per-query AP@k [Nq])`` with NaN for queries without positives
    (skipped in the mean; NaN when none has one). Positives: easy + hard + ok."""
    rows = ranking_rows(ranks, len(gnd))
    aps = np.full(len(gnd), np.nan)
    for q, (row, g) in enumerate(zip(rows, gnd, strict=True)):
        pos, junk = protocol_lists(g, "medium")
        if pos.size == 0:
            continue
        found = positive_ranks(row[:k], pos, junk)
        precision = np.arange(1, found.size + 1) / (found + 1.0)
        aps[q] = float(precision.sum()) / min(int(pos.size), int(k))
    scored = ~np.isnan(aps)
    return (float(aps[scored].mean()) if scored.any() else float("nan")), aps


def query_recall_at_k(
    ranks: Rankings, gnd: GroundTruthRows, ks: Sequence[int] = (1, 10, 100)
) -> np.ndarray:
    """Recall@K of SOP/In-Shop/CUB: the fraction of queries (with positives) that have at
    least one positive (easy + hard + ok) among the top K once junk is removed.
    Returns ``[len(ks)] float64`` (NaN when no query has a positive)."""
    rows = ranking_rows(ranks, len(gnd))
    hits = []
    for row, g in zip(rows, gnd, strict=True):
        pos, junk = protocol_lists(g, "medium")
        if pos.size == 0:
            continue
        found = positive_ranks(row, pos, junk)
        first = int(found[0]) if found.size else np.iinfo(np.int64).max
        hits.append([first < k for k in ks])
    return np.mean(hits, axis=0) if hits else np.full(len(ks), np.nan)


def recall_at_k(
    ranks: Rankings, gnd: GroundTruthRows, ks: Sequence[int] = (10, 50, 100)
) -> np.ndarray:
    """Shortlist recall: mean fraction of positives (easy + hard + ok) in the raw top k.

    ranks: [Nq, K] database indices, best first. Junk is NOT removed: it occupies shortlist
    slots exactly as it would for a re-ranker. Queries without positives are skipped. Returns
    ``[len(ks)] float64`` (NaNs when no query has a positive).
    """
    rows = ranking_rows(ranks, len(gnd))
    out = []
    for row, g in zip(rows, gnd, strict=True):
        pos = entry_positives(g)
        if len(pos) == 0:
            continue
        out.append([np.isin(pos, row[:k]).mean() for k in ks])
    return np.mean(out, axis=0) if out else np.full(len(ks), np.nan)


def precision_recall_curve(
    ranks: Rankings,
    gnd: GroundTruthRows,
    protocol: str = "medium",
    levels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean interpolated precision-recall curve: ``(recall levels [R], precision [R])``.

    Per query (with positives, junk removed), the precision at recall r is the best precision
    at any recall >= r (0 beyond the last positive found); the curve is the mean over queries.
    ``levels`` default: 0, 0.01, ..., 1.
    """
    levels = np.linspace(0.0, 1.0, 101) if levels is None else np.asarray(levels, np.float64)
    rows = ranking_rows(ranks, len(gnd))
    curves = []
    for row, g in zip(rows, gnd, strict=True):
        pos, junk = protocol_lists(g, protocol)
        if pos.size == 0:
            continue
        found = positive_ranks(row, pos, junk)
        if found.size == 0:
            curves.append(np.zeros(levels.shape))
            continue
        precision = np.arange(1, found.size + 1) / (found + 1.0)
        recall = np.arange(1, found.size + 1) / pos.size
        # best precision at recall >= r: a suffix maximum over the positives found
        best = np.maximum.accumulate(precision[::-1])[::-1]
        idx = np.searchsorted(recall, levels - 1e-12, side="left")
        curves.append(np.where(idx < found.size, best[np.minimum(idx, found.size - 1)], 0.0))
    if not curves:
        return levels, np.full(levels.shape, np.nan)
    return levels, np.mean(curves, axis=0)


BOOTSTRAP_CHUNK = 1 << 22  # resampled values drawn at once (memory bound for many queries)


def bootstrap_ci(
    per_query: np.ndarray, *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean of ``per_query`` and its percentile bootstrap interval.

    per_query: [Nq] float, one value per query — APs (:func:`compute_map_per_query`), or the
    paired differences ``ap_a - ap_b`` of two methods on the same queries (resampling the
    queries keeps each pair together). NaN entries (queries without positives) are dropped,
    as the mAP skips them. ``resamples`` means of Nq queries drawn with replacement (seeded
    by ``seed``); ``lo``/``hi`` are their ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles. All three are NaN when no value is finite.
    """
    values = np.asarray(per_query, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(
            f"per_query must be a 1-D array of per-query values [Nq], got shape "
            f"{list(values.shape)}; pass one AP (or AP difference) per query"
        )
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    values = values[~np.isnan(values)]
    n = values.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    rows = max(1, BOOTSTRAP_CHUNK // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(values.mean()), float(lo), float(hi)
