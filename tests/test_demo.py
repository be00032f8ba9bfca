"""The demo end to end on the built-in benchmark, with the shipped model (slow: ~2 min each).

The library test runs :func:`locore.runtime.demo.run_demo` on an ONNX file the fixture exports
from the shipped checkpoint (tests may import torch; the runtime never does); the CLI test runs
``locore demo``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from locore.checkpoint_format import checkpoint_fusion, shipped_model_dir
from locore.cli import main

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


def _check_report(report: dict, picture: Path) -> None:
    methods = report["methods"]
    glob = next(v for k, v in methods.items() if k.startswith("global"))
    loc = next(v for k, v in methods.items() if k.startswith("LOCORE"))
    assert report["num_queries"] >= 20
    assert 0.0 < glob["map"] < 1.0
    assert loc["map"] >= glob["map"], (loc, glob)
    assert all(v["median_ms"] > 0 for v in methods.values())
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_demo_library_path(demo_cache: Path, tmp_path: Path, shipped_onnx):
    """The library call the command makes (a few queries, no RANSAC: the CLI test below runs
    the whole benchmark)."""
    from locore.runtime.demo import run_demo
    from locore.runtime.sliding_windows import RerankParams

    onnx = shipped_onnx("portable")
    fusion = checkpoint_fusion(shipped_model_dir())  # what `locore demo` passes
    assert set(fusion) == {"alpha", "temperature"}
    picture = tmp_path / "demo.png"
    params = RerankParams(**fusion)
    report = run_demo(
        onnx,
        demo_cache,
        params=params,
        ransac=False,
        max_queries=6,
        picture=picture,
        progress=False,
    )
    table = report.table()
    assert "LOCORE re-ranking" in table and "RANSAC" not in table and "mAP" in table
    assert report.model == str(onnx)
    assert [m.ranks.shape for m in report.methods] == [(6, 100)] * 2
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_demo_wants_an_onnx_file(tmp_path: Path):
    from locore.runtime.demo import run_demo

    with pytest.raises(FileNotFoundError, match="needs an ONNX model file, got a folder"):
        run_demo(shipped_model_dir(), tmp_path)


def test_demo_runs_and_locore_beats_global(demo_cache: Path, tmp_path: Path, capsys, shipped_onnx):
    shipped_onnx("portable")  # exported once per session; the command finds it in the cache
    report_path = tmp_path / "report.json"
    picture = tmp_path / "demo.png"
    code = main([
        "demo", "--cache-dir", str(demo_cache), "--json", str(report_path),
        "--picture", str(picture), "--no-progress",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "LOCORE re-ranking" in out and "RANSAC" in out and "mAP" in out
    _check_report(json.loads(report_path.read_text()), picture)
