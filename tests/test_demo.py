"""`locore demo` end to end on the built-in benchmark, with the shipped model (slow: ~2 min)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from locore.cli import main
from locore.runtime.demo import shipped_model_dir

pytestmark = pytest.mark.slow


def test_shipped_model_is_small_and_loads():
    folder = shipped_model_dir()
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["config.json", "model.safetensors"]
    assert sum(p.stat().st_size for p in folder.iterdir()) < 10 * 2**20
    meta = json.loads((folder / "config.json").read_text())
    training = meta["extra"]["training"]
    assert "locore train" in training["command"]
    assert {"alpha", "temperature"} <= set(meta["extra"]["fusion"])


def test_demo_runs_and_locore_beats_global(demo_cache: Path, tmp_path: Path, capsys):
    report_path = tmp_path / "report.json"
    picture = tmp_path / "demo.png"
    code = main([
        "demo", "--cache-dir", str(demo_cache), "--json", str(report_path),
        "--picture", str(picture), "--no-progress",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "LOCORE re-ranking" in out and "RANSAC" in out and "mAP" in out
    report = json.loads(report_path.read_text())
    methods = report["methods"]
    glob = next(v for k, v in methods.items() if k.startswith("global"))
    loc = next(v for k, v in methods.items() if k.startswith("LOCORE"))
    assert report["num_queries"] >= 20
    assert 0.0 < glob["map"] < 1.0
    assert loc["map"] >= glob["map"], (loc, glob)
    assert all(v["median_ms"] > 0 for v in methods.values())
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
