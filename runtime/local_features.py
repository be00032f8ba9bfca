"""The one local-feature record, :class:`LocalFeatures`, and what an extractor must provide.

One image (``T`` rows, ``D``-d descriptors) or a batch (``N`` images, or any leading shape)::

    descriptors: [..., T, D] float32   rows sorted by detector weight, best first
    scales:      [..., T] int64        scale id in 0 .. num_scales - 1
    xy:          [..., T, 2] float32   keypoint position, x / width and y / height, in [0, 1]
    weights:     [..., T] float32      detector weight (0 on padding rows)
    mask:        [..., T] bool         True = valid descriptor, False = padding
    global_desc: [..., Dg] float32     optional global descriptor (None when absent)

Extractors (:class:`locore.runtime.sift.SiftExtractor`, :class:`locore.runtime.dino.DinoExtractor`)
return one record per image; :meth:`LocalFeatures.stack` makes a batch of them, and
:class:`locore.runtime.ames.FeatureFile` reads batches from AMES/LOCORE HDF5 files (the file
layout lives in :mod:`locore.runtime.ames`). The packer and the re-ranker take either.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np

from locore.errors import UsageError

if TYPE_CHECKING:
    from locore.runtime.images import ImageInput

IndexLike = int | slice | Sequence[int] | np.ndarray

# field -> (trailing dims after the [..., T] lead, dtype)
_ROW_FIELDS: dict[str, tuple[tuple[int, ...], type]] = {
    "scales": ((), np.int64),
    "xy": ((2,), np.float32),
    "weights": ((), np.float32),
    "mask": ((), np.bool_),
}


class FeatureError(ValueError):
    """An image or a feature array is not what the extractor or the record expects."""


class ImageIdError(UsageError, IndexError):
    """Image ids (shortlist entries, ground-truth positives, indices into a feature file or a
    batch) are not integers in ``[0, N)``. A :class:`~locore.errors.UsageError` (a ValueError)
    and an ``IndexError``, so either ``except`` catches it."""


def as_image_ids(
    ids: Any, num_images: int, what: str = "image ids", target: str = "the database"
) -> np.ndarray:
    """``ids`` as an int64 array, checked to be whole numbers in ``[0, num_images)``.

    Accepts integer arrays (any width, signed or unsigned) and float arrays of whole numbers;
    refuses booleans, fractions (224.7), NaN/inf and anything out of range, including -1
    (faiss's padding) and values that would wrap around in int64 (uint64 2**64 - 1, 1e19).
    Nothing is ever truncated or wrapped: an id either is used as given or raises
    :class:`ImageIdError` naming the value, ``what`` holds it (and where), and ``target``, the
    images it should index.
    """
    arr = np.asarray(ids)
    if arr.dtype == object and arr.size:
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in arr.flat):
            bad = next(
                v for v in arr.flat if not isinstance(v, numbers.Integral) or isinstance(v, bool)
            )
            raise ImageIdError(
                f"{what} must be integers (ids of images in {target}), got {bad!r} "
                f"({type(bad).__name__})"
            )
        arr = np.array([int(v) for v in arr.flat], dtype=object).reshape(arr.shape)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.int64)
    kind = arr.dtype.kind
    if kind == "b" or kind not in "iufO":
        raise ImageIdError(
            f"{what} must be integers (ids of images in {target}; whole-number floats are "
            f"accepted), got dtype {arr.dtype}"
        )
    if kind == "f":
        finite = np.isfinite(arr)
        whole = finite & (arr == np.floor(np.where(finite, arr, 0)))
        if not whole.all():
            pos = np.argwhere(~whole)[0]
            raise ImageIdError(
                f"{what} must be whole numbers (ids of images in {target}), got "
                f"{float(arr[tuple(pos)]):g}{_at(pos)}; ids are never rounded or truncated"
            )
    low = arr < 0
    high = arr >= num_images
    bad = low | high
    if bad.any():
        pos = np.argwhere(bad)[0]
        value = arr[tuple(pos)]
        shown: int | str = int(value) if kind in "iuO" else f"{float(value):g}"
        hint = (
            "; -1 is the padding id of faiss shortlists: drop padded slots first "
            "(locore.runtime.shortlist.Shortlist does)"
            if shown in (-1, "-1")
            else ""
        )
        raise ImageIdError(
            f"image index {shown} is out of range for {target} with {num_images} images "
            f"({what}{_at(pos)}; valid ids are 0 to {num_images - 1}){hint}; do the ids belong "
            "to these features?"
        )
    return arr.astype(np.int64)


def first_row(flags: np.ndarray) -> str:
    """Where the first True of ``flags`` [..., T] is: ``row 17`` for one image, ``image 3, row
    17`` for a batch (``image (1, 3), row 17`` with two leading dims); for error messages."""
    pos = [int(p) for p in np.argwhere(flags)[0]]
    if len(pos) <= 1:
        return f"row {pos[0]}" if pos else "the image"
    image = pos[0] if len(pos) == 2 else tuple(pos[:-1])
    return f"image {image}, row {pos[-1]}"


def _at(pos: np.ndarray) -> str:
    """`` at position 3`` / `` at position (1, 0)``; nothing for a single id."""
    if len(pos) == 0:
        return ""
    return f" at position {int(pos[0]) if len(pos) == 1 else tuple(int(p) for p in pos)}"


@dataclass
class LocalFeatures:
    """Local features (and optionally the global descriptor) of one image or of a batch.

    See the module docstring for shapes. ``image_size`` is the (height, width) of the source
    image when the record holds one extracted image; None for batches and for file features.
    """

    descriptors: np.ndarray
    scales: np.ndarray
    xy: np.ndarray
    weights: np.ndarray
    mask: np.ndarray
    global_desc: np.ndarray | None = None
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.descriptors.ndim < 2:
            raise FeatureError(
                f"descriptors must be [..., T, D], got shape {list(self.descriptors.shape)}"
            )
        lead = tuple(self.descriptors.shape[:-1])
        for name, (extra, _) in _ROW_FIELDS.items():
            arr = getattr(self, name)
            if tuple(arr.shape) != lead + extra:
                raise FeatureError(
                    f"{name} must have shape {list(lead + extra)} to match descriptors "
                    f"{list(self.descriptors.shape)}, got {list(arr.shape)}"
                )
        self._check_values()
        if self.global_desc is not None:
            images = lead[:-1]
            if self.global_desc.ndim != len(images) + 1 or self.global_desc.shape[:-1] != images:
                raise FeatureError(
                    f"global_desc must be [{', '.join([*map(str, images), 'Dg'])}] for "
                    f"descriptors {list(self.descriptors.shape)}, got "
                    f"{list(self.global_desc.shape)}"
                )

    def _check_values(self) -> None:
        """dtype rules that would otherwise lose data silently (cheap for the usual dtypes):
        float descriptors; scale ids whole numbers; a boolean mask (or 0/1 values, converted)."""
        if self.descriptors.dtype.kind != "f":
            raise FeatureError(
                f"descriptors must be float (float32), got {self.descriptors.dtype}; a silent "
                "conversion could change them (integer data is usually truncated floats). "
                "Convert explicitly with .astype(np.float32) if these are the real values"
            )
        if self.mask.dtype != np.bool_:
            mask = np.asarray(self.mask)
            if mask.dtype.kind not in "iuf" or not np.isin(mask, (0, 1)).all():
                got = f"dtype {mask.dtype}"
                if mask.dtype.kind in "iuf":
                    got = f"value {float(mask[~np.isin(mask, (0, 1))].ravel()[0]):g}"
                raise FeatureError(
                    f"mask must be boolean (True = valid descriptor, False = padding) or hold "
                    f"only 0 and 1, got {got}"
                )
            self.mask = mask.astype(bool)
        if self.scales.dtype.kind not in "iu":
            scales = np.asarray(self.scales)
            whole = scales.dtype.kind == "f" and bool(
                np.all(np.isfinite(scales) & (scales == np.rint(scales)))
            )
            if not whole:
                raise FeatureError(
                    f"scales must be integer scale ids, got dtype {scales.dtype}"
                    + (
                        " with values that are not whole numbers"
                        if scales.dtype.kind == "f"
                        else ""
                    )
                )
            self.scales = scales.astype(np.int64)

    # ---- shape -----------------------------------------------------------------------------
    @property
    def num_desc(self) -> int:
        """T: rows per image."""
        return int(self.descriptors.shape[-2])

    @property
    def desc_dim(self) -> int:
        """D: descriptor dimension."""
        return int(self.descriptors.shape[-1])

    @property
    def num_valid(self) -> int:
        """Valid rows (all images together for a batch)."""
        return int(np.count_nonzero(self.mask))

    @property
    def is_batch(self) -> bool:
        """True for a batch [N, T, ...] (or more leading dims), False for one image [T, ...]."""
        return self.descriptors.ndim > 2

    def __len__(self) -> int:
        if not self.is_batch:
            raise TypeError("LocalFeatures of a single image has no len(); it is [T, ...]")
        return int(self.descriptors.shape[0])

    # ---- views -----------------------------------------------------------------------------
    def __getitem__(self, index: IndexLike) -> LocalFeatures:
        """Images of a batch: an int gives one image [T, ...], a slice or array a batch."""
        if not self.is_batch:
            raise TypeError("index a batch [N, T, ...], not the features of a single image")
        return LocalFeatures(
            descriptors=self.descriptors[index],
            scales=self.scales[index],
            xy=self.xy[index],
            weights=self.weights[index],
            mask=self.mask[index],
            global_desc=None if self.global_desc is None else self.global_desc[index],
        )

    def first(self, num_desc: int) -> LocalFeatures:
        """The first ``num_desc`` rows (the best by weight) of each image."""
        t = slice(None, num_desc)
        return LocalFeatures(
            descriptors=self.descriptors[..., t, :],
            scales=self.scales[..., t],
            xy=self.xy[..., t, :],
            weights=self.weights[..., t],
            mask=self.mask[..., t],
            global_desc=self.global_desc,
            image_size=self.image_size,
        )

    @classmethod
    def stack(cls, features: Sequence[LocalFeatures]) -> LocalFeatures:
        """A batch [N, ...] of N records of one shape (N single images give [N, T, ...])."""
        if not features:
            raise FeatureError("stacking LocalFeatures needs at least one record, got none")
        shapes = {tuple(f.descriptors.shape) for f in features}
        if len(shapes) != 1:
            raise FeatureError(
                f"all records must have the same [..., T, D] to be stacked; got {sorted(shapes)}"
            )
        with_global = {f.global_desc is not None for f in features}
        if len(with_global) != 1:
            raise FeatureError(
                "either every record or none must have a global descriptor to be stacked; "
                f"{sum(f.global_desc is None for f in features)} of {len(features)} have none"
            )
        global_desc = None
        if with_global == {True}:
            dims = {tuple(f.global_desc.shape) for f in features if f.global_desc is not None}
            if len(dims) != 1:
                raise FeatureError(
                    f"all global descriptors must have one shape; got {sorted(dims)}"
                )
            global_desc = np.stack([f.global_desc for f in features if f.global_desc is not None])
        return cls(
            descriptors=np.stack([f.descriptors for f in features]),
            scales=np.stack([f.scales for f in features]),
            xy=np.stack([f.xy for f in features]),
            weights=np.stack([f.weights for f in features]),
            mask=np.stack([f.mask for f in features]),
            global_desc=global_desc,
        )

    # ---- checks ----------------------------------------------------------------------------
    def validate(self, num_scales: int | None = None) -> None:
        """Raise :class:`FeatureError` unless dtypes and value ranges are the documented ones.

        (Shapes are checked on construction.) ``num_scales``: also check the scale ids.
        """
        fields = {"descriptors": np.float32, **{k: v[1] for k, v in _ROW_FIELDS.items()}}
        if self.global_desc is not None:
            fields["global_desc"] = np.float32
        for name, dtype in fields.items():
            arr = getattr(self, name)
            if arr.dtype != dtype:
                raise FeatureError(
                    f"LocalFeatures.{name} must be {np.dtype(dtype).name}, got {arr.dtype} "
                    f"(shape {list(arr.shape)})"
                )
        if self.xy.size and (self.xy.min() < 0.0 or self.xy.max() > 1.0):
            raise FeatureError(
                f"LocalFeatures.xy must lie in [0, 1] (x / width, y / height), got values from "
                f"{self.xy.min()} to {self.xy.max()}"
            )
        if (
            num_scales is not None
            and self.scales.size
            and (self.scales.min() < 0 or self.scales.max() >= num_scales)
        ):
            raise FeatureError(
                f"LocalFeatures.scales must lie in 0..{num_scales - 1}, got ids from "
                f"{self.scales.min()} to {self.scales.max()}"
            )


# What the packer and the re-ranker accept: one record (an image or a batch) or a list of them.
FeaturesLike: TypeAlias = "LocalFeatures | Sequence[LocalFeatures]"


def as_local_features(features: FeaturesLike) -> LocalFeatures:
    """``features`` itself, or a list of records stacked into a batch (``LocalFeatures.stack``)."""
    if isinstance(features, LocalFeatures):
        return features
    if (
        isinstance(features, Sequence)
        and features
        and all(isinstance(f, LocalFeatures) for f in features)
    ):
        return LocalFeatures.stack(features)
    raise TypeError(
        "expected LocalFeatures (one image or a batch) or a non-empty list of LocalFeatures, "
        f"got {type(features).__name__}"
    )


class FeatureExtractor(Protocol):
    """What the pipeline needs of an extractor (SIFT, DINOv2 + detector)."""

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


__all__ = [
    "FeatureError",
    "ImageIdError",
    "as_image_ids",
    "first_row",
    "FeatureExtractor",
    "FeaturesLike",
    "LocalFeatures",
    "as_local_features",
]
