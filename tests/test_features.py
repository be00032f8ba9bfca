"""SIFT/RootSIFT extraction, the LocalFeatures record, codebooks and the §8 HDF5 layout."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from locore.config import LocoreConfig
from locore.runtime.ames import from_rows, to_rows, write_features
from locore.runtime.global_descriptors import (
    Codebook,
    CodebookError,
    kmeans,
    vlad,
    write_global_descriptors,
)
from locore.runtime.images import load_image
from locore.runtime.local_features import FeatureError, LocalFeatures
from locore.runtime.sift import SiftExtractor, root_sift

ND, DL, S = 48, 128, 8
ARRAY_FIELDS = ("descriptors", "scales", "xy", "weights", "mask", "global_desc")


def textured(seed: int, h: int = 240, w: int = 320) -> np.ndarray:
    """A deterministic BGR image with many corners and blobs (plenty of SIFT keypoints)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 127, np.uint8)
    for _ in range(60):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(5, 40)), y + 20), colour, -1)
        else:
            cv2.circle(img, (x, y), int(rng.integers(3, 25)), colour, -1)
    return img


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [textured(i) for i in range(6)]


@pytest.fixture(scope="module")
def extractor(images: list[np.ndarray]) -> SiftExtractor:
    ext = SiftExtractor(num_desc=ND, num_scales=S, max_side=256, max_keypoints=300)
    ext.fit_codebook(images, k=8, progress=False)
    return ext


def check_layout(f: LocalFeatures, dg: int) -> None:
    assert f.descriptors.shape == (ND, DL) and f.descriptors.dtype == np.float32
    assert f.scales.shape == (ND,) and f.scales.dtype == np.int64
    assert f.xy.shape == (ND, 2) and f.xy.dtype == np.float32
    assert f.weights.shape == (ND,) and f.weights.dtype == np.float32
    assert f.mask.shape == (ND,) and f.mask.dtype == np.bool_
    assert f.global_desc.shape == (dg,) and f.global_desc.dtype == np.float32
    assert (f.xy >= 0).all() and (f.xy <= 1).all()
    assert (f.scales >= 0).all() and (f.scales < S).all()
    f.validate(S)


def test_shapes_dtypes_and_order(extractor: SiftExtractor, images: list[np.ndarray]) -> None:
    f = extractor.extract(images[0])
    check_layout(f, 8 * DL)
    assert f.num_valid == ND
    assert (np.diff(f.weights) <= 0).all(), "rows must be sorted by weight, strongest first"
    norms = np.linalg.norm(f.descriptors, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert (f.descriptors >= 0).all()  # RootSIFT is non-negative
    assert np.linalg.norm(f.global_desc) == pytest.approx(1.0, abs=1e-5)
    assert f.image_size == (240, 320)


def test_deterministic(extractor: SiftExtractor, images: list[np.ndarray]) -> None:
    a = extractor.extract(images[1])
    fresh = SiftExtractor(max_side=256, max_keypoints=300, codebook=extractor.codebook)
    b = fresh.extract(images[1].copy())
    for name in ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_extract_many_matches_extract(extractor: SiftExtractor, images: list[np.ndarray]) -> None:
    many = extractor.extract_many(images[:2], progress=False)
    for f, im in zip(many, images[:2], strict=True):
        np.testing.assert_array_equal(f.descriptors, extractor.extract(im).descriptors)


@pytest.mark.parametrize(
    "image",
    [np.zeros((5, 5), np.uint8), np.full((100, 120, 3), 128, np.uint8), np.zeros((1, 1, 3))],
    ids=["tiny", "blank", "one-pixel-float"],
)
def test_no_keypoints_is_all_padding(extractor: SiftExtractor, image: np.ndarray) -> None:
    f = extractor.extract(image)
    check_layout(f, 8 * DL)
    assert f.num_valid == 0 and not f.mask.any()
    assert not f.descriptors.any() and not f.weights.any()
    assert not f.global_desc.any(), "an image without keypoints must match nothing"
    rows = to_rows(f)
    assert (rows[:, 3] == 1).all(), "§8: column 3 is 1 on padding rows"


def test_few_keypoints_are_padded(extractor: SiftExtractor) -> None:
    import cv2

    img = np.full((120, 120), 200, np.uint8)
    cv2.circle(img, (40, 60), 8, 0, -1)
    cv2.circle(img, (85, 50), 5, 60, -1)
    f = extractor.extract(img)
    check_layout(f, 8 * DL)
    assert 0 < f.num_valid < ND
    n = f.num_valid
    assert f.mask[:n].all() and not f.mask[n:].any(), "valid rows first, then padding"
    assert not f.descriptors[n:].any() and not f.weights[n:].any()


def test_resize_long_side() -> None:
    ext = SiftExtractor(max_side=200, global_desc="mean")
    kps = ext.detect(textured(3, 300, 500))
    assert kps.image_size == (300, 500) and kps.work_size == (120, 200)
    small = ext.detect(textured(3, 100, 150))  # never up-sampled
    assert small.work_size == (100, 150)


def test_scale_ids() -> None:
    ext = SiftExtractor(num_scales=4, global_desc="mean")
    ids = ext.scale_ids(np.array([0.5, 1.6, 3.1, 3.3, 7.0, 1e4]))
    np.testing.assert_array_equal(ids, [0, 0, 0, 1, 2, 3])


def test_rows_round_trip_and_h5(tmp_path: Path, extractor: SiftExtractor, images) -> None:
    import h5py

    feats = extractor.extract_many(images[:3], progress=False)
    batch = LocalFeatures.stack(feats)
    rows = to_rows(batch)
    assert rows.shape == (3, ND, 5 + DL) and rows.dtype == np.float32
    # §8 columns, written out by hand: xy, scale id, pad flag, weight, descriptor
    np.testing.assert_array_equal(rows[1, :, 0:2], feats[1].xy)
    np.testing.assert_array_equal(rows[1, :, 2], feats[1].scales)
    np.testing.assert_array_equal(rows[1, :, 3], ~feats[1].mask)
    np.testing.assert_array_equal(rows[1, :, 4], feats[1].weights)
    np.testing.assert_array_equal(rows[1, :, 5:], feats[1].descriptors)
    back = from_rows(rows[0], global_desc=feats[0].global_desc)
    for name in ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(back, name), getattr(feats[0], name))
    # the one writer takes a list of images, a batch, or rows
    write_features(tmp_path / "f.h5", feats)
    write_features(tmp_path / "batch.h5", batch, chunk=2)
    write_features(tmp_path / "rows.h5", rows)
    for name in ("f.h5", "batch.h5", "rows.h5"):
        with h5py.File(tmp_path / name, "r") as f:
            np.testing.assert_array_equal(f["features"][:], rows)
    assert batch.global_desc is not None
    write_global_descriptors(tmp_path / "g.f32", batch.global_desc)
    g = np.fromfile(tmp_path / "g.f32", dtype=np.float32).reshape(3, -1)
    np.testing.assert_array_equal(g, np.stack([x.global_desc for x in feats]))


def test_global_kinds(images: list[np.ndarray]) -> None:
    mean = SiftExtractor(global_desc="mean", max_side=256).extract(images[0])
    assert mean.global_desc.shape == (DL,)
    colour = SiftExtractor(global_desc="color", max_side=256).extract(images[0])
    assert colour.global_desc.shape == (128,)
    assert np.linalg.norm(colour.global_desc) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(FeatureError, match="needs a codebook"):
        SiftExtractor().extract(images[0])
    with pytest.raises(FeatureError, match="global_desc must be one of"):
        SiftExtractor(global_desc="gem")


def test_codebook_save_load(tmp_path: Path, extractor: SiftExtractor, images) -> None:
    assert extractor.codebook is not None
    path = tmp_path / "book.npz"
    extractor.codebook.save(path)
    ext2 = SiftExtractor(max_side=256, max_keypoints=300, codebook=path)
    np.testing.assert_array_equal(
        ext2.extract(images[2]).global_desc, extractor.extract(images[2]).global_desc
    )
    kps = [extractor.detect(im) for im in images]
    pca = Codebook.fit([k.descriptors for k in kps], 4, pca_dim=3)
    pca.save(path)
    loaded = Codebook.load(path)
    assert loaded.output_dim == 3
    np.testing.assert_array_equal(loaded.encode(kps[0].descriptors), pca.encode(kps[0].descriptors))
    (tmp_path / "bad.npz").write_bytes(b"not a codebook")
    with pytest.raises((CodebookError, ValueError, OSError)):
        Codebook.load(tmp_path / "bad.npz")


def test_kmeans_deterministic_and_vlad_normalised() -> None:
    x = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
    a, b = kmeans(x, 8, seed=3), kmeans(x, 8, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a, axis=0)) == 8
    v = vlad(x[:50], a)
    assert v.shape == (128,) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(CodebookError, match="at least 8"):
        kmeans(x[:4], 8)


def test_root_sift() -> None:
    d = np.abs(np.random.default_rng(1).normal(size=(4, 128))).astype(np.float32) * 100
    r = root_sift(d)
    np.testing.assert_allclose((r**2).sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(r**2, d / d.sum(1, keepdims=True), atol=1e-6)


def test_input_errors(tmp_path: Path) -> None:
    with pytest.raises(FeatureError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"xx")
    with pytest.raises(FeatureError, match="could not decode"):
        load_image(tmp_path / "bad.jpg")
    with pytest.raises(FeatureError, match=r"\[H, W\]"):
        load_image(np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(FeatureError, match="uint8 or float"):
        load_image(np.zeros((4, 4), np.int32))
    with pytest.raises(FeatureError, match="desc_dim=768"):
        SiftExtractor.from_config(LocoreConfig(desc_dim=768))
    ext = SiftExtractor.from_config(LocoreConfig(num_desc=16, num_scales=4), global_desc="mean")
    assert (ext.num_desc, ext.num_scales) == (16, 4)


def test_features_module_does_not_import_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any 'import torch' now raises ImportError
        import numpy as np
        import locore.runtime.sift as f
        import locore.runtime.ames, locore.runtime.global_descriptors, locore.runtime.images
        import locore.runtime.ground_truth, locore.runtime.local_features
        import locore.runtime.packing, locore.runtime.shortlist, locore.runtime.sliding_windows
        ext = f.SiftExtractor(global_desc="mean")
        ext.extract(np.zeros((32, 32), np.uint8))
        assert "torch" not in [m for m, v in sys.modules.items() if v is not None]
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_extracted_features_feed_locore_rerank(
    tmp_path: Path, extractor: SiftExtractor, images: list[np.ndarray]
) -> None:
    """Extractor -> HDF5 (docs/design.md §8) -> `locore rerank` with a real ONNX model."""
    import cv2

    from locore.cli import main
    from locore.runtime.shortlist import write_shortlist
    from tests.onnx_toy import build_toy_reranker, toy_config

    # Database: the images and a rotated copy of image 0; query: image 0 itself.
    db = [*images, cv2.rotate(images[0], cv2.ROTATE_90_CLOCKWISE)]
    q_feats, db_feats = extractor.extract_many(images[:1]), extractor.extract_many(db)
    write_features(tmp_path / "q.h5", q_feats)
    write_features(tmp_path / "db.h5", db_feats)
    sims = np.stack([f.global_desc for f in db_feats]) @ q_feats[0].global_desc
    order = np.argsort(sims)  # worst first: the re-ranker has to do the work
    write_shortlist(tmp_path / "nn.npy", sims[order][None], order[None])
    model = build_toy_reranker(tmp_path / "m.onnx", toy_config(desc_dim=DL, num_desc=ND,
                                                                num_scales=S))  # fmt: skip
    args = ["rerank", "--query-features", str(tmp_path / "q.h5"), "--db-features",
            str(tmp_path / "db.h5"), "--shortlist", str(tmp_path / "nn.npy"), "--model",
            str(model), "--output", str(tmp_path / "ranks.npy"), "--window", "4", "--stride",
            "2", "--alpha", "0"]  # fmt: skip
    assert main(args) == 0
    ranks = np.load(tmp_path / "ranks.npy")
    assert ranks.shape == (1, len(db)) and sorted(ranks[0].tolist()) == list(range(len(db)))
    # The query's own image and its rotated copy win on local descriptors alone.
    assert set(ranks[0, :2].tolist()) == {0, len(db) - 1}


def test_local_features_record() -> None:
    rng = np.random.default_rng(0)

    def image(t: int = 5, d: int = 4, dg: int | None = 3) -> LocalFeatures:
        return LocalFeatures(
            descriptors=rng.standard_normal((t, d)).astype(np.float32),
            scales=rng.integers(0, 3, t),
            xy=rng.random((t, 2)).astype(np.float32),
            weights=np.sort(rng.random(t).astype(np.float32))[::-1].copy(),
            mask=np.arange(t) < 3,
            global_desc=None if dg is None else rng.standard_normal(dg).astype(np.float32),
            image_size=(10, 20),
        )

    singles = [image() for _ in range(4)]
    batch = LocalFeatures.stack(singles)
    assert batch.is_batch and len(batch) == 4 and batch.descriptors.shape == (4, 5, 4)
    assert batch.global_desc is not None and batch.global_desc.shape == (4, 3)
    assert batch.image_size is None and batch.num_valid == 12
    one = batch[2]
    assert not one.is_batch and one.num_desc == 5 and one.desc_dim == 4
    for name in ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(one, name), getattr(singles[2], name))
    pair = batch[[3, 0]].first(2)
    assert pair.descriptors.shape == (2, 2, 4)
    np.testing.assert_array_equal(
        pair.scales, np.stack([singles[3].scales, singles[0].scales])[:, :2]
    )
    assert pair.global_desc is not None
    np.testing.assert_array_equal(pair.global_desc[0], singles[3].global_desc)
    nested = LocalFeatures.stack([batch[:2], batch[2:]])  # [2, 2, T, D]: one gallery per query
    assert nested.descriptors.shape == (2, 2, 5, 4) and nested.global_desc is not None
    assert nested.global_desc.shape == (2, 2, 3)
    batch.validate(num_scales=3)
    with pytest.raises(FeatureError, match=r"scales must lie in 0..1, got ids from 0 to 2"):
        batch.validate(num_scales=2)
    with pytest.raises(TypeError, match="single image has no len"):
        len(one)
    with pytest.raises(TypeError, match="index a batch"):
        one[0]
    with pytest.raises(FeatureError, match="same"):
        LocalFeatures.stack([image(), image(t=6)])
    with pytest.raises(FeatureError, match="1 of 2 have none"):
        LocalFeatures.stack([image(), image(dg=None)])
    with pytest.raises(FeatureError, match="at least one"):
        LocalFeatures.stack([])
    with pytest.raises(FeatureError, match=r"global_desc must be \[4, Dg\]"):
        LocalFeatures(**{**vars(batch), "global_desc": np.zeros(3, np.float32)})
    with pytest.raises(FeatureError, match=r"descriptors must be \[\.\.\., T, D\]"):
        LocalFeatures(np.zeros(3, np.float32), *[np.zeros(3)] * 4)
    wrong = LocalFeatures(**{**vars(one), "weights": one.weights.astype(np.float64)})
    with pytest.raises(FeatureError, match="weights must be float32, got float64"):
        wrong.validate()
