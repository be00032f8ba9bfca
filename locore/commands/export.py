"""``locore export``: checkpoint folder -> ONNX (portable or plugin flavor)."""

from __future__ import annotations

import argparse
from pathlib import Path


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
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    parser.add_argument(
        "--max-gallery", type=int, default=None, help="largest gallery count G (default 512)"
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="expected config.json; export refuses a mismatch"
    )
    parser.add_argument("--token-logits", action="store_true", help="also output per-token logits")


def run(args: argparse.Namespace) -> int:
    from locore.config import LocoreConfig
    from locore.export import DEFAULT_OPSET, export_onnx
    from locore.export.onnx_export import DEFAULT_MAX_GALLERY

    expected = None
    if args.config is not None:
        expected = LocoreConfig.load(args.config)
    result = export_onnx(
        args.checkpoint,
        args.output,
        flavor=args.flavor,
        opset=args.opset or DEFAULT_OPSET,
        max_gallery=args.max_gallery or DEFAULT_MAX_GALLERY,
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
