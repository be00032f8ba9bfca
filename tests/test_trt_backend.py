"""The TensorRT backend: what runs without TensorRT here, and what needs TensorRT and a GPU.

The second half builds engines through ``trt.OnnxParser`` (strongly and weakly typed), runs
dynamic gallery sizes and two execution contexts, and compares with ONNX Runtime on the CPU
(the toy model's numpy formula as a third opinion); it skips with the reason where TensorRT or a
GPU is missing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from locore.deps import is_available

pytest.importorskip("onnx", reason="the toy ONNX model is written with the onnx package")

from tests.onnx_toy import build_toy_reranker, toy_config, toy_scores  # noqa: E402


def test_info_reports_tensorrt_section() -> None:
    from locore.info import collect

    trt = collect()["tensorrt"]
    assert set(trt) >= {"tensorrt", "cuda_python", "gpu", "plugin_library"}
    if not is_available("tensorrt"):
        assert trt["tensorrt"] is None and trt["gpu"] is None
        assert "tensorrt" in trt["gpu_error"]


def test_backend_registry_routes_tensorrt() -> None:
    from locore.runtime.backends import BACKENDS, backend_kind_for

    assert BACKENDS["tensorrt"].endswith("tensorrt:load_tensorrt_runner")
    assert backend_kind_for("m.plan") == "tensorrt" and backend_kind_for("m.onnx") == "onnxruntime"


# ---- with TensorRT and a GPU ---------------------------------------------------------------------
def _trt():
    trt = pytest.importorskip("tensorrt", reason="needs the tensorrt Python package")
    from locore.runtime.engines import probe_machine

    try:
        probe_machine()
    except Exception as exc:  # noqa: BLE001 - no GPU or no cuda-python: skip with the reason
        pytest.skip(f"needs a CUDA GPU and cuda-python: {exc}")
    return trt


def _feeds(batch: int, gallery: int, seed: int) -> dict[str, np.ndarray]:
    """Graph feeds of the toy config (Nd = 6, Dl = 8, 4 scales), some descriptors padding."""
    cfg, rng = toy_config(), np.random.default_rng(seed)
    nd, dl = cfg.num_desc, cfg.desc_dim
    qd = rng.standard_normal((batch, nd, dl)).astype(np.float32)
    gd = rng.standard_normal((batch, gallery, nd, dl)).astype(np.float32)
    return {
        "query_desc": qd,
        "query_mask": rng.random((batch, nd)) < 0.8,
        "gallery_desc": gd,
        "gallery_mask": rng.random((batch, gallery, nd)) < 0.8,
        "query_scale": rng.integers(0, cfg.num_scales, (batch, nd)),
        "gallery_scale": rng.integers(0, cfg.num_scales, (batch, gallery, nd)),
    }


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.parametrize("strongly_typed", [True, False])
def test_build_through_onnx_parser_and_run_dynamic_gallery(
    tmp_path: Path, strongly_typed: bool
) -> None:
    _trt()
    from locore.export.engine import build_engine_file
    from locore.runtime import engines as E
    from locore.runtime.backends import create_backend
    from locore.runtime.metadata import parse_graph_io

    model = build_toy_reranker(tmp_path / "m.onnx")
    graph = parse_graph_io(E.read_onnx_metadata(model))
    assert graph is not None
    profile = E.default_profile(graph, window=16)
    engine = tmp_path / "m.plan"
    key, machine = build_engine_file(
        model, engine, [profile], E.BuildFlags(strongly_typed=strongly_typed)
    )
    E.check_engine(engine, key, machine)
    with create_backend(engine, "tensorrt") as backend:
        assert backend.max_gallery == 16
        for gallery in (1, 7, 16):  # dynamic G within the profile
            feeds = _feeds(1, gallery, seed=gallery)
            scores = backend.infer(feeds)["scores"]
            np.testing.assert_allclose(scores, toy_scores(feeds), rtol=1e-4, atol=1e-4)
            timings = backend.runner.last_timings()
            assert timings is not None and set(timings) == {"h2d_ms", "compute_ms", "d2h_ms"}


@pytest.mark.trt
@pytest.mark.gpu
def test_two_contexts_and_the_engine_cache(tmp_path: Path) -> None:
    _trt()
    from locore.runtime.backends import create_backend

    model = build_toy_reranker(tmp_path / "m.onnx")
    cache = tmp_path / "cache"
    with create_backend(model, "tensorrt", contexts=2, cache_dir=cache, window=8) as backend:
        feeds = [_feeds(1, 5, seed=s) for s in range(8)]
        results: dict[int, np.ndarray] = {}

        def work(i: int) -> None:
            results[i] = backend.infer(feeds[i])["scores"]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, f in enumerate(feeds):
            np.testing.assert_allclose(results[i], toy_scores(f), rtol=1e-4, atol=1e-4)
    plans = sorted(cache.glob("*.plan"))
    assert len(plans) == 1
    with create_backend(model, "tensorrt", contexts=2, cache_dir=cache, window=8):
        pass
    assert sorted(cache.glob("*.plan")) == plans  # reused, not rebuilt


def test_cli_backend_options_for_tensorrt() -> None:
    import argparse

    from locore.commands.args import backend_options

    def ns(backend: str, model: str, window: int | None = 48) -> argparse.Namespace:
        return argparse.Namespace(
            backend=backend, model=model, window=window, device="cpu", threads=None
        )

    assert backend_options(ns("auto", "m.plan")) == {"window": 48}  # no ONNX Runtime options
    assert backend_options(ns("tensorrt", "m.onnx")) == {"window": 48}  # the cache's profile
    assert backend_options(ns("tensorrt", "m.onnx", None)) == {}
    assert backend_options(ns("auto", "m.onnx")) == {"providers": None, "threads": None}
