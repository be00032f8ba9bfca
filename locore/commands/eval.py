"""``locore eval``: re-rank AMES/LOCORE files and score them on the official protocols.

A thin layer over :func:`locore.runtime.evaluation.evaluate` (protocols, shortlist reordering,
fusion grid on validation queries) and :func:`~locore.runtime.evaluation.write_report` (JSON,
Markdown, precision-recall PNG). ``--write-files DIR --format ames`` also writes the shortlist
and ground truth as read, in the files AMES's and LOCORE's loaders expect.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from locore.commands.args import (
    add_backend_arguments,
    add_progress_argument,
    add_rerank_arguments,
    backend_options,
    int_at_least,
    read_global_inputs,
    rerank_params,
)

INPUT_FLAGS = (
    "query_features",
    "db_features",
    "shortlist",
    "ground_truth",
    "query_labels",
    "db_labels",
    "model",
    "query_global",
    "db_global",
    "val_queries",
)


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from locore.runtime.evaluation import DATASETS, FusionGrid
    from locore.runtime.shortlist import SHORTLIST_FORMATS

    parser.add_argument(
        "--dataset",
        required=True,
        choices=sorted(DATASETS),
        help="protocol: roxford5k/rparis6k(+1m) and revisitop: E/M/H mAP, mP@1/5/10; gldv2: "
        "mAP@100 public/private; sop/inshop/cub: Recall@1/10/100",
    )
    files = parser.add_argument_group("files")
    files.add_argument("--query-features", required=True, type=Path, metavar="Q.h5")
    files.add_argument("--db-features", required=True, type=Path, metavar="DB.h5")
    files.add_argument(
        "--shortlist",
        required=True,
        type=Path,
        metavar="NN",
        help="np.stack((sims, ids)) [2, Nq, K]: .npy, or a .pkl of a numpy array or torch "
        "tensor (needs --allow-pickle; a torch tensor needs torch); id -1 = empty slot",
    )
    files.add_argument(
        "--ground-truth",
        type=Path,
        metavar="GND.pkl",
        help="revisitop gnd pickle (easy/hard/junk, or GLDv2 'ok'); needs --allow-pickle",
    )
    files.add_argument(
        "--query-labels",
        type=Path,
        metavar="FILE",
        help="instead of --ground-truth: class label per query (.npy or text), for sop/inshop/cub",
    )
    files.add_argument("--db-labels", type=Path, metavar="FILE", help="class label per db image")
    files.add_argument(
        "--queries-in-db",
        action="store_true",
        help="query q is database image q (SOP, CUB): it is junk, never its own match",
    )
    files.add_argument(
        "--model", required=True, type=Path, metavar="MODEL", help="exported re-ranker (.onnx)"
    )
    files.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow loading pickle files (they can run code: trusted files only)",
    )
    files.add_argument("--query-global", type=Path, metavar="FILE")
    files.add_argument("--db-global", type=Path, metavar="FILE")
    protocol = parser.add_argument_group("protocol")
    protocol.add_argument(
        "--no-reorder",
        action="store_true",
        help="re-rank shortlists as given; default: junk (and easy, for Hard) moved to the end "
        "first, as AMES/LOCORE evaluate (needed for numbers comparable with the papers)",
    )
    protocol.add_argument(
        "--private-queries",
        type=int_at_least(0),
        default=None,
        help="gldv2: the last N queries are the private split (default 750; 0: no split)",
    )
    grid = parser.add_argument_group("fusion grid (on validation queries only)")
    grid.add_argument("--grid", action="store_true", help="search alpha/temperature")
    default = FusionGrid()
    grid.add_argument(
        "--grid-alphas", type=_floats, default=default.alphas, help="default: %(default)s"
    )
    grid.add_argument(
        "--grid-temperatures",
        type=_floats,
        default=default.temperatures,
        help="default: %(default)s",
    )
    grid.add_argument(
        "--val-queries",
        type=Path,
        metavar="FILE",
        help="validation query indices (.npy or text); they are left out of the reported numbers",
    )
    grid.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="instead of --val-queries: this fraction of the queries, drawn with --seed",
    )
    grid.add_argument("--seed", type=int, default=0)
    out = parser.add_argument_group("outputs")
    out.add_argument(
        "--report",
        type=Path,
        default=Path("locore_eval"),
        metavar="PREFIX",
        help="writes PREFIX.json, PREFIX.md and PREFIX.png (default: %(default)s)",
    )
    out.add_argument("--no-png", action="store_true", help="no precision-recall PNG")
    out.add_argument(
        "--write-files",
        type=Path,
        metavar="DIR",
        help="also write the shortlist and ground truth as read to DIR/nn.pkl and DIR/gnd.pkl",
    )
    out.add_argument(
        "--format",
        choices=SHORTLIST_FORMATS,
        default="ames",
        help="for --write-files: ames = nn as a pickled torch tensor (needs torch), gnd as lists "
        "(what AMES/LOCORE load); numpy = nn as a pickled numpy array (default: %(default)s)",
    )
    add_rerank_arguments(parser)
    parser.add_argument(
        "--clip-scales",
        action="store_true",
        help="clamp scale ids into the model's range instead of failing",
    )
    add_backend_arguments(parser)
    add_progress_argument(parser)


def _labels(path: Path) -> np.ndarray:
    from locore.runtime.evaluation import read_query_indices

    return read_query_indices(path)


def run(args: argparse.Namespace) -> int:
    from locore.errors import UsageError
    from locore.runtime.ames import FeatureFile
    from locore.runtime.backends import create_backend
    from locore.runtime.evaluation import (
        FusionGrid,
        evaluate,
        read_query_indices,
        split_queries,
        write_report,
    )
    from locore.runtime.ground_truth import (
        ground_truth_from_labels,
        read_ground_truth,
        write_ground_truth,
    )
    from locore.runtime.shortlist import read_shortlist, write_shortlist
    from locore.runtime.sliding_windows import Reranker

    if (args.ground_truth is None) == (args.query_labels is None):
        raise UsageError("give either --ground-truth or --query-labels with --db-labels")
    if args.query_labels is not None and args.db_labels is None:
        raise UsageError("--query-labels needs --db-labels")
    if args.val_queries is not None and args.val_fraction is not None:
        raise UsageError("give --val-queries or --val-fraction, not both")
    if args.grid and args.val_queries is None and args.val_fraction is None:
        raise UsageError(
            "--grid searches alpha/temperature on validation queries only: give --val-queries "
            "FILE or --val-fraction F (those queries are left out of the reported numbers)"
        )
    from locore.fileio import check_outputs

    prefix = args.report
    reports = {
        f"--report ({suffix})": prefix.with_name(prefix.name + suffix)
        for suffix in (".json", ".md", ".png")
        if not (suffix == ".png" and args.no_png)
    }
    check_outputs(
        reports,
        {f"--{name.replace('_', '-')}": getattr(args, name) for name in INPUT_FLAGS},
        folders={"--write-files": args.write_files},
    )
    if args.write_files is not None and args.format == "ames":
        from locore.deps import require

        require("torch", "--write-files --format ames (the nn file is a pickled torch tensor)")
    params = rerank_params(args)
    shortlist = read_shortlist(args.shortlist, allow_pickle=args.allow_pickle)
    if args.ground_truth is not None:
        ground_truth = read_ground_truth(args.ground_truth, allow_pickle=args.allow_pickle)
    else:
        qlab, dlab = _labels(args.query_labels), _labels(args.db_labels)
        self_ids = np.arange(qlab.size) if args.queries_in_db else None
        ground_truth = ground_truth_from_labels(qlab, dlab, self_ids)
    val = None
    if args.val_queries is not None:
        val = read_query_indices(args.val_queries)
    elif args.val_fraction is not None:
        val, _ = split_queries(shortlist.num_queries, args.val_fraction, args.seed)
    grid = FusionGrid(args.grid_alphas, args.grid_temperatures) if args.grid else None

    with (
        create_backend(args.model, args.backend, **backend_options(args)) as backend,
        FeatureFile(args.query_features) as queries,
        FeatureFile(args.db_features) as database,
    ):
        reranker = Reranker(backend, params, clip_scales=args.clip_scales)
        query_global, db_global = read_global_inputs(args, reranker)
        report = evaluate(
            args.dataset,
            reranker,
            queries,
            database,
            shortlist,
            ground_truth,
            reorder=not args.no_reorder,
            val_queries=val,
            grid=grid,
            private_queries=args.private_queries,
            query_global=query_global,
            db_global=db_global,
            progress=not args.no_progress,
            model=str(args.model),
        )
    written = write_report(
        report,
        reports["--report (.json)"],
        reports["--report (.md)"],
        reports.get("--report (.png)"),
    )
    if args.write_files is not None:
        folder = args.write_files
        write_shortlist(folder / "nn.pkl", shortlist.sims, shortlist.ids, format=args.format)
        write_ground_truth(folder / "gnd.pkl", ground_truth)
        written["files"] = folder
    print(report.to_markdown(), end="")
    print("written: " + ", ".join(str(p) for p in written.values()))
    return 0
