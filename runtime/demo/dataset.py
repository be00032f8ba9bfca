"""The demo retrieval benchmark: views of the sources, geometric ground truth, the cached split.

For every source (:mod:`locore.runtime.demo.sources`: a photo, or one shot of a video) the
builder makes

- queries: a crop of the photo (an "object" box, as in revisitop) or a full video frame;
- database views: re-renderings of regions of the source under a homography (viewpoint,
  scale, rotation, crop), photometric changes (brightness, contrast, gamma, blur, noise,
  grey, JPEG quality) and synthetic occluders; for videos, other frames of the shot.

Ground truth is geometric: every item records the homography from its source to itself, so the
fraction of a query's region visible in a database view is measured, not guessed. Revisitop
format, per query ``{"easy": [...], "hard": [...], "junk": [...]}`` of database indices:

- easy: a mild view (``difficulty == "easy"``) showing >= 60 % of the query region
  (videos: also at most 4 frames away);
- hard: any view showing >= 30 % of the query region (videos: at most 10 frames away);
- junk: 5-30 % visible, or (videos) a farther frame of the same shot;
- anything else, including every view of every other source, is a negative. Views of one
  source are distractors for the queries of the others and positives of their own.

Everything is seeded; the build records a SHA-256 of its files and ground truth, so two builds
can be compared. A split is cached under ``<cache>/v{DEMO_VERSION}/<split>/`` (JPEG files and
``meta.json``); :func:`build_demo` reuses it.

Sizes (v3, :data:`SPLIT_SIZES`): test 12 sources (10 photos, 2 bikes.mp4 shots), 108 queries
(9 per source), 718 database images; train 18 sources (14 photos, 3 bikes.mp4 shots, carphone),
216 queries, 1575 database images. (v1: test 24 queries, 489 database images.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from locore.deps import installed_version, require
from locore.runtime.demo.sources import (
    PHOTOS,
    VIDEOS,
    DemoDataError,
    check_split,
    detect_shots,
    package_file,
    read_photo,
    read_video,
)
from locore.runtime.sift import SiftExtractor

logger = logging.getLogger(__name__)

DEMO_VERSION = 3  # v3: a test split of >= 100 queries with >= 16 keypoints each (issue 15)
DEMO_SEED = 20250327
OVERLAP_GRID = 4  # ground-truth masks are computed at 1/4 of the canonical resolution

# Side of a query box / of a random view's region, as a fraction of the photo's side. Small
# boxes leave many views of the same photo that do not show the query: hard negatives that
# look alike globally (same colours, same style) but share no local feature.
QUERY_BOX = (0.3, 0.55)
RANDOM_BOX = (0.2, 0.6)
QUERY_DRAWS = 20

# Per split: queries per source, targeted easy / hard views per query, random views per source,
# video frames per shot; "min_kp" (optional, default 0): a photo's query box is redrawn (at most
# QUERY_DRAWS times, else the box with the most) until its stored crop has at least this many
# SIFT keypoints (:class:`~locore.runtime.sift.SiftExtractor`): a query must show something a
# local method can match, or no re-ranker applies to it (flat crops of retina, rocket, coffee).
SPLIT_SIZES: dict[str, dict[str, int]] = {
    "test": {"queries": 9, "easy": 2, "hard": 2, "random": 30, "frames": 24, "min_kp": 16},
    "train": {"queries": 12, "easy": 3, "hard": 3, "random": 30, "frames": 32},
}


# ---- geometry and appearance ----------------------------------------------------------------
@dataclass
class _Item:
    """One rendered image before it is written: pixels and how it was made."""

    image: np.ndarray
    source: str
    frame: int
    homography: np.ndarray  # source (canonical) coordinates -> this image
    occluded: np.ndarray | None  # [h, w] bool, True where a synthetic occluder covers it
    difficulty: str  # "query", "easy", "hard"
    kind: str  # "query", "query_view", "random_view", "frame_view", "pair"
    quality: int  # JPEG quality of the stored file
    info: dict[str, Any] = field(default_factory=dict)


def _rng(*keys: object) -> np.random.Generator:
    digest = hashlib.sha256(":".join(str(k) for k in (DEMO_SEED, *keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _view_homography(
    region: tuple[float, float, float, float],
    out_long: float,
    angle_deg: float,
    quarter_turns: int,
    perspective: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Homography mapping ``region`` (x, y, w, h; jittered corners, rotated) onto the output."""
    cv2 = require("cv2")
    x0, y0, w, h = region
    src = np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]], np.float64)
    src += rng.uniform(-perspective, perspective, size=(4, 2)) * np.array([w, h])
    c = np.array([x0 + w / 2, y0 + h / 2])
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    src = (src - c) @ rot.T + c
    scale = out_long / max(w, h)
    ow, oh = max(16, round(w * scale)), max(16, round(h * scale))
    if quarter_turns % 2:
        ow, oh = oh, ow
    dst_corners = np.array([[0, 0], [ow, 0], [ow, oh], [0, oh]], np.float64)
    dst = np.roll(dst_corners, -quarter_turns, axis=0)
    H = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    return H.astype(np.float64), (ow, oh)


def _photometric(img: np.ndarray, rng: np.random.Generator, hard: bool) -> np.ndarray:
    cv2 = require("cv2")
    x = img.astype(np.float32)
    if hard:
        contrast, bright = rng.uniform(0.55, 1.5), rng.uniform(-45, 45)
        gamma = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    else:
        contrast, bright, gamma = rng.uniform(0.85, 1.15), rng.uniform(-15, 15), 1.0
    x = np.clip((x - 128.0) * contrast + 128.0 + bright, 0, 255)
    if gamma != 1.0:
        x = 255.0 * (x / 255.0) ** gamma
    if hard and rng.random() < 0.5:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.8, 2.5)))
    if hard and rng.random() < 0.5:
        x = x + rng.normal(0.0, rng.uniform(3.0, 12.0), size=x.shape).astype(np.float32)
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if hard and rng.random() < 0.15:
        out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return out


def _occlude(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint 1-3 flat-coloured rectangles / ellipses (<= 30 % of the area); return the mask."""
    cv2 = require("cv2")
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        bw, bh = int(w * rng.uniform(0.1, 0.35)), int(h * rng.uniform(0.1, 0.35))
        x, y = int(rng.integers(0, max(1, w - bw))), int(rng.integers(0, max(1, h - bh)))
        shape = np.zeros_like(mask)
        if rng.random() < 0.5:
            cv2.rectangle(shape, (x, y), (x + bw, y + bh), 1, -1)
        else:
            cv2.ellipse(shape, (x + bw // 2, y + bh // 2), (bw // 2, bh // 2), 0, 0, 360, 1, -1)
        if (mask | shape).mean() > 0.3:
            break
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        img[shape.astype(bool)] = colour
        mask |= shape
    return mask.astype(bool)


def _render(
    src: np.ndarray,
    region: tuple[float, float, float, float],
    rng: np.random.Generator,
    hard: bool,
    *,
    source: str,
    frame: int,
    kind: str,
) -> _Item:
    cv2 = require("cv2")
    region_long = max(region[2], region[3])
    if hard:
        out_long = float(np.clip(region_long * rng.uniform(0.4, 2.0), 128, 800))
        turns = int(rng.choice([0, 0, 0, 1, 2, 3]))
        angle, persp = rng.uniform(-40, 40), rng.uniform(0.0, 0.18)
    else:
        out_long = float(np.clip(region_long * rng.uniform(0.8, 1.25), 160, 640))
        turns, angle, persp = 0, rng.uniform(-8, 8), rng.uniform(0.0, 0.05)
    H, size = _view_homography(region, out_long, angle, turns, persp, rng)
    img = cv2.warpPerspective(
        src, H, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    img = _photometric(img, rng, hard)
    occluded = _occlude(img, rng) if hard and rng.random() < 0.5 else None
    quality = int(rng.integers(15, 51)) if hard else int(rng.integers(75, 96))
    info = {
        "region": [round(float(v), 2) for v in region],
        "angle": round(float(angle) + 90.0 * turns, 2),
        "perspective": round(float(persp), 3),
        "occluded": 0.0 if occluded is None else round(float(occluded.mean()), 3),
    }
    return _Item(img, source, frame, H, occluded, "hard" if hard else "easy", kind, quality, info)


def _jitter_region(
    anchor: tuple[float, float, float, float],
    bounds: tuple[int, int],
    rng: np.random.Generator,
    scale_range: tuple[float, float],
    shift: float,
) -> tuple[float, float, float, float]:
    x0, y0, w, h = anchor
    s = rng.uniform(*scale_range)
    nw, nh = min(w * s, bounds[0]), min(h * s, bounds[1])
    cx = x0 + w / 2 + rng.uniform(-shift, shift) * w
    cy = y0 + h / 2 + rng.uniform(-shift, shift) * h
    nx = float(np.clip(cx - nw / 2, 0, bounds[0] - nw))
    ny = float(np.clip(cy - nh / 2, 0, bounds[1] - nh))
    return nx, ny, float(nw), float(nh)


def _random_region(
    bounds: tuple[int, int], rng: np.random.Generator, lo: float, hi: float
) -> tuple[float, float, float, float]:
    w, h = bounds[0] * rng.uniform(lo, hi), bounds[1] * rng.uniform(lo, hi)
    return float(rng.uniform(0, bounds[0] - w)), float(rng.uniform(0, bounds[1] - h)), w, h


def _query_item(
    src: np.ndarray, region: tuple[float, float, float, float], source: str, frame: int
) -> _Item:
    x0, y0, w, h = (round(v) for v in region)
    img = np.ascontiguousarray(src[y0 : y0 + h, x0 : x0 + w])
    H = np.array([[1.0, 0, -x0], [0, 1.0, -y0], [0, 0, 1.0]])
    info = {"region": [x0, y0, w, h]}
    return _Item(img, source, frame, H, None, "query", "query", 95, info)


def _keypoint_count(item: _Item) -> int:
    """SIFT keypoints of ``item`` as stored (JPEG at its quality), with the demo's extractor."""
    cv2 = require("cv2")
    ok, buf = cv2.imencode(".jpg", item.image, [cv2.IMWRITE_JPEG_QUALITY, item.quality])
    if not ok:
        raise DemoDataError("JPEG encoding of a query crop failed")
    return len(SiftExtractor().detect(cv2.imdecode(buf, cv2.IMREAD_COLOR)))


def _textured_query(
    src: np.ndarray,
    bounds: tuple[int, int],
    rng: np.random.Generator,
    source: str,
    min_kp: int,
) -> tuple[tuple[float, float, float, float], _Item]:
    """(box, query crop) of a photo: the first random box whose crop has >= ``min_kp`` SIFT
    keypoints (of ``QUERY_DRAWS`` draws; else the one with the most); ``min_kp`` 0: the first."""
    best: tuple[int, tuple[float, float, float, float], _Item] | None = None
    for _ in range(QUERY_DRAWS if min_kp > 0 else 1):
        anchor = _random_region(bounds, rng, QUERY_BOX[0], QUERY_BOX[1])
        item = _query_item(src, anchor, source, 0)
        count = _keypoint_count(item) if min_kp > 0 else 0
        if best is None or count > best[0]:
            best = (count, anchor, item)
        if count >= min_kp:
            break
    assert best is not None  # at least one draw
    if best[0] < min_kp:
        logger.warning(
            "%s: no query box of %d draws has %d SIFT keypoints; keeping one with %d",
            source,
            QUERY_DRAWS,
            min_kp,
            best[0],
        )
    return best[1], best[2]


def _visible_mask(item: _Item, src_shape: tuple[int, int]) -> np.ndarray:
    """Which source pixels (on the 1/OVERLAP_GRID grid) the item shows, not occluded."""
    cv2 = require("cv2")
    h, w = item.image.shape[:2]
    shown = np.ones((h, w), np.uint8)
    if item.occluded is not None:
        shown[item.occluded] = 0
    g = 1.0 / OVERLAP_GRID
    to_grid = np.diag([g, g, 1.0]) @ np.linalg.inv(item.homography)
    gh, gw = max(1, src_shape[0] // OVERLAP_GRID), max(1, src_shape[1] // OVERLAP_GRID)
    mask = cv2.warpPerspective(shown, to_grid, (gw, gh), flags=cv2.INTER_NEAREST)
    return mask.astype(bool)


# ---- labels ---------------------------------------------------------------------------------
EASY_VISIBLE, HARD_VISIBLE, JUNK_VISIBLE = 0.6, 0.3, 0.05
VIDEO_EASY_FRAMES, VIDEO_HARD_FRAMES = 4, 10


def _label(visible: float, difficulty: str, frame_gap: int | None) -> str | None:
    """'easy', 'hard', 'junk' or None (negative) for one same-source database item."""
    if frame_gap is not None and frame_gap > VIDEO_HARD_FRAMES:
        return "junk"  # same shot, too far apart to know whether the content overlaps
    if visible >= EASY_VISIBLE and difficulty == "easy":
        if frame_gap is None or frame_gap <= VIDEO_EASY_FRAMES:
            return "easy"
    if visible >= HARD_VISIBLE:
        return "hard"
    if visible >= JUNK_VISIBLE:
        return "junk"
    return None


# ---- the split ------------------------------------------------------------------------------
@dataclass
class DemoSplit:
    """One built split: image files, revisitop ground truth and per-image metadata.

    gnd[i] = {"easy": [...], "hard": [...], "junk": [...]} indexes ``db_paths``.
    query_meta / db_meta[i] hold ``source`` (source id), ``package``, ``file``, ``frame``,
    ``kind``, ``difficulty`` and the transform parameters of each image.
    """

    name: str
    root: Path
    query_paths: list[Path]
    db_paths: list[Path]
    gnd: list[dict[str, list[int]]]
    query_meta: list[dict[str, Any]]
    db_meta: list[dict[str, Any]]
    content_hash: str
    sources: list[dict[str, Any]]

    @property
    def num_queries(self) -> int:
        return len(self.query_paths)

    @property
    def num_db(self) -> int:
        return len(self.db_paths)

    @property
    def source_ids(self) -> set[str]:
        return {m["source"] for m in self.query_meta} | {m["source"] for m in self.db_meta}

    def query_images(self) -> list[np.ndarray]:
        return [_load(p) for p in self.query_paths]

    def db_images(self) -> list[np.ndarray]:
        return [_load(p) for p in self.db_paths]

    def __repr__(self) -> str:
        return (
            f"DemoSplit({self.name!r}, queries={self.num_queries}, db={self.num_db}, "
            f"sources={len(self.sources)}, hash={self.content_hash[:12]})"
        )


def _load(path: Path) -> np.ndarray:
    cv2 = require("cv2")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DemoDataError(f"cannot read {path}; delete the demo cache and rebuild it")
    return np.asarray(img)


def default_cache_dir() -> Path:
    """``$LOCORE_CACHE/demo`` or ``~/.cache/locore-edge/demo``."""
    base = os.environ.get("LOCORE_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "locore-edge"
    return root / "demo"


def build_demo(
    cache_dir: str | Path | None = None, split: str = "test", *, rebuild: bool = False
) -> DemoSplit:
    """The demo ``split`` ("train" or "test"), built on first use and cached in ``cache_dir``."""
    check_split(split)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache / f"v{DEMO_VERSION}" / split
    meta_path = root / "meta.json"
    if meta_path.is_file() and not rebuild:
        try:
            return _open_split(root)
        except (DemoDataError, KeyError, json.JSONDecodeError) as exc:
            logger.warning("demo cache %s is unusable (%s); rebuilding it", root, exc)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{split}.", dir=root.parent))
    try:
        _build_into(tmp, split)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _open_split(root)


def _open_split(root: Path) -> DemoSplit:
    meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
    if meta.get("version") != DEMO_VERSION:
        raise DemoDataError(f"cache version {meta.get('version')} != {DEMO_VERSION}")
    qp = [root / m["path"] for m in meta["queries"]]
    dp = [root / m["path"] for m in meta["db"]]
    missing = [p for p in qp + dp if not p.is_file()]
    if missing:
        raise DemoDataError(f"{len(missing)} image files are missing, e.g. {missing[0]}")
    return DemoSplit(
        name=meta["split"],
        root=root,
        query_paths=qp,
        db_paths=dp,
        gnd=meta["gnd"],
        query_meta=meta["queries"],
        db_meta=meta["db"],
        content_hash=meta["content_hash"],
        sources=meta["sources"],
    )


def _source_items(split: str) -> tuple[list[_Item], list[_Item], list[dict[str, Any]]]:
    """Queries, database items and source records of ``split``, in a fixed order."""
    sizes = SPLIT_SIZES[split]
    queries: list[_Item] = []
    db: list[_Item] = []
    sources: list[dict[str, Any]] = []
    for photo in PHOTOS:
        if photo.split != split:
            continue
        path = package_file(photo.package, photo.distribution, photo.relpath)
        src = read_photo(path)
        sid = photo.source_id
        rng = _rng(split, sid)
        bounds = (src.shape[1], src.shape[0])
        shape = (src.shape[0], src.shape[1])
        record = {
            "source": sid,
            "package": photo.distribution,
            "version": installed_version(photo.distribution),
            "file": photo.relpath,
            "kind": "photo",
            "shape": list(shape),
        }
        for _ in range(sizes["queries"]):
            anchor, q = _textured_query(src, bounds, rng, sid, sizes.get("min_kp", 0))
            q.info["shape"] = shape
            queries.append(q)
            for hard in [False] * sizes["easy"] + [True] * sizes["hard"]:
                scale_range, shift = ((0.6, 1.8), 0.25) if hard else ((0.9, 1.3), 0.1)
                region = _jitter_region(anchor, bounds, rng, scale_range, shift)
                db.append(_render(src, region, rng, hard, source=sid, frame=0, kind="query_view"))
        for _ in range(sizes["random"]):
            region = _random_region(bounds, rng, RANDOM_BOX[0], RANDOM_BOX[1])
            hard = bool(rng.random() < 0.6)
            db.append(_render(src, region, rng, hard, source=sid, frame=0, kind="random_view"))
        if photo.pair is not None:
            other = read_photo(package_file(photo.package, photo.distribution, photo.pair))
            if other.shape == src.shape:  # a rectified stereo pair: same frame, new viewpoint
                item = _Item(other, sid, 0, np.eye(3), None, "hard", "pair", 90)
                item.info = {"file": photo.pair}
                db.append(item)
            record["pair"] = photo.pair
        sources.append(record)
    for video in VIDEOS:
        if split not in video.shot_splits:
            continue
        path = package_file(video.package, video.distribution, video.relpath)
        frames = read_video(path)
        shots = detect_shots(frames)
        if len(shots) < len(video.shot_splits):
            raise DemoDataError(
                f"expected at least {len(video.shot_splits)} shots in {path.name}, detected "
                f"{len(shots)} ({shots}); the video decoder differs from the one the demo "
                "was designed with"
            )
        for k, (start, stop) in enumerate(shots[: len(video.shot_splits)]):
            if video.shot_splits[k] != split:
                continue
            sid = f"{video.video_id}#shot{k}"
            rng = _rng(split, sid)
            n = stop - start
            nq = sizes["queries"]
            q_frames = [start + round(n * (i + 1) / (nq + 1)) for i in range(nq)]
            h, w = frames[start].shape[:2]
            for t in q_frames:
                q = _query_item(frames[t], (0, 0, w, h), sid, t)
                q.info["shape"] = (h, w)
                queries.append(q)
            stride = max(1, n // sizes["frames"])
            for t in range(start, stop, stride):
                if t in q_frames:
                    continue
                hard = bool(rng.random() < 0.4)
                scale_range, shift = ((0.55, 1.2), 0.15) if hard else ((0.85, 1.05), 0.05)
                region = _jitter_region((0, 0, w, h), (w, h), rng, scale_range, shift)
                db.append(
                    _render(frames[t], region, rng, hard, source=sid, frame=t, kind="frame_view")
                )
            sources.append(
                {
                    "source": sid,
                    "package": video.distribution,
                    "version": installed_version(video.distribution),
                    "file": video.relpath,
                    "kind": "video_shot",
                    "frames": [start, stop],
                    "shape": [h, w],
                }
            )
    return queries, db, sources


def _ground_truth(queries: list[_Item], db: list[_Item]) -> list[dict[str, list[int]]]:
    by_source: dict[str, list[int]] = {}
    for i, item in enumerate(db):
        by_source.setdefault(item.source, []).append(i)
    gnd = []
    for qi, q in enumerate(queries):
        shape = (int(q.info["shape"][0]), int(q.info["shape"][1]))
        qmask = _visible_mask(q, shape)
        q_area = max(int(qmask.sum()), 1)
        entry: dict[str, list[int]] = {"easy": [], "hard": [], "junk": []}
        for i in by_source.get(q.source, []):
            d = db[i]
            visible = float((qmask & _visible_mask(d, shape)).sum()) / q_area
            gap = abs(d.frame - q.frame) if q.source.count("#shot") else None
            label = _label(visible, d.difficulty, gap)
            if label is not None:
                entry[label].append(i)
        if not entry["easy"] and not entry["hard"]:
            raise DemoDataError(f"query {qi} ({q.source}) has no positive; this is a bug")
        gnd.append(entry)
    return gnd


def _build_into(root: Path, split: str) -> None:
    cv2 = require("cv2")
    logger.info("building the demo %s split in %s", split, root)
    queries, db, sources = _source_items(split)
    order = _rng(split, "db-order").permutation(len(db))
    db = [db[i] for i in order]
    gnd = _ground_truth(queries, db)
    (root / "query").mkdir(parents=True)
    (root / "db").mkdir()
    hasher = hashlib.sha256()

    def write(item: _Item, rel: str) -> dict[str, Any]:
        ok, buf = cv2.imencode(".jpg", item.image, [cv2.IMWRITE_JPEG_QUALITY, item.quality])
        if not ok:
            raise DemoDataError(f"JPEG encoding failed for {rel}")
        data = buf.tobytes()
        (root / rel).write_bytes(data)
        hasher.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        h, w = item.image.shape[:2]
        return {
            "path": rel,
            "source": item.source,
            "frame": item.frame,
            "kind": item.kind,
            "difficulty": item.difficulty,
            "size": [h, w],
            "homography": [round(float(v), 6) for v in item.homography.ravel()],
            **{k: v for k, v in item.info.items() if k != "shape"},
        }

    qmeta = [write(q, f"query/q{i:04d}.jpg") for i, q in enumerate(queries)]
    dmeta = [write(d, f"db/d{i:05d}.jpg") for i, d in enumerate(db)]
    hasher.update(json.dumps(gnd, sort_keys=True).encode())
    content_hash = hasher.hexdigest()
    meta: dict[str, Any] = {
        "version": DEMO_VERSION,
        "seed": DEMO_SEED,
        "split": split,
        "content_hash": content_hash,
        "sources": sources,
        "queries": qmeta,
        "db": dmeta,
        "gnd": gnd,
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    logger.info(
        "demo %s: %d queries, %d database images, %d sources, hash %s",
        split,
        len(queries),
        len(db),
        len(sources),
        content_hash[:12],
    )
