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


def add_rerank_arguments(parser: argparse.ArgumentParser, *, with_topk: bool = True) -> None:
    """--topk --window --stride --order --alpha --temperature (defaults: LOCORE's)."""
    from locore.runtime.sliding_windows import ORDERS

    d = _locore_defaults()
    group = parser.add_argument_group("re-ranking (defaults: LOCORE's evaluation)")
    if with_topk:
        group.add_argument(
            "--topk",
            type=int,
            default=d["topk"],
            help="re-rank the top K of each shortlist (default %(default)s)",
        )
    group.add_argument(
        "--window",
        type=int,
        default=d["window"],
        help="gallery images per model call (default %(default)s)",
    )
    group.add_argument(
        "--stride",
        type=int,
        default=d["stride"],
        help="positions between window starts, <= window (default %(default)s)",
    )
    group.add_argument(
        "--order",
        choices=ORDERS,
        default=d["order"],
        help="order of the windows (default %(default)s)",
    )
    group.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="weight of the global similarity in the fused score (default: the checkpoint's "
        f"tuned value, else {d['alpha']})",
    )
    group.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="t in sigmoid(t * logit) (default: the checkpoint's tuned value, else "
        f"{d['temperature']})",
    )


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
    fusion = fusion or {}
    alpha = args.alpha if args.alpha is not None else fusion.get("alpha", d["alpha"])
    temperature = args.temperature
    if temperature is None:
        temperature = fusion.get("temperature", d["temperature"])
    return RerankParams(
        window=args.window,
        topk=topk if topk is not None else args.topk,
        stride=args.stride,
        order=args.order,
        alpha=float(alpha),
        temperature=float(temperature),
    )


def add_backend_arguments(
    parser: argparse.ArgumentParser, *, with_kind: bool = True, with_device: bool = True
) -> None:
    """--backend --device --threads."""
    group = parser.add_argument_group("engine")
    if with_kind:
        from locore.runtime.backends import BACKEND_KINDS

        group.add_argument(
            "--backend",
            choices=BACKEND_KINDS,
            default="auto",
            help="inference backend (default: by the model's file suffix)",
        )
    if with_device:
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
    if getattr(args, "backend", "auto") == "tensorrt":
        return {}
    return {"providers": DEVICES[getattr(args, "device", "cpu")], "threads": args.threads}


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
