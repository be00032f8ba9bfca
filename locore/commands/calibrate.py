"""``locore calibrate``: the FP16 or INT8 (Q/DQ) variant of an exported FP32 ONNX model.

A thin layer over :func:`locore.calibration.calibrate`: TensorRT 10/11 build strongly typed
networks whose precisions come from the ONNX file, so precision is made here, in a new ONNX file
of the same flavor, and measured with ONNX Runtime on the CPU (``--report``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from locore.commands.args import (
    add_progress_argument,
    add_threads_argument,
    positive_int,
    thread_count,
)

PRECISIONS = ("fp16", "int8")
METHODS = ("minmax", "entropy", "percentile")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, type=Path, help="FP32 model from `locore export`")
    parser.add_argument("--precision", required=True, choices=PRECISIONS, help="what to make")
    parser.add_argument("--output", required=True, type=Path, help="ONNX file to write")
    parser.add_argument(
        "--calib",
        type=Path,
        default=None,
        help="calibration set (.npz) for int8 (default: drawn from the feature files below, "
        "or from the demo's train split)",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="minmax",
        help="activation range of int8: minmax, entropy (TensorRT's KL search) or percentile "
        "(99.99) (default: minmax)",
    )
    parser.add_argument("--report", type=Path, default=None, help="folder for the accuracy report")
    files = parser.add_argument_group("calibration set from AMES/LOCORE files (int8)")
    files.add_argument("--query-features", type=Path, default=None, help="query features (HDF5)")
    files.add_argument("--db-features", type=Path, default=None, help="database features (HDF5)")
    files.add_argument("--shortlist", type=Path, default=None, help="shortlist (.npy or pickle)")
    files.add_argument("--allow-pickle", action="store_true", help="allow a pickled shortlist")
    files.add_argument("--windows", type=positive_int, default=None, help="windows N (default 32)")
    files.add_argument("--window", type=positive_int, default=None, help="gallery W (default 48)")
    files.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    files.add_argument("--save-calib", type=Path, default=None, help="write the drawn set (.npz)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="demo cache folder")
    add_threads_argument(parser, "ONNX Runtime threads")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    from locore.errors import UsageError
    from locore.fileio import check_outputs

    given = [args.query_features, args.db_features, args.shortlist]
    if any(p is not None for p in given) and not all(p is not None for p in given):
        raise UsageError(
            "give --query-features, --db-features and --shortlist together (or none: the demo's "
            "train split)"
        )
    check_outputs(
        {"--output": args.output, "--save-calib": args.save_calib},
        {
            "--onnx": args.onnx,
            "--calib": args.calib,
            "--query-features": args.query_features,
            "--db-features": args.db_features,
            "--shortlist": args.shortlist,
        },
        folders={"--report": args.report},
    )
    from locore.calibration import (
        DEFAULT_NUM_WINDOWS,
        DEFAULT_WINDOW,
        CalibrationSet,
        build_calibration_set,
        calibrate,
        demo_calibration_set,
        read_metadata,
    )

    threads = thread_count(args.threads)
    calib: Path | CalibrationSet | None = args.calib
    if args.precision == "int8" and calib is None and (args.shortlist or args.save_calib):
        config, io = read_metadata(args.onnx)
        sizes = {
            "num_windows": args.windows or DEFAULT_NUM_WINDOWS,
            "window": args.window or DEFAULT_WINDOW,
            "seed": args.seed,
        }
        drawn: CalibrationSet
        if args.shortlist is not None:
            drawn = build_calibration_set(
                config, args.query_features, args.db_features, args.shortlist,
                allow_pickle=args.allow_pickle, input_specs=io.inputs if io else None, **sizes,
            )  # fmt: skip
        else:
            drawn = demo_calibration_set(
                config, cache_dir=args.cache_dir, progress=not args.no_progress, **sizes
            )
        if args.save_calib is not None:
            drawn.save(args.save_calib)
            print(f"wrote calibration set {args.save_calib} ({drawn.num_windows} windows)")
        calib = drawn
    result = calibrate(
        args.onnx, args.output, args.precision, calib=calib, method=args.method,
        report=args.report, threads=threads, cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )  # fmt: skip
    what = f"{result.precision}" + (f", {result.method} ranges" if result.method else "")
    layers = len(result.dense_layers)
    print(f"wrote {result.path} ({what}, {result.flavor} flavor, {layers} dense layers)")
    if result.report is not None:
        print((result.report.parent / "report.md").read_text(), end="")
        print(f"report: {result.report}")
    return 0
