"""Global search: exact inner product (numpy) vs faiss flat / IVF / HNSW on a synthetic index.

    python benchmarks/global_search.py                 # 100k x 512, 100 queries, top 100
    python benchmarks/global_search.py --num 20000 --dim 8192

The index is synthetic but clustered like real global descriptors (a mixture of Gaussians on
the unit sphere: one centre per 200 vectors, every vector L2-normalised), queries are noisy
copies of database vectors. Recall@100 is measured against the exact top 100; latency is the
median of single-query searches (what a camera app or the web page does), build time once.
Then exact search and one faiss index (``--crossover-kind``) are timed at growing sizes, to
find where faiss starts to pay off: ``locore.runtime.search_index.FAISS_MIN_FLOATS`` is set
from that size (in floats, N x D, since exact search costs N x D multiply-adds).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from locore.runtime.search_index import FAISS_NPROBE, build_faiss_index
from locore.runtime.shortlist import search_shortlist


def synthetic(num: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, num // 200), dim)).astype(np.float32)
    db = np.empty((num, dim), np.float32)
    for start in range(0, num, 10_000):
        n = min(10_000, num - start)
        pick = rng.integers(0, len(centres), n)
        db[start : start + n] = centres[pick] + 0.9 * rng.standard_normal((n, dim), np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[rng.integers(0, num, queries)] + 0.02 * rng.standard_normal((queries, dim), np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return db, q.astype(np.float32)


def exact_topk(db: np.ndarray, q: np.ndarray, k: int) -> list[np.ndarray]:
    return [search_shortlist(q[i : i + 1], db, k).ids[0] for i in range(len(q))]


def time_queries(fn, q: np.ndarray) -> tuple[float, list[np.ndarray]]:
    times, out = [], []
    for i in range(len(q)):
        t0 = time.perf_counter()
        out.append(fn(q[i : i + 1]))
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), out


def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    return float(
        np.mean(
            [
                len(set(f.tolist()) & set(t.tolist())) / len(t)
                for f, t in zip(found, truth, strict=True)
            ]
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--no-hnsw", action="store_true", help="skip HNSW (slow to build)")
    p.add_argument("--sizes", default="5000,10000,25000,50000,100000", help="crossover sizes")
    p.add_argument("--crossover-kind", choices=("ivf", "hnsw"), default="ivf")
    p.add_argument("--crossover-only", action="store_true", help="skip the table at --num")
    args = p.parse_args()
    import faiss

    print(
        f"synthetic index {args.num} x {args.dim}, {args.queries} queries, top {args.k}, "
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads"
    )
    db, q = synthetic(args.num, args.dim, args.queries)
    if not args.crossover_only:
        table(db, q, args)
    crossover(db, q, args)


def table(db: np.ndarray, q: np.ndarray, args: argparse.Namespace) -> None:
    exact_ms, truth = time_queries(lambda x: search_shortlist(x, db, args.k).ids[0], q)
    rows = [("exact (numpy)", 0.0, exact_ms, 1.0)]
    kinds = ["flat", "ivf"] + ([] if args.no_hnsw else ["hnsw"])
    for kind in kinds:
        t0 = time.perf_counter()
        index = build_faiss_index(db, kind)
        build = time.perf_counter() - t0
        ms, found = time_queries(lambda x, index=index: index.search(x, args.k)[1][0], q)
        label = {
            "flat": "faiss flat (exact)",
            "ivf": f"faiss IVF (nprobe {FAISS_NPROBE})",
            "hnsw": "faiss HNSW (M 32, efSearch 128)",
        }[kind]
        rows.append((label, build, ms, recall(found, truth)))
        del index
    print(
        f"\n{'method':34s} {'build s':>8s} {'median ms':>10s} {'recall@' + str(args.k):>10s} "
        f"{'speed-up':>9s}"
    )
    for label, build, ms, rec in rows:
        print(f"{label:34s} {build:8.1f} {ms:10.2f} {rec:10.3f} {exact_ms / ms:8.1f}x")


def crossover(db: np.ndarray, q: np.ndarray, args: argparse.Namespace) -> None:
    kind = args.crossover_kind
    print(f"\ncrossover (exact vs faiss {kind}, {args.dim}-d):")
    print(f"{'N':>8s} {'exact ms':>9s} {kind + ' ms':>8s} {'recall':>7s} {'build s':>8s}")
    for n in [int(s) for s in args.sizes.split(",") if int(s) <= args.num]:
        sub = db[:n]
        e_ms, sub_truth = time_queries(
            lambda x, sub=sub: search_shortlist(x, sub, args.k).ids[0], q
        )
        t0 = time.perf_counter()
        ann = build_faiss_index(sub, kind)
        build = time.perf_counter() - t0
        i_ms, found = time_queries(lambda x, ann=ann: ann.search(x, args.k)[1][0], q)
        print(f"{n:8d} {e_ms:9.2f} {i_ms:8.2f} {recall(found, sub_truth):7.3f} {build:8.1f}")


if __name__ == "__main__":
    main()
