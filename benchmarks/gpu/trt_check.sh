#!/usr/bin/env bash
# TensorRT check of the shipped model, for a machine with an NVIDIA GPU, TensorRT 10.3+ or 11
# (Python package and trtexec) and cuda-python:
#   benchmarks/gpu/trt_check.sh [OUT_DIR]            (default build/trt-check)
# 1. exports the shipped checkpoint in both flavors and makes FP16 and INT8 (Q/DQ) variants
#    (`locore export`, `locore calibrate`), builds the TensorRT plugin library
#    (`locore build-plugins --tensorrt-root $TENSORRT_ROOT`);
# 2. builds an engine per precision through TensorRT's ONNX parser with the plugin (plugin
#    flavor) and from the portable flavor (`locore build`, strongly typed);
# 3. scores the same random windows (G = 1, 17, 48) with each engine and with ONNX Runtime on the
#    CPU (the portable FP32 model), checks per-precision tolerances (fp32 2e-3, fp16 3e-2, int8
#    1.5e-1 on the logits, max abs), and times one window trtexec-style (warm-up 200 ms, then
#    >= 3 s: mean / median / p90 / p99 of the GPU compute time and of the end-to-end call);
# 4. builds the C++ runtime with TensorRT and checks locore::TrtScorer on every engine against
#    the same ONNX Runtime logits (locore_trt_scorer_check; OUT_DIR/cpp_scorer.jsonl);
# 5. writes OUT_DIR/trt_check.json (one record per engine + machine facts) and prints it.
# Also prints each build's trtexec command (`locore build --print-trtexec`). Exit 0 when every
# comparison passes. Env: TENSORRT_ROOT (for the plugin library), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-build/trt-check}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
"$PY" -c "import tensorrt, cuda.bindings" 2>/dev/null || {
  echo "trt_check: needs the tensorrt and cuda-python packages (pip install 'locore-edge[gpu]')" >&2
  exit 2
}
[ -n "${TENSORRT_ROOT:-}" ] || { echo "trt_check: set TENSORRT_ROOT (the TensorRT folder with include/ and lib/)" >&2; exit 2; }

CKPT="$("$PY" -c 'from locore.checkpoint_format import shipped_model_dir; print(shipped_model_dir())')"
echo "== plugin library"
"$PY" -m locore build-plugins --tensorrt-root "$TENSORRT_ROOT" --build-dir "$OUT/plugins"
PLUGIN="$OUT/plugins/liblocore_trt_plugins.so"
[ -f "$PLUGIN" ] || { echo "trt_check: $PLUGIN was not built" >&2; exit 1; }
nm -D --defined-only "$PLUGIN" | awk '$2 ~ /^[TW]$/ {print "   exports", $3}'

echo "== ONNX models"
for flavor in portable plugin; do
  "$PY" -m locore export --checkpoint "$CKPT" --output "$OUT/$flavor-fp32.onnx" --flavor "$flavor"
  "$PY" -m locore calibrate --onnx "$OUT/$flavor-fp32.onnx" --precision fp16 --output "$OUT/$flavor-fp16.onnx"
  "$PY" -m locore calibrate --onnx "$OUT/$flavor-fp32.onnx" --precision int8 --output "$OUT/$flavor-int8.onnx"
done

echo "== engines (locore build; the trtexec equivalent is printed)"
for flavor in portable plugin; do
  for precision in fp32 fp16 int8; do
    name="$flavor-$precision"
    "$PY" -m locore build --onnx "$OUT/$name.onnx" --saveEngine "$OUT/$name.plan" \
      --dynamicPlugins "$PLUGIN" --window 48 --timingCacheFile "$OUT/timing.cache"
  done
done

echo "== C++ runtime: locore::TrtScorer against ONNX Runtime"
cmake -S runtime/cpp -B "$OUT/runtime" -DCMAKE_BUILD_TYPE=Release -DTENSORRT_ROOT="$TENSORRT_ROOT" \
  -DLOCORE_WITH_HDF5=OFF > "$OUT/runtime-configure.log"
grep -q "LOCORE_RUNTIME_HAS_TENSORRT 1" "$OUT/runtime/include/locore/version.hpp" || {
  echo "trt_check: CMake did not enable the TensorRT scorer (see $OUT/runtime-configure.log)" >&2; exit 1; }
cmake --build "$OUT/runtime" --target locore_trt_scorer_check --parallel "$(nproc)"
OUT="$OUT" "$PY" - <<'PY'
import json, os
from pathlib import Path
import numpy as np
from locore.runtime.backends import create_backend

out = Path(os.environ["OUT"])
ref = create_backend(out / "portable-fp32.onnx", "onnxruntime")
windows = []
for gallery, seed in ((1, 10), (17, 11), (48, 12)):
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, value in ref.probe_feeds().items():
        shape = list(value.shape)
        if name.startswith("gallery"):
            shape[1] = gallery
        if value.dtype == np.bool_:
            feeds[name] = rng.random(shape) < 0.9
        elif value.dtype.kind == "f":
            x = rng.standard_normal(shape)
            feeds[name] = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
        else:
            feeds[name] = rng.integers(0, ref.config.num_scales, shape).astype(value.dtype)
    scores = ref.infer(feeds)["scores"]
    windows.append({"batch": int(scores.shape[0]), "num_gallery": gallery,
                    "expected": scores.astype(np.float64).ravel().tolist(),
                    "inputs": {k: {"dtype": str(v.dtype), "shape": list(v.shape),
                                   "data": v.ravel().tolist()} for k, v in feeds.items()}})
for precision, tol in {"fp32": 2e-3, "fp16": 3e-2, "int8": 1.5e-1}.items():
    (out / f"vectors-{precision}.json").write_text(json.dumps({"tolerance": tol, "windows": windows}))
PY
cpp_ok=1
for plan in "$OUT"/*.plan; do
  precision="${plan##*-}"; precision="${precision%.plan}"
  "$OUT/runtime/locore_trt_scorer_check" "$plan" "$OUT/vectors-$precision.json" --plugin "$PLUGIN" \
    | tee -a "$OUT/cpp_scorer.jsonl" || cpp_ok=0
done
[ "$cpp_ok" = 1 ] || { echo "trt_check: the C++ TrtScorer differs from ONNX Runtime (see above)" >&2; exit 1; }

echo "== scores against ONNX Runtime (CPU) and timings"
OUT="$OUT" "$PY" - <<'PY'
import json, os, sys, time
from pathlib import Path

import numpy as np

from locore.runtime.backends import create_backend
from locore.runtime.engines import probe_machine, read_sidecar

out = Path(os.environ["OUT"])
TOL = {"fp32": 2e-3, "fp16": 3e-2, "int8": 1.5e-1}  # max |logit difference| vs ORT FP32
reference = create_backend(out / "portable-fp32.onnx", "onnxruntime")


def feeds(backend, gallery, seed):
    rng = np.random.default_rng(seed)
    base = backend.probe_feeds()
    result = {}
    for name, value in base.items():
        shape = list(value.shape)
        if name.startswith("gallery"):  # [B, G, ...]
            shape[1] = gallery
        if value.dtype == np.bool_:
            result[name] = rng.random(shape) < 0.9
        elif value.dtype.kind == "f":
            x = rng.standard_normal(shape)
            result[name] = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
        else:
            result[name] = rng.integers(0, backend.config.num_scales, shape).astype(value.dtype)
    return result


records, ok = [], True
for plan in sorted(out.glob("*.plan")):
    flavor, precision = plan.stem.split("-")
    backend = create_backend(plan, "tensorrt", plugin=out / "plugins" / "liblocore_trt_plugins.so")
    worst = 0.0
    for gallery, seed in ((1, 0), (17, 1), (48, 2)):
        f = feeds(reference, gallery, seed)
        want = reference.infer(f)["scores"]
        cast = {k: v.astype(backend.input_spec(k).dtype) for k, v in f.items()}
        got = backend.infer(cast)["scores"].astype(np.float32)
        worst = max(worst, float(np.abs(got - want).max()))
    f = feeds(reference, 48, 3)
    cast = {k: v.astype(backend.input_spec(k).dtype) for k, v in f.items()}
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:
        backend.infer(cast)
    wall, gpu = [], []
    end = time.perf_counter() + 3.0
    while time.perf_counter() < end or len(wall) < 50:
        t0 = time.perf_counter()
        backend.infer(cast)
        wall.append((time.perf_counter() - t0) * 1e3)
        gpu.append(backend.runner.last_timings()["compute_ms"])

    def stats(v):
        a = np.asarray(v)
        return {"mean": float(a.mean()), "median": float(np.median(a)),
                "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)), "n": len(a)}

    passed = worst <= TOL[precision]
    ok &= passed
    records.append({"engine": str(plan), "flavor": flavor, "precision": precision,
                    "max_abs_logit_diff": worst, "tolerance": TOL[precision], "passed": passed,
                    "gpu_compute_ms": stats(gpu), "end_to_end_ms": stats(wall),
                    "sidecar": read_sidecar(plan).to_dict()})
    print(f"{plan.name:22s} max|diff| {worst:.2e} (tol {TOL[precision]:.0e}) "
          f"{'ok' if passed else 'FAIL'}  GPU median {np.median(gpu):.3f} ms")
    backend.close()
result = {"machine": probe_machine().to_dict(), "window": 48, "engines": records, "passed": ok}
(out / "trt_check.json").write_text(json.dumps(result, indent=2) + "\n")
print(f"wrote {out / 'trt_check.json'}")
sys.exit(0 if ok else 1)
PY
