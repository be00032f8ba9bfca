"""FP32 vs FP16 vs INT8 (Q/DQ) of the shipped model and a random-weight `small` model.

For each model: export the FP32 ONNX (portable flavor unless --flavor plugin), make its FP16 and
INT8 variants with `locore.calibration.calibrate` (INT8 ranges from a calibration set drawn from
the demo's TRAIN split), then report on held-out windows of the demo's TEST split: max / mean
absolute score error, per-window Kendall tau and top-10 overlap against FP32, mAP on the demo
test split (portable flavor), per-window latency in ONNX Runtime CPU for the three precisions
timed in turn in one run (with ratios to FP32), what ONNX Runtime's CPU provider made of the
variants (integer MatMuls fused from Q/DQ; ops it runs in FP32), and a PNG scatter of FP32 vs
variant scores. Everything lands in --out (one folder per model).

    python benchmarks/precision.py [--models shipped small] [--method minmax] [--rounds 10]
        [--window 48] [--threads N] [--no-map] [--out precision-report]

The demo cache is built on first use (a few minutes); `--cache-dir` as for `locore demo`.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from locore.calibration import calibrate, demo_calibration_set
from locore.calibration.report import precision_report
from locore.checkpoint_format import read_checkpoint_config, shipped_model_dir
from locore.config import LocoreConfig
from locore.export import export_onnx
from locore.model import LocoreReranker


def _model(name: str) -> LocoreReranker | Path:
    if name == "shipped":
        return shipped_model_dir()
    torch.manual_seed(0)
    # The demo's features: 48 RootSIFT descriptors of 128 dims, 8 scale ids (the shipped config).
    shipped, _ = read_checkpoint_config(shipped_model_dir())
    config = LocoreConfig.preset(
        name, desc_dim=shipped.desc_dim, num_desc=shipped.num_desc, num_scales=shipped.num_scales
    )
    return LocoreReranker(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["shipped", "small"])
    parser.add_argument("--flavor", choices=("portable", "plugin"), default="portable")
    parser.add_argument("--method", default="minmax", choices=("minmax", "entropy", "percentile"))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--window", type=int, default=48, help="gallery images per window")
    parser.add_argument("--windows", type=int, default=32, help="calibration and held-out windows")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--no-map", action="store_true", help="skip the demo test split's mAP")
    parser.add_argument("--out", type=Path, default=Path("precision-report"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    summary = {}
    with tempfile.TemporaryDirectory(prefix="locore-precision-") as tmp:
        for name in args.models:
            start = time.perf_counter()
            fp32 = Path(tmp) / f"{name}-{args.flavor}-fp32.onnx"
            result = export_onnx(_model(name), fp32, flavor=args.flavor)
            config = result.config
            draw = {"num_windows": args.windows, "window": args.window, "cache_dir": args.cache_dir}
            calib = demo_calibration_set(config, split="train", seed=0, **draw)
            heldout = demo_calibration_set(config, split="test", seed=1, role="held-out", **draw)
            variants = {}
            for precision in ("fp16", "int8"):
                path = Path(tmp) / f"{name}-{args.flavor}-{precision}.onnx"
                calibrate(
                    fp32, path, precision, calib=calib, method=args.method, threads=args.threads
                )
                variants[precision] = path
            out = args.out / name
            report = precision_report(
                fp32, variants, out, heldout=heldout, cache_dir=args.cache_dir,
                threads=args.threads, rounds=args.rounds, with_map=not args.no_map,
            )  # fmt: skip
            took = time.perf_counter() - start
            print(
                f"== {name} ({config.name}: d_model {config.d_model}, {config.n_layers} layers, "
                f"{args.flavor} flavor, int8 {args.method}; {took:.0f} s)"
            )
            print((out / "report.md").read_text())
            summary[name] = json.loads(report.read_text())
    print(f"reports in {args.out}/<model>/report.{{json,md}} and scatter.png")


if __name__ == "__main__":
    main()
