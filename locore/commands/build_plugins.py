"""``locore build-plugins``: the SelectiveScan CPU library, CUDA kernel and TensorRT plugin."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=None,
        help="CMake build folder (default: <repo>/build/plugins, or ~/.cache/locore-edge/plugins "
        "when the checkout is read-only)",
    )
    parser.add_argument(
        "--tensorrt-root",
        type=Path,
        default=os.environ.get("TENSORRT_ROOT") or None,
        help="TensorRT install folder (include/, lib/) to also build the TensorRT plugin "
        "(default: $TENSORRT_ROOT)",
    )
    parser.add_argument(
        "--no-cuda", action="store_true", help="build the CPU library only (skip the CUDA kernel)"
    )
    parser.add_argument(
        "--jobs", "-j", type=int, default=None, help="parallel build jobs (default: CPU count)"
    )


def run(args: argparse.Namespace) -> int:
    from locore.native import build_plugins

    out = build_plugins(
        build_dir=args.build_dir,
        tensorrt_root=args.tensorrt_root,
        cuda=False if args.no_cuda else None,
        jobs=args.jobs,
    )
    print(f"built native kernels in {out}")
    for path in sorted(out.glob("*locore*")):
        if path.is_file() and path.suffix in (".so", ".dylib", ".dll", ".a", ".lib"):
            print(f"  {path.name}")
    return 0
