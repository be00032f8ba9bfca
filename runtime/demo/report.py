"""The demo run: four rankings of one shortlist, timed side by side, scored with bootstrap CIs.

:func:`run_demo` ranks the shortlist of every query four ways:

1. global only: the exact inner-product search over the VLAD descriptors (top K);
2. RANSAC spatial verification (:mod:`locore.runtime.demo.baselines`) with the model's keypoint
   budget: the same first ``num_desc`` keypoints per image whose descriptors the model reads
   (the feature files hold at least :data:`FEATURE_ROWS` rows, more for a model that reads
   more: :func:`feature_rows`);
3. RANSAC spatial verification with every kept keypoint (up to the extractor's 1,000);
4. LOCORE sliding-window re-ranking with an ONNX model through the ONNX Runtime backend.

The methods run interleaved, query by query (global, RANSAC with the model's budget, RANSAC with
every keypoint, LOCORE for query 0, then for query 1, ...), so that a change of machine load
during the run affects every method alike: the latency ratios are measured side by side. A
method's time per query is what it adds to the shortlist: the search for global only, the
re-ranking of the given shortlist for the others. Shortlists are re-ranked as given (no
junk-last reordering; ``locore eval --no-reorder``), one pass scored under both revisitop
protocols (:data:`PROTOCOLS`, :func:`locore.runtime.metrics.compute_map_per_query`). Every mAP,
and every paired difference of two methods' APs on the same queries (:data:`DIFFERENCES`), comes
with a percentile bootstrap confidence interval over queries
(:func:`locore.runtime.metrics.bootstrap_ci`; :data:`CI_LEVEL`, :data:`CI_RESAMPLES`,
:data:`CI_SEED`).

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
from locore.runtime.metrics import bootstrap_ci, compute_map, compute_map_per_query
from locore.runtime.shortlist import read_shortlist, search_shortlist
from locore.runtime.sliding_windows import RerankParams

log = logging.getLogger(__name__)

PROTOCOLS = ("medium", "hard")  # revisitop protocols the demo reports
KAPPAS = (1, 5, 10)  # mP@k
CI_LEVEL = 0.95
CI_RESAMPLES = 2000
CI_SEED = 0
FEATURE_ROWS = 48  # demo feature files hold at least this many rows per image (LOCORE's 48)

# Method keys: global only, RANSAC with the model's budget, RANSAC with every kept keypoint,
# LOCORE. Paired differences reported: (minuend, subtrahend) method keys.
GLOBAL, RANSAC_MODEL, RANSAC_FULL, LOCORE = "global", "ransac-model", "ransac-all", "locore"
DIFFERENCES = ((LOCORE, RANSAC_FULL), (LOCORE, RANSAC_MODEL), (LOCORE, GLOBAL))


@dataclass
class ProtocolScore:
    """One method under one protocol: per-query APs, their mean and its bootstrap CI."""

    aps: np.ndarray  # [Nq] float64, NaN for a query without positives under the protocol
    mp: np.ndarray  # [len(KAPPAS)] mP@1, 5, 10
    map: float  # mean of the finite APs
    ci: tuple[float, float]  # (lo, hi) bootstrap interval of ``map``

    @property
    def num_queries(self) -> int:
        """Queries scored (those with positives under the protocol)."""
        return int(np.isfinite(self.aps).sum())


def score_protocol(
    ranks: np.ndarray, gnd: Sequence[dict[str, Any]], protocol: str
) -> ProtocolScore:
    """Per-query AP, mP@k, mAP and its bootstrap CI of ``ranks [Nq, K]`` under ``protocol``."""
    aps, prs = compute_map_per_query(ranks, gnd, KAPPAS, protocol)
    mean, lo, hi = bootstrap_ci(aps, resamples=CI_RESAMPLES, level=CI_LEVEL, seed=CI_SEED)
    scored = np.isfinite(aps)
    mp = prs[scored].mean(axis=0) if scored.any() else np.full(len(KAPPAS), np.nan)
    return ProtocolScore(aps, mp, mean, (lo, hi))


@dataclass
class MethodResult:
    """One ranking method: its rankings, per-query seconds and scores per protocol."""

    key: str  # GLOBAL, RANSAC_MODEL, RANSAC_FULL or LOCORE
    name: str
    ranks: np.ndarray  # [Nq, K] db ids, best first
    seconds: list[float]  # per query
    scores: dict[str, ProtocolScore] = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1e3 if self.seconds else 0.0

    @property
    def map(self) -> float:
        """Medium-protocol mAP."""
        return self.scores["medium"].map

    @property
    def mp(self) -> np.ndarray:
        """Medium-protocol mP@1, 5, 10."""
        return self.scores["medium"].mp

    def score(self, gnd: Sequence[dict[str, Any]]) -> MethodResult:
        """Fill :attr:`scores` for every protocol of :data:`PROTOCOLS`; returns self."""
        self.scores = {p: score_protocol(self.ranks, gnd, p) for p in PROTOCOLS}
        return self


@dataclass
class Difference:
    """A paired difference of two methods' APs, per protocol: ``(mean, lo, hi)``."""

    name: str  # "LOCORE - RANSAC (1000 keypoints)"
    minuend: str  # method keys
    subtrahend: str
    values: dict[str, tuple[float, float, float]]


def paired_difference(a: MethodResult, b: MethodResult) -> Difference:
    """``a - b`` per protocol: the mean of the per-query AP differences (equal to the
    difference of the mAPs when both score the same queries) and its bootstrap CI."""
    values = {
        p: bootstrap_ci(
            a.scores[p].aps - b.scores[p].aps,
            resamples=CI_RESAMPLES,
            level=CI_LEVEL,
            seed=CI_SEED,
        )
        for p in PROTOCOLS
    }
    return Difference(f"{_short(a)} - {_short(b)}", a.key, b.key, values)


def _short(m: MethodResult) -> str:
    """The method's name in a difference's label."""
    return {LOCORE: "LOCORE", GLOBAL: "global only"}.get(m.key, m.name.replace("up to ", ""))


def _interval(mean: float, lo: float, hi: float, signed: bool = False) -> str:
    fmt = "{:+5.1f}" if signed else "{:5.1f}"
    return f"{fmt.format(100 * mean)} [{fmt.format(100 * lo)}, {fmt.format(100 * hi)}]"


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
    differences: list[Difference] = field(default_factory=list)
    queries_without_descriptors: int = 0  # LOCORE kept their global ranking

    def method(self, key: str) -> MethodResult | None:
        return next((m for m in self.methods if m.key == key), None)

    def table(self) -> str:
        """The printed table (at most 100 columns): mAP [95 % CI] per protocol, median ms."""
        level = round(100 * CI_LEVEL)
        counts = ", ".join(
            f"{p} {self.methods[0].scores[p].num_queries}" for p in PROTOCOLS if self.methods
        )
        ci = f"[{level}% CI]"
        lines = [
            f"demo {self.split} split: {self.num_queries} queries, {self.num_db} database "
            f"images, shortlist top {self.shortlist_k} (re-ranked as given)",
            f"mAP in %, revisitop protocols (queries with positives: {counts}); {ci}: percentile",
            f"bootstrap over queries ({CI_RESAMPLES} resamples); all methods timed "
            "interleaved, query by query",
            f"{'method':34s}{'medium mAP ' + ci:>20s}  {'hard mAP ' + ci:>20s}  "
            f"{'median ms/query':>15s}",
        ]
        for m in self.methods:
            cells = "  ".join(
                f"{_interval(m.scores[p].map, *m.scores[p].ci):>20s}" for p in PROTOCOLS
            )
            lines.append(f"{m.name:34s}{cells}  {m.median_ms:15.1f}")
        if self.differences:
            lines.append(f"paired difference (points) {ci}")
            for d in self.differences:
                cells = "  ".join(f"{_interval(*d.values[p], signed=True):>20s}" for p in PROTOCOLS)
                lines.append(f"{d.name:34s}{cells}")
        loc, ransac = self.method(LOCORE), self.method(RANSAC_FULL)
        if loc is not None and ransac is not None and loc.median_ms > 0:
            lines.append(
                f"median latency {ransac.name} / LOCORE: {ransac.median_ms / loc.median_ms:.1f}"
                f" ({ransac.median_ms:.1f} / {loc.median_ms:.1f} ms per query)"
            )
        if self.queries_without_descriptors:
            lines.append(
                f"{self.queries_without_descriptors} queries without local descriptors kept "
                "their global ranking in LOCORE"
            )
        if self.picture:
            lines.append(f"picture: {self.picture}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON: the table's numbers (fractions, not %) and each method's
        mP@1, 5, 10 per protocol. ``map`` / ``mp@1,5,10`` at a method's top level are the
        medium protocol's."""

        def protocol(s: ProtocolScore) -> dict[str, Any]:
            return {
                "map": s.map,
                "ci": list(s.ci),
                "mp@1,5,10": s.mp.tolist(),
                "num_queries": s.num_queries,
            }

        return {
            "split": self.split,
            "num_queries": self.num_queries,
            "num_db": self.num_db,
            "shortlist_k": self.shortlist_k,
            "model": self.model,
            "queries_without_descriptors": self.queries_without_descriptors,
            "bootstrap": {"level": CI_LEVEL, "resamples": CI_RESAMPLES, "seed": CI_SEED},
            "methods": {
                m.name: {
                    "key": m.key,
                    "median_ms": m.median_ms,
                    "map": m.map,
                    "mp@1,5,10": m.mp.tolist(),
                    **{p: protocol(m.scores[p]) for p in PROTOCOLS},
                }
                for m in self.methods
            },
            "differences": {
                d.name: {
                    "minuend": d.minuend,
                    "subtrahend": d.subtrahend,
                    **{p: {"mean": v[0], "ci": [v[1], v[2]]} for p, v in d.values.items()},
                }
                for d in self.differences
            },
        }


def feature_rows(num_desc: int) -> int:
    """Rows per image of the demo feature files for a model reading ``num_desc`` descriptors:
    at least :data:`FEATURE_ROWS` (so models of up to 48 share one cached file; the first rows
    are the strongest, the same as extracting fewer)."""
    return max(FEATURE_ROWS, int(num_desc))


def _onnx_file(model: str | Path) -> Path:
    path = Path(model)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no file"
        raise FileNotFoundError(
            f"the demo needs an ONNX model file, got {what} at {path}; export a checkpoint "
            "with `locore export` (the `locore demo` command exports the shipped model itself)"
        )
    return path


def _run_interleaved(
    methods: dict[str, Callable[[int], np.ndarray]], num: int, progress: bool
) -> dict[str, tuple[np.ndarray, list[float]]]:
    """``fn(q)`` of every method for query 0, then for query 1, ...: per method the rankings
    ``[num, K]`` and the seconds each call took."""
    ranks: dict[str, list[np.ndarray]] = {k: [] for k in methods}
    seconds: dict[str, list[float]] = {k: [] for k in methods}
    for q in progress_bar(range(num), desc="ranking", unit="query", enabled=progress):
        for key, fn in methods.items():
            t0 = time.perf_counter()
            ranks[key].append(fn(q))
            seconds[key].append(time.perf_counter() - t0)
    return {k: (np.stack(ranks[k]), seconds[k]) for k in methods}


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
    ``shortlist_k``: the whole shortlist is re-ranked. ``ransac``: also run both RANSAC
    baselines (the model's keypoint budget, and every kept keypoint). ``picture``: where to
    write the before/after PNG (None: no picture). ``max_queries``: score only the first
    queries. ``threads``: ONNX Runtime intra-op threads.
    """
    from locore.runtime.backends import create_backend
    from locore.runtime.sliding_windows import Reranker

    onnx_path = _onnx_file(model)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    params = replace(params or RerankParams(), topk=shortlist_k)

    with create_backend(onnx_path, threads=threads) as backend:
        num_desc = backend.config.num_desc
        files = prepare_split(
            split,
            cache,
            num_desc=feature_rows(num_desc),
            shortlist_k=shortlist_k,
            progress=progress,
        )
        demo = files.split
        shortlist = read_shortlist(files.shortlist)
        nq = shortlist.num_queries
        nq = nq if max_queries is None else min(max_queries, nq)
        gnd = demo.gnd[:nq]
        q_glob = read_global_descriptors(files.query_global)
        db_glob = read_global_descriptors(files.db_global)
        with FeatureFile(files.query_features) as fq, FeatureFile(files.db_features) as fd:
            database = fd.read_all(num_desc)
            queries = fq.read_all(num_desc)
        reranker = Reranker(backend, params, clip_scales=True)
        names = {
            GLOBAL: "global only (VLAD-64, exact IP)",
            RANSAC_MODEL: f"RANSAC ({num_desc} keypoints)",
            RANSAC_FULL: "RANSAC (every kept keypoint)",
            LOCORE: f"LOCORE ({backend.config.name}, ORT)",
        }

        def global_only(q: int) -> np.ndarray:
            return search_shortlist(q_glob[q : q + 1], db_glob, shortlist_k).ids[0]

        no_desc = [q for q in range(nq) if not queries.mask[q].any()]
        if no_desc:
            log.warning(
                "%d of %d queries have no local descriptor (e.g. query %d): LOCORE keeps their "
                "global ranking",
                len(no_desc),
                nq,
                no_desc[0],
            )

        def locore(q: int) -> np.ndarray:
            if not queries.mask[q].any():  # nothing to match: the shortlist order stands
                return np.asarray(shortlist.ids[q]).copy()
            return reranker.rerank(queries[q], database, shortlist.ids[q], shortlist.sims[q]).ids

        fns: dict[str, Callable[[int], np.ndarray]] = {GLOBAL: global_only}
        if ransac:
            q_kp = load_keypoints(files.query_keypoints)
            db_kp = load_keypoints(files.db_keypoints)
            most = max(len(xy) for xy, _ in [*q_kp, *db_kp])
            names[RANSAC_FULL] = f"RANSAC (up to {most} keypoints)"

            def verifier(budget: int | None) -> Callable[[int], np.ndarray]:
                def verify(q: int) -> np.ndarray:
                    ids, sims = shortlist.ids[q], shortlist.sims[q]
                    return spatial_verification(q_kp[q], db_kp, ids, sims, budget)

                return verify

            fns[RANSAC_MODEL] = verifier(num_desc)
            fns[RANSAC_FULL] = verifier(None)
        fns[LOCORE] = locore
        runs = _run_interleaved(fns, nq, progress)

    methods = [MethodResult(k, names[k], *runs[k]).score(gnd) for k in fns]
    by_key = {m.key: m for m in methods}
    differences = [
        paired_difference(by_key[a], by_key[b])
        for a, b in DIFFERENCES
        if a in by_key and b in by_key
    ]
    pic = None
    if picture is not None:
        pic = Path(picture)
        write_picture(pic, demo, by_key[GLOBAL].ranks, by_key[LOCORE].ranks, gnd)
    return DemoReport(
        split, nq, demo.num_db, shortlist_k, methods, pic, str(onnx_path), differences, len(no_desc)
    )


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
    with create_backend(onnx_path, threads=threads) as backend:
        num_desc = backend.config.num_desc
        files: DemoFiles = prepare_split(
            "train",
            cache_dir,
            num_desc=feature_rows(num_desc),
            shortlist_k=shortlist_k,
            progress=progress,
        )
        shortlist = read_shortlist(files.shortlist)
        with FeatureFile(files.query_features) as fq, FeatureFile(files.db_features) as fd:
            database = fd.read_all(num_desc)
            queries = fq.read_all(num_desc)
        reranker = Reranker(backend, window=shortlist_k, topk=shortlist_k, stride=shortlist_k)
        # A query without descriptors gets logit 0 everywhere: its global order stands.
        logits = [
            reranker.score(queries[q], database[shortlist.ids[q]])
            if queries.mask[q].any()
            else np.zeros(len(shortlist.ids[q]), np.float32)
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
