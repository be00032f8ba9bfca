"""Runners and backends (ONNX Runtime), typed graph I/O, packing and re-ranking with real
inference (a toy ONNX re-ranker, and a small generic ONNX model for the runner alone)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_toy import build_toy_reranker, random_rows, toy_config, toy_scores

from locore import config as C  # the graph I/O tensor names: C.QUERY_DESC, ...
from locore.config import ConfigError, DinoConfig, GraphIO, TensorSpec, dino_graph_io, graph_io
from locore.deps import MissingDependencyError, is_available
from locore.runtime.backends import (
    BACKENDS,
    Backend,
    FeedError,
    Runner,
    create_backend,
    load_runner,
)
from locore.runtime.backends.ort import (
    OrtRunner,
    load_pluginref_runner,
    open_session,
    resolve_providers,
)
from locore.runtime.local_features import LocalFeatures
from locore.runtime.metadata import parse_model_metadata, read_model_metadata
from locore.runtime.packing import Packer, PackingError
from locore.runtime.sliding_windows import Reranker, RerankParams, sliding_window_rerank

CONFIG = toy_config()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def toy(model_dir: Path) -> Backend:
    return create_backend(build_toy_reranker(model_dir / "toy.onnx", CONFIG), threads=1)


@pytest.fixture
def feats() -> LocalFeatures:
    return LocalFeatures(**random_rows(np.random.default_rng(0), 9, 10, CONFIG))


# ---- typed graph I/O ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "gio",
    [
        graph_io(CONFIG),
        graph_io(toy_config(use_global=True, global_dim=3), with_token_logits=True),
        graph_io(CONFIG, with_scales=False),
        dino_graph_io(DinoConfig()),
    ],
)
def test_graph_io_round_trip(gio: GraphIO) -> None:
    data = json.loads(json.dumps(gio.to_dict()))  # as stored in the ONNX metadata
    assert GraphIO.from_dict(data) == gio
    for spec in (*gio.inputs, *gio.outputs):
        assert TensorSpec.from_dict(spec.to_dict()) == spec
    assert gio.output(gio.outputs[0].name) == gio.outputs[0]
    assert gio.input(gio.inputs[0].name) == gio.inputs[0]
    with pytest.raises(KeyError, match="graph has no output 'nothing'; outputs are"):
        gio.output("nothing")


def test_dino_graph_io_shapes() -> None:
    gio = dino_graph_io(DinoConfig(hidden_size=64, num_heads=2, image_size=56, num_desc=8,
                                   desc_dim=32))  # fmt: skip
    assert gio.input("image").shape == ("batch", 3, 56, 56)
    assert [s.name for s in gio.outputs] == ["descriptors", "weights", "xy", "scales",
                                             "global_desc"]  # fmt: skip
    assert gio.output("descriptors").shape == ("batch", 8, 32)
    assert gio.output("global_desc").shape == ("batch", 64)
    assert gio.output("scales").dtype == "int64"


def test_tensor_spec_from_dict_errors() -> None:
    good = {"name": "x", "shape": ["batch", 3], "dtype": "float32", "description": "d"}
    assert TensorSpec.from_dict(good) == TensorSpec("x", ("batch", 3), "float32", "d")
    assert TensorSpec.from_dict({**good, "description": ""}).description == ""
    no_description = {k: v for k, v in good.items() if k != "description"}
    assert TensorSpec.from_dict(no_description).description == ""
    with pytest.raises(ConfigError, match="must be a JSON object .* got list"):
        TensorSpec.from_dict([1, 2])
    with pytest.raises(ConfigError, match=r"missing \['dtype'\], unknown \[\]"):
        TensorSpec.from_dict({k: v for k, v in good.items() if k != "dtype"})
    with pytest.raises(ConfigError, match=r"unknown \['layout'\]"):
        TensorSpec.from_dict({**good, "layout": "NCHW"})
    with pytest.raises(ConfigError, match="name must be a non-empty string"):
        TensorSpec.from_dict({**good, "name": ""})
    with pytest.raises(ConfigError, match=r"'x': shape must be a list .* got \['batch', -1\]"):
        TensorSpec.from_dict({**good, "shape": ["batch", -1]})
    with pytest.raises(ConfigError, match="shape must be a list"):
        TensorSpec.from_dict({**good, "shape": "batch"})
    with pytest.raises(ConfigError, match="shape must be a list"):
        TensorSpec.from_dict({**good, "shape": [True]})
    with pytest.raises(ConfigError, match=r"dtype must be one of \['float', 'float32'.* 'f32'"):
        TensorSpec.from_dict({**good, "dtype": "f32"})
    with pytest.raises(ConfigError, match="description must be a string"):
        TensorSpec.from_dict({**good, "description": 3})


def test_graph_io_from_dict_errors() -> None:
    data = graph_io(CONFIG).to_dict()
    with pytest.raises(ConfigError, match="exactly the keys 'inputs' and 'outputs', got list"):
        GraphIO.from_dict([])
    with pytest.raises(ConfigError, match=r"got \['inputs'\]"):
        GraphIO.from_dict({"inputs": data["inputs"]})
    with pytest.raises(ConfigError, match="'outputs' must be a list of tensor specs, got dict"):
        GraphIO.from_dict({**data, "outputs": {}})
    broken = json.loads(json.dumps(data))
    broken["inputs"][2]["dtype"] = "complex"
    with pytest.raises(ConfigError, match=r"graph I/O inputs\[2\] 'gallery_desc': dtype must"):
        GraphIO.from_dict(broken)
    twice = {**data, "outputs": [*data["outputs"], data["inputs"][0]]}
    with pytest.raises(ConfigError, match=r"distinct; \['query_desc'\] appear more than once"):
        GraphIO.from_dict(twice)


def test_parse_model_metadata_is_typed() -> None:
    meta = {"locore.config": CONFIG.to_json(), "locore.graph_io": json.dumps(
        graph_io(CONFIG).to_dict())}  # fmt: skip
    config, gio = parse_model_metadata(meta)
    assert config == CONFIG and gio == graph_io(CONFIG)
    assert parse_model_metadata({"locore.config": CONFIG.to_json()}) == (CONFIG, None)
    with pytest.raises(ConfigError, match="m.onnx: metadata 'locore.graph_io' is not valid JSON"):
        parse_model_metadata({**meta, "locore.graph_io": "{"}, "m.onnx")
    with pytest.raises(ConfigError, match=r"m.onnx: metadata 'locore.graph_io' is invalid: .*"
                                          r"Re-export the model"):  # fmt: skip
        parse_model_metadata({**meta, "locore.graph_io": "[]"}, "m.onnx")


# ---- the backend -----------------------------------------------------------------------------
def test_specs_and_metadata(toy: Backend, model_dir: Path) -> None:
    assert isinstance(toy.runner, OrtRunner)
    assert toy.kind == "onnxruntime" and toy.runner.providers == ["CPUExecutionProvider"]
    assert toy.config == CONFIG
    assert toy.graph_io == graph_io(CONFIG)
    assert toy.metadata["locore.config"] == CONFIG.to_json()
    assert toy.float_dtype == np.float32 and toy.max_gallery is None and toy.max_batch is None
    specs = {s.name: s for s in toy.input_specs()}
    assert list(specs) == [s.name for s in graph_io(CONFIG).inputs]
    assert specs[C.GALLERY_DESC].shape == ("batch", "num_gallery", 6, 8)
    assert specs[C.GALLERY_DESC].dtype == "float32"
    assert specs[C.QUERY_MASK].dtype == "bool" and specs[C.GALLERY_SCALE].dtype == "int64"
    assert specs[C.QUERY_DESC].description == "query local descriptors"
    (out,) = toy.output_specs()
    assert (out.name, out.shape, out.dtype) == (C.SCORES, ("batch", "num_gallery"), "float32")
    assert toy.output_spec(C.SCORES).description == "one logit per gallery image"
    config, io = read_model_metadata(model_dir / "toy.onnx")
    assert config == CONFIG and io == graph_io(CONFIG)
    assert "gallery_desc" in toy.describe()
    assert toy.describe().startswith("onnxruntime backend for ")


def test_infer_matches_numpy(toy: Backend, feats: LocalFeatures) -> None:
    packer = Packer.for_backend(toy)
    feeds = packer.pack(feats[0], feats[1:])
    scores = toy.infer(feeds)[C.SCORES]
    assert scores.shape == (1, 8) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, toy_scores(feeds), rtol=1e-5, atol=1e-5)
    # a batch of 2 queries with 3 gallery images each
    batch = LocalFeatures.stack([feats[1:4], feats[4:7]])
    feeds = packer.pack(feats[[0, 8]], batch)
    assert feeds[C.GALLERY_DESC].shape == (2, 3, 6, 8)
    np.testing.assert_allclose(toy.infer(feeds)[C.SCORES], toy_scores(feeds), rtol=1e-5, atol=1e-5)


def test_float16_engine(model_dir: Path, feats: LocalFeatures) -> None:
    path = build_toy_reranker(model_dir / "toy_fp16.onnx", CONFIG, float_dtype="float16")
    backend = create_backend(path, threads=1)
    assert backend.float_dtype == np.float16
    feeds = Packer.for_backend(backend).pack(feats[0], feats[1:])
    assert feeds[C.QUERY_DESC].dtype == np.float16 and feeds[C.GALLERY_DESC].dtype == np.float16
    np.testing.assert_allclose(backend.infer(feeds)[C.SCORES], toy_scores(feeds), atol=1e-3)
    with pytest.raises(FeedError, match=r"query_desc must be \[batch, 6, 8\] float16, got"):
        backend.infer({**feeds, C.QUERY_DESC: feeds[C.QUERY_DESC].astype(np.float32)})


def test_feed_errors(toy: Backend, feats: LocalFeatures) -> None:
    feeds = Packer.for_backend(toy).pack(feats[0], feats[1:])
    with pytest.raises(FeedError, match=r"missing \['gallery_scale'\].*Build feeds with"):
        toy.infer({k: v for k, v in feeds.items() if k != C.GALLERY_SCALE})
    with pytest.raises(FeedError, match=r"unknown \['extra'\]"):
        toy.infer({**feeds, "extra": np.zeros(1)})
    wide = np.zeros((1, 8, 6, 768), np.float32)
    with pytest.raises(FeedError) as info:
        toy.infer({**feeds, C.GALLERY_DESC: wide})
    assert str(info.value).startswith(
        "input gallery_desc must be [batch, num_gallery, 6, 8] float32, got [1, 8, 6, 768] "
        "float32; this engine was exported for 6 descriptors of dimension 8 per image"
    )
    with pytest.raises(FeedError, match="must be a numpy array"):
        toy.infer({**feeds, C.QUERY_MASK: feeds[C.QUERY_MASK].tolist()})
    with pytest.raises(FeedError, match="bool, got .* float32"):
        toy.infer({**feeds, C.QUERY_MASK: feeds[C.QUERY_MASK].astype(np.float32)})
    two = {**feeds, C.QUERY_DESC: np.concatenate([feeds[C.QUERY_DESC]] * 2)}
    with pytest.raises(FeedError, match="disagree on dynamic dim 'batch'"):
        toy.infer(two)


class LimitedRunner(Runner):
    """A runner with an optimization-profile limit, as a TensorRT engine will have."""

    kind = "limited"

    def __init__(self, inner: Runner, max_shapes: dict[str, tuple[int, ...]]) -> None:
        self.inner, self._max_shapes = inner, max_shapes
        self.path, self.metadata = inner.path, inner.metadata

    @property
    def max_shapes(self) -> Mapping[str, tuple[int, ...]]:
        return self._max_shapes

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self.inner.input_specs()

    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self.inner.output_specs()

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.inner._run(feeds)


def test_max_gallery_limit(toy: Backend, feats: LocalFeatures) -> None:
    limited = Backend(LimitedRunner(toy.runner, {C.GALLERY_DESC: (2, 4, 6, 8)}))
    assert (limited.kind, limited.max_gallery, limited.max_batch) == ("limited", 4, 2)
    feeds = Packer.for_backend(limited).pack(feats[0], feats[1:])
    with pytest.raises(FeedError, match="8 gallery images per call, but this engine takes at "
                                        "most 4; use a window of at most 4"):  # fmt: skip
        limited.infer(feeds)
    with pytest.raises(ValueError, match="window 8 exceeds the 4 gallery images"):
        Reranker(limited, RerankParams(window=8, stride=4))
    assert Reranker(limited, window=4, stride=2).params.window == 4
    small = Packer.for_backend(limited).pack(feats[0], feats[1:5])
    np.testing.assert_allclose(limited.infer(small)[C.SCORES], toy_scores(small), atol=1e-5)
    three = Packer.for_backend(limited).pack(feats[[0, 1, 2]], LocalFeatures.stack(
        [feats[3:5]] * 3))  # fmt: skip
    with pytest.raises(FeedError, match="3 queries per call, but this engine takes at most 2"):
        limited.infer(three)


def test_metadata_missing_or_wrong(model_dir: Path) -> None:
    bare = build_toy_reranker(model_dir / "bare.onnx", CONFIG, metadata=False)
    with pytest.raises(ConfigError, match="no 'locore.config' metadata .* pass the LocoreConfig"):
        create_backend(bare)
    with_config = create_backend(bare, config=CONFIG)
    assert with_config.config == CONFIG and with_config.graph_io is None
    assert Backend(OrtRunner(bare), CONFIG).config == CONFIG
    with pytest.raises(ConfigError, match="num_desc 6 but the model's locore.config says"):
        create_backend(bare, config=toy_config(num_desc=48))
    renamed = build_toy_reranker(model_dir / "x.onnx", CONFIG, input_names={C.QUERY_DESC: "x"})
    with pytest.raises(ConfigError, match=r"not a LOCORE re-ranker: it lacks \['query_desc'\]"):
        create_backend(renamed)
    with pytest.raises(FileNotFoundError):
        create_backend(model_dir / "nothing.onnx")


def test_create_backend_and_providers(model_dir: Path, toy: Backend) -> None:
    backend = create_backend(toy.path, "onnxruntime", threads=1)
    assert isinstance(backend, Backend) and isinstance(backend.runner, OrtRunner)
    auto = create_backend(toy.path, providers="auto")
    assert isinstance(auto.runner, OrtRunner)
    assert auto.runner.providers[-1] == "CPUExecutionProvider"
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


def test_pluginref_kind_is_registered_cpu_only(toy: Backend) -> None:
    assert BACKENDS["pluginref"] == "locore.runtime.backends.ort:load_pluginref_runner"
    with pytest.raises(ValueError, match="pluginref backend runs on the CPU only"):
        create_backend(toy.path, "pluginref", providers=["cuda"])
    with pytest.raises(ValueError, match="CPU only"):
        load_pluginref_runner(toy.path, providers="cuda")


def test_plugin_flavor_in_plain_onnxruntime_names_the_alternatives(model_dir: Path) -> None:
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("SelectiveScan", ["x"], ["y"], domain="locore")],
        "plugin",
        [helper.make_tensor_value_info("x", f, [2])],
        [helper.make_tensor_value_info("y", f, [2])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("locore", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    path = model_dir / "scan_node.onnx"
    onnx.save_model(model, str(path))
    with pytest.raises(RuntimeError, match="is the plugin flavor .* pluginref backend"):
        OrtRunner(path)


@pytest.mark.skipif(is_available("tensorrt"), reason="TensorRT is installed here")
def test_tensorrt_kind_names_what_to_install(model_dir: Path) -> None:
    with pytest.raises(MissingDependencyError, match="locore-edge\\[gpu\\]"):
        create_backend(model_dir / "toy.engine", "auto")
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        create_backend(model_dir / "toy.onnx", "tensorrt")


# ---- the generic runner (any ONNX model, as under the DINOv2 extractor) --------------------------
def _generic_model(path: Path) -> Path:
    """image [batch, 3, 4, 4] float32, keep [batch] bool -> pooled [batch, 3] float32 (the mean
    of each channel, times keep), count [batch] int64 (= 16 * keep); ``x`` has an unnamed dim."""
    f = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("image", f, ["batch", 3, 4, 4]),
        helper.make_tensor_value_info("keep", TensorProto.BOOL, ["batch"]),
        helper.make_tensor_value_info("x", f, [None]),
    ]
    outputs = [
        helper.make_tensor_value_info("pooled", f, ["batch", 3]),
        helper.make_tensor_value_info("count", TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info("x_out", f, [None]),
    ]
    n = helper.make_node
    nodes = [
        n("ReduceMean", ["image", "axes"], ["mean"], keepdims=0),
        n("Cast", ["keep"], ["keep_f"], to=f),
        n("Unsqueeze", ["keep_f", "ax1"], ["keep_u"]),
        n("Mul", ["mean", "keep_u"], ["pooled"]),
        n("Cast", ["keep"], ["keep_i"], to=TensorProto.INT64),
        n("Mul", ["keep_i", "sixteen"], ["count"]),
        n("Identity", ["x"], ["x_out"]),
    ]
    inits = [
        helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
        helper.make_tensor("ax1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("sixteen", TensorProto.INT64, [], [16]),
    ]
    graph = helper.make_graph(nodes, "generic", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    helper.set_model_props(model, {"locore.kind": "toy", "note": "hello"})
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def test_generic_runner_specs_and_infer(model_dir: Path) -> None:
    path = _generic_model(model_dir / "generic.onnx")
    with OrtRunner(path, threads=1) as runner:
        assert runner.kind == "onnxruntime" and runner.metadata == {"locore.kind": "toy",
                                                                    "note": "hello"}  # fmt: skip
        assert runner.input_names() == ("image", "keep", "x")
        assert runner.output_names() == ("pooled", "count", "x_out")
        assert runner.input_spec("image") == TensorSpec("image", ("batch", 3, 4, 4), "float32")
        assert runner.input_spec("keep").dtype == "bool"
        assert runner.input_spec("x").shape == ("x_dim0",)  # an unnamed dynamic dim gets a name
        assert runner.output_spec("count").dtype == "int64"
        assert runner.max_shapes is None and runner.dim_limits() == {}
        assert runner.describe().startswith(f"onnxruntime runner for {path}")
        image = np.arange(2 * 3 * 16, dtype=np.float32).reshape(2, 3, 4, 4)
        keep = np.array([True, False])
        out = runner.infer({"image": image, "keep": keep, "x": np.ones(5, np.float32)})
        assert list(out) == ["pooled", "count", "x_out"]
        want = image.reshape(2, 3, 16).mean(-1) * keep[:, None]
        np.testing.assert_allclose(out["pooled"], want, rtol=1e-6)
        np.testing.assert_array_equal(out["count"], [16, 0])
        assert out["count"].dtype == np.int64
        with pytest.raises(KeyError, match="has no input 'nothing'; inputs are"):
            runner.input_spec("nothing")
    assert "session" not in runner.__dict__  # the context manager closed it


def test_generic_runner_check_feeds(model_dir: Path) -> None:
    """The one strict check of every runner: names, arrays, dtype, rank, fixed and dynamic dims,
    with the path and the expected inputs in the message."""
    runner = OrtRunner(_generic_model(model_dir / "generic2.onnx"), threads=1)
    good = {
        "image": np.zeros((2, 3, 4, 4), np.float32),
        "keep": np.ones(2, bool),
        "x": np.zeros(3, np.float32),
    }
    runner.check_feeds(good)
    with pytest.raises(FeedError, match=r"missing \['keep'\].*takes \['image', 'keep', 'x'\]"):
        runner.infer({k: v for k, v in good.items() if k != "keep"})
    with pytest.raises(FeedError, match=r"unknown \['extra'\].*Feed exactly the inputs of"):
        runner.infer({**good, "extra": np.zeros(1)})
    with pytest.raises(FeedError, match="input keep must be a numpy array"):
        runner.infer({**good, "keep": [True, True]})
    with pytest.raises(FeedError) as info:
        runner.infer({**good, "image": np.zeros((2, 3, 5, 5), np.float32)})
    assert str(info.value) == (
        "input image must be [batch, 3, 4, 4] float32, got [2, 3, 5, 5] float32; "
        f"{runner.path} takes image [batch, 3, 4, 4] float32, keep [batch] bool, "
        "x [x_dim0] float32"
    )
    with pytest.raises(FeedError, match=r"input image must be .*got \[2, 3, 4, 4\] float64"):
        runner.infer({**good, "image": good["image"].astype(np.float64)})
    with pytest.raises(FeedError, match=r"got \[3, 4, 4\] float32"):  # rank
        runner.infer({**good, "image": good["image"][0]})
    with pytest.raises(FeedError, match="disagree on dynamic dim 'batch': image has 2, keep has 3"):
        runner.infer({**good, "keep": np.ones(3, bool)})
    limited = LimitedRunner(runner, {"image": (4, 3, 4, 4), "keep": (3,)})
    assert limited.dim_limits() == {"batch": 3}
    limited.check_feeds({**good, "image": np.zeros((3, 3, 4, 4), np.float32),
                         "keep": np.ones(3, bool)})  # fmt: skip
    with pytest.raises(FeedError, match="dynamic dim 'batch' is 4 in this call, but this engine "
                                        "takes at most 3"):  # fmt: skip
        limited.check_feeds({**good, "image": np.zeros((4, 3, 4, 4), np.float32),
                             "keep": np.ones(4, bool)})  # fmt: skip
    runner.close()


def test_runner_from_session(model_dir: Path) -> None:
    path = _generic_model(model_dir / "generic3.onnx")
    runner = OrtRunner.from_session(open_session(path, threads=1), path, kind="pluginref")
    assert runner.kind == "pluginref" and OrtRunner.kind == "onnxruntime"
    assert runner.path == path and runner.metadata["note"] == "hello"
    assert runner.input_names() == ("image", "keep", "x")
    loaded = load_runner(path, threads=1)
    assert isinstance(loaded, OrtRunner) and loaded.kind == "onnxruntime"
    with pytest.raises(ConfigError, match="is not a LOCORE re-ranker"):
        Backend(runner, CONFIG)


# ---- packing -------------------------------------------------------------------------------------
def test_packing_takes_first_rows_and_pads(feats: LocalFeatures) -> None:
    packer = Packer(CONFIG)  # num_desc 6: the 10 rows are cut, 4 rows are padded
    desc, mask, scale = packer.pack_images(feats[:3])
    np.testing.assert_array_equal(mask, feats.mask[:3, :6])
    np.testing.assert_array_equal(desc, np.where(mask[..., None], feats.descriptors[:3, :6], 0))
    np.testing.assert_array_equal(scale, np.where(mask, feats.scales[:3, :6], 0))
    short = feats.first(4)
    desc, mask, scale = packer.pack_images(short)
    assert desc.shape == (9, 6, 8) and not mask[:, 4:].any() and not desc[:, 4:].any()
    feeds = packer.pack(short[0], short[1:])
    assert feeds[C.QUERY_MASK].dtype == np.bool_ and feeds[C.GALLERY_SCALE].dtype == np.int64
    assert set(feeds) == {s.name for s in graph_io(CONFIG).inputs}
    no_scales = Packer(CONFIG, graph_io(CONFIG, with_scales=False).inputs)
    required = {C.QUERY_DESC, C.QUERY_MASK, C.GALLERY_DESC, C.GALLERY_MASK}
    assert set(no_scales.pack(short[0], short[1:])) == required


def test_packing_errors(feats: LocalFeatures) -> None:
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
    bad = LocalFeatures(
        feats.descriptors, np.where(feats.mask, 7, 0), feats.xy, feats.weights, feats.mask
    )
    with pytest.raises(PackingError, match=r"scale ids must be in \[0, 3\] .* got ids from 7"):
        Packer(CONFIG).pack(bad[0], bad[1:])
    clipped = Packer(CONFIG, clip_scales=True).pack(bad[0], bad[1:])
    assert clipped[C.GALLERY_SCALE].max() == 3
    with pytest.raises(PackingError, match="give one query"):
        Packer(CONFIG).pack(feats[1:], feats[1:])
    nan = feats.descriptors.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(PackingError, match="NaN"):
        Packer(CONFIG).pack_images(LocalFeatures(nan, feats.scales, feats.xy, feats.weights,
                                                 np.ones_like(feats.mask)))  # fmt: skip


def test_global_descriptor_models(model_dir: Path, feats: LocalFeatures) -> None:
    config = toy_config(use_global=True, global_dim=3)
    backend = create_backend(build_toy_reranker(model_dir / "glob.onnx", config), threads=1)
    packer = Packer.for_backend(backend)
    with pytest.raises(PackingError, match="uses global descriptors"):
        packer.pack(feats[0], feats[1:])
    rng = np.random.default_rng(4)
    qg, gg = rng.random(3), rng.random((8, 3))
    with pytest.raises(PackingError, match=r"gallery_global must be \[1, 8, 3\], got \[1, 8, 2\]"):
        packer.pack(feats[0], feats[1:], qg, gg[:, :2])
    feeds = packer.pack(feats[0], feats[1:], qg, gg)
    assert feeds[C.QUERY_GLOBAL].shape == (1, 3) and feeds[C.GALLERY_GLOBAL].dtype == np.float32
    np.testing.assert_allclose(backend.infer(feeds)[C.SCORES], toy_scores(feeds), atol=1e-5)
    db_global = rng.random((9, 3))
    result = Reranker(backend, window=4, topk=8, stride=2).rerank(
        feats[0], feats, np.arange(1, 9), np.linspace(1, 0, 8), qg, db_global
    )
    assert sorted(result.ids.tolist()) == list(range(1, 9))


# ---- re-ranking with real inference ------------------------------------------------------------
@pytest.mark.parametrize("order", ["end-to-start", "start-to-end-to-start"])
def test_reranker_matches_algorithm_with_numpy_scores(
    toy: Backend, feats: LocalFeatures, order: str
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
        import locore.commands.rerank, locore.runtime.backends.ort
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
@pytest.mark.slow
@pytest.mark.skipif(not _export_available(), reason="locore.export needs torch and onnx")
def test_exported_model_end_to_end(model_dir: Path, feats: LocalFeatures) -> None:
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
    assert backend.graph_io == graph_io(config)
    feeds = Packer.for_backend(backend).pack(feats[0], feats[1:])
    with torch.no_grad():
        want = net(**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()
    np.testing.assert_allclose(backend.infer(feeds)[C.SCORES], want, rtol=1e-4, atol=1e-4)
    result = Reranker(backend, window=4, topk=8, stride=2).rerank(
        feats[0], feats, np.arange(1, 9), np.linspace(1, 0, 8)
    )
    assert sorted(result.ids.tolist()) == list(range(1, 9))
