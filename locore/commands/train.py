"""``locore train``: train a re-ranker on AMES/LOCORE-layout feature files.

The inputs are four files (``--query-features --db-features --shortlist --ground-truth``) or the
demo train split (``--demo-split train``: the files ``locore demo --split train --prepare``
prints, built on first use in the demo cache). The checkpoint goes to ``--output``, by default
``<user models folder>/<name>`` (:func:`user_models_dir`); the model shipped inside the package
is read-only: an output inside ``locore/assets`` is refused.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from locore.commands.args import add_threads_argument, finite_float, int_at_least, positive_int
from locore.errors import OutputError, UsageError

INPUT_FLAGS = ("query_features", "db_features", "shortlist", "ground_truth")
GLOBAL_FLAGS = ("query_global", "db_global")  # only for models with use_global
DEMO_SPLITS = ("train",)  # training on the test split would report a trained-on benchmark


def user_models_dir() -> Path:
    """Where trained models go by default: ``$XDG_DATA_HOME/locore-edge/models`` (that is
    ``~/.local/share/locore-edge/models``), never inside the installed package."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "locore-edge" / "models"


def refuse_shipped_model(path: Path, flag: str) -> None:
    """Raise :class:`OutputError` when ``path`` is the shipped model's folder or lies inside the
    package's assets folder (``locore/assets``): those files belong to the installed package (with
    an editable install, to the checkout), and every later ``locore demo`` would silently use
    what was written there."""
    from locore.checkpoint_format import shipped_model_dir

    shipped = shipped_model_dir()
    assets = shipped.parent
    real = Path(os.path.realpath(path.expanduser()))
    if real == assets or assets in real.parents:
        suggestion = user_models_dir() / (real.name if real != assets else "my-model")
        raise OutputError(
            f"{flag} {path} is inside the installed package's model folder ({assets}); the "
            f"shipped model is read-only. Write to a folder of your own, e.g. {flag} "
            f"{suggestion}, and use it with `locore demo --model {suggestion}`"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    files = parser.add_argument_group(
        "training set (the four files, or --demo-split train for the demo's train split)"
    )
    files.add_argument("--query-features", type=Path, default=None, help="queries, HDF5")
    files.add_argument("--db-features", type=Path, default=None, help="database, HDF5")
    files.add_argument(
        "--shortlist", type=Path, default=None, help="[2, Nq, K] (sims, ids): .npy or pickle"
    )
    files.add_argument(
        "--ground-truth", type=Path, default=None, help="revisitop gnd pickle (easy/hard/junk)"
    )
    files.add_argument(
        "--query-global",
        type=Path,
        default=None,
        help="query global descriptors, raw float32 [Nq, Dg] (.npy); only for --set "
        "use_global=true (with --demo-split: the demo's VLAD files)",
    )
    files.add_argument(
        "--db-global",
        type=Path,
        default=None,
        help="database global descriptors, raw float32 [N, Dg] (.npy), with --query-global",
    )
    files.add_argument(
        "--demo-split",
        choices=DEMO_SPLITS,
        default=None,
        help="train on the demo benchmark's train split (the files `locore demo --split train "
        "--prepare` prints; built on first use) instead of the four files",
    )
    files.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="demo cache for --demo-split (default: $LOCORE_CACHE/demo or "
        "~/.cache/locore-edge/demo, as `locore demo`)",
    )
    parser.add_argument(
        "--allow-pickle", action="store_true", help="allow loading pickle files (trusted only)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="checkpoint folder to write (default: ~/.local/share/locore-edge/models/<preset>-"
        "<training set>, or under $XDG_DATA_HOME); never inside the installed package",
    )
    parser.add_argument("--preset", default="tiny", choices=("tiny", "small", "base"))
    parser.add_argument(
        "--num-desc", type=positive_int, default=48, help="descriptors per image (48)"
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="optimizer steps in all (600); more than a finished run in --output has extends it",
    )
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
        "--no-resume",
        action="store_true",
        help="start over even if --output holds a run (by default the same options resume it, "
        "a larger --steps extends it, other options are refused)",
    )


def training_recipe(args: argparse.Namespace) -> str:
    """The command that reproduces this run, without the machine's paths: files are named by
    their role (``<query-features>``), every other flag is kept."""
    parts = ["locore train"]
    if args.demo_split is not None:
        parts.append(f"--demo-split {args.demo_split}")
    else:
        for flag in INPUT_FLAGS:
            parts.append(f"--{flag.replace('_', '-')} <{flag.replace('_', '-')}>")
        for flag in GLOBAL_FLAGS:
            if getattr(args, flag, None) is not None:
                parts.append(f"--{flag.replace('_', '-')} <{flag.replace('_', '-')}>")
    parts.append("--output <output>")
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
        checked = dict(overrides)
        if checked.get("use_global") and "global_dim" not in checked:
            checked["global_dim"] = 1  # read from the global descriptor files by training
        LocoreConfig.preset(preset, **checked)
    except (ConfigError, TypeError) as exc:
        raise UsageError(f"--set {' '.join(items)}: {exc}") from exc
    return overrides


def training_files(
    args: argparse.Namespace, use_global: bool = False
) -> tuple[dict[str, Path], bool]:
    """``(role -> file, allow_pickle)`` of the training set: the four flags, or the demo split's
    files (prepared on first use, with ``--num-desc`` descriptors per image; their pickles were
    written by locore itself, so they load). With ``use_global`` also ``query_global`` and
    ``db_global`` (the flags, or the demo's VLAD files)."""
    flags = INPUT_FLAGS + GLOBAL_FLAGS
    given = [f"--{n.replace('_', '-')}" for n in flags if getattr(args, n, None) is not None]
    if args.demo_split is not None:
        if given:
            raise UsageError(
                f"--demo-split {args.demo_split} takes the demo's files; drop {' '.join(given)} "
                "(or drop --demo-split to train on your own files)"
            )
        from locore.runtime.demo import default_cache_dir, prepare_split

        cache = args.cache_dir if args.cache_dir is not None else default_cache_dir()
        demo = prepare_split(args.demo_split, cache, num_desc=max(args.num_desc, 48))
        roles = INPUT_FLAGS + (GLOBAL_FLAGS if use_global else ())
        return {name: getattr(demo, name) for name in roles}, True
    globals_given = [getattr(args, n, None) is not None for n in GLOBAL_FLAGS]
    if any(globals_given) and not use_global:
        raise UsageError(
            "--query-global/--db-global are for models with global descriptors: add --set "
            "use_global=true, or drop them"
        )
    if use_global and not all(globals_given):
        raise UsageError(
            "a model with use_global=true needs --query-global and --db-global (raw float32 "
            "[N, Dg] files of the queries and the database)"
        )
    if args.cache_dir is not None:
        raise UsageError("--cache-dir only applies to --demo-split; drop it")
    missing = [f"--{n.replace('_', '-')}" for n in INPUT_FLAGS if getattr(args, n) is None]
    if missing:
        raise UsageError(
            f"the training set is missing {' '.join(missing)}: give all four of --query-features "
            "--db-features --shortlist --ground-truth, or --demo-split train for the demo's "
            "train split"
        )
    roles = INPUT_FLAGS + (GLOBAL_FLAGS if use_global else ())
    return {name: getattr(args, name) for name in roles}, args.allow_pickle


def default_output(args: argparse.Namespace) -> Path:
    """``<user models folder>/<preset>-<training set>``: the same command gives the same folder,
    so that running it again resumes (or extends) the run."""
    if args.demo_split is not None:
        source = f"demo-{args.demo_split}"
    else:
        folder = Path(os.path.realpath(args.query_features)).parent.name or "features"
        source = folder.replace(os.sep, "-")
    return user_models_dir() / f"{args.preset}-{source}"


def run(args: argparse.Namespace) -> int:
    from locore.commands.args import thread_count
    from locore.fileio import check_outputs

    if args.lr is not None and args.lr <= 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    if args.seed is not None and args.seed >= 2**32:
        raise UsageError(f"--seed must be below 2**32, got {args.seed}")
    threads = thread_count(args.threads)
    overrides = model_overrides(args.set, args.preset)
    if args.output is not None:
        refuse_shipped_model(args.output, "--output")
    user_inputs = {
        f"--{n.replace('_', '-')}": getattr(args, n) for n in INPUT_FLAGS if args.demo_split is None
    }
    check_outputs({}, user_inputs, folders={"--output": args.output})
    if args.demo_split is not None and args.cache_dir is not None:
        check_outputs({}, {}, folders={"--cache-dir": args.cache_dir})

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
    files, allow_pickle = training_files(args, use_global=bool(overrides.get("use_global")))
    output = args.output if args.output is not None else default_output(args)
    if args.output is None:
        check_outputs({}, {}, folders={"--output": output})
    data = TrainingData.from_files(
        files["query_features"],
        files["db_features"],
        files["shortlist"],
        files["ground_truth"],
        num_desc=args.num_desc,
        allow_pickle=allow_pickle,
        skip_empty_queries=True,
        query_global=files.get("query_global"),
        db_global=files.get("db_global"),
    )
    print(
        f"training {cfg.preset} on {data.num_queries - len(data.skipped_queries)} queries, "
        f"{data.num_db_images} database images, {cfg.steps} steps, into {output}"
    )
    result = train(
        data,
        output,
        cfg,
        resume=not args.no_resume,
        provenance={"command": training_recipe(args)},
    )
    if result.new_steps == 0:
        print(
            f"{result.checkpoint} is already trained for {result.steps} steps; nothing written. "
            "Pass a larger --steps to extend it, or --no-resume to start over"
        )
    else:
        tail = result.losses[-20:]
        print(
            f"wrote {result.checkpoint} (final loss {sum(tail) / len(tail):.4f}, "
            f"{result.seconds:.0f} s)"
        )
    print(f"use it: locore demo --model {result.checkpoint}")
    return 0
