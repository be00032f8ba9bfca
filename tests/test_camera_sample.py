"""samples/python/camera_rerank.py headless: a short clip in, a playable MP4 and a JSON log out.

The clip is written here from demo photos with OpenCV (so the test needs no camera and no
download); the MP4 is read back with cv2.VideoCapture frame by frame. A second run on a looping
source is interrupted with SIGINT (Ctrl-C) and must still leave a complete MP4 and log.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from tests.test_index_support import demo_index, demo_subset

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "python" / "camera_rerank.py"
FRAMES = 24


def _clip(demo_cache: Path, path: Path) -> Path:
    folder, _, _, _ = demo_subset(demo_cache)
    photos = sorted(folder.glob("*.jpg"))[::8][:4]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (320, 240))
    for k in range(FRAMES):
        image = cv2.resize(cv2.imread(str(photos[k // 6])), (320, 240))
        writer.write(image)
    writer.release()
    return path


def _frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    count = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape[0] == 240 and frame.shape[1] > 320  # thumbnails on the right
        count += 1
    cap.release()
    return count


@pytest.mark.slow
def test_headless_run_writes_a_playable_mp4_and_a_json_log(
    demo_cache: Path, shipped_onnx, tmp_path: Path
) -> None:
    index = demo_index(demo_cache)
    clip = _clip(demo_cache, tmp_path / "clip.mp4")
    out, log = tmp_path / "out.mp4", tmp_path / "log.json"
    args = [sys.executable, str(SAMPLE), "--index", str(index), "--source", str(clip)]
    args += ["--model", str(shipped_onnx("portable")), "--every", "6", "--top", "3"]
    args += ["--headless", "--output", str(out), "--json", str(log), "--threads", "2"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert _frames(out) == FRAMES
    data = json.loads(log.read_text())
    assert data["frames"] == FRAMES and data["stopped"] == "end of stream"
    assert [r["frame"] for r in data["results"]] == [0, 6, 12, 18]
    for record in data["results"]:
        assert len(record["top"]) == 3 and record["top"][0]["rank"] == 1
        assert {"extract_ms", "global_ms", "rerank_ms", "total_ms"} <= set(record["timings_ms"])
    # each photo of the clip finds one of its own views first
    _, _, _, source_of = demo_subset(demo_cache)
    folder = demo_subset(demo_cache)[0]
    photos = sorted(folder.glob("*.jpg"))[::8][:4]
    for record, photo in zip(data["results"], photos, strict=True):
        assert source_of[record["top"][0]["name"]] == source_of[photo.name]


@pytest.mark.slow
def test_ctrl_c_stops_cleanly(demo_cache: Path, shipped_onnx, tmp_path: Path) -> None:
    index = demo_index(demo_cache)
    clip = _clip(demo_cache, tmp_path / "clip.mp4")
    out, log = tmp_path / "out.mp4", tmp_path / "log.json"
    args = [sys.executable, str(SAMPLE), "--index", str(index), "--source", str(clip)]
    args += ["--model", str(shipped_onnx("portable")), "--every", "1", "--loop"]
    args += ["--headless", "--output", str(out), "--json", str(log)]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    seen = 0
    while time.monotonic() < deadline and seen < 3:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line.startswith("frame ")
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    data = json.loads(log.read_text())
    assert data["stopped"] == "interrupted (Ctrl-C)"
    assert data["frames"] >= 3 and _frames(out) == data["frames"]
