"""Retrieval metrics: revisitop mAP / mP@k and shortlist recall, on hand-computed rankings."""

from __future__ import annotations

import numpy as np
import pytest

from locore.runtime.metrics import (
    average_precision,
    bootstrap_ci,
    compute_map,
    compute_map_per_query,
    map_at_k,
    precision_recall_curve,
    query_recall_at_k,
    recall_at_k,
)
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


# ---- independent oracles (revisitop's definitions, written here from the reference's text) ----
def oracle_revisitop(ranking, ok, junk, kappas):
    """revisitop ``compute_map`` for one query, as filipradenovic/revisitop python/evaluate.py
    defines it: positions of ok and junk in the ranking, each positive's position decreased by
    the junk ranked before it, trapezoidal AP over len(ok), precision at min(k, last position).
    A query with positives but none ranked gets AP 0 and precisions 0 (the reference would raise
    ValueError there; AMES guards it the same way)."""
    ranking = list(ranking)
    pos = [i for i, x in enumerate(ranking) if x in ok]
    jnk = [i for i, x in enumerate(ranking) if x in junk]
    shifted = [p - sum(1 for j in jnk if j < p) for p in pos]
    ap = 0.0
    for j, rank in enumerate(shifted):
        p0 = 1.0 if rank == 0 else j / rank
        p1 = (j + 1) / (rank + 1)
        ap += (p0 + p1) / 2.0 / len(ok)
    prs = []
    for k in kappas:
        if not shifted:
            prs.append(0.0)
            continue
        last = max(shifted) + 1
        kq = min(last, k)
        prs.append(sum(1 for p in shifted if p + 1 <= kq) / kq)
    return ap, prs


def oracle_protocol(g, protocol):
    easy, hard, junk = list(g["easy"]), list(g["hard"]), list(g["junk"])
    if protocol == "easy":
        return easy, junk + hard
    if protocol == "medium":
        return easy + hard, junk
    return hard, junk + easy


def random_case(rng, nq, ndb, k):
    """Random rankings (some truncated to k < ndb) and disjoint easy/hard/junk lists; some
    queries without positives, some with positives outside a truncated list."""
    gnd, ranks = [], []
    for q in range(nq):
        perm = rng.permutation(ndb)
        sizes = rng.integers(0, 6, size=3)
        if q % 5 == 0:
            sizes[:2] = 0  # no positives at all
        easy, hard, junk = np.split(perm[: sizes.sum()], np.cumsum(sizes)[:2])
        gnd.append({"easy": easy.tolist(), "hard": hard.tolist(), "junk": junk.tolist()})
        ranks.append(rng.permutation(ndb)[:k])
    return np.stack(ranks), gnd


@pytest.mark.parametrize("protocol", ["easy", "medium", "hard"])
@pytest.mark.parametrize("k", [7, 23, 61])
def test_compute_map_equals_revisitop_oracle(protocol: str, k: int) -> None:
    rng = np.random.default_rng(1000 + k)
    kappas = (1, 5, 10)
    ranks, gnd = random_case(rng, 37, 61, k)
    aps, prs = [], []
    for row, g in zip(ranks, gnd, strict=True):
        ok, junk = oracle_protocol(g, protocol)
        if not ok:
            continue
        ap, pr = oracle_revisitop(row, set(ok), set(junk), kappas)
        aps.append(ap)
        prs.append(pr)
    m_ap, mp = compute_map(ranks, gnd, kappas, protocol=protocol)
    assert m_ap == pytest.approx(np.mean(aps), abs=1e-12)
    np.testing.assert_allclose(mp, np.mean(prs, axis=0), atol=1e-12)
    # per query, and ragged rows (the same rankings as lists) give the same numbers
    per_q, _ = compute_map_per_query([list(r) for r in ranks], gnd, kappas, protocol)
    assert np.isnan(per_q).sum() == len(gnd) - len(aps)
    np.testing.assert_allclose(per_q[~np.isnan(per_q)], aps, atol=1e-12)


def test_truncated_list_without_any_positive_never_crashes() -> None:
    gnd = [{"easy": [50], "hard": [51], "junk": []}, {"easy": [1], "hard": [], "junk": []}]
    ranks = np.array([[0, 1, 2], [1, 0, 2]])  # query 0's positives are beyond the list
    m_ap, mp = compute_map(ranks, gnd, (1, 5))
    assert m_ap == pytest.approx(0.5)  # AP 0 for query 0, 1 for query 1
    np.testing.assert_allclose(mp, [0.5, 0.5 * 1.0])


def test_ok_only_ground_truth_is_scored() -> None:
    """GLDv2-style entries ({'ok': [...]}) have positives, not NaN."""
    gnd = [{"ok": [3, 5]}, {"ok": []}]
    m_ap, _ = compute_map(np.array([[3, 0, 5], [1, 2, 3]]), gnd)
    assert m_ap == pytest.approx(average_precision(np.array([0, 2]), 2))
    np.testing.assert_allclose(recall_at_k(np.array([[3, 0, 5], [1, 2, 3]]), gnd, (1,)), [0.5])


def test_positive_listed_as_junk_counts_as_positive() -> None:
    """revisitop locates positives and junk independently, so an id in both lists is scored at
    its rank as a positive; here it is removed from junk."""
    gnd = [{"easy": [4], "hard": [], "junk": [4, 9]}]
    m_ap, mp = compute_map(np.array([[9, 4, 0]]), gnd, (1,))
    assert m_ap == pytest.approx(1.0) and mp[0] == pytest.approx(1.0)


def test_padding_ids_are_dropped() -> None:
    """-1 (faiss padding) is neither a hit nor a miss, wherever it sits."""
    gnd = [{"easy": [2], "hard": [7], "junk": []}]
    padded = np.array([[2, -1, -1, 7, -1]])
    clean = np.array([[2, 7]])
    (m_pad, mp_pad), (m_clean, mp_clean) = compute_map(padded, gnd), compute_map(clean, gnd)
    assert m_pad == pytest.approx(m_clean) and mp_pad == pytest.approx(mp_clean)
    assert map_at_k(padded, gnd, 2)[0] == pytest.approx(1.0)
    np.testing.assert_allclose(query_recall_at_k(padded, gnd, (1, 2)), [1.0, 1.0])


def oracle_map_at_k(ranking, ok, junk, k):
    """GLDv2 mAP@k (Kaggle): the first k results, junk removed, sum of precision at each
    positive over min(#positives, k)."""
    kept = [x for x in list(ranking)[:k] if x not in junk]
    hits, total = 0, 0.0
    for i, x in enumerate(kept):
        if x in ok:
            hits += 1
            total += hits / (i + 1)
    return total / min(len(ok), k)


def oracle_recall(ranking, ok, junk, k):
    kept = [x for x in ranking if x not in junk]
    return float(any(x in ok for x in kept[:k]))


@pytest.mark.parametrize("k", [5, 40])
def test_map_at_k_and_recall_equal_oracles(k: int) -> None:
    rng = np.random.default_rng(7 + k)
    ranks, gnd = random_case(rng, 29, 53, 53)
    for g in gnd:  # GLDv2 / SOP style: one 'ok' list (+ junk, e.g. the query itself)
        g["ok"] = g.pop("easy") + g.pop("hard")
    want_ap, want_r = [], []
    for row, g in zip(ranks, gnd, strict=True):
        if g["ok"]:
            want_ap.append(oracle_map_at_k(row, set(g["ok"]), set(g["junk"]), k))
            want_r.append([oracle_recall(row, set(g["ok"]), set(g["junk"]), kk) for kk in (1, k)])
    got, per_q = map_at_k(ranks, gnd, k)
    assert got == pytest.approx(np.mean(want_ap), abs=1e-12)
    np.testing.assert_allclose(per_q[~np.isnan(per_q)], want_ap, atol=1e-12)
    np.testing.assert_allclose(query_recall_at_k(ranks, gnd, (1, k)), np.mean(want_r, 0))
    no_pos = [{"ok": [], "junk": [1]}]
    assert np.isnan(map_at_k(ranks[:1], no_pos, k)[0])
    assert np.isnan(query_recall_at_k(ranks[:1], no_pos, (1,))).all()


def test_precision_recall_curve_by_hand() -> None:
    # positives at ranks 1 and 3 of 2: precision 1 up to recall 0.5, then 2/3 up to recall 1
    levels, prec = precision_recall_curve(
        np.array([[1, 0, 2]]), [{"easy": [1, 2]}], "medium", np.array([0.0, 0.5, 0.51, 1.0])
    )
    np.testing.assert_allclose(prec, [1.0, 1.0, 2 / 3, 2 / 3])
    # a positive never found: precision 0 beyond the recall reached
    _, prec = precision_recall_curve(
        np.array([[1, 0]]), [{"easy": [1, 2]}], "medium", np.array([0.5, 1.0])
    )
    np.testing.assert_allclose(prec, [1.0, 0.0])


# ---- bootstrap confidence intervals -----------------------------------------------------------
def test_bootstrap_ci_by_hand() -> None:
    # A constant has no spread: every resampled mean is the constant.
    assert bootstrap_ci(np.full(7, 0.25)) == pytest.approx((0.25, 0.25, 0.25))
    # Two queries, APs 0 and 1: a resampled mean is 0, 1/2 or 1 with probabilities 1/4, 1/2,
    # 1/4. The 2.5 % / 97.5 % quantiles are therefore 0 and 1; the 30 % / 70 % ones are 1/2.
    assert bootstrap_ci(np.array([0.0, 1.0])) == pytest.approx((0.5, 0.0, 1.0))
    assert bootstrap_ci(np.array([0.0, 1.0]), level=0.4) == pytest.approx((0.5, 0.5, 0.5))
    # Queries without positives (NaN AP) are skipped, as in the mAP.
    assert bootstrap_ci(np.array([np.nan, 0.5, 0.5])) == pytest.approx((0.5, 0.5, 0.5))
    assert np.isnan(bootstrap_ci(np.array([np.nan]))).all()
    # Paired differences of a method with itself are all 0.
    aps = np.array([0.1, 0.9, 0.4])
    assert bootstrap_ci(aps - aps) == (0.0, 0.0, 0.0)
    # Seeded: the same call gives the same interval.
    x = np.random.default_rng(3).random(50)
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(x, seed=5)


def test_bootstrap_ci_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"1-D array .*got shape \[2, 2\]"):
        bootstrap_ci(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="level must be in"):
        bootstrap_ci(np.zeros(3), level=95)
    with pytest.raises(ValueError, match="resamples must be"):
        bootstrap_ci(np.zeros(3), resamples=0)


def test_bootstrap_ci_matches_the_normal_interval() -> None:
    # For the mean of n normal values the bootstrap distribution is close to normal with the
    # standard error s / sqrt(n) (s: the population-style standard deviation of the sample),
    # so the 95 % interval is mean -+ 1.96 s / sqrt(n) (central limit theorem, not this code).
    x = np.random.default_rng(0).normal(0.3, 0.2, size=400)
    mean, lo, hi = bootstrap_ci(x, resamples=20000)
    half = 1.959964 * x.std() / np.sqrt(x.size)
    assert mean == pytest.approx(x.mean())
    assert lo == pytest.approx(x.mean() - half, abs=0.05 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.05 * half)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    # 200 samples of 100 draws of N(0, 1): the nominal coverage is 95 % (the percentile
    # bootstrap of a mean at n = 100 reaches about 94 %); a binomial standard error of 1.5 %
    # leaves [0.88, 0.99] as a wide, deterministic (seeded) acceptance band.
    rng = np.random.default_rng(1)
    hits = 0
    for trial in range(200):
        _, lo, hi = bootstrap_ci(rng.normal(size=100), resamples=1000, seed=trial)
        hits += lo <= 0.0 <= hi
    assert 0.88 <= hits / 200 <= 0.99
    hits80 = 0
    for trial in range(200):
        _, lo, hi = bootstrap_ci(rng.normal(size=100), resamples=1000, level=0.8, seed=trial)
        hits80 += lo <= 0.0 <= hi
    assert 0.70 <= hits80 / 200 <= 0.88
