"""The visual-search index: image checks, build, incremental updates, a killed build, search.

Oracles: image sizes from OpenCV's own encoder, features from an independent extraction with
the index's codebook, positives from the demo's geometric ground truth (sources), exact top-k
from a float64 sort.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from locore.runtime.global_descriptors import Codebook
from locore.runtime.search_index import (
    MANIFEST,
    GlobalSearch,
    IndexMismatchError,
    QueryImageError,
    build_index,
    decode_image,
    descriptor_matches,
    image_header,
    open_index,
)
from tests.test_index_support import demo_index, demo_subset

ROOT = Path(__file__).resolve().parents[1]


def _locore(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "locore", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _features_by_key(index_dir: Path) -> dict[str, np.ndarray]:
    with open_index(index_dir) as index:
        feats = index.features(np.arange(len(index)))
        return {
            e.key: np.concatenate([feats.descriptors[i].ravel(), feats.global_desc[i]])
            for i, e in enumerate(index.images)
        }


# ---- images --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp"])
def test_image_header_reads_the_size_opencv_wrote(ext: str) -> None:
    rng = np.random.default_rng()
    h, w = (int(v) for v in rng.integers(33, 300, 2))
    ok, buf = cv2.imencode(ext, rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    assert ok
    kind, width, height = image_header(buf.tobytes())
    assert (width, height) == (w, h)
    assert decode_image(buf.tobytes()).shape[:2] == (h, w)


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def test_bad_query_images_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(QueryImageError, match="not a JPEG, PNG, BMP or WebP"):
        decode_image(b"%PDF-1.4 not an image at all")
    with pytest.raises(QueryImageError, match="empty"):
        decode_image(b"")
    ok, one = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(QueryImageError, match=r"1x1 pixels; a query needs at least 32x32"):
        decode_image(one.tobytes())
    # a 12000 x 9000 PNG (108 MP): refused from its header, before any decoding
    huge = _png_header(12000, 9000) + b"\x00" * 64
    with pytest.raises(QueryImageError, match=r"12000x9000 pixels \(108 MP\); at most 64 MP"):
        decode_image(huge)
    ok, jpg = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(QueryImageError, match="cannot decode"):
        decode_image(jpg.tobytes()[:200])  # truncated: header fine, data missing
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_index(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a locore index"):
        open_index(tmp_path / "empty")


# ---- global search -------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["exact", "faiss-flat", "faiss-ivf", "faiss-hnsw"])
def test_global_search_against_a_float64_sort(method: str) -> None:
    if method.startswith("faiss"):
        pytest.importorskip("faiss", reason="faiss-cpu is not installed (extra 'faiss')")
    rng = np.random.default_rng()
    centres = rng.standard_normal((20, 64))
    db = centres[rng.integers(0, 20, 3001)] + 0.5 * rng.standard_normal((3001, 64))
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[17] + 0.01 * rng.standard_normal(64)
    search = GlobalSearch(db.astype(np.float32), method)
    ids, sims = search.search(q, 50)
    truth = np.argsort(-(db @ q), kind="stable")[:50]
    recall = len(set(ids.tolist()) & set(truth.tolist())) / 50
    assert recall >= (1.0 if method in ("exact", "faiss-flat") else 0.8), recall
    assert ids[0] == 17
    np.testing.assert_allclose(sims, (db @ q)[ids], rtol=1e-4, atol=1e-5)
    assert GlobalSearch(db[:10].astype(np.float32)).method == "exact"  # auto, small


# ---- build, search -------------------------------------------------------------------------------
def test_index_layout_and_features_match_an_independent_extraction(demo_cache: Path) -> None:
    from locore.runtime.ames import FeatureFile
    from locore.runtime.sift import SiftExtractor

    index_dir = demo_index(demo_cache)
    manifest = json.loads((index_dir / MANIFEST).read_text())
    assert manifest["format"] == "locore-index" and manifest["version"] == 1
    assert manifest["desc_dim"] == 128 and manifest["num_desc"] == 48
    with open_index(index_dir) as index:
        assert len(index) == manifest["num_images"] == 96
        seg = manifest["segments"][0]["name"]
        with FeatureFile(index_dir / "segments" / f"{seg}.h5") as ff:  # the AMES layout
            assert (ff.num_desc, ff.desc_dim) == (48, 128)
        extractor = SiftExtractor(codebook=Codebook.load(index_dir / "codebook.npz"))
        rng = np.random.default_rng()
        for i in rng.choice(len(index), 3, replace=False):
            expected = extractor.extract(index.image_path(int(i)))
            got = index.features([int(i)])[0]
            np.testing.assert_array_equal(got.mask, expected.mask)
            np.testing.assert_allclose(got.descriptors, expected.descriptors, atol=1e-6)
            np.testing.assert_allclose(got.global_desc, expected.global_desc, atol=1e-6)


@pytest.mark.slow
def test_search_finds_the_query_source_cli_and_api(demo_cache: Path, shipped_onnx) -> None:
    from locore.runtime.backends import create_backend
    from locore.runtime.sliding_windows import Reranker, RerankParams

    index_dir = demo_index(demo_cache)
    _, queries, query_sources, source_of = demo_subset(demo_cache)
    onnx = shipped_onnx("portable")
    with open_index(index_dir) as index, create_backend(onnx, threads=2) as backend:
        reranker = Reranker(backend, RerankParams(topk=50, window=50, stride=25), clip_scales=True)
        hits_top5 = 0
        for q in (0, 9, 63, 81):  # chelsea, coffee, china, DepartmentStore
            result = index.search(queries[q], reranker, shortlist=50)
            assert result.reranked and set(result.timings) >= {"extract_ms", "global_ms"}
            assert sorted(result.ids.tolist()) == sorted(result.shortlist_ids.tolist())
            top = [source_of[index.images[i].name] for i in result.ids[:5]]
            assert top[0] == query_sources[q], (q, top)
            hits_top5 += top.count(query_sources[q])
        assert hits_top5 >= 12
    # the CLI: same index, same model, JSON out
    proc = _locore(
        "search", "--index", str(index_dir), str(queries[0]), "--model", str(onnx),
        "--shortlist", "50", "--window", "50", "--stride", "25", "--top", "5", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [r["rank"] for r in data["reranked"]] == [1, 2, 3, 4, 5]
    assert source_of[Path(data["reranked"][0]["file"]).name] == query_sources[0]
    assert {"extract_ms", "global_ms", "rerank_ms", "total_ms"} <= set(data["timings_ms"])
    text = _locore("search", "--index", str(index_dir), str(queries[0]), "--no-rerank")
    assert (
        text.returncode == 0 and "global shortlist" in text.stdout and "ms: extract" in text.stdout
    )


def test_cli_errors_missing_index_bad_query_and_mismatched_model(
    demo_cache: Path, tmp_path: Path
) -> None:
    from tests.onnx_toy import build_toy_reranker

    index_dir = demo_index(demo_cache)
    _, queries, _, _ = demo_subset(demo_cache)
    proc = _locore("search", "--index", str(tmp_path / "missing"), str(queries[0]))
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and "locore index" in proc.stderr
    assert "Traceback" not in proc.stderr
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    proc = _locore("search", "--index", str(index_dir), str(text), "--no-rerank")
    assert proc.returncode == 1 and "is not a JPEG, PNG, BMP or WebP" in proc.stderr
    dot = tmp_path / "dot.png"
    cv2.imwrite(str(dot), np.zeros((1, 1, 3), np.uint8))
    proc = _locore("search", "--index", str(index_dir), str(dot), "--no-rerank")
    assert proc.returncode == 1 and "1x1 pixels; a query needs at least 32x32" in proc.stderr
    toy = build_toy_reranker(tmp_path / "toy.onnx")  # 8-d descriptors
    proc = _locore("search", "--index", str(index_dir), str(queries[0]), "--model", str(toy))
    assert proc.returncode == 1, proc.stderr
    assert "takes 8-d local descriptors" in proc.stderr and "128-d SIFT" in proc.stderr
    proc = _locore("index", "--output", str(tmp_path / "idx"))
    assert proc.returncode == 2 and "give a folder of images" in proc.stderr


# ---- incremental and resumable -------------------------------------------------------------------
def test_incremental_update_keeps_unchanged_entries(demo_cache: Path, tmp_path: Path) -> None:
    folder, _, _, _ = demo_subset(demo_cache)
    files = sorted(folder.glob("*.jpg"))
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    for f in files[:10]:
        shutil.copy(f, src / ("sub" if f.name.endswith("3.jpg") else "") / f.name)
    codebook = demo_index(demo_cache) / "codebook.npz"
    out = tmp_path / "idx"
    first = build_index(src, out, codebook=codebook, flush_every=1, progress=False)
    # 10 segments of one image > MAX_SEGMENTS: compacted into one
    assert (first.added, first.total, first.compacted, first.segments) == (10, 10, True, 1)
    before = _features_by_key(out)
    gone = sorted(src.rglob("*.jpg"))[:2]
    for path in gone:
        path.unlink()
    changed = sorted(src.rglob("*.jpg"))[0]
    shutil.copy(files[20], changed)  # new content under an old name
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    for f in files[10:13]:
        shutil.copy(f, src / f.name)
    report = build_index(src, out, flush_every=2, progress=False)
    assert (report.kept, report.removed, report.added, report.total) == (7, 3, 4, 11)
    after = _features_by_key(out)
    assert set(after) == {str(p.resolve()) for p in src.rglob("*.jpg")}
    for key, value in before.items():
        if key in after and key != str(changed.resolve()):
            np.testing.assert_array_equal(after[key], value)
    assert not np.array_equal(after[str(changed.resolve())], before[str(changed.resolve())])
    again = build_index(src, out, progress=False)
    assert (again.added, again.removed, again.kept) == (0, 0, 11)
    assert not list(out.rglob(".*.tmp"))


@pytest.mark.slow
def test_a_killed_index_run_resumes_and_keeps_earlier_entries(
    demo_cache: Path, tmp_path: Path
) -> None:
    folder, _, _, _ = demo_subset(demo_cache)
    src = tmp_path / "photos"
    src.mkdir()
    for f in sorted(folder.glob("*.jpg"))[:40]:
        shutil.copy(f, src / f.name)
    codebook = str(demo_index(demo_cache) / "codebook.npz")
    out = tmp_path / "idx"
    args = [sys.executable, "-m", "locore", "index", str(src), "--output", str(out)]
    args += ["--codebook", codebook, "--flush-every", "3", "--no-progress"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    segments = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            segments = len(json.loads((out / MANIFEST).read_text())["segments"])
        except (OSError, ValueError, KeyError):
            segments = 0
        if segments >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    partial = _features_by_key(out)  # the killed index opens and is consistent
    assert 9 <= len(partial) < 40 and len(partial) % 3 == 0
    resumed = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (
        f"{len(partial)} kept" in resumed.stdout and f"{40 - len(partial)} added" in resumed.stdout
    )
    final = _features_by_key(out)
    for key, value in partial.items():
        np.testing.assert_array_equal(final[key], value)
    fresh = tmp_path / "fresh"
    build_index(src, fresh, codebook=codebook, progress=False)
    expected = _features_by_key(fresh)
    assert set(final) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(final[key], value)
    leftovers = [p.name for p in (out / "segments").iterdir()]
    manifest = json.loads((out / MANIFEST).read_text())
    named = {s["name"] for s in manifest["segments"]}
    assert {Path(n).stem for n in leftovers} == named, "orphan or temporary files left"


def test_video_index_every_nth_frame(demo_cache: Path, tmp_path: Path) -> None:
    folder, _, _, _ = demo_subset(demo_cache)
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    frames = sorted(folder.glob("*.jpg"))[:9]
    for f in frames:
        writer.write(cv2.resize(cv2.imread(str(f)), (320, 240)))
    writer.release()
    codebook = demo_index(demo_cache) / "codebook.npz"
    report = build_index(video, tmp_path / "idx", every=4, codebook=codebook, progress=False)
    assert report.total == 3  # frames 0, 4, 8
    with open_index(tmp_path / "idx") as index:
        assert [e.key.rsplit("=", 1)[1] for e in index.images] == ["0", "4", "8"]
        assert all(index.image_path(i).is_file() for i in range(3))
        result = index.search(index.image_path(1), shortlist=3)
        assert result.ids[0] == 1
    # the same index, now of the folder around it: its own frames are not indexed, the video's
    # frames (gone from the source) are dropped
    (tmp_path / "photo.jpg").write_bytes(frames[0].read_bytes())
    inside = build_index(tmp_path, tmp_path / "idx", progress=False)
    assert (inside.total, inside.added, inside.removed) == (1, 1, 3)


def test_descriptor_matches_against_a_loop() -> None:
    from locore.runtime.local_features import LocalFeatures

    rng = np.random.default_rng()

    def feats(n: int, valid: int) -> LocalFeatures:
        d = rng.standard_normal((n, 16)).astype(np.float32)
        mask = np.arange(n) < valid
        return LocalFeatures(d, np.zeros(n, np.int64), rng.random((n, 2), np.float32),
                             np.ones(n, np.float32), mask)  # fmt: skip

    q, g = feats(9, 7), feats(11, 10)
    got = {(m["q"], m["g"]) for m in descriptor_matches(q, g, top=100)}
    expected = set()
    for i in range(7):
        sims = [
            float(q.descriptors[i] @ g.descriptors[j])
            / (np.linalg.norm(q.descriptors[i]) * np.linalg.norm(g.descriptors[j]))
            for j in range(10)
        ]
        j = int(np.argmax(sims))
        back = [
            float(q.descriptors[a] @ g.descriptors[j])
            / (np.linalg.norm(q.descriptors[a]) * np.linalg.norm(g.descriptors[j]))
            for a in range(7)
        ]
        if int(np.argmax(back)) == i:
            expected.add((i, j))
    assert got == expected


def test_settings_mismatch_is_refused(demo_cache: Path, tmp_path: Path) -> None:
    from locore.runtime.search_index import ExtractorSettings

    index_dir = demo_index(demo_cache)
    copy = tmp_path / "idx"
    shutil.copytree(index_dir, copy)
    folder, _, _, _ = demo_subset(demo_cache)
    with pytest.raises(IndexMismatchError, match="rebuild"):
        build_index(folder, copy, settings=ExtractorSettings(num_desc=32), progress=False)


def test_a_stored_faiss_index_is_used_and_refreshed(
    demo_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (extra 'faiss')")
    import locore.runtime.search_index as si

    monkeypatch.setattr(si, "FAISS_MIN_FLOATS", 1)  # every index is "large"
    folder, _, _, _ = demo_subset(demo_cache)
    src = tmp_path / "photos"
    src.mkdir()
    files = sorted(folder.glob("*.jpg"))
    for f in files[:6]:
        shutil.copy(f, src / f.name)
    codebook = demo_index(demo_cache) / "codebook.npz"
    out = tmp_path / "idx"
    assert build_index(src, out, codebook=codebook, progress=False).faiss
    with open_index(out) as index, open_index(out, "exact") as exact:
        assert index.global_search.method == "faiss-hnsw"
        for i in range(len(index)):
            q = index.global_desc[i]
            assert index.global_search.search(q, 3)[0][0] == exact.global_search.search(q, 3)[0][0]
    shutil.copy(files[6], src / files[6].name)
    signature = (out / "global.faiss.json").read_text()
    assert build_index(src, out, progress=False).faiss
    assert (out / "global.faiss.json").read_text() != signature  # rebuilt for 7 images
    with open_index(out) as index:
        assert len(index) == 7 and index.global_search.method == "faiss-hnsw"
