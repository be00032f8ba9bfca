#!/usr/bin/env bash
# The C++ camera sample with TensorRT re-ranking, for a machine with an NVIDIA GPU, TensorRT
# 10.3+ or 11 (headers, libnvinfer, the Python package), the CUDA toolkit, cuda-python and
# libopencv-dev; run it after benchmarks/gpu/trt_check.sh, whose engines it uses:
#
#   samples/cpp/gpu_check.sh [TRT_CHECK_OUT]      (default build/trt-check)
#
# 1. builds runtime/cpp with TensorRT (locore::TrtScorer) into TRT_CHECK_OUT/camera/prefix and
#    the camera sample against it;
# 2. indexes 6 demo photos (`locore index`) and writes a clip that shows each for 2 frames;
# 3. runs the sample headless on the clip with --engine TRT_CHECK_OUT/portable-fp32.plan
#    (profile max G = 48, so the sample re-ranks with window 48, stride 24) and keeps the frames
#    it searched;
# 4. re-ranks the same frames with `locore search` on the same engine (Python TensorRT backend,
#    --window 48 --stride 24) and compares: the same re-ranked ids (neighbours may swap only when
#    their fused scores tie within 1e-4) and fused scores within 1e-4.
# Exit 0 when every frame agrees. Env: TENSORRT_ROOT, PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-build/trt-check}"
PY="${PYTHON:-python3}"
ENGINE="$OUT/portable-fp32.plan"
WORK="$OUT/camera"
[ -f "$ENGINE" ] || { echo "gpu_check: $ENGINE missing; run benchmarks/gpu/trt_check.sh $OUT first" >&2; exit 2; }
[ -n "${TENSORRT_ROOT:-}" ] || { echo "gpu_check: set TENSORRT_ROOT" >&2; exit 2; }
mkdir -p "$WORK"

echo "== C++ runtime with TensorRT, and the camera sample"
cmake -S runtime/cpp -B "$WORK/runtime" -DCMAKE_BUILD_TYPE=Release -DTENSORRT_ROOT="$TENSORRT_ROOT" \
  -DLOCORE_RUNTIME_BUILD_TESTS=OFF >"$WORK/runtime-configure.log"
grep -q "LOCORE_RUNTIME_HAS_TENSORRT 1" "$WORK/runtime/include/locore/version.hpp" || {
  echo "gpu_check: CMake did not enable the TensorRT scorer (see $WORK/runtime-configure.log)" >&2
  exit 1
}
cmake --build "$WORK/runtime" --parallel "$(nproc)"
cmake --install "$WORK/runtime" --prefix "$WORK/prefix" >/dev/null
cmake -S samples/cpp/camera_app -B "$WORK/app" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$WORK/prefix" >"$WORK/app-configure.log"
grep "locore_camera_app:" "$WORK/app-configure.log"
cmake --build "$WORK/app" --parallel "$(nproc)"

echo "== index and clip"
WORK="$WORK" "$PY" - <<'PY'
import os
from pathlib import Path

import cv2
import numpy as np

from locore.runtime.demo.sources import PHOTOS, package_file, read_photo

work = Path(os.environ["WORK"])
(work / "photos").mkdir(exist_ok=True)
names = ("astronaut", "chelsea", "coffee", "rocket", "china", "grace_hopper")
frames = []
for p in PHOTOS:
    stem = Path(p.relpath).stem
    if stem not in names:
        continue
    img = cv2.resize(read_photo(package_file(p.package, p.distribution, p.relpath)), (320, 240))
    cv2.imwrite(str(work / "photos" / f"{stem}.png"), img)
    frames.append(img)
writer = cv2.VideoWriter(str(work / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
for img in frames:
    for _ in range(2):
        writer.write(img)
writer.release()
PY
"$PY" -m locore index "$WORK/photos" --output "$WORK/index" --rebuild --no-progress

echo "== the sample, re-ranking with $ENGINE"
rm -rf "$WORK/frames"
"$WORK/app/locore_camera_app" --index "$WORK/index" --source "$WORK/clip.mp4" --every 2 \
  --shortlist 6 --engine "$ENGINE" --headless --json "$WORK/log.jsonl" --output "$WORK/out.mp4" \
  --save-frames "$WORK/frames"

echo "== against locore search on the same engine"
WORK="$WORK" ENGINE="$ENGINE" PY="$PY" "$PY" - <<'PY'
import json, os, subprocess, sys
from pathlib import Path

work, engine = Path(os.environ["WORK"]), os.environ["ENGINE"]
lines = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
records, summary = lines[:-1], lines[-1]["summary"]
assert summary["reranking"] is True, summary
ok = True
for record in records:
    frame = work / "frames" / f"frame_{record['frame']:06d}.png"
    proc = subprocess.run(
        [os.environ["PY"], "-m", "locore", "search", "--index", str(work / "index"), str(frame),
         "--model", engine, "--window", "48", "--stride", "24", "--shortlist", "6", "--top", "6",
         "--json"],
        capture_output=True, text=True, check=True,
    )
    python = json.loads(proc.stdout)["reranked"]
    cpp = record["reranked"]
    scores = {row["id"]: row["score"] for row in python}
    same = len(cpp) == len(python) and all(
        abs(c["score"] - scores.get(c["id"], float("inf"))) <= 1e-4
        and (c["id"] == p["id"] or abs(c["score"] - p["score"]) <= 1e-4)
        for c, p in zip(cpp, python)
    )
    ok &= same
    print(f"frame {record['frame']:3d}: C++ {[c['id'] for c in cpp]} Python "
          f"{[p['id'] for p in python]} {'ok' if same else 'DIFFERENT'} "
          f"(C++ re-ranking {record['timings_ms']['rerank_ms']:.1f} ms)")
sys.exit(0 if ok else 1)
PY
echo "gpu_check: the C++ sample re-ranks as locore search does on $ENGINE"
