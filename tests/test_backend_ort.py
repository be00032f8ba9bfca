"""ONNX Runtime backend, packing and re-ranking with real inference (a toy ONNX re-ranker)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from onnx_toy import build_toy_reranker, random_rows, toy_config, toy_scores

from locore.config import (
    GALLERY_DESC,
    GALLERY_GLOBAL,
    GALLERY_MASK,
    GALLERY_SCALE,
    QUERY_DESC,
    QUERY_GLOBAL,
    QUERY_MASK,
    SCORES,
    ConfigError,
    graph_io,
)
from locore.deps import MissingDependencyError, is_available
from locore.runtime import (
    Backend,
    FeatureBatch,
    FeedError,
    OrtBackend,
    Packer,
    PackingError,
    Reranker,
    RerankParams,
    create_backend,
    read_model_metadata,
    sliding_window_rerank,
)
from locore.runtime.backends.ort import resolve_providers

CONFIG = toy_config()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def toy(model_dir: Path) -> OrtBackend:
    return OrtBackend(build_toy_reranker(model_dir / "toy.onnx", CONFIG), threads=1)


@pytest.fixture
def feats() -> FeatureBatch:
    return FeatureBatch(**random_rows(np.random.default_rng(0), 9, 10, CONFIG))


# ---- the backend -----------------------------------------------------------------------------
def test_specs_and_metadata(toy: OrtBackend, model_dir: Path) -> None:
    assert toy.kind == "onnxruntime" and toy.providers == ["CPUExecutionProvider"]
    assert toy.config == CONFIG
    assert toy.graph_io == graph_io(CONFIG).to_dict()
    assert toy.float_dtype == np.float32 and toy.max_gallery is None
    specs = {s.name: s for s in toy.input_specs()}
    assert list(specs) == [s.name for s in graph_io(CONFIG).inputs]
    assert specs[GALLERY_DESC].shape == ("batch", "num_gallery", 6, 8)
    assert specs[GALLERY_DESC].dtype == "float32"
    assert specs[QUERY_MASK].dtype == "bool" and specs[GALLERY_SCALE].dtype == "int64"
    assert specs[QUERY_DESC].description == "query local descriptors"
    (out,) = toy.output_specs()
    assert (out.name, out.shape, out.dtype) == (SCORES, ("batch", "num_gallery"), "float32")
    config, io = read_model_metadata(model_dir / "toy.onnx")
    assert config == CONFIG and io == graph_io(CONFIG).to_dict()
    assert "gallery_desc" in toy.describe()


def test_infer_matches_numpy(toy: OrtBackend, feats: FeatureBatch) -> None:
    packer = Packer.for_backend(toy)
    feeds = packer.pack(feats[0], feats[1:])
    scores = toy.infer(feeds)[SCORES]
    assert scores.shape == (1, 8) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, toy_scores(feeds), rtol=1e-5, atol=1e-5)
    # a batch of 2 queries with 3 gallery images each
    batch = FeatureBatch.from_rows(np.stack([feats[1:4].to_rows(), feats[4:7].to_rows()]))
    feeds = packer.pack(feats[[0, 8]], batch)
    assert feeds[GALLERY_DESC].shape == (2, 3, 6, 8)
    np.testing.assert_allclose(toy.infer(feeds)[SCORES], toy_scores(feeds), rtol=1e-5, atol=1e-5)


def test_float16_engine(model_dir: Path, feats: FeatureBatch) -> None:
    path = build_toy_reranker(model_dir / "toy_fp16.onnx", CONFIG, float_dtype="float16")
    backend = create_backend(path, threads=1)
    assert backend.float_dtype == np.float16
    feeds = Packer.for_backend(backend).pack(feats[0], feats[1:])
    assert feeds[QUERY_DESC].dtype == np.float16 and feeds[GALLERY_DESC].dtype == np.float16
    np.testing.assert_allclose(backend.infer(feeds)[SCORES], toy_scores(feeds), atol=1e-3)
    with pytest.raises(FeedError, match=r"query_desc must be \[batch, 6, 8\] float16, got"):
        backend.infer({**feeds, QUERY_DESC: feeds[QUERY_DESC].astype(np.float32)})


def test_feed_errors(toy: OrtBackend, feats: FeatureBatch) -> None:
    feeds = Packer.for_backend(toy).pack(feats[0], feats[1:])
    with pytest.raises(FeedError, match=r"missing \['gallery_scale'\]"):
        toy.infer({k: v for k, v in feeds.items() if k != GALLERY_SCALE})
    with pytest.raises(FeedError, match=r"unknown \['extra'\]"):
        toy.infer({**feeds, "extra": np.zeros(1)})
    wide = np.zeros((1, 8, 6, 768), np.float32)
    with pytest.raises(FeedError) as info:
        toy.infer({**feeds, GALLERY_DESC: wide})
    assert str(info.value).startswith(
        "gallery_desc must be [batch, num_gallery, 6, 8] float32, got [1, 8, 6, 768] float32; "
        "this engine was exported for 6 descriptors of dimension 8 per image"
    )
    with pytest.raises(FeedError, match="must be a numpy array"):
        toy.infer({**feeds, QUERY_MASK: feeds[QUERY_MASK].tolist()})
    with pytest.raises(FeedError, match="bool, got .* float32"):
        toy.infer({**feeds, QUERY_MASK: feeds[QUERY_MASK].astype(np.float32)})
    two = {**feeds, QUERY_DESC: np.concatenate([feeds[QUERY_DESC]] * 2)}
    with pytest.raises(FeedError, match="disagree on dynamic dim 'batch'"):
        toy.infer(two)


class LimitedBackend(Backend):
    """A backend with an optimization-profile limit, as a TensorRT engine would have."""

    kind = "limited"

    def __init__(self, inner: OrtBackend, limit: int) -> None:
        self.inner, self.limit = inner, limit
        self.path, self.config, self.graph_io = inner.path, inner.config, inner.graph_io

    @property
    def max_gallery(self) -> int | None:
        return self.limit

    def input_specs(self):  # type: ignore[no-untyped-def]
        return self.inner.input_specs()

    def output_specs(self):  # type: ignore[no-untyped-def]
        return self.inner.output_specs()

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.inner._run(feeds)


def test_max_gallery_limit(toy: OrtBackend, feats: FeatureBatch) -> None:
    limited = LimitedBackend(toy, limit=4)
    feeds = Packer.for_backend(limited).pack(feats[0], feats[1:])
    with pytest.raises(FeedError, match="at most 4; use a window of at most 4"):
        limited.infer(feeds)
    with pytest.raises(ValueError, match="window 8 exceeds the 4 gallery images"):
        Reranker(limited, RerankParams(window=8, stride=4))
    assert Reranker(limited, window=4, stride=2).params.window == 4


def test_metadata_missing_or_wrong(model_dir: Path) -> None:
    bare = build_toy_reranker(model_dir / "bare.onnx", CONFIG, metadata=False)
    with pytest.raises(ConfigError, match="no 'locore.config' metadata .* pass the LocoreConfig"):
        OrtBackend(bare)
    assert OrtBackend(bare, config=CONFIG).config == CONFIG
    with pytest.raises(ConfigError, match="num_desc 6 but the model's locore.config says"):
        OrtBackend(bare, config=toy_config(num_desc=48))
    renamed = build_toy_reranker(model_dir / "x.onnx", CONFIG, input_names={QUERY_DESC: "x"})
    with pytest.raises(ConfigError, match=r"not a LOCORE re-ranker: it lacks \['query_desc'\]"):
        OrtBackend(renamed)
    with pytest.raises(FileNotFoundError):
        OrtBackend(model_dir / "nothing.onnx")


def test_create_backend_and_providers(model_dir: Path, toy: OrtBackend) -> None:
    assert isinstance(create_backend(toy.path, "onnxruntime", threads=1), OrtBackend)
    assert create_backend(toy.path, providers="auto").providers[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="backend kind must be one of"):
        create_backend(toy.path, "openvino")
    available = ["CPUExecutionProvider"]
    assert resolve_providers(None, available) == ["CPUExecutionProvider"]
    assert resolve_providers("auto", available) == ["CPUExecutionProvider"]
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("auto", cuda) == cuda
    assert resolve_providers(["cuda"], cuda) == cuda
    with pytest.raises(MissingDependencyError, match="onnxruntime-gpu"):
        resolve_providers(["cuda"], available)


@pytest.mark.skipif(is_available("tensorrt"), reason="TensorRT is installed here")
def test_tensorrt_kind_names_what_to_install(model_dir: Path) -> None:
    with pytest.raises(MissingDependencyError, match="locore-edge\\[gpu\\]"):
        create_backend(model_dir / "toy.engine", "auto")
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        create_backend(model_dir / "toy.onnx", "tensorrt")


# ---- packing -------------------------------------------------------------------------------------
def test_packing_takes_first_rows_and_pads(feats: FeatureBatch) -> None:
    packer = Packer(CONFIG)  # num_desc 6: the 10 rows are cut, 4 rows are padded
    desc, mask, scale = packer.pack_images(feats[:3])
    np.testing.assert_array_equal(mask, feats.mask[:3, :6])
    np.testing.assert_array_equal(desc, np.where(mask[..., None], feats.descriptors[:3, :6], 0))
    np.testing.assert_array_equal(scale, np.where(mask, feats.scales[:3, :6], 0))
    short = feats.first(4)
    desc, mask, scale = packer.pack_images(short)
    assert desc.shape == (9, 6, 8) and not mask[:, 4:].any() and not desc[:, 4:].any()
    feeds = packer.pack(short[0], short[1:])
    assert feeds[QUERY_MASK].dtype == np.bool_ and feeds[GALLERY_SCALE].dtype == np.int64
    assert set(feeds) == {s.name for s in graph_io(CONFIG).inputs}
    assert set(Packer(CONFIG, graph_io(CONFIG, with_scales=False).inputs).pack(
        short[0], short[1:])) == {QUERY_DESC, QUERY_MASK, GALLERY_DESC, GALLERY_MASK}  # fmt: skip


def test_packing_errors(feats: FeatureBatch) -> None:
    packer = Packer(toy_config(desc_dim=128, num_desc=48))
    with pytest.raises(PackingError) as info:
        packer.pack(feats[0], feats[1:])
    assert str(info.value).startswith("query descriptors must be [48, 128] float32, got [10, 8]")
    with pytest.raises(PackingError) as info:
        packer.pack_images(feats[1:], "gallery")
    assert str(info.value).startswith(
        "gallery descriptors must be [G, 48, 128] float32, got [G, 10, 8]; this engine was "
        "exported for 128-d SIFT features"
    )
    bad = FeatureBatch(
        feats.descriptors, np.where(feats.mask, 7, 0), feats.xy, feats.weights, feats.mask
    )
    with pytest.raises(PackingError, match=r"scale ids must be in \[0, 3\] .* got ids from 7"):
        Packer(CONFIG).pack(bad[0], bad[1:])
    clipped = Packer(CONFIG, clip_scales=True).pack(bad[0], bad[1:])
    assert clipped[GALLERY_SCALE].max() == 3
    with pytest.raises(PackingError, match="give one query"):
        Packer(CONFIG).pack(feats[1:], feats[1:])
    nan = feats.descriptors.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(PackingError, match="NaN"):
        Packer(CONFIG).pack_images(FeatureBatch(nan, feats.scales, feats.xy, feats.weights,
                                                np.ones_like(feats.mask)))  # fmt: skip


def test_global_descriptor_models(model_dir: Path, feats: FeatureBatch) -> None:
    config = toy_config(use_global=True, global_dim=3)
    backend = OrtBackend(build_toy_reranker(model_dir / "glob.onnx", config), threads=1)
    packer = Packer.for_backend(backend)
    with pytest.raises(PackingError, match="uses global descriptors"):
        packer.pack(feats[0], feats[1:])
    rng = np.random.default_rng(4)
    qg, gg = rng.random(3), rng.random((8, 3))
    with pytest.raises(PackingError, match=r"gallery_global must be \[1, 8, 3\], got \[1, 8, 2\]"):
        packer.pack(feats[0], feats[1:], qg, gg[:, :2])
    feeds = packer.pack(feats[0], feats[1:], qg, gg)
    assert feeds[QUERY_GLOBAL].shape == (1, 3) and feeds[GALLERY_GLOBAL].dtype == np.float32
    np.testing.assert_allclose(backend.infer(feeds)[SCORES], toy_scores(feeds), atol=1e-5)
    db_global = rng.random((9, 3))
    result = Reranker(backend, window=4, topk=8, stride=2).rerank(
        feats[0], feats, np.arange(1, 9), np.linspace(1, 0, 8), qg, db_global
    )
    assert sorted(result.ids.tolist()) == list(range(1, 9))


# ---- re-ranking with real inference ------------------------------------------------------------
@pytest.mark.parametrize("order", ["end-to-start", "start-to-end-to-start"])
def test_reranker_matches_algorithm_with_numpy_scores(
    toy: OrtBackend, feats: FeatureBatch, order: str
) -> None:
    params = RerankParams(window=3, topk=7, stride=2, order=order)
    reranker = Reranker(toy, params)
    ids = np.array([8, 3, 5, 1, 7, 2, 4, 6])
    sims = np.linspace(0.9, 0.2, 8)
    result = reranker.rerank(feats[0], feats, ids, sims)
    packer = Packer(CONFIG)

    def numpy_scores(window: np.ndarray) -> np.ndarray:
        return toy_scores(packer.pack(feats[0], feats[window]))[0]

    want_ids, want_scores = sliding_window_rerank(ids, sims, numpy_scores, params)
    np.testing.assert_array_equal(result.ids, want_ids)
    np.testing.assert_allclose(result.scores, want_scores, atol=1e-6)
    assert reranker.calls == {"end-to-start": 3, "start-to-end-to-start": 5}[order]


def test_runtime_does_not_import_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        sys.modules["onnx"] = None
        import locore.runtime as rt
        for name in rt.__all__:
            getattr(rt, name)
        import locore.runtime.cli_rerank, locore.runtime.backends.ort
        import locore.runtime.backends.tensorrt, locore.runtime.metadata
        from locore.cli import build_parser
        build_parser(["rerank"])
        print("ok", "torch" in sys.modules and sys.modules["torch"] is not None)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "False"]


def _export_available() -> bool:
    try:
        import locore.export  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _export_available(), reason="locore.export needs torch and onnx")
def test_exported_model_end_to_end(model_dir: Path, feats: FeatureBatch) -> None:
    """The real LOCORE-Mamba model, exported with the portable flavor, through the runtime."""
    import torch

    from locore.export import export_onnx
    from locore.model import LocoreReranker

    config = toy_config(d_model=32, n_layers=1, n_heads=4, d_state=8)
    torch.manual_seed(0)
    net = LocoreReranker(config).eval()
    path = export_onnx(net, model_dir / "tiny_portable.onnx", flavor="portable").path
    backend = create_backend(path, threads=1)
    assert backend.config == config
    assert json.loads(json.dumps(backend.graph_io)) == graph_io(config).to_dict()
    feeds = Packer.for_backend(backend).pack(feats[0], feats[1:])
    with torch.no_grad():
        want = net(**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()
    np.testing.assert_allclose(backend.infer(feeds)[SCORES], want, rtol=1e-4, atol=1e-4)
    result = Reranker(backend, window=4, topk=8, stride=2).rerank(
        feats[0], feats, np.arange(1, 9), np.linspace(1, 0, 8)
    )
    assert sorted(result.ids.tolist()) == list(range(1, 9))
