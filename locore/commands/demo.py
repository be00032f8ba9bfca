"""``locore demo``: the built-in real-photo benchmark, end to end (see locore.runtime.demo).

The command layer does what the torch-free runtime may not: it exports a checkpoint folder (the
shipped model by default) to ONNX on first use and reads the fusion values the checkpoint
records; :func:`locore.runtime.demo.run_demo` gets the ONNX file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from locore.commands.args import (
    add_progress_argument,
    add_rerank_arguments,
    add_threads_argument,
    positive_int,
    rerank_params,
    thread_count,
)
from locore.errors import UsageError


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
        help="ONNX file or checkpoint folder, e.g. one `locore train` wrote (exported to ONNX "
        "on first use, cached; default: the shipped model)",
    )
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument(
        "--shortlist",
        type=positive_int,
        default=100,
        help="shortlist length K, all re-ranked (100)",
    )
    add_rerank_arguments(parser, with_topk=False)
    parser.add_argument("--no-ransac", action="store_true", help="skip the two RANSAC baselines")
    parser.add_argument(
        "--picture",
        type=Path,
        default=Path("locore_demo.png"),
        help="PNG of one query before/after re-ranking (locore_demo.png)",
    )
    parser.add_argument(
        "--max-queries", type=positive_int, default=None, help="score only the first N queries"
    )
    add_threads_argument(parser, "ONNX Runtime threads")
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
        "folder (one of yours: the shipped model is read-only) and store them in its "
        "config.json (used by later `locore demo --model CHECKPOINT` runs)",
    )
    add_progress_argument(parser)


def _onnx_and_fusion(model: Path, cache: Path) -> tuple[Path, dict[str, float]]:
    """(ONNX file, recorded fusion) of ``model``: an ONNX file, or a checkpoint folder that is
    exported (cached under ``cache/models``)."""
    from locore.checkpoint_format import checkpoint_fusion, is_checkpoint_dir

    if not is_checkpoint_dir(model):
        return model, {}
    try:
        from locore.export import cached_export
    except ImportError as exc:
        from locore.deps import MissingDependencyError

        raise MissingDependencyError(
            f"the demo exports the checkpoint {model} to ONNX on first use, which needs torch: "
            f"pip install 'locore-edge[export]' ({exc})"
        ) from exc
    return cached_export(model, cache / "models"), checkpoint_fusion(model)


def run(args: argparse.Namespace) -> int:
    from locore.checkpoint_format import shipped_model_dir
    from locore.fileio import check_outputs
    from locore.runtime.demo import default_cache_dir, prepare_split, run_demo

    progress = not args.no_progress
    cache = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    args.threads = thread_count(args.threads)
    if args.tune_fusion is not None:
        from locore.commands.train import refuse_shipped_model

        refuse_shipped_model(args.tune_fusion, "--tune-fusion")
    folders = {"--cache-dir": cache, "--tune-fusion": args.tune_fusion}
    outputs = {}
    if args.tune_fusion is None and not args.prepare:
        outputs = {"--picture": args.picture, "--json": args.json}
    check_outputs(outputs, {"--model": args.model}, folders=folders)
    if args.tune_fusion is not None:
        return _tune(args.tune_fusion, cache, args, progress)
    if args.prepare:
        files = prepare_split(args.split, cache, shortlist_k=args.shortlist, progress=progress)
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
    model = args.model if args.model is not None else shipped_model_dir()
    onnx_path, fusion = _onnx_and_fusion(model, cache)
    report = run_demo(
        onnx_path,
        cache,
        split=args.split,
        shortlist_k=args.shortlist,
        params=rerank_params(args, topk=args.shortlist, fusion=fusion),
        ransac=not args.no_ransac,
        picture=args.picture,
        max_queries=args.max_queries,
        threads=args.threads,
        progress=progress,
    )
    print(report.table())
    if args.json is not None:
        from locore.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


def _tune(checkpoint: Path, cache: Path, args: argparse.Namespace, progress: bool) -> int:
    from locore.checkpoint_format import FUSION_KEY, is_checkpoint_dir, update_checkpoint_extra
    from locore.runtime.demo import tune_fusion

    if not is_checkpoint_dir(checkpoint):
        raise UsageError(f"--tune-fusion needs a checkpoint folder, got {checkpoint}")
    onnx_path, _ = _onnx_and_fusion(checkpoint, cache)
    alpha, temperature, train_map = tune_fusion(
        onnx_path, cache, shortlist_k=args.shortlist, threads=args.threads, progress=progress
    )
    path = update_checkpoint_extra(
        checkpoint,
        FUSION_KEY,
        {
            "alpha": alpha,
            "temperature": temperature,
            "train_split_map": round(train_map, 4),
            "tuned_on": "demo train split (locore demo --tune-fusion)",
        },
    )
    print(
        f"alpha={alpha} temperature={temperature} (train-split mAP {100 * train_map:.1f}); "
        f"written to {path}"
    )
    return 0
