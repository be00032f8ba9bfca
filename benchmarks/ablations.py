"""Ablations of the LOCORE re-ranker on the demo test split: what each part of the model buys.

Every row ranks the same shortlists (demo test split, VLAD-64 top 100, every image re-ranked)
and is scored with revisitop mAP, medium and hard, each with a 95 % percentile-bootstrap
interval over queries (:func:`locore.runtime.metrics.bootstrap_ci`), the paired difference with
its reference row (same queries, resampled together) and the median milliseconds per query,
all measured in this one run (rows run one after another, ONNX Runtime on the CPU).

Rows (issue 15):

- reference rows: global only; RANSAC spatial verification with the strongest 48, 100 and
  every kept (up to 1,000) keypoint per image;
- evaluation-only, on the shipped model: list-wise (all 100 images in one window), windows of
  10 (stride 5, end-to-start, LOCORE's sliding order), pair-wise (the same model reading the
  query and ONE gallery image per sequence; the 100 sequences of a query go in one batched call);
- trained with the shipped model's recipe (the ``locore train`` command its config.json
  records) and one change each, compared with the shipped model: no query-match cue
  (``match_features=false``), 48 <-> 100 descriptors per image, the global token (VLAD-64
  projected onto each IMG token), the ``small`` preset instead of ``tiny``.

Fusion (alpha, temperature) is tuned per model on the TRAIN split only, on one-shot list-wise
logits (pair-wise logits for the pair-wise row), on the grid of ``locore demo --tune-fusion``;
the windows-of-10 row uses the list-wise values.

    python benchmarks/ablations.py                     # rows whose models exist
    python benchmarks/ablations.py --train             # also trains missing models, one by one
    python benchmarks/ablations.py --models-dir DIR    # where trained models are (or go)

The table is printed with the commands that made it (each trained model's ``locore train``
command, as its config.json records it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from locore.checkpoint_format import (
    is_checkpoint_dir,
    read_checkpoint_config,
    read_checkpoint_meta,
    shipped_model_dir,
)
from locore.config import SCORES
from locore.runtime.ames import FeatureFile
from locore.runtime.backends import create_backend
from locore.runtime.demo import default_cache_dir, prepare_split
from locore.runtime.demo.baselines import spatial_verification
from locore.runtime.demo.split_files import load_keypoints
from locore.runtime.global_descriptors import read_global_descriptors
from locore.runtime.metrics import bootstrap_ci, compute_map_per_query
from locore.runtime.shortlist import read_shortlist, search_shortlist
from locore.runtime.sliding_windows import Reranker, RerankParams, fuse_scores

log = logging.getLogger("ablations")

SHORTLIST_K = 100
RANSAC_FULL = "RANSAC (≤ 1000 keypoints)"
MODES = {
    "list": "list-wise, window 100",
    "win10": "windows of 10 (stride 5)",
    "pair": "pair-wise (1 image per sequence)",
}
ALPHAS = (0.0, 0.25, 0.5, 0.75)  # the grid of `locore demo --tune-fusion`
TEMPERATURES = (0.1, 0.3, 1.0)
# The training recipe every trained row shares (the shipped model's, README "The demo benchmark").
# Trained variants: name -> (the one change to the shipped model's recipe, what the row shows).
# "desc" flips the descriptor count between 48 and 100.
TRAINED: dict[str, tuple[list[str], str]] = {
    "no-match": (["--set", "match_features=false"], "without the query-match cue"),
    "desc": (["--num-desc", "<other>"], "<other> descriptors per image"),
    "global": (["--set", "use_global=true"], "+ global token (VLAD-64 on IMG)"),
    "small": (["--preset", "small"], "small preset instead of tiny"),
}


def shipped_recipe() -> list[str]:
    """The flags of the shipped model's ``locore train`` command (its config.json), without
    ``--output`` and ``--no-resume``: the recipe every trained row changes in one place."""
    command = read_checkpoint_meta(shipped_model_dir())["extra"]["training"]["command"]
    words = command.split()[2:]  # after "locore train"
    if "--demo-split" not in words:
        raise SystemExit(
            f"the shipped model was not trained with --demo-split ({command}); the trained rows "
            "need its recipe on the demo train split"
        )
    flags: list[str] = []
    skip = {"--output": 1, "--no-resume": 0}
    i = 0
    while i < len(words):
        if words[i] in skip:
            i += 1 + skip[words[i]]
            continue
        flags.append(words[i])
        i += 1
    return flags


def changed_recipe(recipe: list[str], name: str) -> tuple[list[str], str]:
    """(flags, label) of the recipe with the one change of row ``name``."""
    change, label = TRAINED[name]
    flags = list(recipe)
    if change[0] == "--set":
        return flags + change, label
    value = change[1]
    if name == "desc":
        current = flags[flags.index("--num-desc") + 1] if "--num-desc" in flags else "48"
        value = "48" if current == "100" else "100"
        label = label.replace("<other>", value)
    if change[0] in flags:
        flags[flags.index(change[0]) + 1] = value
    else:
        flags += [change[0], value]
    return flags, label


@dataclass
class Split:
    """One demo split's files read for a model: features, globals, shortlist, ground truth."""

    queries: Any
    database: Any
    q_global: np.ndarray
    db_global: np.ndarray
    ids: np.ndarray
    sims: np.ndarray
    gnd: list[dict[str, Any]]


@dataclass
class Row:
    name: str
    ranks: np.ndarray  # [Nq, K]
    seconds: list[float]
    reference: str | None = None  # the row it is compared with
    note: str = ""
    aps: dict[str, np.ndarray] = field(default_factory=dict)  # protocol -> [Nq]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1e3


def load_split(split: str, cache: Path, num_desc: int, max_queries: int | None) -> Split:
    files = prepare_split(split, cache, num_desc=max(num_desc, 48), progress=False)
    shortlist = read_shortlist(files.shortlist)
    nq = shortlist.num_queries if max_queries is None else min(max_queries, shortlist.num_queries)
    with FeatureFile(files.query_features) as fq, FeatureFile(files.db_features) as fd:
        queries, database = fq.read_all(num_desc), fd.read_all(num_desc)
    return Split(
        queries,
        database,
        np.asarray(read_global_descriptors(files.query_global)),
        np.asarray(read_global_descriptors(files.db_global)),
        shortlist.ids[:nq],
        shortlist.sims[:nq],
        list(files.split.gnd[:nq]),
    )


def verify_query(
    q_kp: list[Any], db_kp: list[Any], data: Split, budget: int | None, q: int
) -> np.ndarray:
    """RANSAC spatial verification of query ``q``'s shortlist with ``budget`` keypoints."""
    return spatial_verification(q_kp[q], db_kp, data.ids[q], data.sims[q], max_keypoints=budget)


def timed(fn: Callable[[int], np.ndarray], num: int) -> tuple[np.ndarray, list[float]]:
    ranks, seconds = [], []
    for q in range(num):
        start = time.perf_counter()
        ranks.append(fn(q))
        seconds.append(time.perf_counter() - start)
    return np.stack(ranks), seconds


class ModelRows:
    """One exported model on one split: list-wise, sliding-window and pair-wise rankings."""

    def __init__(self, onnx: Path, data: Split, threads: int | None) -> None:
        self.backend = create_backend(onnx, threads=threads)
        self.data = data
        self.use_global = self.backend.config.use_global
        self.one_shot = Reranker(
            self.backend, window=SHORTLIST_K, topk=SHORTLIST_K, stride=SHORTLIST_K, clip_scales=True
        )

    def _globals(self, q: int) -> dict[str, Any]:
        if not self.use_global:
            return {}
        return {"query_global": self.data.q_global[q], "db_global": self.data.db_global}

    def list_logits(self, q: int) -> np.ndarray:
        """Logits [K] of the whole shortlist in one window (for fusion tuning)."""
        d = self.data
        query, gallery = d.queries[q], d.database[d.ids[q]]
        if self.use_global:
            query = replace(query, global_desc=d.q_global[q])
            gallery = replace(gallery, global_desc=d.db_global[d.ids[q]])
        return self.one_shot.score(query, gallery)

    def pair_logits(self, q: int) -> np.ndarray:
        """Logits [K]: one sequence per gallery image (query + that image), batched."""
        d = self.data
        k = len(d.ids[q])
        query = d.queries[q : q + 1][np.zeros(k, dtype=np.int64)]  # [K, T, ...]
        gallery = d.database[d.ids[q][:, None]]  # [K, 1, T, ...]
        glob: dict[str, Any] = {}
        if self.use_global:
            glob = {
                "query_global": np.repeat(d.q_global[q : q + 1], k, axis=0),
                "gallery_global": d.db_global[d.ids[q]][:, None],
            }
        feeds = self.one_shot.packer.pack(query, gallery, **glob)
        scores = np.asarray(self.backend.infer(feeds)[SCORES], dtype=np.float32)[:, 0]
        empty = ~np.asarray(feeds["gallery_mask"], dtype=bool)[:, 0].any(axis=-1)
        scores[empty] = 0.0
        return scores

    def windows(self, params: RerankParams, q: int) -> np.ndarray:
        d = self.data
        reranker = Reranker(self.backend, params, clip_scales=True)
        return reranker.rerank(
            d.queries[q], d.database, d.ids[q], d.sims[q], **self._globals(q)
        ).ids

    def rank(self, mode: str, alpha: float, temperature: float, q: int) -> np.ndarray:
        """Query ``q``'s shortlist re-ranked in ``mode`` (a key of :data:`MODES`); a query
        without any keypoint keeps its global ranking (as ``locore demo`` does)."""
        if not self.data.queries.mask[q].any():
            return self.data.ids[q]
        if mode == "list":
            return self.fused(self.list_logits(q), q, alpha, temperature)
        if mode == "pair":
            return self.fused(self.pair_logits(q), q, alpha, temperature)
        params = RerankParams(
            window=10, stride=5, topk=SHORTLIST_K, alpha=alpha, temperature=temperature
        )
        return self.windows(params, q)

    def fused(self, logits: np.ndarray, q: int, alpha: float, temperature: float) -> np.ndarray:
        order = np.argsort(
            -fuse_scores(self.data.sims[q], logits, alpha, temperature), kind="stable"
        )
        return self.data.ids[q][order]

    def close(self) -> None:
        self.backend.close()


def tune(rows: ModelRows, logits_fn: Callable[[int], np.ndarray]) -> tuple[float, float, float]:
    """(alpha, temperature, train mAP) on the split ``rows`` holds (the TRAIN split)."""
    # Queries without any keypoint cannot be re-ranked: their global order stays (logit 0).
    logits = [
        logits_fn(q) if rows.data.queries.mask[q].any() else np.zeros(len(rows.data.ids[q]))
        for q in range(len(rows.data.ids))
    ]
    best = (0.5, 0.1, -1.0)
    for a in ALPHAS:
        for t in TEMPERATURES:
            ranks = np.stack([rows.fused(lg, q, a, t) for q, lg in enumerate(logits)])
            aps, _ = compute_map_per_query(ranks, rows.data.gnd)
            m = float(np.nanmean(aps))
            if m > best[2]:
                best = (a, t, m)
    return best


def export(checkpoint: Path, cache: Path) -> Path:
    from locore.export import cached_export

    folder = cache / "models"
    folder.mkdir(parents=True, exist_ok=True)
    return cached_export(checkpoint, folder)


def train_model(name: str, folder: Path, cache: Path, threads: int | None) -> None:
    flags, _ = changed_recipe(shipped_recipe(), name)
    cmd = [sys.executable, "-m", "locore", "train", *flags]
    cmd += ["--output", str(folder), "--cache-dir", str(cache)]
    if threads:
        cmd += ["--threads", str(threads)]
    print(f"training {name}: {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, check=True)


def evaluate_model(
    label: str,
    checkpoint: Path,
    cache: Path,
    args: argparse.Namespace,
    modes: tuple[str, ...],
    reference: str | None,
) -> list[Row]:
    config, _ = read_checkpoint_config(checkpoint)
    onnx = export(checkpoint, cache)
    out = []
    train_split = load_split("train", cache, config.num_desc, args.tune_queries)
    train = ModelRows(onnx, train_split, args.threads)
    fusion = {"list": tune(train, train.list_logits)}
    if "pair" in modes:
        fusion["pair"] = tune(train, train.pair_logits)
    train.close()
    test = ModelRows(
        onnx, load_split("test", cache, config.num_desc, args.max_queries), args.threads
    )
    nq = len(test.data.ids)
    test.list_logits(0)  # warm-up
    for mode in modes:
        a, t, train_map = fusion["pair" if mode == "pair" else "list"]
        tuned = f"alpha {a}, t {t} (train mAP {100 * train_map:.1f})"
        ranks, secs = timed(partial(test.rank, mode, a, t), nq)
        name = f"{label}: {MODES[mode]}"
        out.append(Row(name, ranks, secs, reference if mode == "list" else None, tuned))
    test.close()
    if reference is None and len(out) > 1:
        for row in out[1:]:
            row.reference = out[0].name
    return out


def score(rows: list[Row], gnd: list[dict[str, Any]]) -> None:
    for row in rows:
        for protocol in ("medium", "hard"):
            row.aps[protocol], _ = compute_map_per_query(row.ranks, gnd, protocol=protocol)


def table(rows: list[Row]) -> str:
    by_name = {r.name: r for r in rows}

    def ci(values: np.ndarray, signed: bool = False) -> str:
        m, lo, hi = bootstrap_ci(100 * values)
        fmt = "{:+.1f}" if signed else "{:.1f}"
        return f"{fmt.format(m)} [{fmt.format(lo)}, {fmt.format(hi)}]"

    ransac = by_name.get(RANSAC_FULL)
    lines = [
        "| row | medium mAP [95% CI] | hard mAP [95% CI] | Δ medium vs ref. | Δ hard vs ref. "
        "| Δ medium vs RANSAC-1000 | Δ hard vs RANSAC-1000 | median ms/query "
        "| fusion (tuned on train) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = by_name.get(r.reference) if r.reference else None
        deltas = ["", "", "", ""]
        if ref is not None:
            deltas[:2] = [ci(r.aps[p] - ref.aps[p], signed=True) for p in ("medium", "hard")]
        if ransac is not None and r.name.startswith(("shipped", "LOCORE")):
            deltas[2:] = [ci(r.aps[p] - ransac.aps[p], signed=True) for p in ("medium", "hard")]
        lines.append(
            f"| {r.name} | {ci(r.aps['medium'])} | {ci(r.aps['hard'])} | "
            + " | ".join(deltas)
            + f" | {r.median_ms:.1f} | {r.note} |"
        )
    refs = sorted({r.reference for r in rows if r.reference})
    if refs:
        lines.append("")
        lines.append("Δ: paired difference with " + "; ".join(f"'{n}'" for n in refs) + ".")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="demo cache (as locore demo)")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="trained variants, one folder per row name (default: "
        "~/.local/share/locore-edge/models/ablations)",
    )
    parser.add_argument("--train", action="store_true", help="train the missing variants")
    parser.add_argument(
        "--only", nargs="*", default=None, choices=list(TRAINED), help="trained rows to include"
    )
    parser.add_argument("--threads", type=int, default=None, help="ORT / torch threads")
    parser.add_argument("--max-queries", type=int, default=None, help="first N test queries")
    parser.add_argument(
        "--tune-queries", type=int, default=None, help="first N train queries for the fusion"
    )
    parser.add_argument("--no-ransac", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write per-query APs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cache = args.cache_dir or default_cache_dir()
    models = args.models_dir or (
        Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        / "locore-edge"
        / "models"
        / "ablations"
    )
    names = args.only if args.only is not None else list(TRAINED)
    if args.train:
        for name in names:
            if not is_checkpoint_dir(models / name):
                train_model(name, models / name, cache, args.threads)

    base = load_split("test", cache, 48, args.max_queries)
    nq = len(base.ids)
    ranks, secs = timed(
        lambda q: search_shortlist(base.q_global[q : q + 1], base.db_global, SHORTLIST_K).ids[0],
        nq,
    )
    rows = [Row("global only (VLAD-64)", ranks, secs)]
    if not args.no_ransac:
        files = prepare_split("test", cache, progress=False)
        q_kp, db_kp = load_keypoints(files.query_keypoints), load_keypoints(files.db_keypoints)
        for budget in (48, 100, None):
            verify = partial(verify_query, q_kp, db_kp, base, budget)
            ranks, secs = timed(verify, nq)
            name = RANSAC_FULL if budget is None else f"RANSAC ({budget} keypoints)"
            rows.append(Row(name, ranks, secs))
    shipped = shipped_model_dir()
    rows += evaluate_model("shipped tiny", shipped, cache, args, ("list", "win10", "pair"), None)
    commands = {"shipped tiny": read_checkpoint_meta(shipped)["extra"]["training"]["command"]}
    ref_name = rows[-3].name  # the shipped model, list-wise
    recipe = shipped_recipe()
    for name in names:
        folder = models / name
        flags, change = changed_recipe(recipe, name)
        label = "shipped recipe, " + change
        if not is_checkpoint_dir(folder):
            print(f"(no model for '{name}' in {folder}: run with --train)", file=sys.stderr)
            shown = " ".join(["locore train", *flags, "--output", "<output>"])
            commands[label] = f"NOT RUN (no model in --models-dir): {shown}"
            continue
        rows += evaluate_model(label, folder, cache, args, ("list",), ref_name)
        extra = read_checkpoint_meta(folder).get("extra", {})
        commands[label] = extra.get("training", {}).get("command", "?")
    score(rows, base.gnd)
    print(
        f"demo test split: {nq} queries, {len(base.database)} database images, shortlist top "
        f"{SHORTLIST_K}; revisitop medium / hard; ONNX Runtime CPU, threads "
        f"{args.threads or 'default'}; load average at the end {os.getloadavg()[0]:.1f}"
    )
    print(table(rows))
    print("\nModels (locore train commands as their config.json records them):")
    for label, cmd in commands.items():
        print(f"- {label}: `{cmd}`")
    if args.json:
        payload = {
            r.name: {p: [float(v) for v in r.aps[p]] for p in r.aps} | {"ms": r.median_ms}
            for r in rows
        }
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
