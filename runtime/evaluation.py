"""Evaluation on the official protocols: re-rank AMES/LOCORE files and score them as the papers do.

:func:`evaluate` re-ranks every query's shortlist with sliding windows
(:class:`~locore.runtime.sliding_windows.Reranker`) and scores the global-only and the re-ranked
rankings with the metrics of the dataset's protocol (:data:`DATASETS`):

- ``revisitop`` (ROxford5k, RParis6k, ±R1M): Easy / Medium / Hard mAP and mP@1, 5, 10
  (:func:`~locore.runtime.metrics.compute_map`). As AMES (``src/utils/metrics.py``, ``rerank``)
  and LOCORE (``common_utils/eval_data_utils_hdf5.py``) run it, each query's shortlist is
  first reordered so that its junk images — and, for the Hard protocol, its easy images too —
  go to the end (a stable move, similarities travelling with their ids): they never take a slot
  of the re-ranked top K. So there are two re-ranking passes: the ``medium`` order gives Easy
  and Medium, the ``hard`` order gives Hard. Published ROxf/RPar numbers are only comparable
  under this reordering. Global-only numbers do not depend on it (junk is removed in scoring).
- ``gldv2`` (GLDv2 retrieval test): mAP@100 (:func:`~locore.runtime.metrics.map_at_k`) over
  all queries, the public ones and the private ones (AMES/LOCORE: the last 750 queries are
  private); junk, if the ground truth has any, goes to the end as above.
- ``recall`` (SOP, In-Shop, CUB): Recall@1, 10, 100 (at least one positive in the top K,
  :func:`~locore.runtime.metrics.query_recall_at_k`) and mAP@100; junk (e.g. the query itself
  when the database contains the queries) goes to the end and is removed in scoring.

``reorder=False`` keeps shortlists as they are (e.g. to compare with ``locore demo``, which
re-ranks its shortlists unchanged). A fusion grid (``grid``) is searched on validation queries
only (``val_queries``): the report's numbers are computed on the other queries, never on those
the values were chosen on. :func:`write_report` writes JSON + Markdown (+ a PNG of
precision-recall curves, global vs re-ranked, when matplotlib is installed).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import statistics
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from locore.fileio import atomic_path, atomic_write_text
from locore.progress import progress_bar
from locore.runtime.ames import FeatureFile, FormatError
from locore.runtime.ground_truth import GroundTruth
from locore.runtime.local_features import LocalFeatures, as_local_features
from locore.runtime.metrics import (
    PROTOCOLS,
    compute_map_per_query,
    map_at_k,
    precision_recall_curve,
    protocol_lists,
    query_recall_at_k,
)
from locore.runtime.shortlist import Shortlist
from locore.runtime.sliding_windows import Reranker

log = logging.getLogger(__name__)

KINDS = ("revisitop", "gldv2", "recall")
KAPPAS = (1, 5, 10)  # revisitop mP@k
RECALL_KS = (1, 10, 100)  # SOP / In-Shop / CUB Recall@K
MAP_AT = 100  # GLDv2 mAP@100
PRELOAD_BYTES = 1 << 30  # read the database into memory when its rows take less than this


@dataclass(frozen=True)
class Protocol:
    """How a dataset is scored: ``kind`` (one of :data:`KINDS`) and, for GLDv2, how many of
    the last queries form the private split."""

    name: str
    kind: str
    title: str
    private_queries: int = 0


DATASETS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("roxford5k", "revisitop", "Revisited Oxford 5k (revisitop E/M/H)"),
        Protocol("roxford5k+1m", "revisitop", "Revisited Oxford 5k + R1M distractors"),
        Protocol("rparis6k", "revisitop", "Revisited Paris 6k (revisitop E/M/H)"),
        Protocol("rparis6k+1m", "revisitop", "Revisited Paris 6k + R1M distractors"),
        Protocol("revisitop", "revisitop", "any revisitop-format ground truth (e.g. the demo)"),
        Protocol("gldv2", "gldv2", "Google Landmarks v2 retrieval test (mAP@100)", 750),
        Protocol("sop", "recall", "Stanford Online Products (Recall@K)"),
        Protocol("inshop", "recall", "DeepFashion In-Shop (Recall@K)"),
        Protocol("cub", "recall", "CUB-200-2011 (Recall@K)"),
    )
}


def get_protocol(dataset: str | Protocol) -> Protocol:
    if isinstance(dataset, Protocol):
        return dataset
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[dataset]


@dataclass(frozen=True)
class FusionGrid:
    """The (alpha, temperature) pairs searched by ``--grid`` (alphas outer, temperatures
    inner; of equal scores the first pair wins)."""

    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    temperatures: tuple[float, ...] = (0.1, 0.3, 1.0)

    def pairs(self) -> list[tuple[float, float]]:
        return [(float(a), float(t)) for a in self.alphas for t in self.temperatures]


@dataclass
class EvalReport:
    """What :func:`evaluate` measured. ``metrics[method][split][metric]`` with method
    ``global`` / ``reranked``, split a protocol (``easy``/``medium``/``hard``) or a query set
    (``all``/``public``/``private``), values as fractions (tables print percent)."""

    dataset: str
    kind: str
    num_queries: int  # evaluated (test) queries
    num_db: int
    shortlist_length: int
    padded_slots: int
    params: dict[str, Any]
    reorder: bool
    metrics: dict[str, dict[str, dict[str, float]]]
    model: str = ""
    validation: dict[str, Any] | None = None  # grid search: queries, pairs, scores, choice
    seconds: dict[str, float] = field(default_factory=dict)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    test_queries: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "dataset": self.dataset,
            "protocol": self.kind,
            "model": self.model,
            "num_queries": self.num_queries,
            "num_db": self.num_db,
            "shortlist_length": self.shortlist_length,
            "padded_slots": self.padded_slots,
            "shortlist_reordered": self.reorder,
            "params": self.params,
            "metrics": _json_safe(self.metrics),
            "validation": _json_safe(self.validation),
            "seconds": self.seconds,
            "pr_curves": _json_safe(self.curves),
        }
        return out

    def table(self) -> str:
        """Markdown: one row per method, one column per metric (percent)."""
        columns = [
            (split, metric) for split, values in self.metrics["global"].items() for metric in values
        ]
        head = ["method", *(f"{split} {metric}" for split, metric in columns)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method, splits in self.metrics.items():
            cells = [method]
            for split, metric in columns:
                value = splits.get(split, {}).get(metric, float("nan"))
                cells.append("n/a" if math.isnan(value) else f"{100 * value:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        p = self.params
        lines = [
            f"# locore eval: {self.dataset} ({self.kind} protocol)",
            "",
            f"- model: `{self.model}`",
            f"- {self.num_queries} queries evaluated, {self.num_db} database images, shortlist "
            f"length {self.shortlist_length} ({self.padded_slots} padded slots ignored)",
            f"- re-ranking: top {p['topk']}, window {p['window']}, stride {p['stride']}, "
            f"{p['order']}, alpha {p['alpha']}, temperature {p['temperature']}",
            "- shortlists "
            + (
                "reordered as AMES/LOCORE do (junk, and easy for Hard, moved to the end)"
                if self.reorder
                else "re-ranked as given (no junk reordering)"
            ),
            "",
            self.table(),
        ]
        if self.validation:
            v = self.validation
            lines += [
                "",
                f"## Fusion grid on {len(v['queries'])} validation queries "
                f"(never among the {self.num_queries} evaluated)",
                "",
                f"chosen: alpha {v['alpha']}, temperature {v['temperature']} "
                f"({v['criterion']} {100 * v['score']:.2f})",
                "",
                "| alpha | temperature | " + v["criterion"] + " |",
                "|---|---|---|",
            ]
            lines += [
                f"| {row['alpha']} | {row['temperature']} | {100 * row['score']:.2f} |"
                for row in v["grid"]
            ]
        if self.seconds:
            lines += ["", "Timing: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.seconds.items())]
        return "\n".join(lines) + "\n"


def _json_safe(obj: Any) -> Any:
    """NaN -> None (JSON has no NaN), numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


# ---- query splits -----------------------------------------------------------------------------
def split_queries(
    num_queries: int, val_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(validation, test) query indices, sorted: ``round(val_fraction * num_queries)`` (at
    least 1) validation queries drawn with ``seed``; every other query is a test query."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"the validation fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, round(val_fraction * num_queries))
    if n_val >= num_queries:
        raise ValueError(
            f"a validation fraction of {val_fraction} leaves no test query of {num_queries}"
        )
    val = np.sort(np.random.default_rng(seed).permutation(num_queries)[:n_val])
    return val, np.setdiff1d(np.arange(num_queries), val)


def read_query_indices(path: str | Path) -> np.ndarray:
    """Query indices from ``.npy`` or a text file (integers separated by whitespace/commas)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"query index file {path} does not exist")
    if path.suffix == ".npy":
        values = np.load(path, allow_pickle=False)
    else:
        text = path.read_text().replace(",", " ").split()
        try:
            values = np.array([int(t) for t in text], dtype=np.int64)
        except ValueError as exc:
            raise FormatError(f"{path}: expected integer query indices ({exc})") from None
    return np.asarray(values).ravel()


def _check_val(val: Sequence[int] | np.ndarray, num_queries: int) -> tuple[np.ndarray, np.ndarray]:
    from locore.runtime.shortlist import as_ids

    ids = as_ids(val, "validation queries", "query indices").ravel()
    if ids.size == 0:
        raise ValueError("the validation split is empty; give at least one query index")
    if ids.min() < 0 or ids.max() >= num_queries:
        raise ValueError(
            f"validation query indices must be in [0, {num_queries}), got "
            f"{int(ids.min())}..{int(ids.max())}"
        )
    if np.unique(ids).size != ids.size:
        raise ValueError("validation query indices must not repeat")
    test = np.setdiff1d(np.arange(num_queries), ids)
    if test.size == 0:
        raise ValueError("every query is a validation query: nothing would be evaluated")
    return np.sort(ids), test


# ---- shortlist orders -------------------------------------------------------------------------
def reorder_junk_last(
    ids: np.ndarray, sims: np.ndarray, junk: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` [K] with the ``junk`` ids moved to the end, both parts in their order; ``sims``
    [K] move with their ids (AMES's and LOCORE's
    ``torch.cat((nn[:, ~is_junk], nn[:, is_junk]))``)."""
    is_junk = np.isin(ids, junk)
    order = np.concatenate([np.flatnonzero(~is_junk), np.flatnonzero(is_junk)])
    return ids[order], sims[order]


def _passes(kind: str, reorder: bool, gnd: Sequence[dict[str, Any]]) -> dict[str, str | None]:
    """Re-ranking passes: pass name -> the protocol whose junk goes last (None: as given)."""
    if kind == "revisitop":
        return {"medium": "medium", "hard": "hard"} if reorder else {"as-is": None}
    has_junk = any(len(np.asarray(g.get("junk", ()))) for g in gnd)
    return {"all": "medium" if (reorder and has_junk) else None}


def _pass_for(kind: str, protocol: str, passes: Collection[str]) -> str:
    """The pass (of the names ``passes``) whose rankings a protocol is scored on."""
    if kind == "revisitop" and "hard" in passes:
        return "hard" if protocol == "hard" else "medium"
    return next(iter(passes))


# ---- scoring ----------------------------------------------------------------------------------
def score_rankings(
    kind: str,
    rankings: dict[str, list[np.ndarray]],
    gnd: Sequence[dict[str, Any]],
    query_ids: np.ndarray,
    private_start: int | None = None,
) -> dict[str, dict[str, float]]:
    """The metrics of ``kind`` for rankings per pass (rows for ``query_ids``; gnd: all)."""
    rows_gnd = [gnd[q] for q in query_ids]
    out: dict[str, dict[str, float]] = {}
    if kind == "revisitop":
        for protocol in PROTOCOLS:
            ranks = rankings[_pass_for(kind, protocol, list(rankings))]
            aps, prs = compute_map_per_query(ranks, rows_gnd, KAPPAS, protocol)
            scored = ~np.isnan(aps)
            values = {"mAP": float(aps[scored].mean()) if scored.any() else float("nan")}
            for j, k in enumerate(KAPPAS):
                values[f"mP@{k}"] = float(prs[scored, j].mean()) if scored.any() else float("nan")
            out[protocol] = values
    elif kind == "gldv2":
        ranks = next(iter(rankings.values()))
        _, aps = map_at_k(ranks, rows_gnd, MAP_AT)
        split_of = {"all": np.ones(len(query_ids), bool)}
        if private_start is not None:
            split_of["public"] = query_ids < private_start
            split_of["private"] = query_ids >= private_start
        for split, members in split_of.items():
            chosen = aps[members]
            chosen = chosen[~np.isnan(chosen)]
            out[split] = {f"mAP@{MAP_AT}": float(chosen.mean()) if chosen.size else float("nan")}
    elif kind == "recall":
        ranks = next(iter(rankings.values()))
        recall = query_recall_at_k(ranks, rows_gnd, RECALL_KS)
        values = {f"R@{k}": float(r) for k, r in zip(RECALL_KS, recall, strict=True)}
        values[f"mAP@{MAP_AT}"] = map_at_k(ranks, rows_gnd, MAP_AT)[0]
        out["all"] = values
    else:
        raise ValueError(f"unknown protocol kind {kind!r}; expected one of {list(KINDS)}")
    return out


def primary_score(kind: str, metrics: dict[str, dict[str, float]]) -> tuple[str, float]:
    """(name, value) of the number a fusion grid maximises: revisitop (Medium + Hard mAP) / 2
    (AMES's selection score), GLDv2 mAP@100, Recall@1 otherwise."""
    if kind == "revisitop":
        return "(M + H) / 2 mAP", (metrics["medium"]["mAP"] + metrics["hard"]["mAP"]) / 2
    if kind == "gldv2":
        return f"mAP@{MAP_AT}", metrics["all"][f"mAP@{MAP_AT}"]
    return "R@1", metrics["all"]["R@1"]


# ---- re-ranking -------------------------------------------------------------------------------
def _database(database: FeatureFile | LocalFeatures, num_desc: int) -> FeatureFile | LocalFeatures:
    """The database in memory (first ``num_desc`` rows) when it is small, else the file."""
    if isinstance(database, FeatureFile):
        size = database.num_images * min(num_desc, database.num_desc) * (5 + database.desc_dim) * 4
        if size <= PRELOAD_BYTES:
            return database.read_all(num_desc)
        return database
    return as_local_features(database).first(num_desc)


def _query(queries: FeatureFile | LocalFeatures, q: int, num_desc: int) -> LocalFeatures:
    if isinstance(queries, FeatureFile):
        return queries.read(int(q), num_desc=num_desc)
    return queries[int(q)].first(num_desc)


def _rerank_pass(
    reranker: Reranker,
    queries: FeatureFile | LocalFeatures,
    database: FeatureFile | LocalFeatures,
    rows: dict[int, tuple[np.ndarray, np.ndarray]],
    query_ids: np.ndarray,
    query_global: np.ndarray | None,
    db_global: np.ndarray | None,
    progress: bool,
    desc: str,
) -> tuple[list[np.ndarray], list[float]]:
    """Re-ranked ids of each query in ``query_ids`` and the seconds each took."""
    ranked, seconds = [], []
    for q in progress_bar(query_ids, desc=desc, unit="query", enabled=progress):
        ids, sims = rows[int(q)]
        t0 = time.perf_counter()
        if ids.size == 0:
            ranked.append(ids)
        else:
            query = _query(queries, int(q), reranker.num_desc)
            q_glob = None if query_global is None else np.asarray(query_global)[int(q)]
            result = reranker.rerank(
                query, database, ids, sims, q_glob, db_global, name=f"query {int(q)}"
            )
            ranked.append(result.ids)
        seconds.append(time.perf_counter() - t0)
    return ranked, seconds


def _pass_rows(
    shortlist: Shortlist, gnd: Sequence[dict[str, Any]], protocol: str | None
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    rows = {}
    for q in range(shortlist.num_queries):
        ids, sims = shortlist.row(q)
        if protocol is not None:
            _, junk = protocol_lists(gnd[q], protocol)
            ids, sims = reorder_junk_last(ids, sims, junk)
        rows[q] = (ids, sims)
    return rows


def evaluate(
    dataset: str | Protocol,
    reranker: Reranker,
    queries: FeatureFile | LocalFeatures,
    database: FeatureFile | LocalFeatures,
    shortlist: Shortlist,
    ground_truth: GroundTruth,
    *,
    reorder: bool = True,
    val_queries: Sequence[int] | np.ndarray | None = None,
    grid: FusionGrid | None = None,
    private_queries: int | None = None,
    query_global: np.ndarray | None = None,
    db_global: np.ndarray | None = None,
    progress: bool = True,
    model: str = "",
) -> EvalReport:
    """Re-rank and score ``dataset``'s queries (see the module docstring).

    Args:
        dataset: a key of :data:`DATASETS` (or a :class:`Protocol`).
        reranker: the model and sliding-window parameters; with ``grid`` its alpha and
            temperature are replaced by the values chosen on the validation queries.
        queries, database: the feature files (or loaded features) the shortlist indexes.
        shortlist: row q belongs to query q; padded slots (id -1) are dropped.
        ground_truth: one entry per query (revisitop, GLDv2 ``ok`` lists, or from labels).
        reorder: move junk (and easy, for Hard) to the end of each shortlist first, as
            AMES/LOCORE do (default); False re-ranks the shortlists as given.
        val_queries: indices of validation queries: excluded from the reported numbers.
        grid: search alpha/temperature on ``val_queries`` (required with a grid).
        private_queries: GLDv2's private split, the last N queries (default: the protocol's 750;
            0: no public/private split).
        query_global, db_global: global descriptors, for models that take them.
        progress: show progress bars. model: named in the report.
    """
    protocol = get_protocol(dataset)
    gnd = ground_truth.gnd
    num_db = len(database)
    num_queries = len(queries)
    for what, count in (("shortlist rows", shortlist.num_queries), ("gnd entries", len(gnd))):
        if count != num_queries:
            raise FormatError(
                f"{count} {what} for {num_queries} query images; row/entry q must belong to "
                "query q of the query features"
            )
    shortlist.validate_ids(num_db, "the database features")
    ground_truth.validate_ids(num_db, "the ground truth")
    if protocol.kind == "revisitop" and not any(
        len(np.asarray(g.get(k, ()))) for g in gnd for k in ("easy", "hard")
    ):
        log.warning(
            "%s: the ground truth has no easy/hard lists (GLDv2-style 'ok' only?): Easy and Hard "
            "are undefined; use --dataset gldv2 for mAP@100",
            protocol.name,
        )
    if grid is not None and val_queries is None:
        raise ValueError(
            "a fusion grid needs validation queries (val_queries / --val-queries or "
            "--val-fraction); it is never searched on the evaluated queries"
        )
    if val_queries is not None:
        val, test = _check_val(val_queries, num_queries)
    else:
        val, test = np.zeros(0, np.int64), np.arange(num_queries)
    private = protocol.private_queries if private_queries is None else int(private_queries)
    private_start = None
    if protocol.kind == "gldv2" and private > 0:
        if private >= num_queries:
            raise ValueError(
                f"GLDv2's private split is the last {private} queries, but there are only "
                f"{num_queries}; set private_queries (--private-queries) or 0 for no split"
            )
        private_start = num_queries - private

    seconds: dict[str, float] = {}
    began = time.perf_counter()
    db = _database(database, reranker.num_desc)
    seconds["load"] = time.perf_counter() - began
    passes = _passes(protocol.kind, reorder, gnd)
    rows = {name: _pass_rows(shortlist, gnd, order) for name, order in passes.items()}

    def run_passes(
        r: Reranker, ids: np.ndarray, label: str
    ) -> tuple[dict[str, list[np.ndarray]], list[float]]:
        out, secs = {}, []
        for name in passes:
            desc = f"{label} ({name})" if len(passes) > 1 else label
            out[name], s = _rerank_pass(
                r, queries, db, rows[name], ids, query_global, db_global, progress, desc
            )
            secs += s
        return out, secs

    validation = None
    if grid is not None:
        began = time.perf_counter()
        scores = []
        criterion = ""
        for alpha, temperature in grid.pairs():
            trial = copy.copy(reranker)
            trial.params = replace(reranker.params, alpha=alpha, temperature=temperature)
            ranked, _ = run_passes(trial, val, f"grid a={alpha} t={temperature}")
            trial_metrics = score_rankings(protocol.kind, ranked, gnd, val, private_start)
            criterion, value = primary_score(protocol.kind, trial_metrics)
            scores.append({"alpha": alpha, "temperature": temperature, "score": value})
            log.info("grid alpha=%s temperature=%s: %s %.4f", alpha, temperature, criterion, value)
        best = max(scores, key=lambda row: -np.inf if math.isnan(row["score"]) else row["score"])
        reranker = copy.copy(reranker)
        reranker.params = replace(
            reranker.params, alpha=best["alpha"], temperature=best["temperature"]
        )
        validation = {
            "queries": val.tolist(),
            "criterion": criterion,
            "grid": scores,
            "alpha": best["alpha"],
            "temperature": best["temperature"],
            "score": best["score"],
        }
        seconds["grid"] = time.perf_counter() - began

    began = time.perf_counter()
    reranked, per_query = run_passes(reranker, test, "re-ranking")
    seconds["rerank"] = time.perf_counter() - began
    if per_query:
        seconds["median_per_query_pass"] = statistics.median(per_query)
    global_rows = [shortlist.row(int(q))[0] for q in test]
    metrics = {
        "global": score_rankings(
            protocol.kind, dict.fromkeys(passes, global_rows), gnd, test, private_start
        ),
        "reranked": score_rankings(protocol.kind, reranked, gnd, test, private_start),
    }
    for method, splits in metrics.items():
        for split, values in splits.items():
            if any(math.isnan(v) for v in values.values()):
                log.warning(
                    "%s %s: no evaluated query has a positive under this protocol: the metrics "
                    "are undefined (n/a); check the ground truth and --dataset",
                    method,
                    split,
                )
    curves: dict[str, dict[str, list[float]]] = {}
    test_gnd = [gnd[q] for q in test]
    curve_protocols = PROTOCOLS if protocol.kind == "revisitop" else ("medium",)
    for name in curve_protocols:
        pass_name = _pass_for(protocol.kind, name, passes)
        levels, glob = precision_recall_curve(global_rows, test_gnd, name)
        _, rer = precision_recall_curve(reranked[pass_name], test_gnd, name)
        curves[name] = {
            "recall": levels.tolist(),
            "global": glob.tolist(),
            "reranked": rer.tolist(),
        }
    return EvalReport(
        dataset=protocol.name,
        kind=protocol.kind,
        num_queries=int(test.size),
        num_db=num_db,
        shortlist_length=shortlist.length,
        padded_slots=shortlist.num_padded,
        params=reranker.params.to_dict(),
        reorder=reorder,
        metrics=metrics,
        model=model,
        validation=validation,
        seconds=seconds,
        curves=curves,
        test_queries=test.tolist(),
    )


# ---- writing ----------------------------------------------------------------------------------
def write_pr_curves(path: str | Path, report: EvalReport) -> Path | None:
    """A PNG of the mean precision-recall curves, global vs re-ranked, one panel per protocol;
    None (with a log note) when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.info(
            "matplotlib is not installed: no precision-recall PNG (pip install "
            "'locore-edge[demo]' or pip install matplotlib)"
        )
        return None
    names = list(report.curves)
    fig = Figure(figsize=(4.2 * len(names), 3.8), dpi=100)
    FigureCanvasAgg(fig)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        curve = report.curves[name]
        for method, style in (("global", "--"), ("reranked", "-")):
            ax.plot(curve["recall"], curve[method], style, label=method)
        title = name if report.kind == "revisitop" else report.dataset
        ax.set_title(f"{report.dataset} {title}" if report.kind == "revisitop" else title)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        fig.savefig(handle, format="png")
    return path


def write_report(
    report: EvalReport,
    json_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
    png_path: str | Path | None = None,
) -> dict[str, Path]:
    """Write the report as JSON, Markdown and a precision-recall PNG (each optional),
    atomically; returns what was written."""
    written = {}
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2) + "\n")
        written["json"] = Path(json_path)
    if markdown_path is not None:
        atomic_write_text(markdown_path, report.to_markdown())
        written["markdown"] = Path(markdown_path)
    if png_path is not None:
        png = write_pr_curves(png_path, report)
        if png is not None:
            written["png"] = png
    return written
