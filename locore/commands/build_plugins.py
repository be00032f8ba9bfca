"""``locore build-plugins``: the SelectiveScan CPU library, CUDA kernel and TensorRT plugin."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from locore.commands.args import positive_int, thread_count


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
        "--jobs",
        "-j",
        type=positive_int,
        default=None,
        help="parallel build jobs (default and most: the CPU cores available)",
    )


def run(args: argparse.Namespace) -> int:
    from locore.fileio import check_outputs
    from locore.native import build_plugins
    from locore.native.build import configured_libraries

    jobs = thread_count(args.jobs, "--jobs")
    check_outputs(
        {}, {"--tensorrt-root": args.tensorrt_root}, folders={"--build-dir": args.build_dir}
    )
    out = build_plugins(
        build_dir=args.build_dir,
        tensorrt_root=args.tensorrt_root,
        cuda=False if args.no_cuda else None,
        jobs=jobs,
    )
    ours, leftovers = configured_libraries(out)
    print(f"built native kernels in {out}")
    for path in ours:
        print(f"  {path.name}")
    if leftovers:
        names = ", ".join(p.name for p in leftovers)
        print(f"not part of this build (left by an earlier configuration of {out}): {names}")
    return 0
