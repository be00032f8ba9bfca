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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# ONNX Runtime device -> the ``providers`` option of the ONNX Runtime backend
DEVICES: dict[str, Any] = {"cpu": None, "cuda": ["cuda"], "auto": "auto"}


def _locore_defaults() -> dict[str, Any]:
    from locore.runtime.sliding_windows import RerankParams

    return {f.name: f.default for f in dataclasses.fields(RerankParams)}


# alpha and temperature default to None, so that a checkpoint's recorded fusion can take their place
FUSION_FLAGS = ("alpha", "temperature")


def add_rerank_arguments(parser: argparse.ArgumentParser, *, with_topk: bool = True) -> None:
    """--topk --window --stride --order --alpha --temperature (defaults: LOCORE's)."""
    from locore.runtime.sliding_windows import ORDERS

    # flag -> (argparse keywords other than the default, help without the default)
    flags: dict[str, tuple[dict[str, Any], str]] = {
        "topk": ({"type": int}, "re-rank the top K of each shortlist"),
        "window": ({"type": int}, "gallery images per model call"),
        "stride": ({"type": int}, "positions between window starts, <= window"),
        "order": ({"choices": ORDERS}, "order of the windows"),
        "alpha": ({"type": float}, "weight of the global similarity in the fused score"),
        "temperature": ({"type": float}, "t in sigmoid(t * logit)"),
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
    checkpoint's recorded ``alpha``/``temperature``, used when the flags are unset)."""
    from locore.runtime.sliding_windows import RerankParams

    d = _locore_defaults()
    recorded = fusion or {}

    def fused(name: str) -> float:
        """A fusion flag's value: the flag, else the checkpoint's, else LOCORE's."""
        value = getattr(args, name)
        return float(value if value is not None else recorded.get(name, d[name]))

    return RerankParams(
        window=args.window,
        topk=topk if topk is not None else args.topk,
        stride=args.stride,
        order=args.order,
        alpha=fused("alpha"),
        temperature=fused("temperature"),
    )


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
    group.add_argument(
        "--threads",
        type=int,
        default=None,
        help="ONNX Runtime intra-op threads (default: all cores)",
    )


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword options of :func:`locore.runtime.backends.create_backend` from the engine group."""
    if args.backend == "tensorrt":
        return {}
    return {"providers": DEVICES[args.device], "threads": args.threads}


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """--no-progress (alias --quiet): no progress bars."""
    parser.add_argument(
        "--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar"
    )


def output_path(path: Path, suffix: str, flag: str) -> Path:
    """``path`` if it ends in ``suffix``; a ValueError naming ``flag`` otherwise."""
    if path.suffix != suffix:
        raise ValueError(f"{flag} must be a {suffix} file, got {path}")
    return path
