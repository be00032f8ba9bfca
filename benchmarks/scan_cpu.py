"""SelectiveScan on the CPU: the native library vs torch's sequential reference vs torch chunked.

The case is one re-ranking window's scan: B = 1, L = 5,050 tokens (101 images x 50 tokens),
H = 8 heads, P = 64, N = 64, G = 1, float32, with D, dt_bias and softplus (no z gate). The
three implementations run interleaved, round after round, so that machine noise hits them
alike; the script prints the medians and the ratios measured in this one run, and checks that
the outputs agree. torch keeps its default thread count; the native library uses every core.

    python benchmarks/scan_cpu.py [--rounds 7] [--ref-rounds 3] [--length 5050] [--threads 0]

Target: the native library >= 20x faster than selective_scan_ref and faster than
selective_scan_chunked.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from locore.model.selective_scan import selective_scan_chunked, selective_scan_ref
from locore.native import load_cpu_library, selective_scan_cpu


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (native, chunked)")
    parser.add_argument("--ref-rounds", type=int, default=3, help="timed rounds of the reference")
    parser.add_argument("--length", type=int, default=5050)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--headdim", type=int, default=64)
    parser.add_argument("--dstate", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="native threads (0 = all cores)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    L, H, P, N = args.length, args.heads, args.headdim, args.dstate
    arrays = {
        "x": rng.standard_normal((1, L, H, P)).astype(np.float32),
        "dt": rng.uniform(-4.0, 0.5, (1, L, H)).astype(np.float32),
        "A": -np.exp(rng.uniform(-1.0, 1.0, H)).astype(np.float32),
        "B": rng.standard_normal((1, L, 1, N)).astype(np.float32),
        "C": rng.standard_normal((1, L, 1, N)).astype(np.float32),
        "D": rng.standard_normal(H).astype(np.float32),
        "dt_bias": rng.uniform(-1.0, 1.0, H).astype(np.float32),
    }
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    load_cpu_library()  # build outside the timing if needed

    runners: dict[str, Callable[[], object]] = {
        "native (locore_scan_cpu)": lambda: selective_scan_cpu(
            **arrays, dt_softplus=True, num_threads=args.threads
        ),
        "torch selective_scan_chunked": lambda: selective_scan_chunked(**tensors, dt_softplus=True),
        "torch selective_scan_ref": lambda: selective_scan_ref(**tensors, dt_softplus=True),
    }
    print(
        f"SelectiveScan mamba2 fp32: B=1 L={L} H={H} P={P} N={N} G=1 | cores {os.cpu_count()}, "
        f"torch threads {torch.get_num_threads()}, native threads "
        f"{args.threads or os.cpu_count()}"
    )
    with torch.inference_mode():
        y_native = np.asarray(runners["native (locore_scan_cpu)"]())
        y_chunked = runners["torch selective_scan_chunked"]().numpy()  # type: ignore[union-attr]
        y_ref = runners["torch selective_scan_ref"]().numpy()  # type: ignore[union-attr]
        scale = float(np.abs(y_ref).max())
        print(
            f"max |native - ref| / scale = {np.abs(y_native - y_ref).max() / scale:.2e}, "
            f"max |chunked - ref| / scale = {np.abs(y_chunked - y_ref).max() / scale:.2e}"
        )
        times: dict[str, list[float]] = {name: [] for name in runners}
        for r in range(args.rounds):
            for name, fn in runners.items():
                if name.endswith("_ref") and r >= args.ref_rounds:
                    continue
                times[name].append(_timed(fn))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, value in med.items():
        print(f"  {name:30s} median {value * 1e3:9.2f} ms  ({len(times[name])} rounds)")
    native = med["native (locore_scan_cpu)"]
    vs_ref = med["torch selective_scan_ref"] / native
    vs_chunked = med["torch selective_scan_chunked"] / native
    print(f"  native speed-up vs selective_scan_ref:     {vs_ref:7.1f}x  (target >= 20x)")
    print(f"  native speed-up vs selective_scan_chunked: {vs_chunked:7.2f}x  (target > 1x)")
    ok = vs_ref >= 20 and vs_chunked > 1
    print("target met" if ok else "target NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
