"""The AMES/LOCORE local-feature file layout (DESIGN.md §8): rows, the reader and the writer.

A feature file is an HDF5 dataset ``features`` [N, T, 5 + D] float32, one row per local
feature, the rows of each image sorted by detector weight, best first::

    columns 0:2   xy in [0, 1] (x / width, y / height)
    column  2     scale id (an integer stored as float)
    column  3     mask: 0 = valid, 1 = padding (the inverse of LocalFeatures.mask)
    column  4     detector weight
    columns 5:    descriptor (D values)

The column constants below are the one definition of that layout; :func:`to_rows` and
:func:`from_rows` convert between it and :class:`~locore.runtime.local_features.LocalFeatures`,
:class:`FeatureFile` reads files lazily (only the requested images and their first rows), and
:func:`write_features` writes them, atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from locore.closing import Closing
from locore.deps import require
from locore.fileio import atomic_path
from locore.runtime.local_features import IndexLike, LocalFeatures, as_local_features

log = logging.getLogger(__name__)

FEATURES_DATASET = "features"
XY_COLUMNS = slice(0, 2)
SCALE_COLUMN = 2
MASK_COLUMN = 3  # 0 = valid, 1 = padding
WEIGHT_COLUMN = 4
DESC_START = 5  # columns before the descriptor
ROW_LAYOUT = "[..., T, 5 + D] (xy, scale, mask, weight, descriptor)"


class FormatError(ValueError):
    """A file does not have the AMES/LOCORE layout (features, shortlists, ground truth, ...)."""


# ---- rows <-> records ------------------------------------------------------------------------
def to_rows(features: LocalFeatures) -> np.ndarray:
    """AMES rows ``[..., T, 5 + D] float32`` of ``features`` (mask column: 0 valid, 1 padding)."""
    lead = features.descriptors.shape[:-1]
    rows = np.empty((*lead, DESC_START + features.desc_dim), dtype=np.float32)
    rows[..., XY_COLUMNS] = features.xy
    rows[..., SCALE_COLUMN] = features.scales
    rows[..., MASK_COLUMN] = ~np.asarray(features.mask, dtype=bool)
    rows[..., WEIGHT_COLUMN] = features.weights
    rows[..., DESC_START:] = features.descriptors
    return rows


def from_rows(
    rows: np.ndarray, source: str = "features", global_desc: np.ndarray | None = None
) -> LocalFeatures:
    """Split AMES rows ``[..., T, 5 + D]`` into a :class:`LocalFeatures` (``source`` names the
    rows in errors; ``global_desc`` [..., Dg] is attached as is)."""
    rows = np.asarray(rows)
    if rows.ndim < 2 or rows.shape[-1] <= DESC_START:
        raise FormatError(f"{source}: rows must be {ROW_LAYOUT}, got shape {list(rows.shape)}")
    mask = rows[..., MASK_COLUMN] < 0.5
    raw_scale = rows[..., SCALE_COLUMN]
    scales = np.rint(raw_scale)
    off = (np.abs(raw_scale - scales) > 1e-3) & mask
    if off.any():
        raise FormatError(
            f"{source}: column {SCALE_COLUMN} (scale id) must hold integers, got e.g. "
            f"{raw_scale[off][0]}; is this an AMES/LOCORE feature file?"
        )
    return LocalFeatures(
        descriptors=np.ascontiguousarray(rows[..., DESC_START:], dtype=np.float32),
        scales=scales.astype(np.int64),
        xy=np.ascontiguousarray(rows[..., XY_COLUMNS], dtype=np.float32),
        weights=np.ascontiguousarray(rows[..., WEIGHT_COLUMN], dtype=np.float32),
        mask=mask,
        global_desc=None if global_desc is None else np.asarray(global_desc, dtype=np.float32),
    )


# ---- reading -------------------------------------------------------------------------------------
class FeatureFile(Closing):
    """An AMES/LOCORE HDF5 feature file, read lazily.

    >>> with FeatureFile("db.h5") as db:
    ...     gallery = db.read([17, 3, 42], num_desc=48)   # LocalFeatures [3, 48, ...]

    ``num_images`` (N), ``num_desc`` (T: rows stored per image) and ``desc_dim`` (D) give the
    size of the file's ``[N, T, 5 + D]`` rows.
    """

    def __init__(self, path: str | Path, dataset: str = FEATURES_DATASET) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"feature file {self.path} does not exist")
        h5py = require("h5py", "reading AMES/LOCORE feature files")
        self._file = h5py.File(self.path, "r")
        if dataset not in self._file:
            keys = list(self._file.keys())
            self._file.close()
            raise FormatError(
                f"{self.path} has no dataset {dataset!r} (it has {keys}); AMES/LOCORE feature "
                f"files store [N, T, 5 + D] float32 in {FEATURES_DATASET!r}"
            )
        self._dataset = self._file[dataset]
        shape = tuple(self._dataset.shape)
        if len(shape) != 3 or shape[2] <= DESC_START:
            self._file.close()
            raise FormatError(
                f"{self.path}:{dataset} must be [N, T, 5 + D] (xy, scale, mask, weight, "
                f"descriptor), got shape {list(shape)}"
            )
        # the file is open read-only: its N, T and row width are fixed
        self.num_images, self.num_desc, self._width = (int(n) for n in shape)
        self.desc_dim = self._width - DESC_START

    def __len__(self) -> int:
        return self.num_images

    def read(self, index: IndexLike, num_desc: int | None = None) -> LocalFeatures:
        """Features of the images at ``index``: an int gives one image [T', ...], a sequence,
        array or slice gives a batch [n, T', ...] in the order asked (repeats allowed).

        ``num_desc``: read only the first T' = ``num_desc`` rows of each image (all if None).
        """
        rows = self.num_desc if num_desc is None else min(int(num_desc), self.num_desc)
        if num_desc is not None and num_desc < 1:
            raise ValueError(f"num_desc must be >= 1, got {num_desc}")
        source = str(self.path)
        if isinstance(index, slice):
            return from_rows(self._dataset[index, :rows], source)
        ids = np.asarray(index)
        if ids.size == 0:
            ids = ids.astype(np.int64)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"image indices must be integers, got {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_images):
            bad = ids[(ids < 0) | (ids >= self.num_images)].ravel()[0]
            raise IndexError(
                f"image index {int(bad)} is out of range for {self.path} with "
                f"{self.num_images} images; does the shortlist belong to this feature file?"
            )
        if ids.ndim == 0:
            return from_rows(self._dataset[int(ids), :rows], source)
        flat = ids.ravel()
        if flat.size == 0:
            data = np.zeros((0, rows, self._width), dtype=np.float32)
        else:
            # h5py wants increasing, unique indices: read those, then put them in the asked order.
            unique, inverse = np.unique(flat, return_inverse=True)
            data = self._dataset[unique.tolist(), :rows][inverse]
        return from_rows(data.reshape(*ids.shape, rows, data.shape[-1]), source)

    def read_all(self, num_desc: int | None = None, chunk: int = 4096) -> LocalFeatures:
        """Every image, read in chunks of ``chunk`` images (memory: N * T' * (5 + D) floats)."""
        rows = self.num_desc if num_desc is None else min(num_desc, self.num_desc)
        out = np.empty((self.num_images, rows, self._width), dtype=np.float32)
        for start in range(0, self.num_images, chunk):
            out[start : start + chunk] = self._dataset[start : start + chunk, :rows]
        return from_rows(out, str(self.path))

    def close(self) -> None:
        self._file.close()


# ---- writing -------------------------------------------------------------------------------------
def write_features(
    path: str | Path,
    features: LocalFeatures | Sequence[LocalFeatures] | np.ndarray,
    *,
    dataset: str = FEATURES_DATASET,
    chunk: int = 4096,
) -> None:
    """Write an AMES/LOCORE feature file ``[N, T, 5 + D] float32``, atomically.

    ``features``: a batch :class:`LocalFeatures` [N, T, ...], a list of N single-image records
    (stacked; all with the same T and D), or AMES rows [N, T, 5 + D] already in the layout.
    The rows of each image should be sorted by weight, best first (readers take the first
    rows). Global descriptors are not part of this file: write ``features.global_desc`` with
    :func:`locore.runtime.global_descriptors.write_global_descriptors`. Images are converted
    and written ``chunk`` at a time; the HDF5 dataset is chunked by 64 images.
    """
    if isinstance(features, np.ndarray):
        source: LocalFeatures | np.ndarray = features
        shape = tuple(features.shape)
        if len(shape) != 3 or shape[2] <= DESC_START:
            raise FormatError(
                f"feature rows must be [N, T, 5 + D] (xy, scale, mask, weight, descriptor), got "
                f"shape {list(shape)}"
            )
    else:
        source = as_local_features(features)
        if source.descriptors.ndim != 3:
            raise FormatError(
                f"write a batch of features [N, T, D] (or a list of single images), got "
                f"descriptors {list(source.descriptors.shape)}"
            )
        shape = (*source.descriptors.shape[:2], DESC_START + source.desc_dim)
    h5py = require("h5py", "writing AMES/LOCORE feature files")
    n, t, width = shape
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            out = handle.create_dataset(
                dataset,
                shape=(n, t, width),
                dtype=np.float32,
                chunks=(max(1, min(n, 64)), t, width) if n and t else None,
            )
            for begin in range(0, n, chunk):
                part = source[begin : begin + chunk]
                out[begin : begin + chunk] = (
                    part.astype(np.float32) if isinstance(part, np.ndarray) else to_rows(part)
                )
    log.info("wrote %d images x %d rows x %d-d descriptors to %s", n, t, width - DESC_START, path)
