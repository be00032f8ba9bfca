"""Retrieval metrics: revisitop mAP / mP@k and shortlist recall, on hand-computed rankings."""

from __future__ import annotations

import numpy as np
import pytest

from locore.runtime.metrics import average_precision, compute_map, recall_at_k
from locore.runtime.shortlist import search_shortlist


def test_metrics_on_toy_rankings() -> None:
    gnd = [{"easy": [0], "hard": [2], "junk": [1]}, {"easy": [], "hard": [3], "junk": []}]
    perfect = np.array([[0, 2, 1, 3], [3, 0, 1, 2]])
    m_ap, mp = compute_map(perfect, gnd, (1, 2))
    assert m_ap == pytest.approx(1.0)
    np.testing.assert_allclose(mp, [1.0, 1.0])
    # Junk ahead of a positive is ignored by mAP but takes a shortlist slot in recall.
    junk_first = np.array([[1, 0, 2, 3], [0, 3, 1, 2]])
    m_ap, _ = compute_map(junk_first, gnd, (1,))
    ap_q2 = average_precision(np.array([1]), 1)  # positive at rank 2
    assert m_ap == pytest.approx((1.0 + ap_q2) / 2)
    np.testing.assert_allclose(recall_at_k(junk_first, gnd, (1, 2)), [0.0, 0.75])


def test_average_precision_and_precision_at_k_by_hand() -> None:
    # Two positives at 1-based ranks 1 and 3. Revisitop's trapezoid: (1 + 1)/2 * 1/2 for the
    # first, (1/2 + 2/3)/2 * 1/2 for the second -> 1/2 + 7/24 = 19/24.
    assert average_precision(np.array([0, 2]), 2) == pytest.approx(19 / 24)
    # A positive never found counts as a miss: only the first step of 1/2.
    assert average_precision(np.array([0]), 2) == pytest.approx(1 / 2)
    assert np.isnan(average_precision(np.array([], np.int64), 0))
    gnd = [{"easy": [7], "hard": [9], "junk": [8]}]
    # 7 at rank 1, junk 8 removed, 9 at rank 3 once junk is gone (db ids 5, 6 are negatives).
    m_ap, mp = compute_map(np.array([[7, 8, 5, 9, 6]]), gnd, (1, 5, 10))
    assert m_ap == pytest.approx(19 / 24)
    # mP@k with k clipped to the last positive's rank (3): 1/1, 2/3, 2/3.
    np.testing.assert_allclose(mp, [1.0, 2 / 3, 2 / 3])


def test_queries_without_positives_are_skipped() -> None:
    gnd = [{"easy": [], "hard": [], "junk": [0]}, {"easy": [1], "hard": [], "junk": []}]
    m_ap, mp = compute_map(np.array([[0, 1], [1, 0]]), gnd, (1,))
    assert m_ap == pytest.approx(1.0) and mp[0] == pytest.approx(1.0)
    m_ap, mp = compute_map(np.array([[0, 1]]), gnd[:1], (1,))
    assert np.isnan(m_ap) and np.isnan(mp).all()
    assert np.isnan(recall_at_k(np.array([[0, 1]]), gnd[:1], (1,))).all()
    with pytest.raises(ValueError, match="ranks must be"):
        compute_map(np.array([0, 1]), gnd)


def test_shortlist_ranks_feed_the_metrics() -> None:
    """The one shortlist search gives the rankings: descending inner product, ties in db order."""
    ranks = search_shortlist(np.eye(2, 3), np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0]]), 3).ids
    np.testing.assert_array_equal(ranks, [[1, 2, 0], [0, 1, 2]])  # ties keep db order
    gnd = [{"easy": [1], "hard": [], "junk": []}, {"easy": [], "hard": [2], "junk": []}]
    np.testing.assert_allclose(recall_at_k(ranks, gnd, (1, 2, 3)), [0.5, 0.5, 1.0])
