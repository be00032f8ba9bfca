"""Soak test: many re-ranking queries in one process, resident memory sampled as it goes.

    python benchmarks/soak.py [--queries 10000] [--every 500] [--shortlist 20] [--cache-dir D]

Runs ``--queries`` re-ranking queries of the demo test split (cycling over its queries) with
the shipped model exported to portable ONNX, through :class:`locore.runtime.Reranker` and the
ONNX Runtime backend, as a long-lived service would. Every ``--every`` queries it samples the
process's resident set size (``VmRSS``), then prints the samples, the least-squares slope
(KiB per 1,000 queries) over the samples from query 1,000 on (the first ones include warm-up:
ONNX Runtime's arenas, caches) and the growth between query 1,000 and the last, as a
percentage. Exits 1 when that growth is 5 % or more (a leak), 0 otherwise.

The demo data are built on first use (a few minutes; cached under ``--cache-dir``, default
that of ``locore demo``). ``--shortlist 20`` (one window of 20 images per query) keeps 10,000
queries to a few minutes on 2 cores; ``--shortlist 100`` is the demo's own setting.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def rss_kib() -> int:
    """Resident set size of this process now, in KiB (``/proc/self/status``; elsewhere the
    peak from ``getrusage``, which can only show growth)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:  # pragma: no cover - not Linux
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024 if sys.platform == "darwin" else peak)


def slope_per_1000(samples: list[tuple[int, int]], start: int) -> float:
    """Least-squares slope of RSS (KiB) per 1,000 queries over the samples at >= ``start``."""
    points = np.array([(q, r) for q, r in samples if q >= start], dtype=np.float64)
    if len(points) < 2:
        return float("nan")
    q, r = points[:, 0], points[:, 1]
    return float(np.polyfit(q, r, 1)[0] * 1000)


def exported_model(cache: Path) -> Path:
    """The shipped model as portable ONNX, exported (cached) in a child process, so that this
    process, like a re-ranking service, never imports torch."""
    code = (
        "import sys\n"
        "from locore.checkpoint_format import shipped_model_dir\n"
        "from locore.export import cached_export\n"
        "print(cached_export(shipped_model_dir(), sys.argv[1]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(cache)], capture_output=True, text=True, check=True
    )
    return Path(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=10_000, help="queries in all (10000)")
    parser.add_argument("--every", type=int, default=500, help="sample RSS every N queries (500)")
    parser.add_argument(
        "--baseline", type=int, default=1_000, help="growth is measured from this query (1000)"
    )
    parser.add_argument("--shortlist", type=int, default=20, help="images re-ranked per query (20)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (1)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="demo cache folder")
    parser.add_argument("--limit", type=float, default=5.0, help="allowed growth in %% (5)")
    args = parser.parse_args(argv)
    if args.queries < 1 or args.every < 1 or args.shortlist < 1:
        parser.error("--queries, --every and --shortlist must be >= 1")
    if not 0 < args.baseline < args.queries:
        parser.error(f"--baseline must be between 0 and --queries ({args.queries})")

    from locore.runtime.ames import FeatureFile
    from locore.runtime.backends import create_backend
    from locore.runtime.demo import default_cache_dir, prepare_split
    from locore.runtime.shortlist import read_shortlist
    from locore.runtime.sliding_windows import Reranker, RerankParams

    cache = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    files = prepare_split("test", cache, shortlist_k=args.shortlist, progress=True)
    onnx_path = exported_model(cache / "models")
    shortlist = read_shortlist(files.shortlist)
    k = args.shortlist
    params = RerankParams(window=k, topk=k, stride=k)
    samples: list[tuple[int, int]] = []
    with (
        create_backend(onnx_path, threads=args.threads) as backend,
        FeatureFile(files.query_features) as fq,
        FeatureFile(files.db_features) as fd,
    ):
        reranker = Reranker(backend, params, clip_scales=True)
        database = fd.read_all(backend.config.num_desc)
        queries = fq.read_all(backend.config.num_desc)
        nq = shortlist.num_queries
        print(
            f"soak: {args.queries} queries cycling over the {nq} demo test queries, shortlist "
            f"{k}, {backend.config.name} model on {backend.kind}, pid {os.getpid()}"
        )
        began = time.perf_counter()
        for i in range(args.queries):
            q = i % nq
            result = reranker.rerank(queries[q], database, shortlist.ids[q], shortlist.sims[q])
            if not np.isfinite(result.scores).all():
                print(f"query {i}: non-finite scores", file=sys.stderr)
                return 1
            done = i + 1
            if done % args.every == 0 or done == args.queries:
                samples.append((done, rss_kib()))
                rate = done / (time.perf_counter() - began)
                print(f"  query {done:6d}  RSS {samples[-1][1] / 1024:8.1f} MiB  ({rate:.0f} q/s)")
    elapsed = time.perf_counter() - began
    at = dict(samples)
    base = at.get(args.baseline) or min(samples, key=lambda s: abs(s[0] - args.baseline))[1]
    last_q, last = samples[-1]
    growth = 100.0 * (last - base) / base
    slope = slope_per_1000(samples, args.baseline)
    print(
        f"{args.queries} queries in {elapsed:.0f} s ({1000 * elapsed / args.queries:.1f} ms each)"
    )
    print(f"RSS slope from query {args.baseline}: {slope:+.1f} KiB per 1,000 queries")
    print(
        f"RSS growth between query {args.baseline} ({base / 1024:.1f} MiB) and query {last_q} "
        f"({last / 1024:.1f} MiB): {growth:+.2f} % (limit {args.limit} %)"
    )
    return 1 if growth >= args.limit else 0


if __name__ == "__main__":
    raise SystemExit(main())
