"""``locore profile`` and :mod:`locore.runtime.profiling`: percentiles against numpy and by hand,
the JSON report against its schema, every iteration exported, interleaved comparisons, the
transfer hook, pipeline stages, telemetry from a fake tegrastats, and bad inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from locore.cli import main
from locore.errors import UsageError
from locore.runtime import profiling as pf
from locore.runtime import tegrastats as ts
from locore.runtime.backends import Backend, create_backend
from locore.runtime.backends.ort import OrtRunner
from tests.onnx_toy import build_toy_reranker, toy_config
from tests.test_tegrastats import fake_tegrastats

FAST = ["--warmUp", "0", "--iterations", "7", "--duration", "0", "--quiet", "--no-telemetry"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return build_toy_reranker(tmp_path_factory.mktemp("toy") / "toy.onnx")


# ---- percentiles ----------------------------------------------------------------------------
def test_nearest_rank_by_hand():
    hundred = np.arange(1, 101, dtype=float)[::-1]  # unsorted on purpose
    assert pf.percentile(hundred, 99) == 99.0  # ceil(0.99 * 100) = 99th smallest
    assert pf.percentile(hundred, 99.9) == 100.0  # ceil(99.9) = 100th
    assert pf.percentile(hundred, 50) == 50.0
    assert pf.percentile(hundred, 0) == 1.0 and pf.percentile(hundred, 100) == 100.0
    ten = [7.0, 1.0, 3.0, 9.0, 5.0, 2.0, 8.0, 10.0, 4.0, 6.0]
    assert pf.percentile(ten, 90) == 9.0  # ceil(9.0) = 9th
    assert pf.percentile(ten, 95) == 10.0  # ceil(9.5) = 10th
    assert pf.percentile(ten, 91) == 10.0  # ceil(9.1) = 10th
    assert pf.percentile([4.0], 99) == 4.0
    with pytest.raises(ValueError):
        pf.percentile([], 50)
    with pytest.raises(ValueError):
        pf.percentile([1.0], 100.5)


def nearest_rank(values, p: float) -> float:
    """Oracle: the ceil(p * n / 100)-th smallest value, in integers (p in tenths of a percent)."""
    ordered = sorted(values)
    tenths = round(p * 10)
    rank = -(-(tenths * len(ordered)) // 1000)  # ceil without floats
    return ordered[max(rank, 1) - 1]


@pytest.mark.parametrize("n", [1, 2, 7, 10, 101, 1000])
def test_percentiles_match_numpy_nearest_rank(n):
    rng = np.random.default_rng(n)
    times = rng.lognormal(3.0, 0.5, size=n)
    for p in (0, 1, 33.3, 50, 90, 95, 99, 99.9, 100):
        assert pf.percentile(times, p) == nearest_rank(times, p), p
        if (round(p * 10) * n) % 1000:  # numpy's float arithmetic is exact off the boundaries
            assert pf.percentile(times, p) == np.percentile(times, p, method="inverted_cdf"), p
    stats = pf.LatencyStats.from_times(times, (90, 99.9))
    assert stats.median == np.median(times) and stats.mean == pytest.approx(times.mean())
    assert (stats.min, stats.max, stats.count) == (times.min(), times.max(), n)
    assert stats.percentiles == {"p90": nearest_rank(times, 90), "p99.9": nearest_rank(times, 99.9)}


def test_numpy_float_boundary():
    """At exact ranks numpy's float arithmetic can land one rank high; the exact form does not
    (99.9 % of 1,000 times is the 999th)."""
    times = np.arange(1.0, 1001.0)
    assert pf.percentile(times, 99.9) == 999.0


def test_parse_percentiles_and_shapes():
    assert pf.parse_percentiles("90, 95,99,90") == (90.0, 95.0, 99.0)
    assert [pf.percentile_key(p) for p in (90, 99.9, 0.001, 100)] == [
        "p90",
        "p99.9",
        "p0.001",
        "p100",
    ]
    for bad in ("", "90,abc", "101", "-1"):
        with pytest.raises(UsageError):
            pf.parse_percentiles(bad)
    assert pf.parse_shapes("G=37") == pf.WindowShape(1, 37)
    assert pf.parse_shapes("num_gallery=5,B=2") == pf.WindowShape(2, 5)
    shape = pf.parse_shapes("gallery_desc:1x100x48x128")
    assert (shape.batch, shape.gallery) == (1, 100)
    assert shape.tensors == (("gallery_desc", (1, 100, 48, 128)),)
    assert pf.parse_shapes(None, default_gallery=9) == pf.WindowShape(1, 9)
    for bad in ("G=0", "G=ten", "Q=5", "gallery_desc:1x0x48x128", "100"):
        with pytest.raises(UsageError):
            pf.parse_shapes(bad)


# ---- window mode through the command ----------------------------------------------------------
def test_window_mode_json_schema_and_times(toy, tmp_path, capsys):
    report, times = tmp_path / "report.json", tmp_path / "times.json"
    rc = main(
        ["profile", "--model", str(toy), "--shapes", "G=13", "--percentile", "50,90,99", *FAST]
        + ["--export-json", str(report), "--export-times", str(times)]
    )
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(report.read_text())
    assert pf.schema_errors(data, pf.REPORT_SCHEMA) == []
    assert data["schema_version"] == pf.SCHEMA_VERSION and data["mode"] == "window"
    assert data["settings"]["gallery"] == 13
    (model,) = data["models"]
    assert model["transfers"] is None and model["ratio_to_first"] == 1.0
    assert data["telemetry"] == {"available": False, "reason": "telemetry off (--no-telemetry)"}
    # the statistics, recomputed with numpy from every exported iteration
    records = json.loads(times.read_text())
    assert [r["iteration"] for r in records] == list(range(len(records)))
    ms = np.array([r["latencyMs"] for r in records])
    lat = model["latency"]
    assert lat["count"] == len(ms) >= 7
    assert lat["median_ms"] == pytest.approx(np.median(ms))
    assert lat["mean_ms"] == pytest.approx(ms.mean())
    assert (lat["min_ms"], lat["max_ms"]) == (ms.min(), ms.max())
    for p in (50, 90, 99):
        assert lat["percentiles_ms"][f"p{p}"] == nearest_rank(ms, p)
        if (p * len(ms)) % 100:  # off numpy's float boundaries (see test_numpy_float_boundary)
            assert lat["percentiles_ms"][f"p{p}"] == np.percentile(ms, p, method="inverted_cdf")
    assert model["throughput_per_s"] == pytest.approx(len(ms) / (ms.sum() / 1e3))
    starts = [r["startMs"] for r in records]
    assert starts == sorted(starts)
    # the table says what it measured and what it cannot
    assert "H2D / compute / D2H: n/a" in out and "p99" in out and "telemetry off" in out
    assert "machine:" in out and "ONNX Runtime" in out


def test_print_schema(capsys):
    assert main(["profile", "--print-schema"]) == 0
    assert json.loads(capsys.readouterr().out) == pf.REPORT_SCHEMA


def test_schema_catches_broken_reports(toy):
    with create_backend(toy) as backend:
        settings = pf.ProfileSettings(warmup_ms=0, iterations=3, duration_s=0)
        report = pf.profile([("toy", backend)], settings, progress=False)
    data = report.to_dict()
    assert pf.schema_errors(data, pf.REPORT_SCHEMA) == []
    broken = json.loads(json.dumps(data))
    del broken["models"][0]["latency"]["median_ms"]
    broken["schema_version"] = 99
    broken["models"][0]["throughput_per_s"] = "fast"
    broken["mode"] = "both"
    errors = pf.schema_errors(broken, pf.REPORT_SCHEMA)
    assert len(errors) == 4, errors
    assert any("median_ms" in e for e in errors) and any("schema_version" in e for e in errors)


def test_comparison_is_interleaved_with_ratios(toy, tmp_path):
    other = build_toy_reranker(tmp_path / "noscale.onnx", with_scales=False)
    with create_backend(toy) as a, create_backend(other) as b:
        settings = pf.ProfileSettings(
            warmup_ms=0, iterations=5, duration_s=0, shape=pf.WindowShape(1, 9)
        )
        report = pf.profile([("a", a), ("b", b)], settings, progress=False)
    first, second = report.models
    assert len(first.times_ms) == len(second.times_ms) >= 5
    for i in range(len(first.times_ms) - 1):  # round-robin: a_i < b_i < a_(i+1)
        assert first.starts_ms[i] < second.starts_ms[i] < first.starts_ms[i + 1]
    data = report.to_dict()
    ratio = np.median(second.times_ms) / np.median(first.times_ms)
    assert [m["ratio_to_first"] for m in data["models"]] == [1.0, pytest.approx(ratio)]
    assert "x first" in report.table()


class TimedRunner(OrtRunner):
    """An ONNX Runtime runner that reports fixed transfer times, as a TensorRT runner would."""

    def last_timings(self) -> dict[str, float]:
        return {"h2d_ms": 0.25, "compute_ms": 2.0, "d2h_ms": 0.125}


def test_runner_transfer_hook_is_reported(toy, tmp_path):
    backend = Backend(TimedRunner(toy))
    settings = pf.ProfileSettings(
        warmup_ms=0, iterations=4, duration_s=0, shape=pf.WindowShape(1, 3)
    )
    with backend:
        report = pf.profile([("timed", backend)], settings, progress=False)
    data = report.to_dict()
    assert pf.schema_errors(data, pf.REPORT_SCHEMA) == []
    transfers = data["models"][0]["transfers"]
    assert transfers["h2d"]["median_ms"] == 0.25 and transfers["d2h"]["max_ms"] == 0.125
    assert transfers["compute"]["count"] == data["models"][0]["latency"]["count"]
    record = report.times()[0]
    assert (record["h2dMs"], record["computeMs"], record["d2hMs"]) == (0.25, 2.0, 0.125)
    assert "h2d" in report.table() and "n/a" not in report.table()
    pngs = pf.write_plots(report, tmp_path / "plots")
    if pngs:  # matplotlib installed
        assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


# ---- pipeline mode -----------------------------------------------------------------------------
def _photos(folder: Path, count: int) -> Path:
    cv2 = pytest.importorskip("cv2")
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(count):
        img = cv2.GaussianBlur(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), (5, 5), 0)
        cv2.imwrite(str(folder / f"img{i}.png"), img)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_pipeline_mode_on_a_folder(tmp_path, capsys):
    model = build_toy_reranker(tmp_path / "sift_toy.onnx", toy_config(desc_dim=128, num_desc=8))
    images = _photos(tmp_path / "photos", 5)
    report, times = tmp_path / "p.json", tmp_path / "pt.json"
    rc = main(
        ["profile", "--model", f"toy={model}", "--images", str(images), "--shortlist", "4"]
        + ["--window", "2", "--stride", "1", "--export-json", str(report)]
        + ["--export-times", str(times), "--plots", str(tmp_path / "plots"), *FAST]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    data = json.loads(report.read_text())
    assert pf.schema_errors(data, pf.REPORT_SCHEMA) == []
    (pipe,) = data["pipeline"]["models"]
    assert pipe["label"] == "toy" and pipe["queries"] == 5
    # window 2, stride 1 over K = 4: starts 3, 2, 1, 0 (end-to-start) -> 3 windows (start 3 lies
    # inside the window at 2 and is skipped, see sliding_windows.window_starts)
    from locore.runtime.sliding_windows import window_starts

    assert pipe["windows_per_query"] == len(window_starts(4, 2, 1, "end-to-start"))
    records = json.loads(times.read_text())
    assert len(records) == 5
    for r in records:
        parts = sum(v for k, v in r["stagesMs"].items() if k != "total")
        assert parts == pytest.approx(r["stagesMs"]["total"], rel=1e-9)  # disjoint stages
        assert r["stagesMs"]["inference"] == pytest.approx(sum(r["windowsMs"]))
    for stage in pf.STAGES:
        ms = np.array([r["stagesMs"][stage] for r in records])
        st = pipe["stages"][stage]
        assert st["median_ms"] == pytest.approx(np.median(ms))
        assert st["percentiles_ms"]["p90"] == nearest_rank(ms, 90)
    total_s = sum(r["stagesMs"]["total"] for r in records) / 1e3
    assert pipe["queries_per_s"] == pytest.approx(5 / total_s)
    assert "local_features" in out and "per window" in out
    if (tmp_path / "plots" / "stages.png").exists():
        assert (tmp_path / "plots" / "latency_histogram.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_demo_pipeline_and_shipped_window(shipped_onnx, demo_cache, tmp_path, capsys):
    """The shipped model for real: window mode, then the demo split's pipeline (2 queries)."""
    onnx = shipped_onnx("portable")
    assert main(["profile", "--model", str(onnx), "--shapes", "G=100", *FAST]) == 0
    assert "num_gallery=100" in capsys.readouterr().out
    report = tmp_path / "demo.json"
    rc = main(
        ["profile", "--demo", "--cache-dir", str(demo_cache), "--model", str(onnx)]
        + ["--max-queries", "2", "--export-json", str(report), *FAST]
    )
    assert rc == 0
    data = json.loads(report.read_text())
    assert pf.schema_errors(data, pf.REPORT_SCHEMA) == []
    assert data["pipeline"]["models"][0]["queries"] == 2
    assert "demo test split" in data["pipeline"]["source"]


# ---- telemetry -------------------------------------------------------------------------------
def test_not_a_jetson_reports_nothing_made_up(toy, monkeypatch):
    monkeypatch.setattr(ts, "find_tegrastats", lambda command=None: None)
    with create_backend(toy) as backend:
        settings = pf.ProfileSettings(warmup_ms=0, iterations=2, duration_s=0)
        report = pf.profile([("toy", backend)], settings, progress=False)
    assert report.telemetry == {"available": False, "reason": ts.NOT_A_JETSON}
    assert "not a Jetson" in report.table()


@pytest.mark.skipif(os.name != "posix", reason="the fake tegrastats is a shell script")
def test_telemetry_from_a_fake_tegrastats(toy, tmp_path):
    exe = fake_tegrastats(tmp_path, "jetpack6_orin_nano.txt")
    with create_backend(toy) as backend:
        settings = pf.ProfileSettings(warmup_ms=0, iterations=3, duration_s=0.3)
        report = pf.profile(
            [("toy", backend)],
            settings,
            telemetry=pf.TelemetryOptions(interval_ms=20, command=exe),
            progress=False,
        )
    tel = report.telemetry
    assert tel["available"] and tel["samples"] >= 1 and tel["interval_ms"] == 20
    assert tel["nvpmodel"] == "unknown" or isinstance(tel["nvpmodel"], dict)
    vin = tel["rails"]["VDD_IN"]
    windows = len(report.models[0].times_ms)
    assert 4797 * report.span_s <= vin["energy_mj"] <= 7357 * report.span_s
    assert vin["energy_per_window_mj"] == pytest.approx(vin["energy_mj"] / windows)
    assert pf.schema_errors(report.to_dict(), pf.REPORT_SCHEMA) == []
    assert "VDD_IN" in report.table() and "mJ/window" in report.table()


# ---- bad input ---------------------------------------------------------------------------------
def _error(capsys, argv: list[str]) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


def test_engine_without_tensorrt_is_a_clear_error(tmp_path, capsys):
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"not really an engine")
    rc, err = _error(capsys, ["profile", "--model", str(engine), *FAST])
    assert rc != 0 and "tensorrt" in err.lower() and "internal error" not in err
    rc, err = _error(capsys, ["profile", "--model", str(engine), "--backend", "tensorrt", *FAST])
    assert rc != 0 and "tensorrt" in err.lower() and "internal error" not in err


def test_ort_cuda_without_the_cuda_provider_is_a_clear_error(toy, capsys):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    rc, err = _error(capsys, ["profile", "--model", str(toy), "--backend", "ort-cuda", *FAST])
    assert rc == 1 and "CUDAExecutionProvider" in err and "onnxruntime-gpu" in err


def test_onnx_without_locore_metadata_is_a_clear_error(tmp_path, capsys):
    bare = build_toy_reranker(tmp_path / "bare.onnx", metadata=False)
    rc, err = _error(capsys, ["profile", "--model", str(bare), *FAST])
    assert rc == 1 and "locore.config" in err and "locore export" in err


def test_shapes_outside_the_models_range(toy, capsys):
    for shapes, words in (
        ("G=0", "must be >= 1"),
        ("gallery_desc:1x10x6x16", "outside the range"),  # the toy takes 8-d descriptors
        ("nonsense", "expected NAME=SIZE"),
    ):
        rc, err = _error(capsys, ["profile", "--model", str(toy), "--shapes", shapes, *FAST])
        assert rc == 2 and words in err, (shapes, err)


class LimitedRunner(OrtRunner):
    """An ONNX Runtime runner with an engine-like profile: at most 16 gallery images."""

    @property
    def max_shapes(self):
        return {
            "gallery_desc": (1, 16, 6, 8),
            "gallery_mask": (1, 16, 6),
            "gallery_scale": (1, 16, 6),
        }


def test_shapes_beyond_an_engine_profile(toy):
    backend = Backend(LimitedRunner(toy))
    pf.check_window_shape(backend, pf.WindowShape(1, 16))
    with pytest.raises(UsageError, match=r"num_gallery=17, outside the range .* 1\.\.16"):
        pf.check_window_shape(backend, pf.WindowShape(1, 17))
    with pytest.raises(UsageError, match="outside the range"):
        pf.check_window_shape(backend, pf.parse_shapes("gallery_desc:1x16x7x8"))
    backend.close()


def test_missing_model_and_bad_outputs(toy, tmp_path, capsys):
    rc, err = _error(capsys, ["profile", *FAST])
    assert rc == 2 and "--model" in err
    rc, err = _error(capsys, ["profile", "--model", str(tmp_path / "none.onnx"), *FAST])
    assert rc == 1 and "does not exist" in err
    rc, err = _error(capsys, ["profile", "--model", str(toy), "--export-json", "r.txt", *FAST])
    assert rc == 2 and ".json" in err
