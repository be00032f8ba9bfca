"""``locore train``: train a re-ranker on AMES/LOCORE-layout feature files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--query-features", required=True, type=Path, help="queries, HDF5")
    parser.add_argument("--db-features", required=True, type=Path, help="database, HDF5")
    parser.add_argument(
        "--shortlist", required=True, type=Path, help="[2, Nq, K] (sims, ids): .npy or pickle"
    )
    parser.add_argument(
        "--ground-truth", required=True, type=Path, help="revisitop gnd pickle (easy/hard/junk)"
    )
    parser.add_argument(
        "--allow-pickle", action="store_true", help="allow loading pickle files (trusted only)"
    )
    parser.add_argument("--output", required=True, type=Path, help="checkpoint folder to write")
    parser.add_argument("--preset", default="tiny", choices=("tiny", "small", "base"))
    parser.add_argument("--num-desc", type=int, default=48, help="descriptors per image (48)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--window", type=int, default=None, help="gallery images per sample")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model config override, e.g. --set num_scales=8 (repeatable)",
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="start over even if a train_state exists"
    )


def training_recipe(args: argparse.Namespace) -> str:
    """The command that reproduces this run, without the machine's paths: files are named by
    their role (``<query-features>``), every other flag is kept."""
    parts = ["locore train"]
    for flag in ("query_features", "db_features", "shortlist", "ground_truth", "output"):
        parts.append(f"--{flag.replace('_', '-')} <{flag.replace('_', '-')}>")
    if args.allow_pickle:
        parts.append("--allow-pickle")
    parts.append(f"--preset {args.preset}")
    if args.num_desc != 48:
        parts.append(f"--num-desc {args.num_desc}")
    for name in ("steps", "batch_size", "window", "lr", "seed", "threads"):
        value = getattr(args, name)
        if value is not None:
            parts.append(f"--{name.replace('_', '-')} {value}")
    parts += [f"--set {item}" for item in args.set]
    if args.no_resume:
        parts.append("--no-resume")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    from locore.model.training import TrainConfig, TrainingData, train

    cfg = TrainConfig()
    for name in ("steps", "batch_size", "window", "lr", "seed", "threads"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    cfg.preset = args.preset
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        cfg.model_overrides[key] = json.loads(value)
    data = TrainingData.from_files(
        args.query_features,
        args.db_features,
        args.shortlist,
        args.ground_truth,
        num_desc=args.num_desc,
        allow_pickle=args.allow_pickle,
    )
    print(
        f"training {cfg.preset} on {data.num_queries} queries, "
        f"{data.num_db_images} database images, {cfg.steps} steps"
    )
    result = train(
        data,
        args.output,
        cfg,
        resume=not args.no_resume,
        provenance={"command": training_recipe(args)},
    )
    tail = result.losses[-20:]
    print(
        f"wrote {result.checkpoint} (final loss {sum(tail) / max(len(tail), 1):.4f}, "
        f"{result.seconds:.0f} s)"
    )
    return 0
