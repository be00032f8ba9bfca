"""Retrieval evaluation: revisitop mAP and mP@k, and shortlist recall.

Rankings are ``ranks: [Nq, K] int`` database indices, best first (``K`` may be the whole
database or a shortlist); ground truth is revisitop's, per query ``{"easy": [...], "hard":
[...], "junk": [...]}`` of database indices (lists or int arrays, as
:class:`locore.runtime.ground_truth.GroundTruth` holds them).

- :func:`compute_map`: revisitop "medium" protocol, easy + hard are positives and junk is
  removed from the ranking; AP is revisitop's (trapezoidal precision between recall steps) and
  mP@k follows revisitop's ``compute_map`` (``k`` clipped to the rank of the last positive
  found). Published ROxford/RParis numbers are comparable only under this protocol.
- :func:`recall_at_k`: the fraction of a query's positives inside the raw top ``k``, junk
  included (it takes a shortlist slot exactly as it would for a re-ranker).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

GroundTruthRows = Sequence[Mapping[str, Any]]


def _positives(g: Mapping[str, Any]) -> list[int]:
    return [int(i) for i in g.get("easy", [])] + [int(i) for i in g.get("hard", [])]


def _positions(ranking: np.ndarray, positives: Sequence[int], junk: Sequence[int]) -> np.ndarray:
    """0-based ranks of ``positives`` in ``ranking`` after removing ``junk``; sorted."""
    ranking = np.asarray(ranking)
    keep = ~np.isin(ranking, np.asarray(list(junk), dtype=np.int64))
    clean = ranking[keep]
    return np.sort(np.flatnonzero(np.isin(clean, np.asarray(list(positives), dtype=np.int64))))


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


def compute_map(
    ranks: np.ndarray,
    gnd: GroundTruthRows,
    kappas: Sequence[int] = (1, 5, 10),
) -> tuple[float, np.ndarray]:
    """mAP and mP@k over queries (revisitop "medium" protocol).

    ranks: [Nq, K >= 1] database indices, best first; gnd: Nq revisitop entries. Easy + hard
    are positives, junk is removed from the ranking; mP@k as in revisitop's ``compute_map``
    (``k`` clipped to the rank of the last positive found). Queries without positives are
    skipped. Returns ``(mAP, mP [len(kappas)] float64)``; NaNs when no query has a positive.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[0] != len(gnd):
        raise ValueError(
            f"ranks must be [Nq={len(gnd)}, K] (one row per ground-truth entry), got shape "
            f"{list(ranks.shape)}"
        )
    aps, prs = [], []
    for row, g in zip(ranks, gnd, strict=True):
        positives = _positives(g)
        if not positives:
            continue
        pos = _positions(row, positives, g.get("junk", []))
        aps.append(average_precision(pos, len(positives)))
        pr = np.zeros(len(kappas))
        if len(pos):
            pos1 = pos + 1
            for j, k in enumerate(kappas):
                kq = min(int(pos1.max()), k)
                pr[j] = (pos1 <= kq).sum() / kq
        prs.append(pr)
    if not aps:
        return float("nan"), np.full(len(kappas), np.nan)
    return float(np.mean(aps)), np.mean(prs, axis=0)


def recall_at_k(
    ranks: np.ndarray, gnd: GroundTruthRows, ks: Sequence[int] = (10, 50, 100)
) -> np.ndarray:
    """Shortlist recall: mean fraction of positives (easy + hard) in the raw top k.

    ranks: [Nq, K] database indices, best first. Junk is NOT removed: it occupies shortlist
    slots exactly as it would for a re-ranker. Queries without positives are skipped. Returns
    ``[len(ks)] float64`` (NaNs when no query has a positive).
    """
    ranks = np.asarray(ranks)
    out = []
    for row, g in zip(ranks, gnd, strict=True):
        positives = np.asarray(_positives(g), np.int64)
        if len(positives) == 0:
            continue
        out.append([np.isin(positives, row[:k]).mean() for k in ks])
    return np.mean(out, axis=0) if out else np.full(len(ks), np.nan)
