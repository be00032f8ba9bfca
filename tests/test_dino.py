"""DINOv2 + AMES-style detector: torch module, weight files, ONNX export, torch-free extractor.

Random weights and a tiny backbone (hidden 64, 2 layers, 56 px = 4 x 4 patches) keep the whole
file to a few seconds; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="DINOv2 features need the 'dino' extra")
pytest.importorskip("torch", reason="the DINOv2 module needs torch")
pytest.importorskip("onnx", reason="ONNX export needs onnx")

import torch  # noqa: E402

from locore.config import (  # noqa: E402
    DINO_KIND,
    DINO_OUTPUT_NAMES,
    META_DINO_CONFIG,
    META_KIND,
    ConfigError,
    DinoConfig,
    LocoreConfig,
)
from locore.export.dino_export import export_dino_onnx  # noqa: E402
from locore.model.dino import (  # noqa: E402
    DinoLocalFeatures,
    DinoWeightsError,
    patch_centres,
    resample_position_embeddings,
)
from locore.runtime.ames import FeatureFile, to_rows, write_features  # noqa: E402
from locore.runtime.dino import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    DinoExtractor,
    preprocess,
)
from locore.runtime.global_descriptors import write_global_descriptors  # noqa: E402
from locore.runtime.local_features import FeatureError, LocalFeatures  # noqa: E402

SMALL = DinoConfig(
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    patch_size=14,
    image_size=56,
    num_registers=4,
    desc_dim=32,
    num_desc=8,
)
ATOL = 1e-4


def small_module(seed: int = 0, config: DinoConfig = SMALL) -> DinoLocalFeatures:
    torch.manual_seed(seed)
    return DinoLocalFeatures(config)


def distinct_inputs(model: DinoLocalFeatures, batch: int, seed: int = 0) -> torch.Tensor:
    """Inputs whose top-(Nd + 1) detector weights are all at least 1e-3 apart (no near-ties)."""
    s = model.config.image_size
    for trial in range(100):
        g = torch.Generator().manual_seed(seed * 1000 + trial)
        x = torch.randn(batch, 3, s, s, generator=g)
        with torch.no_grad():
            weights = model.dense(x)[1]
        top = torch.sort(weights, dim=1, descending=True).values[:, : model.config.num_desc + 1]
        if float((top[:, :-1] - top[:, 1:]).min()) > 1e-3:
            return x
    raise AssertionError("no input with distinct detector weights found")


def textured(seed: int, h: int = 90, w: int = 120) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model() -> DinoLocalFeatures:
    return small_module(0)


@pytest.fixture(scope="module")
def onnx_path(model: DinoLocalFeatures, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dino") / "dino.onnx"
    result = export_dino_onnx(model, path, opset=18)
    assert result.path == path and result.op_counts.get("TopK") == 1
    return path


# ---- config ------------------------------------------------------------------------------------
def test_config_round_trip_and_checks() -> None:
    assert DinoConfig.from_json(SMALL.to_json()) == SMALL
    default = DinoConfig()
    assert (default.hidden_size, default.num_layers, default.patch_size) == (768, 12, 14)
    assert (default.num_registers, default.desc_dim, default.num_patches) == (4, 768, 256)
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        DinoConfig(image_size=225)
    with pytest.raises(ConfigError, match="exceeds the 16 patches"):
        DinoConfig(hidden_size=64, num_heads=2, image_size=56, num_desc=17)
    with pytest.raises(ConfigError, match="unknown DinoConfig keys"):
        DinoConfig.from_dict({"hidden": 3})


# ---- torch module ------------------------------------------------------------------------------
def test_forward_shapes_dtypes_and_selection(model: DinoLocalFeatures) -> None:
    x = distinct_inputs(model, 3)
    with torch.no_grad():
        out = model(x)
        dense_desc, dense_w, dense_global = model.dense(x)
    nd, dl = SMALL.num_desc, SMALL.desc_dim
    assert out.descriptors.shape == (3, nd, dl) and out.descriptors.dtype == torch.float32
    assert out.weights.shape == (3, nd) and out.weights.dtype == torch.float32
    assert out.xy.shape == (3, nd, 2) and out.xy.dtype == torch.float32
    assert out.scales.shape == (3, nd) and out.scales.dtype == torch.int64
    assert out.global_desc.shape == (3, SMALL.hidden_size)
    assert dense_desc.shape == (3, SMALL.num_patches, dl) and dense_w.shape == (3, 16)
    torch.testing.assert_close(out.descriptors.norm(dim=-1), torch.ones(3, nd))
    torch.testing.assert_close(out.global_desc.norm(dim=-1), torch.ones(3))
    assert bool((out.weights > 0).all()) and bool((out.weights[:, :-1] > out.weights[:, 1:]).all())
    assert bool((out.scales == 0).all())
    # the kept patches are the top-Nd of the dense map, with their own descriptors and centres
    index = torch.topk(dense_w, nd, dim=1).indices
    centres = patch_centres(SMALL.grid)
    for b in range(3):
        torch.testing.assert_close(out.descriptors[b], dense_desc[b, index[b]])
        torch.testing.assert_close(out.xy[b], centres[index[b]])
    assert float(out.xy.min()) > 0 and float(out.xy.max()) < 1
    torch.testing.assert_close(out.global_desc, dense_global)
    with torch.no_grad():
        assert bool((model(x, scale_id=2).scales == 2).all())


def test_patch_centres_row_major() -> None:
    c = patch_centres(2)
    assert c.tolist() == [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]


def test_wrong_input_size_is_explained(model: DinoLocalFeatures) -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, 56, 56\].*got \[1, 3, 70, 70\]"):
        model(torch.zeros(1, 3, 70, 70))


# ---- weight files ------------------------------------------------------------------------------
def test_weights_round_trip(model: DinoLocalFeatures, tmp_path: Path) -> None:
    model.save_weights(tmp_path / "backbone.safetensors", tmp_path / "head.safetensors")
    fresh = small_module(seed=123)
    x = distinct_inputs(model, 2)
    with torch.no_grad():
        before = fresh(x)
        assert not torch.allclose(before.global_desc, model(x).global_desc)
        fresh.load_weights(tmp_path / "backbone.safetensors", tmp_path / "head.safetensors")
        for a, b in zip(fresh(x), model(x), strict=True):
            assert torch.equal(a, b)


def test_backbone_loads_transformers_checkpoint_layouts(
    model: DinoLocalFeatures, tmp_path: Path
) -> None:
    """Keys as in Hugging Face checkpoints: transformers 4.x attention names, a model prefix,
    a classifier to ignore, no mask token."""
    from safetensors.torch import save_file

    legacy = {
        ".attention.q_proj.": ".attention.attention.query.",
        ".attention.k_proj.": ".attention.attention.key.",
        ".attention.v_proj.": ".attention.attention.value.",
        ".attention.o_proj.": ".attention.output.dense.",
    }
    state = {}
    for key, value in model.backbone.state_dict().items():
        for new, old in legacy.items():
            key = key.replace(new, old)
        if key != "embeddings.mask_token":
            state[f"dinov2_with_registers.{key}"] = value.contiguous()
    state["classifier.weight"] = torch.zeros(10, 128)
    assert any(".attention.attention.query." in k for k in state)
    save_file(state, str(tmp_path / "hf.safetensors"))
    fresh = small_module(seed=7)
    fresh.head.load_state_dict(model.head.state_dict())
    fresh.load_weights(backbone_path=tmp_path / "hf.safetensors")
    x = distinct_inputs(model, 2)
    with torch.no_grad():
        for a, b in zip(fresh(x), model(x), strict=True):
            assert torch.equal(a, b)


def test_position_embeddings_resampled_like_transformers(tmp_path: Path) -> None:
    """A checkpoint for 70 px (5 x 5 patches) loaded into a 56 px model gives what transformers
    computes at run time for 56 px images (it interpolates the same way on the fly)."""
    from dataclasses import replace

    big = small_module(seed=3, config=replace(SMALL, image_size=70))
    big.save_weights(tmp_path / "b70.safetensors", tmp_path / "h70.safetensors")
    small = small_module(seed=4)
    small.load_weights(tmp_path / "b70.safetensors", tmp_path / "h70.safetensors")
    assert small.backbone.embeddings.position_embeddings.shape == (1, 17, 64)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        ours = small.backbone(pixel_values=x).last_hidden_state
        theirs = big.backbone(pixel_values=x).last_hidden_state  # run-time interpolation
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        copy = big.with_image_size(56)
        torch.testing.assert_close(copy(x).descriptors, small(x).descriptors)
    pos = big.backbone.embeddings.position_embeddings
    assert resample_position_embeddings(pos, 5) is pos


def test_mismatched_weight_files_are_explained(model: DinoLocalFeatures, tmp_path: Path) -> None:
    from dataclasses import replace

    from safetensors.torch import save_file

    other = small_module(config=replace(SMALL, hidden_size=32, desc_dim=16))
    other.save_weights(tmp_path / "b32.safetensors", tmp_path / "h32.safetensors")
    with pytest.raises(DinoWeightsError, match=r"shape mismatches.*hidden_size=32, patch_size=14"):
        model.load_weights(backbone_path=tmp_path / "b32.safetensors")
    with pytest.raises(DinoWeightsError, match=r"maps 32-d tokens to 16-d descriptors"):
        model.load_weights(head_path=tmp_path / "h32.safetensors")

    state = {k: v.contiguous() for k, v in model.backbone.state_dict().items()}
    del state["encoder.layer.1.mlp.fc2.weight"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(DinoWeightsError, match=r"missing 1 keys: encoder.layer.1.mlp.fc2.weight"):
        model.load_weights(backbone_path=tmp_path / "partial.safetensors")

    model.save_weights(head_path=tmp_path / "head.safetensors")
    with pytest.raises(DinoWeightsError, match="is this a head file"):
        model.load_weights(backbone_path=tmp_path / "head.safetensors")
    with pytest.raises(DinoWeightsError, match="never downloads"):
        model.load_weights(backbone_path=tmp_path / "absent.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DinoWeightsError, match="not a readable safetensors file"):
        model.load_weights(head_path=tmp_path / "bad.safetensors")
    with pytest.raises(DinoWeightsError, match="needs backbone_path, head_path or both"):
        model.load_weights()


# ---- ONNX --------------------------------------------------------------------------------------
def test_onnx_matches_torch(model: DinoLocalFeatures, onnx_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[META_KIND] == DINO_KIND
    assert DinoConfig.from_json(meta[META_DINO_CONFIG]) == SMALL
    assert [o.name for o in proto.graph.output] == list(DINO_OUTPUT_NAMES)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    errors: dict[str, float] = {}
    for batch in (1, 3):  # traced with 2: the batch stays dynamic
        x = distinct_inputs(model, batch, seed=batch)
        with torch.no_grad():
            expected = model(x)
        values = session.run(list(DINO_OUTPUT_NAMES), {"image": x.numpy()})
        got = dict(zip(DINO_OUTPUT_NAMES, values, strict=True))
        for name, want in zip(DINO_OUTPUT_NAMES, expected, strict=True):
            assert got[name].shape == tuple(want.shape), name
            assert got[name].dtype == want.numpy().dtype, name
            err = float(np.abs(got[name] - want.numpy()).max())
            errors[name] = max(errors.get(name, 0.0), err)
        # the same patches, in the same order
        np.testing.assert_array_equal(got["xy"], expected.xy.numpy())
        np.testing.assert_array_equal(got["scales"], expected.scales.numpy())
    for name in ("descriptors", "weights", "global_desc"):
        assert errors[name] < ATOL, errors
    print("max |onnx - torch|:", {k: f"{v:.1e}" for k, v in errors.items()})


# ---- runtime extractor -------------------------------------------------------------------------
def test_preprocess() -> None:
    grey = np.full((30, 50), 255, np.uint8)
    x = preprocess(grey, 56)
    assert x.shape == (3, 56, 56) and x.dtype == np.float32
    want = (1.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x[:, 0, 0], want, rtol=1e-5)
    bgr = np.zeros((56, 56, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order -> the third (B) channel of RGB
    y = preprocess(bgr, 56)
    assert y[2].mean() > y[0].mean()


def test_extractor_gives_local_features(
    model: DinoLocalFeatures, onnx_path: Path, tmp_path: Path
) -> None:
    import cv2

    extractor = DinoExtractor(onnx_path, threads=1, batch_size=2)
    assert (extractor.name, extractor.num_desc, extractor.desc_dim) == ("dino", 8, 32)
    assert (extractor.num_scales, extractor.global_dim, extractor.image_size) == (1, 64, 56)
    arrays = [textured(i) for i in range(3)]
    cv2.imwrite(str(tmp_path / "img.png"), arrays[0])
    images: list[np.ndarray | Path] = [*arrays, tmp_path / "img.png"]

    feats = extractor.extract_many(images, progress=False)
    assert len(feats) == 4
    for f in feats:
        assert isinstance(f, LocalFeatures)
        f.validate(num_scales=extractor.num_scales)
        assert f.num_valid == 8 and f.image_size == (90, 120)
        np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, rtol=1e-5)
        assert np.all(np.diff(f.weights) <= 0)
    single = extractor.extract(images[1])
    np.testing.assert_allclose(single.descriptors, feats[1].descriptors, atol=1e-5)
    np.testing.assert_array_equal(feats[0].xy, feats[3].xy)  # array and file give the same

    # the torch module on the same preprocessed pixels agrees
    with torch.no_grad():
        ref = model(torch.from_numpy(preprocess(arrays[2], 56)[None]))
    np.testing.assert_allclose(feats[2].weights, ref.weights[0].numpy(), atol=ATOL)

    # docs/design.md §8 layout, from records and from rows
    write_features(tmp_path / "f.h5", feats)
    write_global_descriptors(tmp_path / "g.f32", LocalFeatures.stack(feats).global_desc)
    write_features(tmp_path / "rows.h5", np.stack([to_rows(f) for f in feats]))
    for name in ("f.h5", "rows.h5"):
        with FeatureFile(tmp_path / name) as db:
            assert (db.num_images, db.num_desc, db.desc_dim) == (4, 8, 32)
            back = db.read(2)
        np.testing.assert_array_equal(back.descriptors, feats[2].descriptors)
        np.testing.assert_array_equal(back.xy, feats[2].xy)
        assert back.mask.all()
    globals_ = np.fromfile(tmp_path / "g.f32", dtype=np.float32).reshape(4, 64)
    np.testing.assert_array_equal(globals_[1], feats[1].global_desc)
    extractor.close()


def test_extractor_checks(onnx_path: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    assert DinoExtractor.from_config(LocoreConfig(desc_dim=32, num_desc=8), onnx_path).num_desc
    with pytest.raises(FeatureError, match=r"re-ranker expects num_desc=48, desc_dim=128"):
        DinoExtractor.from_config(LocoreConfig(), onnx_path)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save_model(helper.make_model(graph), str(tmp_path / "other.onnx"))
    with pytest.raises(FeatureError, match="is not a DINOv2 feature model"):
        DinoExtractor(tmp_path / "other.onnx")
    extractor = DinoExtractor(onnx_path)
    from locore.runtime.backends import FeedError

    with pytest.raises(FeedError, match=r"input image must be \[batch, 3, 56, 56\] float32"):
        extractor.run(np.zeros((1, 3, 70, 70), np.float32))


def test_runtime_module_is_torch_free() -> None:
    import subprocess
    import sys

    code = (
        "import sys, locore.runtime.dino, locore.runtime.backends.ort; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
