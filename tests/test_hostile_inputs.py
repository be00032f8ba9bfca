"""Hostile but realistic inputs to the library (issue 9): each gives a clear error, of the
documented class and with a message that says what was expected, or the right result.

Grouped by boundary: feature files and records, ids and similarities, re-ranking parameters,
ONNX models whose metadata lies, images, global descriptors, configs and checkpoints, training.
The CLI's handling of the same errors is tested in test_cli_errors.py.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_toy import build_toy_reranker, random_rows, toy_config

from locore import config as C
from locore.checkpoint_format import CheckpointError, checkpoint_fusion, write_checkpoint_meta
from locore.config import ConfigError, LocoreConfig, graph_io, parse_overrides
from locore.errors import UsageError
from locore.runtime.ames import FeatureFile, FormatError, from_rows, to_rows, write_features
from locore.runtime.backends import create_backend
from locore.runtime.backends.base import FeedError, available_cores, check_threads
from locore.runtime.global_descriptors import (
    Codebook,
    CodebookError,
    read_global_descriptors,
    write_global_descriptors,
)
from locore.runtime.images import MAX_PIXELS, load_image
from locore.runtime.local_features import FeatureError, ImageIdError, LocalFeatures, as_image_ids
from locore.runtime.packing import Packer, PackingError
from locore.runtime.shortlist import Shortlist
from locore.runtime.sift import SiftExtractor
from locore.runtime.sliding_windows import Reranker, RerankParams, fuse_scores

CONFIG = toy_config()  # 6 descriptors of dimension 8, 4 scales


@pytest.fixture
def rows() -> dict[str, np.ndarray]:
    return random_rows(np.random.default_rng(7), 9, 6, CONFIG)


@pytest.fixture
def h5(tmp_path: Path, rows: dict[str, np.ndarray]) -> Path:
    path = tmp_path / "db.h5"
    write_features(path, LocalFeatures(**rows))
    return path


def _raw_h5(path: Path, data: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=data)
    return path


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_reranker(tmp_path_factory.mktemp("toy") / "toy.onnx", CONFIG)


@pytest.fixture(scope="module")
def reranker(toy_path: Path) -> Reranker:
    return Reranker(create_backend(toy_path), window=4, topk=7, stride=2)


# ---- feature files ---------------------------------------------------------------------------
def test_truncated_hdf5_is_a_format_error_naming_the_file(h5: Path, tmp_path: Path) -> None:
    data = h5.read_bytes()
    for cut in (100, len(data) // 2, len(data) - 16):
        bad = tmp_path / f"cut{cut}.h5"
        bad.write_bytes(data[:cut])
        with pytest.raises(FormatError, match=rf"{bad.name}.*HDF5.*'features' \[N, T, 5 \+ D\]"):
            with FeatureFile(bad) as ff:
                ff.read_all()


def test_non_hdf5_file_is_a_format_error(tmp_path: Path) -> None:
    bad = tmp_path / "features.h5"
    bad.write_text("query,db\n1,2\n")
    with pytest.raises(FormatError, match=r"features.h5 is not a readable HDF5 file.*float32"):
        FeatureFile(bad)
    with pytest.raises(FileNotFoundError, match="is a folder"):
        FeatureFile(tmp_path)


def test_unreadable_feature_file_is_a_permission_error(
    h5: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("locore.runtime.ames.os.access", lambda *a, **k: False)
    with pytest.raises(PermissionError, match=rf"{h5.name} is not readable"):
        FeatureFile(h5)


def test_integer_feature_data_is_refused_not_zeroed(tmp_path: Path) -> None:
    path = _raw_h5(tmp_path / "int.h5", np.ones((2, 3, 9), np.int32))
    with pytest.raises(FormatError, match=r"must hold float32 rows, got int32"):
        FeatureFile(path)
    with pytest.raises(FormatError, match="must be float32, got int32"):
        write_features(tmp_path / "w.h5", np.ones((2, 3, 9), np.int32))
    with pytest.raises(FormatError, match="int64"):
        from_rows(np.ones((3, 9), np.int64))


def test_mask_values_must_be_zero_or_one(tmp_path: Path, rows: dict[str, np.ndarray]) -> None:
    data = to_rows(LocalFeatures(**rows))
    data[4, 2, 3] = 0.7
    path = _raw_h5(tmp_path / "mask.h5", data)
    with FeatureFile(path) as ff:
        with pytest.raises(
            FormatError, match=r"column 3 \(mask\) must be 0 .* or 1 .*0\.7 at image 4, row 2"
        ):
            ff.read_all()
        with pytest.raises(FormatError, match=r"0\.7 at image 4, row 2"):
            ff.read([1, 4])  # the file's image id, not the position in the batch
        ff.read([0, 1])  # the other images read fine
    with pytest.raises(FeatureError, match=r"mask must be boolean .* got value 0\.7"):
        LocalFeatures(**{**rows, "mask": np.where(rows["mask"], 1.0, 0.7)})
    ok = LocalFeatures(**{**rows, "mask": rows["mask"].astype(np.int8)})  # 0/1: converted
    assert ok.mask.dtype == bool and np.array_equal(ok.mask, rows["mask"])


def test_non_finite_descriptors_are_refused_on_valid_rows_only(
    tmp_path: Path, rows: dict[str, np.ndarray]
) -> None:
    data = to_rows(LocalFeatures(**rows))
    valid = int(np.argmax(rows["mask"][2]))
    padded = np.flatnonzero(~rows["mask"][5])
    data[2, valid, 7] = np.nan
    if padded.size:
        data[5, padded[0], 6] = np.inf  # padding rows are never read
    path = _raw_h5(tmp_path / "nan.h5", data)
    with FeatureFile(path) as ff:
        with pytest.raises(FormatError, match=rf"NaN or infinite .* image 2, row {valid}"):
            ff.read(2)
        ff.read(5)
    feats = LocalFeatures(**rows)
    feats.descriptors[3, 0, 0] = np.inf
    with pytest.raises(PackingError, match="NaN or infinite values at image 3, row 0"):
        Packer(CONFIG).pack(
            LocalFeatures(**random_rows(np.random.default_rng(1), 1, 6, CONFIG))[0], feats
        )
    with pytest.raises(FeatureError, match=r"NaN or infinite .* image 3, row 0"):
        write_features(tmp_path / "w.h5", feats)
    big = LocalFeatures(**rows)
    big.descriptors[0, 0, 0] = 1e6  # finite in float32, not in float16
    q = LocalFeatures(**rows)[1]
    with pytest.raises(PackingError, match="after conversion to float16"):
        Packer(CONFIG, float_dtype=np.float16).pack(q, big)


@pytest.mark.parametrize("value", [1.5, -3.0, 1e30, np.nan])
def test_scale_ids_must_be_whole_numbers_in_range(
    tmp_path: Path, rows: dict[str, np.ndarray], value: float
) -> None:
    data = to_rows(LocalFeatures(**rows))
    data[0, 0, 2] = value  # row 0 is always valid
    with pytest.raises(FormatError, match=r"column 2 \(scale id\) must .* at row 0"):
        from_rows(data[0])
    with pytest.raises(FeatureError, match="scales must be integer"):
        LocalFeatures(**{**rows, "scales": np.full(rows["scales"].shape, 1.5)})


def test_scale_ids_beyond_the_model_are_refused_or_clipped(rows: dict[str, np.ndarray]) -> None:
    feats = LocalFeatures(**{**rows, "scales": np.where(rows["mask"], 9, 0)})
    with pytest.raises(PackingError, match=r"scale ids must be in \[0, 3\].*clip_scales"):
        Packer(CONFIG).pack(feats[0], feats[1:])
    clipped = Packer(CONFIG, clip_scales=True).pack(feats[0], feats[1:])
    assert clipped[C.GALLERY_SCALE].max() == CONFIG.num_scales - 1


def test_feature_file_indices_never_wrap(h5: Path) -> None:
    with FeatureFile(h5) as ff:
        for index in (-1, 9, [0, -4], 2.5, np.uint64(2**64 - 1), 1e19, [True, False]):
            with pytest.raises(ImageIdError) as info:
                ff.read(index)
            assert isinstance(info.value, IndexError) and isinstance(info.value, ValueError)
            assert h5.name in str(info.value) or "integers" in str(info.value)
        assert ff.read(np.array([3.0, 1.0])).descriptors.shape[0] == 2  # whole floats are ids
        with pytest.raises(UsageError, match="num_desc must be a positive integer"):
            ff.read(0, num_desc=0)
        with pytest.raises(UsageError, match="num_desc"):
            ff.read(0, num_desc=True)  # type: ignore[arg-type]


def test_integer_descriptors_in_a_record_are_refused(rows: dict[str, np.ndarray]) -> None:
    with pytest.raises(FeatureError, match="descriptors must be float .* got int32"):
        LocalFeatures(**{**rows, "descriptors": rows["descriptors"].astype(np.int32)})


# ---- empty images ------------------------------------------------------------------------------
def test_query_with_every_row_masked_is_refused(
    reranker: Reranker, rows: dict[str, np.ndarray]
) -> None:
    db = LocalFeatures(**rows)
    query = LocalFeatures(**{**rows, "mask": np.zeros_like(rows["mask"])})[0]
    with pytest.raises(PackingError, match="the query has no valid descriptor .*nothing to match"):
        reranker.rerank(query, db, np.arange(5), np.linspace(0.9, 0.5, 5))
    batch = LocalFeatures(**{**rows, "mask": rows["mask"] & (np.arange(9) != 2)[:, None]})
    with pytest.raises(PackingError, match="query 2 has no valid descriptor"):
        Packer(CONFIG).pack(batch[:4], LocalFeatures.stack([db[:3]] * 4))


def test_all_masked_database_image_is_scored_as_no_evidence(
    reranker: Reranker, rows: dict[str, np.ndarray]
) -> None:
    """Policy: an image without descriptors keeps logit 0 (local term sigmoid(0) = 0.5), so its
    fused score is alpha * sim + (1 - alpha) / 2, whatever the model says about empty input."""
    mask = rows["mask"].copy()
    mask[3] = False
    db = LocalFeatures(**{**rows, "mask": mask})
    ids = np.array([0, 3, 1, 2, 4])
    sims = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    logits = reranker.score(db[0], db[ids])
    assert logits[1] == 0.0 and np.count_nonzero(logits) == 4
    result = reranker.rerank(db[0], db, ids, sims)
    p = reranker.params
    got = result.scores[list(result.ids).index(3)]
    assert got == pytest.approx(p.alpha * 0.8 + (1 - p.alpha) * 0.5)


# ---- ids and similarities --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        (-1, r"-1 .*padding id of faiss"),
        (9, "image index 9 is out of range"),
        (224.7, "224.7"),
        (1e19, "1e"),
        (np.uint64(2**64 - 1), "18446744073709551615"),
    ],
)
def test_shortlist_ids_never_wrap_around(
    reranker: Reranker, rows: dict[str, np.ndarray], bad: object, shown: str
) -> None:
    db = LocalFeatures(**rows)
    ids = np.array([0, 1, 2, 3], dtype=np.asarray(bad).dtype)
    ids[2] = bad
    before = reranker.calls
    with pytest.raises(ImageIdError, match=shown):
        reranker.rerank(db[0], db, ids, np.array([0.9, 0.8, 0.7, 0.6]))
    assert reranker.calls == before  # refused before any model call


def test_as_image_ids_rules() -> None:
    np.testing.assert_array_equal(as_image_ids([3, 0.0, np.int8(2)], 4), [3, 0, 2])
    assert as_image_ids(np.array([], np.float64), 0).dtype == np.int64
    with pytest.raises(ImageIdError, match="integers"):
        as_image_ids(np.array([True]), 4)
    with pytest.raises(ImageIdError, match="integers"):
        as_image_ids(np.array(["1"]), 4)
    with pytest.raises(ImageIdError, match=r"whole numbers .*got nan at position \(1, 0\)"):
        as_image_ids(np.array([[1.0], [np.nan]]), 4)
    with pytest.raises(ImageIdError, match="image index 340282366920938463463374607431768211456"):
        as_image_ids([2**128], 4)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_similarities_name_query_and_position(
    reranker: Reranker, rows: dict[str, np.ndarray], value: float
) -> None:
    db = LocalFeatures(**rows)
    sims = np.array([0.9, 0.8, value, 0.6])
    with pytest.raises(
        UsageError, match=rf"similarity of the query at shortlist position 2 is {value}"
    ):
        reranker.rerank(db[0], db, np.arange(4), sims)
    shortlist = Shortlist(
        np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]], np.float32), np.array([[0, 1, 2], [3, 4, 5]])
    )
    shortlist.sims[1, 1] = value  # after the shortlist's own checks
    with pytest.raises(UsageError, match="similarity of query 1 at shortlist position 1"):
        list(reranker.rerank_many(db[:2], db, shortlist))


def test_padded_shortlist_slots_are_dropped(
    reranker: Reranker, rows: dict[str, np.ndarray]
) -> None:
    db = LocalFeatures(**rows)
    shortlist = Shortlist(
        np.array([[0.9, 0.8, 0.0, 0.0], [0.9, 0.8, 0.7, 0.6]], np.float32),
        np.array([[5, 1, -1, -1], [3, 4, 5, 6]]),
    )
    first, second = reranker.rerank_many(db[:2], db, shortlist)
    assert sorted(first.ids.tolist()) == [1, 5] and len(second.ids) == 4


def test_ids_and_sims_shapes_must_agree(reranker: Reranker, rows: dict[str, np.ndarray]) -> None:
    db = LocalFeatures(**rows)
    with pytest.raises(UsageError, match=r"must both be \[K\], got \[3\] and \[4\]"):
        reranker.rerank(db[0], db, np.arange(3), np.zeros(4))
    with pytest.raises(UsageError, match=r"db_global must be \[N, Dg\] with N = 9"):
        reranker.rerank(db[0], db, np.arange(3), np.zeros(3), db_global=np.zeros((4, 2)))


# ---- re-ranking parameters --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": True}, "window must be a positive integer, got True"),
        ({"window": 2.5}, "window must be a positive integer"),
        ({"topk": 0}, "topk must be a positive integer"),
        ({"stride": -1}, "stride must be a positive integer"),
        ({"window": 10, "stride": 20}, r"stride \(20\) must not exceed the window \(10\)"),
        ({"order": "random"}, "order must be one of"),
        ({"order": None}, "order must be one of"),
        ({"alpha": float("nan")}, r"alpha must be in \[0, 1\]"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
        ({"alpha": "0.5"}, "alpha must be a number"),
        ({"alpha": True}, "alpha must be a number"),
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"temperature": -0.1}, "temperature must be a finite number > 0"),
        ({"temperature": float("inf")}, "temperature must be a finite number > 0"),
    ],
)
def test_rerank_params_are_checked(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        RerankParams(**kwargs)  # type: ignore[arg-type]


def test_reranker_refuses_unknown_parameters(toy_path: Path) -> None:
    backend = create_backend(toy_path)
    with pytest.raises(UsageError, match=r"unknown re-ranking parameters \['windw'\]"):
        Reranker(backend, windw=3)
    assert RerankParams(window=np.int64(5), stride=np.int32(5)).window == 5


# ---- ONNX models whose metadata does not match the graph ----------------------------------------
def _scale_table_model(path: Path, config: LocoreConfig, table_rows: int) -> Path:
    """A model that looks up gallery scale ids in a [table_rows] table (an embedding, as the
    real model does): ONNX Runtime fails on ids >= table_rows."""
    gio = graph_io(config)
    elem = {"float": TensorProto.FLOAT, "bool": TensorProto.BOOL, "int64": TensorProto.INT64}
    inputs = [
        helper.make_tensor_value_info(s.name, elem[s.dtype], list(s.shape)) for s in gio.inputs
    ]
    outputs = [helper.make_tensor_value_info(C.SCORES, TensorProto.FLOAT, ["batch", "num_gallery"])]
    table = helper.make_tensor("table", TensorProto.FLOAT, [table_rows], [0.1] * table_rows)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [-1])
    nodes = [
        helper.make_node("Gather", ["table", C.GALLERY_SCALE], ["looked_up"], axis=0),
        helper.make_node("ReduceSum", ["looked_up", "axes"], [C.SCORES], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "scales", inputs, outputs, initializer=[table, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(
        model, {C.META_CONFIG: config.to_json(), C.META_GRAPH_IO: json.dumps(gio.to_dict())}
    )
    onnx.save_model(model, str(path))
    return path


def test_metadata_with_more_scales_than_the_graph_fails_at_load(tmp_path: Path) -> None:
    config = toy_config(num_scales=100)
    path = _scale_table_model(tmp_path / "lying.onnx", config, table_rows=8)
    with pytest.raises(
        ConfigError,
        match=r"lying.onnx: its metadata locore.config says num_scales=100, but the graph "
        r"fails on scale id 99 .*re-export",
    ):
        create_backend(path)
    honest = _scale_table_model(tmp_path / "honest.onnx", toy_config(num_scales=8), table_rows=8)
    assert create_backend(honest).config.num_scales == 8
    # without the probe, ONNX Runtime's own error arrives at run time, wrapped with the file
    from locore.runtime.backends import Backend, load_runner

    backend = Backend(load_runner(path), probe=False)
    feeds = backend.probe_feeds()
    with pytest.raises(
        RuntimeError,
        match=r"ONNX Runtime failed running .*lying.onnx .*gallery_scale \[1, 1, 6\] int64",
    ):
        backend.infer(feeds)


def test_recorded_graph_io_must_match_the_graph(tmp_path: Path, toy_path: Path) -> None:
    model = onnx.load(str(toy_path))
    other = graph_io(toy_config(desc_dim=16))
    for prop in model.metadata_props:
        if prop.key == C.META_GRAPH_IO:
            prop.value = json.dumps(other.to_dict())
    path = tmp_path / "shapes.onnx"
    onnx.save_model(model, str(path))
    with pytest.raises(
        ConfigError,
        match=r"input query_desc is \[batch, 6, 8\] float32 in the graph, "
        r"but its metadata locore.graph_io says \[batch, 6, 16\] float",
    ):
        create_backend(path)


def test_non_finite_weights_fail_at_load(tmp_path: Path, toy_path: Path) -> None:
    model = onnx.load(str(toy_path))
    for init in model.graph.initializer:
        if init.name == "logit_scale":
            init.CopyFrom(helper.make_tensor("logit_scale", TensorProto.FLOAT, [], [float("nan")]))
    path = tmp_path / "nan.onnx"
    onnx.save_model(model, str(path))
    with pytest.raises(
        ConfigError, match=r"nan.onnx: on a probe input .* \[nan\].*Non-finite weights"
    ):
        create_backend(path)


def test_feed_errors_are_clear(toy_path: Path) -> None:
    backend = create_backend(toy_path)
    feeds = backend.probe_feeds()
    feeds[C.QUERY_DESC] = feeds[C.QUERY_DESC].astype(np.float64)
    with pytest.raises(
        FeedError, match=r"query_desc must be \[batch, 6, 8\] float32, got \[1, 6, 8\] float64"
    ):
        backend.infer(feeds)


@pytest.mark.parametrize("threads", [0, -1, 2000, True, 1.5])
def test_thread_counts_are_bounded_by_the_machine(toy_path: Path, threads: object) -> None:
    with pytest.raises(UsageError, match=r"threads must be"):
        create_backend(toy_path, threads=threads)
    assert check_threads(available_cores()) == available_cores()
    assert check_threads(None) is None


# ---- images -----------------------------------------------------------------------------------
def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG that claims width x height pixels (IHDR only, a few bytes of IDAT)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    data += chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def test_gigapixel_png_is_refused_before_decoding(tmp_path: Path) -> None:
    path = _png_header_only(tmp_path / "huge.png", 40_000, 30_000)  # 1.2 gigapixels
    assert path.stat().st_size < 200
    start = time.perf_counter()
    with pytest.raises(
        FeatureError,
        match=r"huge.png is 40000 x 30000 = 1200.0 megapixels, more than the limit of 100 "
        r"megapixels",
    ):
        load_image(path)
    assert time.perf_counter() - start < 1.0
    with pytest.raises(FeatureError, match="megapixels"):
        SiftExtractor(global_desc="mean").extract(path)


def test_jpeg_size_is_read_from_its_header(tmp_path: Path) -> None:
    import cv2

    ok, data = cv2.imencode(".jpg", np.full((40, 60, 3), 128, np.uint8))
    assert ok
    raw = bytearray(data.tobytes())
    sof = raw.find(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = struct.pack(">HH", 60_000, 60_000)  # height, width
    path = tmp_path / "huge.jpg"
    path.write_bytes(bytes(raw))
    with pytest.raises(FeatureError, match="60000 x 60000 = 3600.0 megapixels"):
        load_image(path)
    with pytest.raises(FeatureError, match="megapixels"):
        load_image(np.zeros((20, 20), np.uint8), max_pixels=399)
    assert MAX_PIXELS == 100_000_000


def _photo() -> np.ndarray:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    import cv2

    return cv2.resize(base, (320, 240), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize("fmt", [".jpg", ".png"])
def test_truncated_image_files_are_refused(tmp_path: Path, fmt: str) -> None:
    import cv2

    ok, data = cv2.imencode(fmt, _photo())
    assert ok
    full = tmp_path / f"full{fmt}"
    full.write_bytes(data.tobytes())
    assert load_image(full).shape == (240, 320, 3)
    for fraction in (0.3, 0.6, 0.95):
        cut = tmp_path / f"cut{fraction}{fmt}"
        cut.write_bytes(data.tobytes()[: int(len(data) * fraction)])
        assert cv2.imread(str(cut)) is not None or fmt == ".png"  # OpenCV would take a part
        with pytest.raises(FeatureError, match=rf"cut{fraction}{fmt} is truncated or damaged"):
            load_image(cut)
    trailer = tmp_path / f"trailer{fmt}"  # bytes after the end marker (some cameras add them)
    trailer.write_bytes(data.tobytes() + b"\x00" * 100)
    np.testing.assert_array_equal(load_image(trailer), load_image(full))


def test_image_dtype_and_range_rules() -> None:
    photo = _photo()
    as_float = photo.astype(np.float32) / 255.0
    np.testing.assert_array_equal(load_image(as_float), photo)
    with pytest.raises(
        FeatureError,
        match=r"float image must have values in \[0, 1\], got values from 0 to 25[0-9] "
        r"\(a 0-255 image: divide by 255",
    ):
        load_image(photo.astype(np.float32))
    with pytest.raises(FeatureError, match=r"values in \[0, 1\]"):
        SiftExtractor(global_desc="mean").extract(photo.astype(np.float32))
    with pytest.raises(FeatureError, match="finite"):
        load_image(np.full((8, 8), np.nan, np.float32))
    with pytest.raises(FeatureError, match=r"uint8 or float .* got dtype uint16"):
        load_image(photo.astype(np.uint16))
    with pytest.raises(FeatureError, match="got dtype bool"):
        load_image(np.ones((8, 8), bool))
    with pytest.raises(FeatureError, match=r"values from -0.5"):
        load_image(np.full((8, 8), -0.5))


def test_image_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FeatureError, match="is a folder"):
        load_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(FeatureError, match="could not decode"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    with pytest.raises(FeatureError, match="truncated"):
        load_image(tmp_path / "x.jpg")
    monkeypatch.setattr("locore.runtime.images.os.access", lambda *a, **k: False)
    with pytest.raises(PermissionError, match="x.jpg is not readable"):
        load_image(tmp_path / "x.jpg")


def test_extractor_parameters_are_checked() -> None:
    with pytest.raises(FeatureError, match="num_desc must be a positive integer, got True"):
        SiftExtractor(num_desc=True, global_desc="mean")  # type: ignore[arg-type]
    with pytest.raises(FeatureError, match="max_side must be a positive integer, got 2.5"):
        SiftExtractor(max_side=2.5, global_desc="mean")  # type: ignore[arg-type]


# ---- global descriptors -----------------------------------------------------------------------
def test_raw_global_descriptors(tmp_path: Path) -> None:
    vecs = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    path = tmp_path / "g.f32"
    write_global_descriptors(path, vecs)
    np.testing.assert_array_equal(read_global_descriptors(path, dim=6), vecs)
    with pytest.raises(FormatError, match=r"holds 30 float32 values .*not divisible by dim 4"):
        read_global_descriptors(path, dim=4)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(FormatError, match="118 bytes, not a whole number of float32"):
        read_global_descriptors(path, dim=6)
    for dim in (0, True, 2.0):
        with pytest.raises(UsageError, match="dim must be a positive integer"):
            read_global_descriptors(tmp_path / "g.f32", dim=dim)  # type: ignore[arg-type]
    vecs[3, 2] = np.nan
    vecs.tofile(path)
    with pytest.raises(FormatError, match="global descriptor 3 holds nan at dimension 2"):
        read_global_descriptors(path, dim=6)
    with pytest.raises(FormatError, match="global descriptor 3 holds NaN"):
        write_global_descriptors(tmp_path / "h.f32", vecs)
    np.save(tmp_path / "g.npy", vecs)
    with pytest.raises(FormatError, match="holds nan"):
        read_global_descriptors(tmp_path / "g.npy")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(FormatError, match=r"bad.npy is not a readable .npy file"):
        read_global_descriptors(tmp_path / "bad.npy")
    (tmp_path / "book.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CodebookError, match="book.npz is not a readable codebook"):
        Codebook.load(tmp_path / "book.npz")


# ---- configs and checkpoints ------------------------------------------------------------------
def test_config_overrides() -> None:
    assert parse_overrides(
        ["d_model=128", "aggregation=max", "dropout=0", "match_features=false"]
    ) == {
        "d_model": 128,
        "aggregation": "max",
        "dropout": 0.0,
        "match_features": False,
    }
    with pytest.raises(
        ConfigError, match=r"unknown config key bogus; valid keys are aggregation, .*d_model"
    ):
        parse_overrides(["bogus=1"])
    with pytest.raises(ConfigError, match="d_model must be an integer, got 'abc'"):
        parse_overrides(["d_model=abc"])
    with pytest.raises(ConfigError, match="n_layers must be an integer, got 'true'"):
        parse_overrides(["n_layers=true"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["d_model"])
    with pytest.raises(ConfigError, match="unknown model config override key bogus; valid keys"):
        LocoreConfig.preset("tiny", bogus=1)
    with pytest.raises(ConfigError, match="dropout must be a number"):
        LocoreConfig(dropout="abc")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="use_global must be a bool"):
        LocoreConfig(use_global=1)  # type: ignore[arg-type]


def test_checkpoint_fusion_values(tmp_path: Path) -> None:
    for fusion, message in (
        ("fast", "must be a JSON object"),
        ({"alpha": "x"}, "alpha must be a finite number"),
        ({"alpha": float("nan")}, "alpha must be a finite number"),
        ({"alpha": 2.0}, r"alpha in \[0, 1\]"),
        ({"temperature": 0}, "temperature > 0"),
    ):
        write_checkpoint_meta(tmp_path, LocoreConfig(), {"fusion": fusion})
        with pytest.raises(CheckpointError, match=message):
            checkpoint_fusion(tmp_path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from locore.model import LocoreReranker, save_checkpoint

    torch.manual_seed(0)
    config = LocoreConfig.preset("tiny", desc_dim=8, num_desc=6, num_scales=4, n_layers=1)
    return save_checkpoint(LocoreReranker(config), tmp_path_factory.mktemp("ckpt") / "ok")


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("config.json", "model.safetensors"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_checkpoint_with_non_finite_weights_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from locore.model import load_checkpoint

    bad = _copy_checkpoint(checkpoint, tmp_path / "nan")
    state = load_file(str(bad / "model.safetensors"))
    name = sorted(state)[3]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"tensor {name} holds 1 NaN or infinite value"):
        load_checkpoint(bad)
    from locore.export import export_onnx

    with pytest.raises(CheckpointError, match=rf"tensor {name} holds 1 NaN"):
        export_onnx(bad, tmp_path / "nan.onnx")  # nothing is exported from NaN weights
    assert not (tmp_path / "nan.onnx").exists()
    assert torch.isfinite(next(load_checkpoint(checkpoint).parameters())).all()


def test_truncated_or_mismatched_checkpoints(checkpoint: Path, tmp_path: Path) -> None:
    from locore.model import load_checkpoint

    cut = _copy_checkpoint(checkpoint, tmp_path / "cut")
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError, match=r"model.safetensors is not a readable safetensors file .*truncated"
    ):
        load_checkpoint(cut)
    huge = _copy_checkpoint(checkpoint, tmp_path / "huge")
    meta = json.loads((huge / "config.json").read_text())
    meta["config"]["d_model"] = 4_000_000  # would need terabytes if built for real
    (huge / "config.json").write_text(json.dumps(meta))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="weights and config.json do not match"):
        load_checkpoint(huge)
    assert time.perf_counter() - start < 10


# ---- training ---------------------------------------------------------------------------------
def _training_arrays(rng: np.random.Generator) -> tuple[LocalFeatures, LocalFeatures, np.ndarray]:
    queries = LocalFeatures(**random_rows(rng, 3, 6, CONFIG))
    database = LocalFeatures(**random_rows(rng, 20, 6, CONFIG))
    shortlist = np.stack([rng.permutation(20)[:8] for _ in range(3)])
    return queries, database, shortlist


@pytest.mark.parametrize(
    ("positive", "message"),
    [
        (-4, "image index -4 is out of range .* positives of query 1"),
        (20, "image index 20 is out of range for the database with 20 images"),
        (2.5, "whole numbers .*got 2.5 at position 1"),
    ],
)
def test_ground_truth_ids_never_wrap(positive: object, message: str) -> None:
    pytest.importorskip("torch")
    from locore.model.training import TrainingData

    queries, database, shortlist = _training_arrays(np.random.default_rng(0))
    positives = [np.array([1, 2]), np.array([3, positive]), np.array([4])]
    junk = [np.array([], np.int64)] * 3
    with pytest.raises(ImageIdError, match=message):
        TrainingData.from_arrays(queries, database, shortlist, positives, junk)


def test_training_data_checks_and_padding() -> None:
    pytest.importorskip("torch")
    from locore.model.training import TrainConfig, TrainingData, sample_window

    queries, database, shortlist = _training_arrays(np.random.default_rng(1))
    shortlist[0, 5:] = -1  # faiss padding: dropped
    positives = [np.array([shortlist[0, 0]]), np.array([3]), np.array([4])]
    junk = [np.array([], np.int64)] * 3
    data = TrainingData.from_arrays(queries, database, shortlist, positives, junk)
    ids, _ = sample_window(data, 0, TrainConfig(window=8), np.random.default_rng(0))
    assert -1 not in ids.tolist() and len(ids) == 5
    shortlist[1, 2] = -7
    with pytest.raises(ImageIdError, match="image index -7"):
        TrainingData.from_arrays(queries, database, shortlist, positives, junk)
    shortlist[1, 2] = 1
    empty = LocalFeatures(**{**random_rows(np.random.default_rng(2), 3, 6, CONFIG)})
    empty.mask[2] = False
    with pytest.raises(ImageIdError, match=r"queries \[2\] have positives but no valid descriptor"):
        TrainingData.from_arrays(empty, database, shortlist, positives, junk)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", 0, "steps must be an integer >= 1, got 0"),
        ("batch_size", True, "batch_size must be an integer >= 1, got True"),
        ("lr", float("nan"), "lr must be a finite number > 0"),
        ("threads", 100_000, "threads must be at most"),
        ("window", 2.5, "window must be an integer >= 1"),
    ],
)
def test_train_config_is_checked(tmp_path: Path, field: str, value: object, message: str) -> None:
    pytest.importorskip("torch")
    from locore.model.training import TrainConfig, TrainingData, train

    queries, database, shortlist = _training_arrays(np.random.default_rng(0))
    positives = [np.array([1]), np.array([3]), np.array([4])]
    data = TrainingData.from_arrays(
        queries, database, shortlist, positives, [np.array([], int)] * 3
    )
    cfg = TrainConfig(steps=2)
    setattr(cfg, field, value)
    with pytest.raises(UsageError, match=message):
        train(data, tmp_path / "out", cfg, progress=False)
    assert not (tmp_path / "out").exists()  # refused before any work
    cfg = TrainConfig(steps=1, model_overrides={"bogus": 1})
    with pytest.raises(ConfigError, match="unknown model config override key bogus"):
        train(data, tmp_path / "out", cfg, progress=False)
    cfg = TrainConfig(steps=1, model_overrides={"desc_dim": 64})
    with pytest.raises(UsageError, match="desc_dim=64 contradicts the training features"):
        train(data, tmp_path / "out", cfg, progress=False)


def test_fuse_scores_is_plain_arithmetic() -> None:
    got = fuse_scores(np.array([0.5]), np.array([0.0]), alpha=0.25, temperature=0.3)
    assert got[0] == pytest.approx(0.25 * 0.5 + 0.75 * 0.5)


def test_api_argument_types(h5: Path, toy_path: Path) -> None:
    from locore.runtime.sliding_windows import window_starts

    with FeatureFile(h5) as ff:
        with pytest.raises(UsageError, match="step 1"):
            ff.read(slice(None, None, -1))
        with pytest.raises(UsageError, match="chunk must be a positive integer, got 0"):
            ff.read_all(chunk=0)
        assert len(ff.read(slice(3, 100))) == 6  # a slice past the end stops at N, as in numpy
    with pytest.raises(UsageError, match="dataset must be the name"):
        FeatureFile(h5, dataset=3)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="providers must be None"):
        create_backend(toy_path, providers=3)
    with pytest.raises(UsageError, match="window must be an integer, got 2.5"):
        window_starts(5, 2.5, 1, "end-to-start")  # type: ignore[arg-type]


def test_model_metadata_of_a_non_onnx_file(tmp_path: Path) -> None:
    from locore.runtime.metadata import read_model_metadata

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 20)
    with pytest.raises(RuntimeError, match=r"could not load .*model.onnx to read its metadata"):
        read_model_metadata(bad)


def test_non_finite_global_vectors_are_refused(rows: dict[str, np.ndarray]) -> None:
    config = toy_config(use_global=True, global_dim=3)
    feats = LocalFeatures(**rows)
    gallery_global = np.ones((8, 3), np.float32)
    gallery_global[5, 1] = np.nan
    with pytest.raises(PackingError, match="gallery_global must hold finite numbers"):
        Packer(config).pack(feats[0], feats[1:], np.ones(3, np.float32), gallery_global)
