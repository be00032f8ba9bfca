"""Local feature extraction: images → :class:`LocalFeatures` (no torch; OpenCV + numpy).

The default extractor is :class:`SiftExtractor`: OpenCV SIFT keypoints, RootSIFT descriptors,
the ``num_desc`` strongest keypoints by detector response as the image's local features, and a
global descriptor aggregated from up to ``max_keypoints`` RootSIFT descriptors (VLAD over a
k-means codebook by default, see :mod:`locore.runtime.aggregation`).

One image's features (``Nd = num_desc``, ``Dl = desc_dim``, rows sorted by weight, strongest
first, padding rows last)::

    descriptors: [Nd, Dl] float32   RootSIFT (L2 norm 1), zeros on padding rows
    scales:      [Nd] int64         scale id in 0 .. num_scales - 1
    xy:          [Nd, 2] float32    keypoint position, x / width and y / height, in [0, 1]
    weights:     [Nd] float32       detector response, 0 on padding rows
    mask:        [Nd] bool          True = valid descriptor, False = padding
    global_desc: [Dg] float32       L2-normalised (all zeros if the image has no keypoints)

:meth:`LocalFeatures.to_rows` gives the AMES/LOCORE HDF5 row layout of DESIGN.md §8
(``[Nd, 5 + Dl]``: xy, scale id, mask with 0 = valid / 1 = pad, weight, descriptor).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from locore.deps import require
from locore.runtime.aggregation import Codebook, color_histogram, mean_pool

if TYPE_CHECKING:
    from locore.config import LocoreConfig

logger = logging.getLogger(__name__)

ImageInput = str | Path | np.ndarray

GLOBAL_KINDS = ("vlad", "mean", "color")
_COLOR_BINS = (8, 4, 4)  # HSV bins of the colour-histogram baseline
# Smallest SIFT keypoint diameter (sigma 1.6 at the up-sampled first octave); scale id
# ``floor(log2(size / SIFT_BASE_SIZE))`` is then the octave, counted from the finest one.
SIFT_BASE_SIZE = 1.6
AMES_COLUMNS = 5  # xy (2), scale id, mask (0 valid, 1 pad), weight — then the descriptor


class FeatureError(ValueError):
    """An image or a feature array is not what the extractor expects."""


# ---- images --------------------------------------------------------------------------------
def load_image(image: ImageInput) -> np.ndarray:
    """An image as a uint8 array, ``[H, W, 3]`` BGR (OpenCV order) or ``[H, W]`` gray.

    Accepts a path to any file OpenCV decodes, or an array: uint8, or float in [0, 1];
    ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` (BGR) or ``[H, W, 4]`` (BGRA, alpha dropped).
    """
    cv2 = require("cv2")
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FeatureError(f"image file {path} does not exist")
        data = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if data is None:
            raise FeatureError(
                f"OpenCV could not decode {path}; expected an image file (jpg, png, ...)"
            )
        return np.asarray(data)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise FeatureError(
            f"an image array must be [H, W], [H, W, 3] (BGR) or [H, W, 4], got shape {arr.shape}"
        )
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise FeatureError(
                f"an image array must be uint8 or float in [0, 1], got dtype {arr.dtype}"
            )
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise FeatureError(f"an image must have at least 1x1 pixels, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


# ---- records -------------------------------------------------------------------------------
@dataclass
class Keypoints:
    """Every kept detection of one image, strongest first (up to ``max_keypoints``).

    xy: [K, 2] float32 in [0, 1]; sizes: [K] float32 (diameter in pixels of the resized
    image); responses: [K] float32; descriptors: [K, Dl] float32 RootSIFT.
    image_size / work_size: (height, width) of the input and of the resized image.
    """

    xy: np.ndarray
    sizes: np.ndarray
    responses: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]
    work_size: tuple[int, int]

    def __len__(self) -> int:
        return int(len(self.responses))


@dataclass
class LocalFeatures:
    """The local and global features of one image (see the module docstring for shapes)."""

    descriptors: np.ndarray
    scales: np.ndarray
    xy: np.ndarray
    weights: np.ndarray
    mask: np.ndarray
    global_desc: np.ndarray
    image_size: tuple[int, int] = (0, 0)

    @property
    def num_desc(self) -> int:
        return int(self.descriptors.shape[0])

    @property
    def desc_dim(self) -> int:
        return int(self.descriptors.shape[1])

    @property
    def num_valid(self) -> int:
        return int(self.mask.sum())

    def validate(self, num_scales: int | None = None) -> None:
        """Raise :class:`FeatureError` if the arrays do not have the documented layout."""
        nd = self.num_desc
        expected = {
            "descriptors": ((nd, self.desc_dim), np.float32),
            "scales": ((nd,), np.int64),
            "xy": ((nd, 2), np.float32),
            "weights": ((nd,), np.float32),
            "mask": ((nd,), np.bool_),
        }
        for name, (shape, dtype) in expected.items():
            arr = getattr(self, name)
            if arr.shape != shape or arr.dtype != dtype:
                raise FeatureError(
                    f"LocalFeatures.{name} must be {list(shape)} {np.dtype(dtype).name}, "
                    f"got {list(arr.shape)} {arr.dtype}"
                )
        if self.global_desc.ndim != 1 or self.global_desc.dtype != np.float32:
            raise FeatureError(
                f"LocalFeatures.global_desc must be [Dg] float32, "
                f"got {list(self.global_desc.shape)} {self.global_desc.dtype}"
            )
        if nd and (self.xy.min() < 0.0 or self.xy.max() > 1.0):
            raise FeatureError("LocalFeatures.xy must lie in [0, 1]")
        if (
            num_scales is not None
            and nd
            and (self.scales.min() < 0 or self.scales.max() >= num_scales)
        ):
            raise FeatureError(f"LocalFeatures.scales must lie in 0..{num_scales - 1}")

    def to_rows(self) -> np.ndarray:
        """The DESIGN.md §8 layout: ``[Nd, 5 + Dl] float32`` (xy, scale, pad flag, weight, desc)."""
        rows = np.zeros((self.num_desc, AMES_COLUMNS + self.desc_dim), dtype=np.float32)
        rows[:, 0:2] = self.xy
        rows[:, 2] = self.scales
        rows[:, 3] = (~self.mask).astype(np.float32)
        rows[:, 4] = self.weights
        rows[:, AMES_COLUMNS:] = self.descriptors
        return rows

    @classmethod
    def from_rows(cls, rows: np.ndarray, global_desc: np.ndarray | None = None) -> LocalFeatures:
        """Inverse of :meth:`to_rows` for one image's ``[Nd, 5 + Dl]`` rows."""
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] <= AMES_COLUMNS:
            raise FeatureError(
                f"feature rows must be [Nd, 5 + Dl] (DESIGN.md §8), got shape {rows.shape}"
            )
        g = np.zeros(0, np.float32) if global_desc is None else np.asarray(global_desc, np.float32)
        return cls(
            descriptors=np.ascontiguousarray(rows[:, AMES_COLUMNS:]),
            scales=np.rint(rows[:, 2]).astype(np.int64),
            xy=np.ascontiguousarray(rows[:, 0:2]),
            weights=np.ascontiguousarray(rows[:, 4]),
            mask=rows[:, 3] < 0.5,
            global_desc=g,
        )


def stack_rows(features: Sequence[LocalFeatures]) -> np.ndarray:
    """§8 rows of several images: ``[N, Nd, 5 + Dl] float32`` (all must share Nd and Dl)."""
    if not features:
        raise FeatureError("stack_rows needs at least one LocalFeatures")
    shapes = {(f.num_desc, f.desc_dim) for f in features}
    if len(shapes) != 1:
        raise FeatureError(f"all images must have the same [Nd, Dl]; got {sorted(shapes)}")
    return np.stack([f.to_rows() for f in features])


def stack_globals(features: Sequence[LocalFeatures]) -> np.ndarray:
    """Global descriptors of several images: ``[N, Dg] float32``."""
    dims = {f.global_desc.shape for f in features}
    if len(dims) != 1:
        raise FeatureError(f"all global descriptors must have one shape; got {sorted(dims)}")
    return np.stack([f.global_desc for f in features]).astype(np.float32)


# ---- extractors ----------------------------------------------------------------------------
class FeatureExtractor(Protocol):
    """What the pipeline needs of an extractor (SIFT here; DINOv2 + detector later)."""

    name: str
    desc_dim: int
    num_desc: int
    num_scales: int

    @property
    def global_dim(self) -> int: ...

    def extract(self, image: ImageInput) -> LocalFeatures: ...

    def extract_many(
        self, images: Iterable[ImageInput], *, progress: bool = True
    ) -> list[LocalFeatures]: ...


def _progress(items: Iterable[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    total = len(items) if isinstance(items, Sequence) else None
    return tqdm(items, total=total, desc=desc, unit="img", leave=False)


class SiftExtractor:
    """OpenCV SIFT + RootSIFT local features and an aggregated global descriptor.

    Args:
        num_desc: Nd, local descriptors kept per image (strongest detector responses).
        num_scales: number of scale ids; id = octave of the keypoint size, clipped.
        max_side: the image is resized (down only) so that its long side is at most this.
        max_keypoints: detections kept for the global descriptor (strongest first).
        global_desc: ``"vlad"`` (the default; needs ``codebook``), ``"mean"`` (mean-pooled
            RootSIFT) or ``"color"`` (HSV histogram). On the demo test split VLAD with a
            64-word codebook gives recall@50 87 % and mAP 84 %, against 72 % / 66 % for
            ``"mean"`` and 76 % / 69 % for ``"color"`` (benchmarks/global_descriptor_choice.py).
        codebook: a :class:`Codebook` or the path of one saved with ``Codebook.save``; the
            demo's is :func:`locore.runtime.demo_data.demo_codebook` (k=64, train split).
        contrast_threshold, edge_threshold, sigma: OpenCV SIFT detector parameters.

    Deterministic: the same image gives bit-identical features (keypoints are ordered by
    response, then position, size and angle, independently of OpenCV's thread order).
    """

    name = "sift"
    desc_dim = 128

    def __init__(
        self,
        num_desc: int = 48,
        num_scales: int = 8,
        *,
        max_side: int = 512,
        max_keypoints: int = 1000,
        global_desc: str = "vlad",
        codebook: Codebook | str | Path | None = None,
        contrast_threshold: float = 0.04,
        edge_threshold: float = 10.0,
        sigma: float = 1.6,
    ) -> None:
        if global_desc not in GLOBAL_KINDS:
            raise FeatureError(f"global_desc must be one of {GLOBAL_KINDS}, got {global_desc!r}")
        for label, value in (
            ("num_desc", num_desc),
            ("num_scales", num_scales),
            ("max_side", max_side),
        ):
            if value < 1:
                raise FeatureError(f"{label} must be >= 1, got {value}")
        if max_keypoints < num_desc:
            raise FeatureError(f"max_keypoints ({max_keypoints}) must be >= num_desc ({num_desc})")
        self.num_desc = int(num_desc)
        self.num_scales = int(num_scales)
        self.max_side = int(max_side)
        self.max_keypoints = int(max_keypoints)
        self.global_kind = global_desc
        self.codebook = Codebook.load(codebook) if isinstance(codebook, (str, Path)) else codebook
        if self.codebook is not None and self.codebook.desc_dim != self.desc_dim:
            raise FeatureError(
                f"the codebook has {self.codebook.desc_dim}-d words; SIFT descriptors are "
                f"{self.desc_dim}-d. Fit a codebook on RootSIFT descriptors"
            )
        self._sift_params = dict(
            nfeatures=0,
            contrastThreshold=float(contrast_threshold),
            edgeThreshold=float(edge_threshold),
            sigma=float(sigma),
        )
        self._sift: Any = None

    @classmethod
    def from_config(cls, config: LocoreConfig, **kwargs: Any) -> SiftExtractor:
        """An extractor matching ``config``'s Nd and scale count (its Dl must be 128)."""
        if config.desc_dim != cls.desc_dim:
            raise FeatureError(
                f"SIFT gives {cls.desc_dim}-d descriptors but the model config expects "
                f"desc_dim={config.desc_dim}; use a model trained on SIFT features"
            )
        return cls(num_desc=config.num_desc, num_scales=config.num_scales, **kwargs)

    def __repr__(self) -> str:
        book = f"codebook K={self.codebook.num_words}" if self.codebook is not None else "none"
        return (
            f"SiftExtractor(num_desc={self.num_desc}, num_scales={self.num_scales}, "
            f"max_side={self.max_side}, max_keypoints={self.max_keypoints}, "
            f"global_desc={self.global_kind!r}, codebook={book})"
        )

    @property
    def global_dim(self) -> int:
        if self.global_kind == "vlad":
            if self.codebook is None:
                raise FeatureError(self._no_codebook_message())
            return self.codebook.output_dim
        if self.global_kind == "mean":
            return self.desc_dim
        return int(np.prod(_COLOR_BINS))

    def _no_codebook_message(self) -> str:
        return (
            "SiftExtractor(global_desc='vlad') needs a codebook: pass "
            "codebook=Codebook.load(path), call extractor.fit_codebook(training_images), "
            "or use global_desc='mean' (no training)"
        )

    # ---- detection -------------------------------------------------------------------------
    def _detector(self) -> Any:
        if self._sift is None:
            cv2 = require("cv2")
            self._sift = cv2.SIFT_create(**self._sift_params)
        return self._sift

    def _work_image(self, image: np.ndarray) -> np.ndarray:
        cv2 = require("cv2")
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        scale = self.max_side / max(h, w)
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(gray)

    def detect(self, image: ImageInput) -> Keypoints:
        """All kept detections of ``image`` (strongest first) with RootSIFT descriptors."""
        img = load_image(image)
        gray = self._work_image(img)
        h, w = gray.shape
        sift = self._detector()
        kps, desc = sift.detectAndCompute(gray, None) if min(h, w) >= 8 else ((), None)
        if kps and desc is not None and len(desc):
            attrs = np.array(
                [(k.response, k.pt[0], k.pt[1], k.size, k.angle) for k in kps], dtype=np.float64
            )
            # Strongest first; ties broken by position, size, angle (thread-order independent).
            order = np.lexsort((attrs[:, 4], attrs[:, 3], attrs[:, 2], attrs[:, 1], -attrs[:, 0]))
            order = order[: self.max_keypoints]
            kps = [kps[i] for i in order]
            desc = desc[order]
        if not kps or desc is None or len(desc) == 0:
            return Keypoints(
                xy=np.zeros((0, 2), np.float32),
                sizes=np.zeros(0, np.float32),
                responses=np.zeros(0, np.float32),
                descriptors=np.zeros((0, self.desc_dim), np.float32),
                image_size=(int(img.shape[0]), int(img.shape[1])),
                work_size=(h, w),
            )
        pts = np.array([k.pt for k in kps], dtype=np.float32)
        xy = np.clip(pts / np.array([w, h], dtype=np.float32), 0.0, 1.0)
        return Keypoints(
            xy=xy.astype(np.float32),
            sizes=np.array([k.size for k in kps], dtype=np.float32),
            responses=np.array([k.response for k in kps], dtype=np.float32),
            descriptors=root_sift(desc),
            image_size=(int(img.shape[0]), int(img.shape[1])),
            work_size=(h, w),
        )

    def scale_ids(self, sizes: np.ndarray) -> np.ndarray:
        """Scale id of keypoint diameters ``sizes`` (pixels): ``[K] int64`` in 0..S-1."""
        sizes = np.maximum(np.asarray(sizes, dtype=np.float64), 1e-6)
        ids = np.floor(np.log2(sizes / SIFT_BASE_SIZE))
        return np.clip(ids, 0, self.num_scales - 1).astype(np.int64)

    # ---- features --------------------------------------------------------------------------
    def global_descriptor(
        self, keypoints: Keypoints, image: np.ndarray | None = None
    ) -> np.ndarray:
        """The global vector of one image, ``[global_dim] float32``, L2-normalised."""
        if self.global_kind == "vlad":
            if self.codebook is None:
                raise FeatureError(self._no_codebook_message())
            return self.codebook.encode(keypoints.descriptors)
        if self.global_kind == "mean":
            return mean_pool(keypoints.descriptors)
        if image is None:
            raise FeatureError("global_desc='color' needs the image itself")
        return color_histogram(image, _COLOR_BINS)

    def features_from_keypoints(
        self, keypoints: Keypoints, global_desc: np.ndarray
    ) -> LocalFeatures:
        """Pack the ``num_desc`` strongest detections (padding with mask False)."""
        nd, n = self.num_desc, min(self.num_desc, len(keypoints))
        desc = np.zeros((nd, self.desc_dim), np.float32)
        xy = np.zeros((nd, 2), np.float32)
        weights = np.zeros(nd, np.float32)
        scales = np.zeros(nd, np.int64)
        mask = np.zeros(nd, bool)
        desc[:n] = keypoints.descriptors[:n]
        xy[:n] = keypoints.xy[:n]
        weights[:n] = keypoints.responses[:n]
        scales[:n] = self.scale_ids(keypoints.sizes[:n])
        mask[:n] = True
        return LocalFeatures(
            descriptors=desc,
            scales=scales,
            xy=xy,
            weights=weights,
            mask=mask,
            global_desc=np.asarray(global_desc, dtype=np.float32),
            image_size=keypoints.image_size,
        )

    def extract(self, image: ImageInput) -> LocalFeatures:
        """Local and global features of one image (path or array)."""
        if self.global_kind == "vlad" and self.codebook is None:
            raise FeatureError(self._no_codebook_message())
        img = load_image(image)
        kps = self.detect(img)
        return self.features_from_keypoints(kps, self.global_descriptor(kps, img))

    def extract_many(
        self, images: Iterable[ImageInput], *, progress: bool = True
    ) -> list[LocalFeatures]:
        """:meth:`extract` over ``images`` with a progress bar."""
        return [self.extract(im) for im in _progress(images, progress, "SIFT features")]

    def detect_many(
        self, images: Iterable[ImageInput], *, progress: bool = True
    ) -> list[Keypoints]:
        """:meth:`detect` over ``images`` with a progress bar."""
        return [self.detect(im) for im in _progress(images, progress, "SIFT keypoints")]

    def fit_codebook(
        self,
        images: Iterable[ImageInput] | Sequence[Keypoints],
        k: int = 64,
        *,
        seed: int = 0,
        pca_dim: int | None = None,
        progress: bool = True,
    ) -> Codebook:
        """Fit a VLAD codebook on training images (or their :class:`Keypoints`); keep it."""
        items = list(images)
        kps = [
            it if isinstance(it, Keypoints) else self.detect(it)
            for it in _progress(items, progress, "codebook keypoints")
        ]
        self.codebook = Codebook.fit([kp.descriptors for kp in kps], k, seed=seed, pca_dim=pca_dim)
        return self.codebook


def root_sift(descriptors: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """RootSIFT: L1-normalise, element-wise square root, L2-normalise. ``[N, D] float32``."""
    d = np.asarray(descriptors, dtype=np.float32)
    d = d / (np.abs(d).sum(1, keepdims=True) + eps)
    d = np.sqrt(np.maximum(d, 0.0))
    norm = np.linalg.norm(d, axis=1, keepdims=True)
    return (d / np.maximum(norm, eps)).astype(np.float32)


# ---- HDF5 (DESIGN.md §8) ------------------------------------------------------------------
def write_h5(
    path: str | Path,
    features: Sequence[LocalFeatures],
    *,
    global_path: str | Path | None = None,
) -> None:
    """Write ``features`` as an AMES/LOCORE HDF5 file (dataset ``features`` [N, Nd, 5 + Dl]).

    With ``global_path``, the global descriptors are also written there as raw float32
    ``[N, Dg]`` (the memmap layout of DESIGN.md §8; ``.npy`` by suffix). Both writes are
    atomic and go through :mod:`locore.runtime.features_io`.
    """
    from locore.runtime.features_io import write_feature_rows, write_global_descriptors

    rows = stack_rows(features)
    write_feature_rows(path, rows)
    if global_path is not None:
        write_global_descriptors(global_path, stack_globals(features))
    logger.info("wrote %d images x %d descriptors to %s", rows.shape[0], rows.shape[1], path)
