"""The demo run: three rankings of one shortlist, timed and scored, and the fusion tuning.

:func:`run_demo` ranks the shortlist of every query three ways and scores each with
revisitop mAP and mP@1/5/10 (:func:`locore.runtime.metrics.compute_map`), timing each query:

1. global only: the exact inner-product search over the VLAD descriptors (top K);
2. RANSAC spatial verification (:mod:`locore.runtime.demo.baselines`);
3. LOCORE sliding-window re-ranking with an ONNX model through the ONNX Runtime backend.

The model is an ONNX file: exporting a checkpoint (torch) and reading its stored fusion values
is the command layer's job (``locore demo``); the runtime never imports torch.
:func:`tune_fusion` picks the fusion weight and temperature on the TRAIN split.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from locore.progress import progress_bar
from locore.runtime.ames import FeatureFile
from locore.runtime.demo.baselines import spatial_verification
from locore.runtime.demo.dataset import default_cache_dir
from locore.runtime.demo.picture import write_picture
from locore.runtime.demo.split_files import DemoFiles, load_keypoints, prepare_split
from locore.runtime.global_descriptors import read_global_descriptors
from locore.runtime.metrics import compute_map
from locore.runtime.shortlist import read_shortlist, search_shortlist
from locore.runtime.sliding_windows import RerankParams

log = logging.getLogger(__name__)


@dataclass
class MethodResult:
    """One ranking method: its rankings, per-query seconds and scores."""

    name: str
    ranks: np.ndarray  # [Nq, K] db ids, best first
    seconds: list[float]  # per query
    map: float = 0.0
    mp: np.ndarray = field(default_factory=lambda: np.zeros(3))  # mP@1, 5, 10

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1e3 if self.seconds else 0.0


@dataclass
class DemoReport:
    """What :func:`run_demo` measured; ``model`` is the ONNX path it was given."""

    split: str
    num_queries: int
    num_db: int
    shortlist_k: int
    methods: list[MethodResult]
    picture: Path | None
    model: str

    def table(self) -> str:
        lines = [
            f"demo {self.split} split: {self.num_queries} queries, {self.num_db} database "
            f"images, shortlist top {self.shortlist_k} (revisitop medium protocol)",
            f"{'method':34s} {'mAP':>6s} {'mP@1':>6s} {'mP@5':>6s} {'mP@10':>6s} "
            f"{'median ms/query':>16s}",
        ]
        for m in self.methods:
            lines.append(
                f"{m.name:34s} {100 * m.map:6.1f} {100 * m.mp[0]:6.1f} {100 * m.mp[1]:6.1f} "
                f"{100 * m.mp[2]:6.1f} {m.median_ms:16.1f}"
            )
        if self.picture:
            lines.append(f"picture: {self.picture}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "num_queries": self.num_queries,
            "num_db": self.num_db,
            "shortlist_k": self.shortlist_k,
            "model": self.model,
            "methods": {
                m.name: {"map": m.map, "mp@1,5,10": m.mp.tolist(), "median_ms": m.median_ms}
                for m in self.methods
            },
        }


def _score(method: MethodResult, gnd: Sequence[dict[str, Any]]) -> MethodResult:
    method.map, method.mp = compute_map(method.ranks, gnd)
    return method


def _timed_per_query(
    fn: Callable[[int], np.ndarray], num: int, progress: bool, desc: str
) -> tuple[np.ndarray, list[float]]:
    """``fn(q)`` for every query: rankings ``[num, K]`` and the seconds each call took."""
    ranks, seconds = [], []
    for q in progress_bar(range(num), desc=desc, unit="query", enabled=progress):
        t0 = time.perf_counter()
        ranks.append(fn(q))
        seconds.append(time.perf_counter() - t0)
    return np.stack(ranks), seconds


def _onnx_file(model: str | Path) -> Path:
    path = Path(model)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no file"
        raise FileNotFoundError(
            f"the demo needs an ONNX model file, got {what} at {path}; export a checkpoint "
            "with `locore export` (the `locore demo` command exports the shipped model itself)"
        )
    return path


def run_demo(
    model: str | Path,
    cache_dir: str | Path | None = None,
    *,
    split: str = "test",
    shortlist_k: int = 100,
    params: RerankParams | None = None,
    ransac: bool = True,
    picture: str | Path | None = None,
    max_queries: int | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> DemoReport:
    """Run the demo on ``split`` with the ONNX model ``model`` and return its report.

    ``params``: window, stride, order and fusion (default: LOCORE's,
    :class:`~locore.runtime.sliding_windows.RerankParams`); its ``topk`` is replaced by
    ``shortlist_k``: the whole shortlist is re-ranked. ``picture``:
    where to write the before/after PNG (None: no picture). ``max_queries``: score only the
    first queries. ``threads``: ONNX Runtime intra-op threads.
    """
    from locore.runtime.backends import create_backend
    from locore.runtime.sliding_windows import Reranker

    onnx_path = _onnx_file(model)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    files = prepare_split(split, cache, shortlist_k=shortlist_k, progress=progress)
    demo = files.split
    params = replace(params or RerankParams(), topk=shortlist_k)

    shortlist = read_shortlist(files.shortlist)
    nq = shortlist.num_queries if max_queries is None else min(max_queries, shortlist.num_queries)
    gnd = demo.gnd[:nq]
    q_glob = read_global_descriptors(files.query_global)
    db_glob = read_global_descriptors(files.db_global)

    def global_only(q: int) -> np.ndarray:
        return search_shortlist(q_glob[q : q + 1], db_glob, shortlist_k).ids[0]

    methods = []
    ranks, secs = _timed_per_query(global_only, nq, False, "global")
    methods.append(_score(MethodResult("global only (VLAD-64, exact IP)", ranks, secs), gnd))

    if ransac:
        q_kp = load_keypoints(files.query_keypoints)
        db_kp = load_keypoints(files.db_keypoints)

        def verify(q: int) -> np.ndarray:
            return spatial_verification(q_kp[q], db_kp, shortlist.ids[q], shortlist.sims[q])

        ranks, secs = _timed_per_query(verify, nq, progress, "RANSAC")
        methods.append(_score(MethodResult("RANSAC spatial verification", ranks, secs), gnd))

    with (
        create_backend(onnx_path, threads=threads) as backend,
        FeatureFile(files.query_features) as fq,
        FeatureFile(files.db_features) as fd,
    ):
        reranker = Reranker(backend, params, clip_scales=True)
        database = fd.read_all(backend.config.num_desc)
        queries = fq.read_all(backend.config.num_desc)

        def locore(q: int) -> np.ndarray:
            return reranker.rerank(queries[q], database, shortlist.ids[q], shortlist.sims[q]).ids

        ranks, secs = _timed_per_query(locore, nq, progress, "LOCORE")
    name = f"LOCORE re-ranking ({backend.config.name}, ORT)"
    methods.append(_score(MethodResult(name, ranks, secs), gnd))

    pic = None
    if picture is not None:
        pic = Path(picture)
        write_picture(pic, demo, methods[0].ranks, methods[-1].ranks, gnd)
    return DemoReport(split, nq, demo.num_db, shortlist_k, methods, pic, str(onnx_path))


def tune_fusion(
    model: str | Path,
    cache_dir: str | Path | None = None,
    *,
    shortlist_k: int = 100,
    alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75),
    temperatures: Sequence[float] = (0.1, 0.3, 1.0),
    threads: int | None = None,
    progress: bool = True,
) -> tuple[float, float, float]:
    """(alpha, temperature, mAP) maximising mAP on the demo TRAIN split for the ONNX ``model``.

    Each query's whole shortlist (top ``shortlist_k``) is scored in one window, once; every
    (alpha, temperature) pair of the grid then re-sorts it by fused score. Of equal mAPs the
    first pair wins (alphas outer, temperatures inner).
    """
    from locore.runtime.backends import create_backend
    from locore.runtime.sliding_windows import Reranker, fuse_scores

    onnx_path = _onnx_file(model)
    files: DemoFiles = prepare_split("train", cache_dir, shortlist_k=shortlist_k, progress=progress)
    shortlist = read_shortlist(files.shortlist)
    with (
        create_backend(onnx_path, threads=threads) as backend,
        FeatureFile(files.query_features) as fq,
        FeatureFile(files.db_features) as fd,
    ):
        reranker = Reranker(backend, window=shortlist_k, topk=shortlist_k, stride=shortlist_k)
        database = fd.read_all(backend.config.num_desc)
        queries = fq.read_all(backend.config.num_desc)
        logits = [
            reranker.score(queries[q], database[shortlist.ids[q]])
            for q in progress_bar(
                range(shortlist.num_queries), desc="scoring", unit="query", enabled=progress
            )
        ]
    best = (0.5, 0.1, -1.0)
    for a in alphas:
        for t in temperatures:
            ranks = []
            for q, lg in enumerate(logits):
                fused = fuse_scores(shortlist.sims[q], lg, a, t)
                ranks.append(shortlist.ids[q][np.argsort(-fused, kind="stable")])
            m, _ = compute_map(np.stack(ranks), files.split.gnd)
            if m > best[2]:
                best = (a, t, m)
    log.info("fusion on the demo train split: alpha=%s temperature=%s mAP=%.4f", *best)
    return best
