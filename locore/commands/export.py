"""``locore export``: checkpoint folder -> ONNX (portable or plugin flavor).

Everything that can be checked without torch is checked before the export starts (it takes
tens of seconds): the output path, the checkpoint's config.json, the ``--config`` match.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from locore.commands.args import positive_int
from locore.config import LocoreConfig
from locore.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder")
    parser.add_argument("--output", required=True, type=Path, help="ONNX file to write")
    parser.add_argument(
        "--flavor",
        choices=("portable", "plugin"),
        default="portable",
        help="portable: standard ONNX ops (any runtime); plugin: locore::SelectiveScan nodes "
        "for the TensorRT plugin (default: portable)",
    )
    parser.add_argument("--opset", type=positive_int, default=None, help="ONNX opset (default 18)")
    parser.add_argument(
        "--max-gallery",
        type=positive_int,
        default=None,
        help="largest gallery count G (default 512)",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="expected config.json; export refuses a mismatch"
    )
    parser.add_argument("--token-logits", action="store_true", help="also output per-token logits")


def _check_config(checkpoint: Path, path: Path) -> LocoreConfig:
    """The ``--config`` file's LocoreConfig, refused (UsageError) when it does not match the
    checkpoint's own config.json (read without torch)."""
    from locore.checkpoint_format import read_checkpoint_config

    expected = LocoreConfig.load(path)
    actual, _ = read_checkpoint_config(checkpoint)
    if expected != actual:
        diff = ", ".join(
            f"{k}: config {v!r} vs checkpoint {getattr(actual, k)!r}"
            for k, v in expected.to_dict().items()
            if getattr(actual, k) != v
        )
        raise UsageError(
            f"--config {path} does not match the checkpoint's config ({diff}). Export the "
            "checkpoint with its own config.json (omit --config)"
        )
    return expected


def run(args: argparse.Namespace) -> int:
    from locore.checkpoint_format import read_checkpoint_meta
    from locore.fileio import check_outputs

    check_outputs(
        {"--output": args.output}, {"--checkpoint": args.checkpoint, "--config": args.config}
    )
    read_checkpoint_meta(args.checkpoint)  # a missing or corrupt config.json fails here, fast
    expected = _check_config(args.checkpoint, args.config) if args.config is not None else None

    from locore.export import DEFAULT_OPSET, export_onnx
    from locore.export.onnx_export import DEFAULT_MAX_GALLERY

    result = export_onnx(
        args.checkpoint,
        args.output,
        flavor=args.flavor,
        opset=args.opset if args.opset is not None else DEFAULT_OPSET,
        max_gallery=args.max_gallery if args.max_gallery is not None else DEFAULT_MAX_GALLERY,
        with_token_logits=args.token_logits,
        config=expected,
    )
    scans = result.op_counts.get("locore::SelectiveScan", 0)
    print(
        f"wrote {result.path} ({result.flavor} flavor, {sum(result.op_counts.values())} nodes"
        f"{f', {scans} SelectiveScan plugin nodes' if scans else ''})"
    )
    print("inputs:  " + ", ".join(f"{s.name}{list(s.shape)}" for s in result.io.inputs))
    print("outputs: " + ", ".join(f"{s.name}{list(s.shape)}" for s in result.io.outputs))
    return 0
