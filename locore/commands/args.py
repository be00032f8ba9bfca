"""Argument groups shared by several commands, with one set of defaults.

Re-ranking defaults are LOCORE's evaluation settings, stated once in
:class:`locore.runtime.sliding_windows.RerankParams` (window 100, stride 50, top 400,
end-to-start, alpha 0.5, temperature 0.1). ``--alpha`` / ``--temperature`` left unset take the
fusion a checkpoint records (``extra.fusion``, e.g. the shipped model's values tuned on the demo
train split), else LOCORE's.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from locore.errors import OutputError, UsageError

# ONNX Runtime device -> the ``providers`` option of the ONNX Runtime backend
DEVICES: dict[str, Any] = {"cpu": None, "cuda": ["cuda"], "auto": "auto"}


def _locore_defaults() -> dict[str, Any]:
    from locore.runtime.sliding_windows import RerankParams

    return {f.name: f.default for f in dataclasses.fields(RerankParams)}


# ---- argument types: a bad value is argparse's usage error (exit 2) naming the flag --------------
def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= low`` (e.g. ``--steps 0`` -> "must be >= 1")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


positive_int = int_at_least(1)


def finite_float(text: str) -> float:
    """An argparse ``type``: a finite float (no nan / inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def thread_count(value: int | None, flag: str = "--threads") -> int | None:
    """``value`` bounded by the machine: None stays None (the library's default: all cores);
    below 1 is a :class:`UsageError`; above the cores available it is clamped to them, with a
    warning on stderr (more threads than cores only slows ONNX Runtime and torch down, and
    thousands of threads can stall the machine)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{flag} must be an integer >= 1, got {value!r}")
    cores = available_cores()
    if value > cores:
        print(
            f"locore: warning: {flag} {value} is more than the {cores} CPU cores available to "
            f"this process; using {cores}",
            file=sys.stderr,
        )
        return cores
    return value


def add_threads_argument(parser: Any, help_text: str = "intra-op threads") -> None:
    """--threads N (>= 1; clamped to the cores available, see :func:`thread_count`)."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help=f"{help_text} (default: all cores; more than the machine has is clamped to it)",
    )


# alpha and temperature default to None, so that a checkpoint's recorded fusion can take their place
FUSION_FLAGS = ("alpha", "temperature")


def add_rerank_arguments(parser: argparse.ArgumentParser, *, with_topk: bool = True) -> None:
    """--topk --window --stride --order --alpha --temperature (defaults: LOCORE's)."""
    from locore.runtime.sliding_windows import ORDERS

    # flag -> (argparse keywords other than the default, help without the default)
    flags: dict[str, tuple[dict[str, Any], str]] = {
        "topk": ({"type": positive_int}, "re-rank the top K of each shortlist"),
        "window": ({"type": positive_int}, "gallery images per model call"),
        "stride": ({"type": positive_int}, "positions between window starts, <= window"),
        "order": ({"choices": ORDERS}, "order of the windows"),
        "alpha": ({"type": finite_float}, "weight of the global similarity, in [0, 1]"),
        "temperature": ({"type": finite_float}, "t in sigmoid(t * logit)"),
    }
    if not with_topk:
        del flags["topk"]
    d = _locore_defaults()
    group = parser.add_argument_group("re-ranking (defaults: LOCORE's evaluation)")
    for name, (options, text) in flags.items():
        if name in FUSION_FLAGS:
            default, note = None, f": the checkpoint's tuned value, else {d[name]}"
        else:
            default, note = d[name], " %(default)s"
        group.add_argument(f"--{name}", default=default, help=f"{text} (default{note})", **options)


def rerank_params(
    args: argparse.Namespace,
    *,
    topk: int | None = None,
    fusion: Mapping[str, float] | None = None,
) -> Any:
    """The :class:`RerankParams` of ``args`` (``topk`` overrides ``--topk``; ``fusion`` is a
    checkpoint's recorded ``alpha``/``temperature``, used when the flags are unset).

    An invalid combination (e.g. ``--stride`` above ``--window``) is a :class:`UsageError`."""
    from locore.runtime.sliding_windows import RerankParams

    d = _locore_defaults()
    recorded = fusion or {}

    def fused(name: str) -> float:
        """A fusion flag's value: the flag, else the checkpoint's, else LOCORE's."""
        value = getattr(args, name)
        return float(value if value is not None else recorded.get(name, d[name]))

    try:
        return RerankParams(
            window=args.window,
            topk=topk if topk is not None else args.topk,
            stride=args.stride,
            order=args.order,
            alpha=fused("alpha"),
            temperature=fused("temperature"),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend --device --threads."""
    from locore.runtime.backends import BACKEND_KINDS

    group = parser.add_argument_group("engine")
    group.add_argument(
        "--backend",
        choices=BACKEND_KINDS,
        default="auto",
        help="inference backend (default: by the model's file suffix)",
    )
    group.add_argument(
        "--device",
        choices=sorted(DEVICES),
        default="cpu",
        help="ONNX Runtime device (default %(default)s; cuda needs onnxruntime-gpu)",
    )
    add_threads_argument(group, "ONNX Runtime intra-op threads")


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword options of :func:`locore.runtime.backends.create_backend` from the engine group.

    TensorRT (``--backend tensorrt``, or ``auto`` on a ``.plan``/``.engine``/``.trt`` file) takes
    no ONNX Runtime options; an ONNX model it builds through the engine cache gets a profile up to
    ``--window`` (when the command has one).
    """
    from locore.runtime.backends import backend_kind_for

    model = getattr(args, "model", None)
    kind = args.backend if args.backend != "auto" or model is None else backend_kind_for(model)
    if kind == "tensorrt":
        window = getattr(args, "window", None)
        return {"window": window} if window else {}
    return {"providers": DEVICES[args.device], "threads": thread_count(args.threads)}


def read_global_inputs(args: argparse.Namespace, reranker: Any) -> tuple[Any, Any]:
    """(query, database) global descriptors from ``--query-global`` / ``--db-global`` when the
    model of ``reranker`` takes them, else ``(None, None)``."""
    if not reranker.packer.with_global:
        return None, None
    if args.query_global is None or args.db_global is None:
        raise UsageError(
            f"{args.model} uses global descriptors: give --query-global and --db-global"
        )
    from locore.runtime.global_descriptors import read_global_descriptors

    dim = reranker.backend.config.global_dim
    return (
        read_global_descriptors(args.query_global, dim=dim),
        read_global_descriptors(args.db_global, dim=dim),
    )


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """--no-progress (alias --quiet): no progress bars."""
    parser.add_argument(
        "--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar"
    )


def output_path(path: Path, suffix: str, flag: str) -> Path:
    """``path`` if it ends in ``suffix``; an :class:`OutputError` naming ``flag`` otherwise."""
    if path.suffix != suffix:
        raise OutputError(f"{flag} must be a {suffix} file, got {path}")
    return path
