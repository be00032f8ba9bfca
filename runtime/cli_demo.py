"""``locore demo``: the built-in real-photo benchmark, end to end (see locore.runtime.demo)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the demo data, features and exported model are cached "
        "(default: $LOCORE_CACHE/demo or ~/.cache/locore-edge/demo)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="ONNX file or checkpoint folder (default: the shipped model)",
    )
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--shortlist", type=int, default=100, help="shortlist length K (100)")
    parser.add_argument("--window", type=int, default=100, help="images per window (100)")
    parser.add_argument("--stride", type=int, default=50, help="window stride (50)")
    parser.add_argument("--alpha", type=float, default=None, help="fusion weight of global sim")
    parser.add_argument("--temperature", type=float, default=None, help="logit temperature")
    parser.add_argument("--no-ransac", action="store_true", help="skip the RANSAC baseline")
    parser.add_argument(
        "--picture",
        type=Path,
        default=Path("locore_demo.png"),
        help="PNG of one query before/after re-ranking (locore_demo.png)",
    )
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="only build the split's feature files (AMES layout) and print "
        "their paths, e.g. for `locore train` on --split train",
    )
    parser.add_argument(
        "--tune-fusion",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="pick alpha/temperature on the TRAIN split for this checkpoint "
        "folder and store them in its config.json (used by later demo runs)",
    )
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from locore.fileio import atomic_write_text
    from locore.runtime.demo import prepare_split, run_demo

    progress = not args.no_progress
    if args.tune_fusion is not None:
        return _tune(args.tune_fusion, args, progress)
    if args.prepare:
        files = prepare_split(
            args.split, args.cache_dir, shortlist_k=args.shortlist, progress=progress
        )
        for name in (
            "query_features",
            "db_features",
            "query_global",
            "db_global",
            "shortlist",
            "ground_truth",
        ):
            print(f"{name:15s} {getattr(files, name)}")
        return 0
    report = run_demo(
        args.cache_dir,
        model=args.model,
        split=args.split,
        shortlist_k=args.shortlist,
        window=args.window,
        stride=args.stride,
        alpha=args.alpha,
        temperature=args.temperature,
        ransac=not args.no_ransac,
        picture=args.picture,
        max_queries=args.max_queries,
        threads=args.threads,
        progress=progress,
    )
    print(report.table())
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


def _tune(checkpoint: Path, args: argparse.Namespace, progress: bool) -> int:
    from locore.fileio import atomic_write_text
    from locore.runtime.demo import default_cache_dir, export_for_demo, prepare_split, tune_fusion

    cache = args.cache_dir or default_cache_dir()
    files = prepare_split("train", cache, shortlist_k=args.shortlist, progress=progress)
    onnx_path = export_for_demo(checkpoint, cache)
    alpha, temperature, train_map = tune_fusion(files, onnx_path, shortlist_k=args.shortlist)
    meta_path = checkpoint / "config.json"
    meta = json.loads(meta_path.read_text())
    meta.setdefault("extra", {})["fusion"] = {
        "alpha": alpha,
        "temperature": temperature,
        "train_split_map": round(train_map, 4),
        "tuned_on": "demo train split (locore demo --tune-fusion)",
    }
    atomic_write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(
        f"alpha={alpha} temperature={temperature} (train-split mAP {100 * train_map:.1f}); "
        f"written to {meta_path}"
    )
    return 0
