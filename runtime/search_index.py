"""On-device visual search: an image index on disk, its incremental builder, and one query.

No torch (numpy, OpenCV, h5py; faiss-cpu optional). An index is a folder::

    manifest.json          format, version, extractor settings, codebook, segments (the truth)
    codebook.npz           the VLAD codebook, fitted once on the first images indexed
    segments/seg-NNNNNN.h5     AMES/LOCORE local features [n, T, 5 + D] (runtime.ames layout)
    segments/seg-NNNNNN.npy    global descriptors [n, Dg] float32
    segments/seg-NNNNNN.json   the n images: key, file, sha256, size, mtime
    frames/...             JPEG frames of an indexed video (what the web page shows)

Features are model independent (SIFT/RootSIFT local descriptors + VLAD), so any re-ranker
trained on 128-d SIFT descriptors can use the index; :meth:`Index.check_model` refuses one
that was trained on other descriptors.

**Incremental and resumable.** :func:`build_index` compares the source (a folder of images or
every n-th frame of a video) with the manifest by path, size, mtime and SHA-256: unchanged
images are kept, removed or changed ones are dropped, new ones are appended in segments of
``flush_every`` images. Every segment file is written atomically before the manifest that
names it, and the manifest is replaced atomically, so a build killed at any point leaves an
index that opens and holds every image of its completed segments; running the build again
finishes the job. Segments are merged (compacted) when there are more than
:data:`MAX_SEGMENTS` of them or a quarter of their rows are dropped.

**One query** (:meth:`Index.search`): SIFT features of the query image -> global shortlist
(exact inner product; above :data:`FAISS_MIN_FLOATS` (N x Dg) a faiss HNSW index that the
build stores when faiss-cpu is installed, see ``benchmarks/global_search.py``) ->
sliding-window re-ranking with a :class:`~locore.runtime.sliding_windows.Reranker` ->
:class:`SearchResult` with the time of each stage.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from locore.config import GALLERY_MASK, QUERY_MASK, SCORES, TOKEN_LOGITS, LocoreConfig
from locore.deps import require
from locore.fileio import atomic_path, atomic_write_bytes, atomic_write_text
from locore.progress import progress_bar
from locore.runtime.ames import FeatureFile, FormatError, to_rows, write_features
from locore.runtime.global_descriptors import Codebook, write_global_descriptors
from locore.runtime.images import JPEG_SOI, PNG_SIGNATURE, image_header_size, truncation
from locore.runtime.local_features import FeatureError, LocalFeatures
from locore.runtime.packing import Packer
from locore.runtime.shortlist import search_shortlist
from locore.runtime.sift import Keypoints, SiftExtractor

if TYPE_CHECKING:
    from locore.runtime.backends.base import Backend
    from locore.runtime.sliding_windows import Reranker

log = logging.getLogger(__name__)

INDEX_FORMAT = "locore-index"
INDEX_VERSION = 1
MANIFEST = "manifest.json"
CODEBOOK_FILE = "codebook.npz"
SEGMENTS_DIR = "segments"
FRAMES_DIR = "frames"
LOCK_FILE = ".lock"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

MIN_QUERY_SIDE = 32  # a query smaller than this has (almost) no SIFT keypoints
MAX_IMAGE_PIXELS = 64_000_000  # refused before decoding (a 20 MB PNG can decode to gigabytes)
MAX_SEGMENTS = 8  # compact when more
MAX_DROPPED_FRACTION = 0.25  # compact when more of the stored rows are dropped
CODEBOOK_WORDS = 64
CODEBOOK_SAMPLE = 100  # images whose keypoints fit the codebook
CODEBOOK_POINTS = 10_000  # descriptors (a seeded subsample) k-means runs on: ~150 per word
# Exact inner product below this size of the global descriptors (N x Dg floats, since exact
# search costs N x Dg multiply-adds), a stored faiss HNSW index from it on (when faiss-cpu is
# installed). Measured by benchmarks/global_search.py on synthetic clustered 512-d vectors: at
# 50k exact search takes ~50 ms (as much as SIFT + re-ranking) and HNSW 0.4 ms at recall@100
# 1.000 (0.985 at 25k, 0.92 at 10k). See the README, "Visual search on your photos".
FAISS_MIN_FLOATS = 50_000 * 512  # N x Dg: 50k 512-d vectors, 3,125 8192-d VLAD vectors
FAISS_FILE = "global.faiss"
FAISS_KIND = "hnsw"  # IndexHNSWFlat, inner product, M 32, efSearch 128 (the benchmark's best)
FAISS_NPROBE = 32
GLOBAL_METHODS = ("auto", "exact", "faiss-flat", "faiss-ivf", "faiss-hnsw")


class SearchIndexError(ValueError):
    """An index folder is not a usable locore index (manifest, segments, settings)."""


class IndexMismatchError(SearchIndexError):
    """A model or a setting does not fit the index (descriptor size, extractor settings)."""


class QueryImageError(FeatureError):
    """A query image cannot be used: not an image, too small, too large."""


# ---- images: type and size from the header, before decoding ------------------------------------
def image_header(data: bytes) -> tuple[str, int, int] | None:
    """``(kind, width, height)`` from the first bytes of a JPEG, PNG, BMP or WebP file; None if
    the bytes are none of these (or the header is truncated). The sizes come from
    :func:`locore.runtime.images.image_header_size`, the one header parser."""
    kind = next((k for k, sig in _SIGNATURES if data.startswith(sig)), None)
    if kind == "webp" and data[8:12] != b"WEBP":
        kind = None
    size = image_header_size(data) if kind is not None else None
    return None if size is None or kind is None else (kind, *size)


# (kind, leading bytes) of the formats a query may have
_SIGNATURES = (("png", PNG_SIGNATURE), ("jpeg", JPEG_SOI), ("bmp", b"BM"), ("webp", b"RIFF"))


def check_image_size(width: int, height: int, source: str, *, query: bool = True) -> None:
    """Raise :class:`QueryImageError` for an image under ``MIN_QUERY_SIDE`` pixels on a side
    (queries only) or over ``MAX_IMAGE_PIXELS`` pixels."""
    if width * height > MAX_IMAGE_PIXELS:
        raise QueryImageError(
            f"{source} is {width}x{height} pixels ({width * height / 1e6:.0f} MP); at most "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP are accepted. Resize it (features are computed "
            "at 512 px on the long side anyway)"
        )
    if query and min(width, height) < MIN_QUERY_SIDE:
        raise QueryImageError(
            f"{source} is {width}x{height} pixels; a query needs at least {MIN_QUERY_SIDE}x"
            f"{MIN_QUERY_SIDE} pixels to have local features. Use a larger image"
        )


def decode_image(data: bytes, source: str = "the image", *, query: bool = True) -> np.ndarray:
    """Decode an uploaded or read file: ``[H, W, 3] uint8`` BGR.

    Accepts JPEG, PNG, BMP and WebP (checked from the bytes, not the name); the size is checked
    from the header before decoding (:func:`check_image_size`).
    """
    if not data:
        raise QueryImageError(f"{source} is empty (0 bytes); expected a JPEG, PNG, BMP or WebP")
    header = image_header(bytes(data[:65536]))
    if header is None:
        raise QueryImageError(
            f"{source} is not a JPEG, PNG, BMP or WebP image (it starts with "
            f"{bytes(data[:8])!r}); upload a photo"
        )
    kind, width, height = header
    check_image_size(width, height, source, query=query)
    why = truncation(bytes(data))
    if why is not None:
        raise QueryImageError(
            f"{source} looks like a {kind.upper()} file but cannot decode it: it is truncated "
            f"({why}); upload the whole file"
        )
    cv2 = require("cv2")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise QueryImageError(
            f"{source} looks like a {kind.upper()} file but OpenCV cannot decode it (truncated "
            "or corrupt?)"
        )
    check_image_size(int(image.shape[1]), int(image.shape[0]), source, query=query)
    return np.ascontiguousarray(image)


def read_image_file(path: str | Path, *, query: bool = True) -> np.ndarray:
    """A query (or gallery) image file, checked as :func:`decode_image` does."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file {path} does not exist")
    if not path.is_file():
        raise QueryImageError(f"{path} is not a file; expected an image file")
    return decode_image(path.read_bytes(), str(path), query=query)


def as_query_image(image: str | Path | bytes | np.ndarray) -> np.ndarray:
    """A query as ``[H, W, 3]`` (or ``[H, W]``) uint8: a path, the bytes of a file, or an array."""
    if isinstance(image, (str, Path)):
        return read_image_file(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image))
    from locore.runtime.images import load_image

    arr = load_image(image)
    check_image_size(int(arr.shape[1]), int(arr.shape[0]), "the query image")
    return arr


# ---- settings and entries ----------------------------------------------------------------------
@dataclass(frozen=True)
class ExtractorSettings:
    """How an index's features are computed; an index never mixes two settings."""

    num_desc: int = 48  # local descriptors stored per image (strongest SIFT responses)
    num_scales: int = 8
    max_side: int = 512
    max_keypoints: int = 1000
    global_desc: str = "vlad"  # "vlad" (codebook fitted on the first images) or "mean"
    codebook_words: int = CODEBOOK_WORDS

    def to_dict(self) -> dict[str, Any]:
        return {"extractor": "sift", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtractorSettings:
        data = dict(data)
        kind = data.pop("extractor", "sift")
        if kind != "sift":
            raise SearchIndexError(f"unknown extractor {kind!r} in the index; this build has sift")
        return cls(**data)

    def extractor(self, codebook: Codebook | None) -> SiftExtractor:
        return SiftExtractor(
            num_desc=self.num_desc,
            num_scales=self.num_scales,
            max_side=self.max_side,
            max_keypoints=self.max_keypoints,
            global_desc=self.global_desc,
            codebook=codebook,
        )


@dataclass
class ImageEntry:
    """One indexed image: ``key`` identifies it (absolute path, or ``video#frame=N``), ``file``
    is where to read it (absolute, or relative to the index folder), sha256 of its bytes (of the
    video and frame number for frames), ``size`` (height, width)."""

    key: str
    file: str
    sha256: str
    size: tuple[int, int]
    file_size: int = 0
    mtime_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "size": list(self.size)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageEntry:
        return cls(
            key=str(data["key"]),
            file=str(data["file"]),
            sha256=str(data["sha256"]),
            size=(int(data["size"][0]), int(data["size"][1])),
            file_size=int(data.get("file_size", 0)),
            mtime_ns=int(data.get("mtime_ns", 0)),
        )

    @property
    def name(self) -> str:
        """A short display name."""
        return Path(self.key.split("#", 1)[0]).name + (
            "#" + self.key.split("#", 1)[1] if "#" in self.key else ""
        )


@dataclass
class _Segment:
    name: str
    count: int
    dropped: list[int] = field(default_factory=list)

    def live_rows(self) -> list[int]:
        gone = set(self.dropped)
        return [r for r in range(self.count) if r not in gone]


@dataclass
class _Manifest:
    settings: ExtractorSettings
    codebook: str | None = None
    global_dim: int = 0
    source: dict[str, Any] = field(default_factory=dict)
    segments: list[_Segment] = field(default_factory=list)
    sample_queries: list[str] = field(default_factory=list)
    next_segment: int = 1
    updated: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "extractor": self.settings.to_dict(),
            "desc_dim": SiftExtractor.desc_dim,
            "num_desc": self.settings.num_desc,
            "global_dim": self.global_dim,
            "codebook": self.codebook,
            "source": self.source,
            "segments": [asdict(s) for s in self.segments],
            "next_segment": self.next_segment,
            "sample_queries": self.sample_queries,
            "num_images": sum(s.count - len(s.dropped) for s in self.segments),
            "updated": self.updated,
        }

    @classmethod
    def read(cls, root: Path) -> _Manifest:
        path = root / MANIFEST
        if not path.is_file():
            if root.is_dir() or root.exists():
                raise FileNotFoundError(
                    f"{root} is not a locore index (no {MANIFEST}); build one with "
                    f"`locore index IMAGES_DIR --output {root}`"
                )
            raise FileNotFoundError(
                f"index folder {root} does not exist; build it with "
                f"`locore index IMAGES_DIR --output {root}`"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SearchIndexError(f"{path} is not valid JSON ({exc}); rebuild the index") from exc
        if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
            raise SearchIndexError(
                f"{path} is not a locore index manifest (format {data.get('format')!r}, "
                f"expected {INDEX_FORMAT!r})"
                if isinstance(data, dict)
                else f"{path} is not a locore index manifest"
            )
        if data.get("version") != INDEX_VERSION:
            raise SearchIndexError(
                f"{path} has index version {data.get('version')}; this locore-edge reads "
                f"version {INDEX_VERSION}. Rebuild it with `locore index ... --rebuild`"
            )
        try:
            return cls(
                settings=ExtractorSettings.from_dict(data["extractor"]),
                codebook=data.get("codebook"),
                global_dim=int(data.get("global_dim", 0)),
                source=dict(data.get("source") or {}),
                segments=[
                    _Segment(str(s["name"]), int(s["count"]), [int(r) for r in s["dropped"]])
                    for s in data["segments"]
                ],
                sample_queries=[str(p) for p in data.get("sample_queries", [])],
                next_segment=int(data.get("next_segment", 1)),
                updated=str(data.get("updated", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SearchIndexError(f"{path} is malformed ({exc!r}); rebuild the index") from exc

    def write(self, root: Path) -> None:
        self.updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_text(root / MANIFEST, json.dumps(self.to_dict(), indent=1) + "\n")


def _segment_paths(root: Path, name: str) -> tuple[Path, Path, Path]:
    base = root / SEGMENTS_DIR / name
    return base.with_suffix(".h5"), base.with_suffix(".npy"), base.with_suffix(".json")


def _read_entries(root: Path, seg: _Segment) -> list[ImageEntry]:
    path = _segment_paths(root, seg.name)[2]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = [ImageEntry.from_dict(d) for d in data["images"]]
    except FileNotFoundError as exc:
        raise SearchIndexError(
            f"segment {seg.name} of {root} is missing ({path}); rebuild the index"
        ) from exc
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SearchIndexError(f"{path} is malformed ({exc!r}); rebuild the index") from exc
    if len(entries) != seg.count:
        raise SearchIndexError(
            f"{path} lists {len(entries)} images, the manifest says {seg.count}; rebuild the index"
        )
    return entries


# ---- the source: a folder or a video -----------------------------------------------------------
@dataclass
class _Item:
    """One image of the source, not yet read."""

    key: str
    file: str
    file_size: int
    mtime_ns: int
    load: Callable[[], tuple[np.ndarray, str]]  # -> (image, sha256)
    sha256: Callable[[], str]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _folder_items(folder: Path, skip: Path | None = None) -> list[_Item]:
    """The image files under ``folder`` (recursively, sorted), none under ``skip`` (the index
    folder itself, when it lies inside the source)."""
    skip = skip.resolve() if skip is not None else None
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not p.name.startswith(".")
        and (skip is None or not p.resolve().is_relative_to(skip))
    )
    items = []
    for path in files:
        stat = path.stat()
        resolved = path.resolve()

        def load(p: Path = resolved) -> tuple[np.ndarray, str]:
            data = p.read_bytes()
            return decode_image(data, str(p), query=False), hashlib.sha256(data).hexdigest()

        items.append(
            _Item(
                key=str(resolved),
                file=str(resolved),
                file_size=int(stat.st_size),
                mtime_ns=int(stat.st_mtime_ns),
                load=load,
                sha256=functools.partial(_sha256_file, resolved),
            )
        )
    return items


def _video_items(video: Path, root: Path, every: int) -> list[_Item]:
    cv2 = require("cv2")
    video = video.resolve()
    stat = video.stat()
    video_hash = _sha256_file(video)
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FormatError(f"OpenCV cannot open the video {video}; expected {VIDEO_SUFFIXES}")
    frames: dict[int, np.ndarray] = {}
    try:
        number = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if number % every == 0:
                frames[number] = np.ascontiguousarray(frame)
            number += 1
    finally:
        cap.release()
    if not frames:
        raise FormatError(f"OpenCV read no frame from {video}; is it a video file?")
    folder = f"{FRAMES_DIR}/{video.stem}-{video_hash[:8]}"
    items = []
    for number, frame in frames.items():
        rel = f"{folder}/f{number:06d}.jpg"
        digest = hashlib.sha256(f"{video_hash}#{number}".encode()).hexdigest()

        def load(img: np.ndarray = frame, rel: str = rel, digest: str = digest) -> Any:
            out = root / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if ok:
                atomic_write_bytes(out, buf.tobytes())
            return img, digest

        items.append(
            _Item(
                key=f"{video}#frame={number}",
                file=rel,
                file_size=int(stat.st_size),
                mtime_ns=int(stat.st_mtime_ns),
                load=load,
                sha256=functools.partial(str, digest),
            )
        )
    return items


def source_items(source: str | Path, root: Path, every: int = 1) -> tuple[list[_Item], dict]:
    """The images of ``source`` (a folder, searched recursively, or a video: every
    ``every``-th frame) and the manifest's description of it."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist; give a folder of images or a video")
    if source.is_dir():
        items = _folder_items(source, skip=root)
        if not items:
            raise FileNotFoundError(
                f"{source} holds no image files (looked for {', '.join(IMAGE_SUFFIXES)}, "
                "recursively)"
            )
        return items, {"kind": "folder", "path": str(source.resolve())}
    if source.suffix.lower() in VIDEO_SUFFIXES:
        if every < 1:
            raise ValueError(f"every must be >= 1 (index every n-th frame), got {every}")
        return _video_items(source, root, every), {
            "kind": "video",
            "path": str(source.resolve()),
            "every": every,
        }
    raise FormatError(
        f"{source} is neither a folder of images nor a video ({', '.join(VIDEO_SUFFIXES)})"
    )


# ---- building ----------------------------------------------------------------------------------
@dataclass
class BuildReport:
    """What :func:`build_index` did."""

    index: Path
    added: int = 0
    kept: int = 0
    removed: int = 0
    skipped: list[str] = field(default_factory=list)  # "path: reason"
    total: int = 0
    segments: int = 0
    compacted: bool = False
    faiss: bool = False  # a faiss index was stored for the global search
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "index": str(self.index)}


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive lock on the index folder (one builder at a time)."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise SearchIndexError(
                f"another `locore index` is writing {root}; wait for it to finish"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _clean_orphans(root: Path, manifest: _Manifest | None) -> None:
    """Remove temporary files and segments that no manifest names (a killed build's leftovers)."""
    names = {s.name for s in manifest.segments} if manifest else set()
    seg_dir = root / SEGMENTS_DIR
    for folder in (root, seg_dir):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
    if seg_dir.is_dir():
        for path in seg_dir.iterdir():
            if path.suffix in (".h5", ".npy", ".json") and path.stem not in names:
                log.info("removing %s (left by an interrupted build)", path)
                path.unlink(missing_ok=True)


def build_index(
    source: str | Path,
    output: str | Path,
    *,
    settings: ExtractorSettings | None = None,
    every: int = 1,
    codebook: Codebook | str | Path | None = None,
    flush_every: int = 64,
    sample_queries: Sequence[str | Path] = (),
    rebuild: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Index ``source`` (a folder of images or a video) into the folder ``output``.

    Incremental: an existing index at ``output`` keeps its unchanged images, drops removed
    or changed ones and appends new ones, ``flush_every`` images per segment (each segment is
    committed atomically, so a killed build resumes where it stopped). ``settings`` must
    match an existing index's (``rebuild=True`` starts over). ``codebook``: a VLAD codebook to
    use instead of fitting one on the first ``CODEBOOK_SAMPLE`` images. ``sample_queries``:
    image files the web page offers as queries.
    """
    start = time.perf_counter()
    root = Path(output)
    if flush_every < 1:
        raise ValueError(f"flush_every must be >= 1, got {flush_every}")
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder; choose another --output")
    with _locked(root):
        manifest: _Manifest | None = None
        if (root / MANIFEST).is_file() and not rebuild:
            manifest = _Manifest.read(root)
            if settings is not None and settings != manifest.settings:
                raise IndexMismatchError(
                    f"{root} was built with {manifest.settings}, not {settings}; pass "
                    "rebuild=True (CLI --rebuild) to rebuild it with the new settings"
                )
        elif rebuild:
            for path in (root / MANIFEST, root / CODEBOOK_FILE):
                path.unlink(missing_ok=True)
        _clean_orphans(root, manifest)
        items, description = source_items(source, root, every)
        if manifest is None:
            manifest = _Manifest(settings=settings or ExtractorSettings(), source=description)
        manifest.source = description
        manifest.sample_queries = [str(Path(p).resolve()) for p in sample_queries] or (
            manifest.sample_queries
        )
        report = BuildReport(index=root)

        # 1. what is there already
        live: dict[str, tuple[_Segment, int, ImageEntry]] = {}
        for seg in manifest.segments:
            entries = _read_entries(root, seg)
            for row in seg.live_rows():
                live[entries[row].key] = (seg, row, entries[row])
        todo: list[_Item] = []
        wanted = set()
        for item in items:
            wanted.add(item.key)
            have = live.get(item.key)
            if have is not None:
                entry = have[2]
                same = (entry.file_size, entry.mtime_ns) == (item.file_size, item.mtime_ns)
                if same or entry.sha256 == item.sha256():
                    report.kept += 1
                    continue
            todo.append(item)
        # 2. drop removed and changed images first (the index stays consistent if killed here)
        changed = {t.key for t in todo}
        for key, (seg, row, _) in live.items():
            if key not in wanted or key in changed:
                seg.dropped.append(row)
                report.removed += 1
        if report.removed:
            manifest.write(root)

        # 3. the codebook
        detected: dict[str, tuple[np.ndarray, Keypoints]] = {}
        extractor = _extractor_for(root, manifest, codebook, todo, report, progress, detected)

        # 4. new images, one segment at a time
        pending: list[tuple[ImageEntry, LocalFeatures]] = []
        bar = progress_bar(total=len(todo), desc="indexing", unit="img", enabled=progress)
        try:
            for item in todo:
                try:
                    image, digest = item.load()
                    if item.key in detected:  # detected for the codebook already
                        kps = detected.pop(item.key)[1]
                        feats = extractor.features_from_keypoints(
                            kps, extractor.global_descriptor(kps, image)
                        )
                    else:
                        feats = extractor.extract(image)
                except (FeatureError, OSError) as exc:
                    log.warning("skipping %s: %s", item.file, exc)
                    report.skipped.append(f"{item.file}: {exc}")
                    bar.update(1)
                    continue
                entry = ImageEntry(
                    key=item.key,
                    file=item.file,
                    sha256=digest,
                    size=(int(image.shape[0]), int(image.shape[1])),
                    file_size=item.file_size,
                    mtime_ns=item.mtime_ns,
                )
                pending.append((entry, feats))
                if len(pending) >= flush_every:
                    _commit_segment(root, manifest, pending)
                    report.added += len(pending)
                    pending = []
                bar.update(1)
            if pending:
                _commit_segment(root, manifest, pending)
                report.added += len(pending)
        finally:
            bar.close()
        manifest.write(root)
        if _needs_compaction(manifest):
            _compact(root, manifest)
            report.compacted = True
        _clean_orphans(root, manifest)
        with Index(root, "exact") as built:
            report.faiss = _store_faiss(root, manifest, built.global_desc)
    report.total = sum(s.count - len(s.dropped) for s in manifest.segments)
    report.segments = len(manifest.segments)
    report.seconds = time.perf_counter() - start
    log.info(
        "index %s: %d images (%d added, %d kept, %d removed, %d skipped) in %.1f s",
        root,
        report.total,
        report.added,
        report.kept,
        report.removed,
        len(report.skipped),
        report.seconds,
    )
    return report


def _extractor_for(
    root: Path,
    manifest: _Manifest,
    codebook: Codebook | str | Path | None,
    todo: list[_Item],
    report: BuildReport,
    progress: bool,
    keypoints: dict[str, tuple[np.ndarray, Keypoints]],
) -> SiftExtractor:
    settings = manifest.settings
    if settings.global_desc != "vlad":
        extractor = settings.extractor(None)
        manifest.global_dim = extractor.global_dim
        return extractor
    if manifest.codebook is not None:
        book = Codebook.load(root / manifest.codebook)
        if codebook is not None:
            log.warning("%s already has a codebook; the one given is ignored", root)
        return settings.extractor(book)
    if codebook is not None:
        book = Codebook.load(codebook) if isinstance(codebook, (str, Path)) else codebook
    else:
        book = _fit_codebook(settings, todo, progress, keypoints)
    book.save(root / CODEBOOK_FILE)
    manifest.codebook = CODEBOOK_FILE
    extractor = settings.extractor(book)
    manifest.global_dim = extractor.global_dim
    manifest.write(root)
    return extractor


def _fit_codebook(
    settings: ExtractorSettings,
    todo: list[_Item],
    progress: bool,
    keypoints: dict[str, tuple[np.ndarray, Keypoints]],
) -> Codebook:
    """Fit the VLAD codebook on (up to) ``CODEBOOK_SAMPLE`` images spread over ``todo``;
    their (image, keypoints) are kept in ``keypoints`` by key, so they are detected once."""
    if not todo:
        raise SearchIndexError("cannot fit a VLAD codebook: there are no images to index")
    step = max(1, len(todo) // CODEBOOK_SAMPLE)
    sample = todo[::step][:CODEBOOK_SAMPLE]
    detector = settings.extractor(None)
    kps: list[Keypoints] = []
    for item in progress_bar(sample, desc="codebook", unit="img", enabled=progress):
        try:
            image, _ = item.load()
            kps.append(detector.detect(image))
        except (FeatureError, OSError) as exc:
            log.warning("codebook: skipping %s: %s", item.file, exc)
            continue
        keypoints[item.key] = (image, kps[-1])
    descriptors = [k.descriptors for k in kps if len(k)]
    count = sum(len(d) for d in descriptors)
    if count < settings.codebook_words:
        raise SearchIndexError(
            f"the images give {count} SIFT descriptors, fewer than the {settings.codebook_words} "
            "codebook words; index more (or more textured) images, or use global_desc='mean'"
        )
    return Codebook.fit(descriptors, settings.codebook_words, seed=0, max_points=CODEBOOK_POINTS)


def _commit_segment(
    root: Path, manifest: _Manifest, pending: list[tuple[ImageEntry, LocalFeatures]]
) -> None:
    name = f"seg-{manifest.next_segment:06d}"
    h5, npy, js = _segment_paths(root, name)
    feats = LocalFeatures.stack([f for _, f in pending])
    write_features(h5, feats)
    assert feats.global_desc is not None
    write_global_descriptors(npy, feats.global_desc)
    images = {"images": [e.to_dict() for e, _ in pending]}
    atomic_write_text(js, json.dumps(images, indent=0) + "\n")
    manifest.segments.append(_Segment(name, len(pending)))
    manifest.next_segment += 1
    manifest.write(root)  # the commit point


def _needs_compaction(manifest: _Manifest) -> bool:
    rows = sum(s.count for s in manifest.segments)
    dropped = sum(len(s.dropped) for s in manifest.segments)
    return len(manifest.segments) > MAX_SEGMENTS or (
        rows > 0 and dropped > MAX_DROPPED_FRACTION * rows
    )


def _compact(root: Path, manifest: _Manifest) -> None:
    """Merge every segment's live rows into one new segment (committed like any other)."""
    rows, globals_, entries = [], [], []
    for seg in manifest.segments:
        live = seg.live_rows()
        if not live:
            continue
        h5, npy, _ = _segment_paths(root, seg.name)
        with FeatureFile(h5) as ff:
            rows.append(to_rows(ff.read(np.asarray(live, dtype=np.int64))))
        globals_.append(np.load(npy, allow_pickle=False)[live])
        seg_entries = _read_entries(root, seg)
        entries += [seg_entries[r] for r in live]
    old = list(manifest.segments)
    manifest.segments = []
    if entries:
        name = f"seg-{manifest.next_segment:06d}"
        h5, npy, js = _segment_paths(root, name)
        write_features(h5, np.concatenate(rows))
        write_global_descriptors(npy, np.concatenate(globals_))
        atomic_write_text(js, json.dumps({"images": [e.to_dict() for e in entries]}) + "\n")
        manifest.segments = [_Segment(name, len(entries))]
        manifest.next_segment += 1
    manifest.write(root)
    for seg in old:
        for path in _segment_paths(root, seg.name):
            path.unlink(missing_ok=True)
    log.info("compacted %d segments into %d", len(old), len(manifest.segments))


# ---- global search -----------------------------------------------------------------------------
class GlobalSearch:
    """Top-k inner-product search over the index's global descriptors ``[N, Dg]``.

    ``method``: ``exact`` (numpy, :func:`~locore.runtime.shortlist.search_shortlist`),
    ``faiss-flat`` (exact, faiss), ``faiss-ivf`` (IndexIVFFlat, nlist = 4 sqrt(N), nprobe
    :data:`FAISS_NPROBE`), ``faiss-hnsw`` (IndexHNSWFlat, M 32, efSearch 128), or ``auto``:
    exact below :data:`FAISS_MIN_FLOATS` (N x Dg), from there on the faiss HNSW index that
    :func:`build_index` stored (``prebuilt``), else exact with a note in the log. An explicit
    faiss method builds its index now (minutes for 100k vectors: see
    ``benchmarks/global_search.py``).
    """

    def __init__(self, vectors: np.ndarray, method: str = "auto", prebuilt: Any = None) -> None:
        if method not in GLOBAL_METHODS:
            raise ValueError(f"global search method must be one of {GLOBAL_METHODS}, got {method}")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n = len(self.vectors)
        self._faiss: Any = None
        if method == "auto":
            method = "exact"
            if prebuilt is not None and wants_faiss(self.vectors.shape):
                method, self._faiss = f"faiss-{FAISS_KIND}", prebuilt
            elif wants_faiss(self.vectors.shape):
                log.info(
                    "%d x %d global descriptors: exact search; with faiss-cpu installed "
                    "(pip install 'locore-edge[faiss]') `locore index` stores a faiss HNSW index "
                    "for faster search",
                    *self.vectors.shape,
                )
        elif method.startswith("faiss") and n:
            self._faiss = build_faiss_index(self.vectors, method.removeprefix("faiss-"))
        self.method = method

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids [k'] int64, sims [k'] float32) of the top ``k`` (k' = min(k, N)), best first."""
        q = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self.vectors.shape[1]:
            raise IndexMismatchError(
                f"the query's global descriptor is {q.shape[1]}-d, the index holds "
                f"{self.vectors.shape[1]}-d descriptors"
            )
        if len(self.vectors) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self._faiss is None:
            result = search_shortlist(q, self.vectors, k)
            return result.ids[0], result.sims[0]
        sims, ids = self._faiss.search(q, min(int(k), len(self.vectors)))
        keep = ids[0] >= 0  # faiss pads with -1 when fewer than k are found
        return ids[0][keep].astype(np.int64), sims[0][keep].astype(np.float32)


def wants_faiss(shape: tuple[int, ...]) -> bool:
    """Whether ``auto`` global search uses faiss for descriptors of ``shape`` [N, D]."""
    return len(shape) == 2 and shape[0] * shape[1] >= FAISS_MIN_FLOATS


def _faiss_signature(manifest: _Manifest) -> str:
    """What the stored faiss index was built from: the segments and their dropped rows."""
    data = json.dumps([asdict(s) for s in manifest.segments], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


def _store_faiss(root: Path, manifest: _Manifest, vectors: np.ndarray) -> bool:
    """Build and store the faiss index of ``vectors`` when ``auto`` search would use it."""
    if not wants_faiss(vectors.shape):
        (root / FAISS_FILE).unlink(missing_ok=True)
        return False
    try:
        faiss = importlib.import_module("faiss")
    except ImportError:
        log.info("faiss-cpu is not installed: the index uses exact global search")
        return False
    signature = _faiss_signature(manifest)
    meta = root / (FAISS_FILE + ".json")
    if (root / FAISS_FILE).is_file() and meta.is_file():
        with contextlib.suppress(OSError, ValueError):
            if json.loads(meta.read_text())["signature"] == signature:
                return True
    log.info("building the faiss %s index of %d x %d vectors", FAISS_KIND, *vectors.shape)
    index = build_faiss_index(vectors, FAISS_KIND)
    with atomic_path(root / FAISS_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    atomic_write_text(meta, json.dumps({"kind": FAISS_KIND, "signature": signature}) + "\n")
    return True


def _load_faiss(root: Path, manifest: _Manifest) -> Any:
    """The stored faiss index if it matches the manifest's segments (else None)."""
    meta = root / (FAISS_FILE + ".json")
    if not (root / FAISS_FILE).is_file() or not meta.is_file():
        return None
    try:
        faiss = importlib.import_module("faiss")
        if json.loads(meta.read_text())["signature"] != _faiss_signature(manifest):
            log.info("the stored faiss index is out of date; run `locore index` again")
            return None
        return faiss.read_index(str(root / FAISS_FILE))
    except (ImportError, OSError, ValueError, KeyError, RuntimeError) as exc:
        log.info("not using the stored faiss index (%s)", exc)
        return None


def build_faiss_index(vectors: np.ndarray, kind: str) -> Any:
    """A faiss inner-product index of ``vectors`` [N, D]: ``flat``, ``ivf`` or ``hnsw``."""
    faiss = require("faiss", "faiss global search (pip install 'locore-edge[faiss]')")
    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39 or 1))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(FAISS_NPROBE, nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 64
        index.hnsw.efSearch = 128
    else:
        raise ValueError(f"faiss index kind must be flat, ivf or hnsw, got {kind!r}")
    index.add(vectors)
    return index


# ---- the index, opened for search --------------------------------------------------------------
@dataclass
class SearchResult:
    """One query: the global shortlist and the re-ranked list, with per-stage milliseconds.

    shortlist_ids / shortlist_sims: [K] by global similarity; ids / scores: [K] after
    re-ranking (fused scores; equal to the shortlist when no re-ranker was given).
    timings: ``extract_ms``, ``global_ms``, ``rerank_ms``, ``total_ms``.
    """

    query: LocalFeatures
    shortlist_ids: np.ndarray
    shortlist_sims: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    timings: dict[str, float]
    reranked: bool

    def to_dict(self, index: Index, top: int | None = None) -> dict[str, Any]:
        def rows(ids: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
            sims = dict(zip(self.shortlist_ids.tolist(), self.shortlist_sims.tolist(), strict=True))
            was = {int(i): r for r, i in enumerate(self.shortlist_ids.tolist(), 1)}
            return [
                {
                    "rank": rank,
                    "id": int(i),
                    "name": index.images[int(i)].name,
                    "file": index.images[int(i)].file,
                    "score": round(float(s), 6),
                    "global_sim": round(float(sims[int(i)]), 6),
                    "global_rank": was[int(i)],
                }
                for rank, (i, s) in enumerate(zip(ids[:top], scores[:top], strict=True), 1)
            ]

        return {
            "shortlist": rows(self.shortlist_ids, self.shortlist_sims),
            "reranked": rows(self.ids, self.scores) if self.reranked else None,
            "timings_ms": {k: round(v, 2) for k, v in self.timings.items()},
            "query_keypoints": int(self.query.num_valid),
        }


class Index:
    """A built index, opened for search (:func:`open_index`).

    images: [N] :class:`ImageEntry` in global order; global_desc: [N, Dg] float32;
    extractor: the SIFT extractor the index was built with (with its codebook).
    """

    def __init__(self, root: Path, global_method: str = "auto") -> None:
        self.root = root
        self.manifest = _Manifest.read(root)
        self.settings = self.manifest.settings
        book = None
        if self.manifest.codebook is not None:
            book = Codebook.load(root / self.manifest.codebook)
        self.extractor = self.settings.extractor(book)
        self.images: list[ImageEntry] = []
        self._where: list[tuple[int, int]] = []  # global id -> (segment number, row)
        vectors = []
        self._files: list[FeatureFile] = []
        try:
            for number, seg in enumerate(self.manifest.segments):
                h5, npy, _ = _segment_paths(root, seg.name)
                entries = _read_entries(root, seg)
                live = seg.live_rows()
                self._files.append(FeatureFile(h5))
                if self._files[-1].num_images != seg.count:
                    raise SearchIndexError(
                        f"{h5} holds {self._files[-1].num_images} images, the manifest says "
                        f"{seg.count}; rebuild the index"
                    )
                glob = np.load(npy, mmap_mode="r", allow_pickle=False)
                if glob.shape != (seg.count, self.manifest.global_dim):
                    raise SearchIndexError(
                        f"{npy} holds {list(glob.shape)}, expected "
                        f"[{seg.count}, {self.manifest.global_dim}]; rebuild the index"
                    )
                vectors.append(np.asarray(glob[live], dtype=np.float32))
                self.images += [entries[r] for r in live]
                self._where += [(number, r) for r in live]
        except BaseException:
            self.close()
            raise
        dim = self.manifest.global_dim
        self.global_desc = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
        prebuilt = _load_faiss(root, self.manifest) if global_method == "auto" else None
        self.global_search = GlobalSearch(self.global_desc, global_method, prebuilt)

    # ---- facts ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_desc(self) -> int:
        return self.settings.num_desc

    @property
    def desc_dim(self) -> int:
        return SiftExtractor.desc_dim

    @property
    def sample_queries(self) -> list[Path]:
        return [Path(p) for p in self.manifest.sample_queries if Path(p).is_file()]

    def image_path(self, i: int) -> Path:
        """Where image ``i`` is read from (it may have moved since indexing)."""
        file = Path(self.images[i].file)
        return file if file.is_absolute() else self.root / file

    def describe(self) -> dict[str, Any]:
        return {
            "index": str(self.root),
            "images": len(self),
            "extractor": self.settings.to_dict(),
            "global_dim": self.manifest.global_dim,
            "global_search": self.global_search.method,
            "segments": len(self.manifest.segments),
            "source": self.manifest.source,
            "updated": self.manifest.updated,
        }

    def check_model(self, config: LocoreConfig, model: str = "the model") -> None:
        """Raise :class:`IndexMismatchError` unless ``config`` reads this index's descriptors."""
        if config.desc_dim != self.desc_dim:
            raise IndexMismatchError(
                f"{model} takes {config.desc_dim}-d local descriptors (config {config.name!r}), "
                f"but the index {self.root} holds {self.desc_dim}-d SIFT descriptors; use a "
                "model trained on SIFT features (e.g. the shipped model) or rebuild the index "
                "with that model's extractor"
            )
        if config.use_global and config.global_dim != self.manifest.global_dim:
            raise IndexMismatchError(
                f"{model} takes {config.global_dim}-d global descriptors, the index holds "
                f"{self.manifest.global_dim}-d ones"
            )
        if config.num_desc > self.num_desc:
            log.warning(
                "%s reads %d descriptors per image but the index stores %d; the rest is padding",
                model,
                config.num_desc,
                self.num_desc,
            )

    # ---- reading --------------------------------------------------------------------------------
    def features(
        self, ids: Sequence[int] | np.ndarray, num_desc: int | None = None
    ) -> LocalFeatures:
        """Local features [len(ids), T, ...] of images ``ids`` (global descriptors attached)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        rows = num_desc or self.num_desc
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"image id out of range 0..{len(self) - 1}: {ids.tolist()}")
        parts: list[LocalFeatures | None] = [None] * len(ids)
        by_segment: dict[int, list[int]] = {}
        for pos, i in enumerate(ids.tolist()):
            by_segment.setdefault(self._where[i][0], []).append(pos)
        for number, positions in by_segment.items():
            rows_in = np.asarray([self._where[int(ids[p])][1] for p in positions], np.int64)
            batch = self._files[number].read(rows_in, num_desc=rows)
            for j, p in enumerate(positions):
                parts[p] = batch[j]
        feats = LocalFeatures.stack([p for p in parts if p is not None]) if len(ids) else None
        if feats is None:
            raise IndexError("no image ids given")
        feats.global_desc = self.global_desc[ids]
        return feats

    # ---- searching ------------------------------------------------------------------------------
    def query_features(self, image: str | Path | bytes | np.ndarray) -> LocalFeatures:
        """Features of a query image, computed as the index's were."""
        return self.extractor.extract(as_query_image(image))

    def search(
        self,
        image: str | Path | bytes | np.ndarray | LocalFeatures,
        reranker: Reranker | None = None,
        *,
        shortlist: int = 100,
    ) -> SearchResult:
        """Search the index for ``image`` (a path, file bytes, an array, or features).

        The global shortlist holds ``shortlist`` images; with a ``reranker`` its top
        ``reranker.params.topk`` are re-ranked with sliding windows.
        """
        if len(self) == 0:
            raise SearchIndexError(f"the index {self.root} holds no images")
        if shortlist < 1:
            raise ValueError(f"shortlist must be >= 1, got {shortlist}")
        t0 = time.perf_counter()
        query = image if isinstance(image, LocalFeatures) else self.query_features(image)
        t1 = time.perf_counter()
        assert query.global_desc is not None
        ids, sims = self.global_search.search(query.global_desc, shortlist)
        t2 = time.perf_counter()
        timings = {"extract_ms": 1e3 * (t1 - t0), "global_ms": 1e3 * (t2 - t1)}
        if reranker is None:
            timings["total_ms"] = 1e3 * (t2 - t0)
            return SearchResult(query, ids, sims, ids, sims.astype(np.float64), timings, False)
        self.check_model(reranker.backend.config, str(reranker.backend.path))
        gallery = self.features(ids, num_desc=reranker.num_desc)
        result = reranker.rerank(query.first(reranker.num_desc), gallery, np.arange(len(ids)), sims)
        t3 = time.perf_counter()
        timings["rerank_ms"] = 1e3 * (t3 - t2)
        timings["total_ms"] = 1e3 * (t3 - t0)
        return SearchResult(query, ids, sims, ids[result.ids], result.scores, timings, True)

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_index(path: str | Path, global_method: str = "auto") -> Index:
    """Open the index folder ``path`` for search (FileNotFoundError if there is none)."""
    return Index(Path(path), global_method)


# ---- the match view ----------------------------------------------------------------------------
def descriptor_matches(
    query: LocalFeatures, gallery: LocalFeatures, *, top: int = 40, mutual: bool = True
) -> list[dict[str, Any]]:
    """Best cosine matches between the valid descriptors of two images (one each, [T, D]).

    Each query descriptor's nearest gallery descriptor (``mutual``: kept only when the query
    descriptor is also the gallery descriptor's nearest), strongest first, at most ``top``:
    ``{"q": i, "g": j, "cos": c, "q_xy": [x, y], "g_xy": [x, y]}`` with xy in [0, 1].
    """
    qv, gv = np.flatnonzero(query.mask), np.flatnonzero(gallery.mask)
    if not len(qv) or not len(gv):
        return []
    qd = query.descriptors[qv].astype(np.float64)
    gd = gallery.descriptors[gv].astype(np.float64)
    qd /= np.maximum(np.linalg.norm(qd, axis=1, keepdims=True), 1e-12)
    gd /= np.maximum(np.linalg.norm(gd, axis=1, keepdims=True), 1e-12)
    cos = qd @ gd.T
    best_g = cos.argmax(1)
    best_q = cos.argmax(0)
    out: list[dict[str, Any]] = []
    for a, b in enumerate(best_g):
        if mutual and best_q[b] != a:
            continue
        i, j = int(qv[a]), int(gv[b])
        out.append(
            {
                "q": i,
                "g": j,
                "cos": round(float(cos[a, b]), 4),
                "q_xy": [round(float(v), 4) for v in query.xy[i]],
                "g_xy": [round(float(v), 4) for v in gallery.xy[j]],
            }
        )
    out.sort(key=lambda m: -float(m["cos"]))
    return out[:top]


def pair_token_logits(
    backend: Backend, query: LocalFeatures, gallery: LocalFeatures
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The model's token logits for the query and ONE gallery image scored as a pair.

    Returns (query logits [Nd], gallery logits [Nd], image score) with NaN on padding, or None
    when the model has no ``token_logits`` output (export it with ``with_token_logits=True``).
    Token layout (``locore.model``): ``[IMG q][q_1..q_Nd][SEP][IMG g][g_1..g_Nd][SEP]``.
    """
    if TOKEN_LOGITS not in backend.output_names():
        return None
    nd = backend.config.num_desc
    packer = Packer.for_backend(backend, clip_scales=True)
    q, g = query.first(nd), gallery.first(nd)
    single = LocalFeatures.stack([g])
    feeds = packer.pack(q, single)
    out = backend.infer(feeds)
    tokens = np.asarray(out[TOKEN_LOGITS], dtype=np.float32)[0]
    if tokens.shape != (2 * (nd + 2),):
        raise RuntimeError(
            f"token_logits has shape {list(out[TOKEN_LOGITS].shape)}, expected [1, {2 * (nd + 2)}]"
        )
    q_logits = tokens[1 : 1 + nd].copy()
    g_logits = tokens[nd + 3 : nd + 3 + nd].copy()
    q_valid = feeds[QUERY_MASK].reshape(-1).astype(bool)
    g_valid = feeds[GALLERY_MASK].reshape(-1).astype(bool)
    q_logits[~q_valid] = np.nan
    g_logits[~g_valid] = np.nan
    return q_logits, g_logits, float(np.asarray(out[SCORES]).reshape(-1)[0])


__all__ = [
    "FAISS_MIN_FLOATS",
    "GLOBAL_METHODS",
    "MAX_IMAGE_PIXELS",
    "MIN_QUERY_SIDE",
    "BuildReport",
    "ExtractorSettings",
    "GlobalSearch",
    "ImageEntry",
    "Index",
    "IndexMismatchError",
    "QueryImageError",
    "SearchIndexError",
    "SearchResult",
    "as_query_image",
    "build_faiss_index",
    "build_index",
    "decode_image",
    "descriptor_matches",
    "image_header",
    "open_index",
    "pair_token_logits",
    "read_image_file",
]
