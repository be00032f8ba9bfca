"""``locore train``: train a re-ranker on AMES/LOCORE-layout feature files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from locore.commands.args import add_threads_argument, finite_float, int_at_least, positive_int
from locore.errors import UsageError

INPUT_FLAGS = ("query_features", "db_features", "shortlist", "ground_truth")


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
    parser.add_argument(
        "--num-desc", type=positive_int, default=48, help="descriptors per image (48)"
    )
    parser.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (600)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=None, help="samples per step (8)"
    )
    parser.add_argument(
        "--window", type=positive_int, default=None, help="gallery images per sample (32)"
    )
    parser.add_argument("--lr", type=finite_float, default=None, help="learning rate, > 0 (2e-3)")
    parser.add_argument(
        "--seed", type=int_at_least(0), default=None, help="random seed, 0 .. 2**32 - 1 (0)"
    )
    add_threads_argument(parser, "torch threads")
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


# set from the feature files (desc_dim) or by their own flag (num_desc: --num-desc)
NOT_SETTABLE = {"desc_dim": "it is read from the feature files", "num_desc": "use --num-desc"}


def model_overrides(items: list[str], preset: str = "tiny") -> dict[str, Any]:
    """``--set KEY=VALUE`` items -> model config overrides (:func:`locore.config.parse_overrides`:
    VALUE is JSON, else a string), checked by building the config; any problem (no ``=``, an
    unknown key, a value of the wrong type, a config the values make invalid) is a
    :class:`UsageError` naming ``--set``."""
    from locore.config import ConfigError, LocoreConfig, parse_overrides

    for item in items:
        key = item.partition("=")[0].strip()
        if key in NOT_SETTABLE:
            raise UsageError(f"--set {item}: {key} cannot be set here; {NOT_SETTABLE[key]}")
    try:
        overrides = parse_overrides(items)
        LocoreConfig.preset(preset, **overrides)
    except (ConfigError, TypeError) as exc:
        raise UsageError(f"--set {' '.join(items)}: {exc}") from exc
    return overrides


def run(args: argparse.Namespace) -> int:
    from locore.commands.args import thread_count
    from locore.fileio import check_outputs

    if args.lr is not None and args.lr <= 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    if args.seed is not None and args.seed >= 2**32:
        raise UsageError(f"--seed must be below 2**32, got {args.seed}")
    threads = thread_count(args.threads)
    overrides = model_overrides(args.set, args.preset)
    check_outputs(
        {},
        {f"--{name.replace('_', '-')}": getattr(args, name) for name in INPUT_FLAGS},
        folders={"--output": args.output},
    )

    from locore.model.training import TrainConfig, TrainingData, train

    cfg = TrainConfig()
    for name in ("steps", "batch_size", "window", "lr", "seed"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    if threads is not None:
        cfg.threads = threads
    cfg.preset = args.preset
    cfg.model_overrides.update(overrides)
    cfg.validate()  # every value a run can use, before the feature files are read
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
    loss = f"final loss {sum(tail) / len(tail):.4f}" if tail else "no new steps: already trained"
    print(f"wrote {result.checkpoint} ({loss}, {result.seconds:.0f} s)")
    return 0
