"""The AMES/LOCORE local-feature file layout (docs/design.md §8): rows, the reader and the writer.

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
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from locore.closing import Closing
from locore.deps import require
from locore.errors import UsageError
from locore.fileio import atomic_path
from locore.runtime.local_features import (
    FeatureError,
    IndexLike,
    LocalFeatures,
    as_image_ids,
    as_local_features,
    first_row,
)

log = logging.getLogger(__name__)

FEATURES_DATASET = "features"
XY_COLUMNS = slice(0, 2)
SCALE_COLUMN = 2
MASK_COLUMN = 3  # 0 = valid, 1 = padding
WEIGHT_COLUMN = 4
DESC_START = 5  # columns before the descriptor
ROW_LAYOUT = "[..., T, 5 + D] (xy, scale, mask, weight, descriptor)"
FILE_LAYOUT = (
    f"an HDF5 file with dataset {FEATURES_DATASET!r} [N, T, 5 + D] float32 (columns: xy, scale "
    "id, mask 0 = valid / 1 = padding, detector weight, descriptor)"
)
# Scale ids are small integers stored as float; anything beyond this is not a scale id.
MAX_SCALE_ID = 1 << 20


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
    rows in errors; ``global_desc`` [..., Dg] is attached as is).

    Checked (:class:`FormatError`, naming the image and row): float rows (integer data would
    lose the descriptors), mask values exactly 0 or 1, scale ids whole numbers in
    ``[0, 2**20)``, and finite xy, weights and descriptors on valid rows (padding rows may
    hold anything; they are never read).
    """
    rows = np.asarray(rows)
    if rows.ndim < 2 or rows.shape[-1] <= DESC_START:
        raise FormatError(f"{source}: rows must be {ROW_LAYOUT}, got shape {list(rows.shape)}")
    if rows.dtype.kind != "f":
        raise FormatError(
            f"{source}: feature rows must be float32 (AMES/LOCORE layout), got {rows.dtype}; "
            "integer rows would turn the descriptors into whole numbers (RootSIFT and DINOv2 "
            "values lie in [-1, 1], so mostly 0). Rewrite the file with float32 rows"
        )
    raw_mask = rows[..., MASK_COLUMN]
    bad_mask = (raw_mask != 0) & (raw_mask != 1)
    if bad_mask.any():
        where = first_row(bad_mask)
        raise FormatError(
            f"{source}: column {MASK_COLUMN} (mask) must be 0 (valid) or 1 (padding), got "
            f"{float(raw_mask[bad_mask].ravel()[0]):g} at {where}; is this an AMES/LOCORE "
            "feature file?"
        )
    mask = raw_mask == 0
    raw_scale = rows[..., SCALE_COLUMN]
    scales = np.rint(np.where(np.isfinite(raw_scale), raw_scale, -1.0))
    off = ((np.abs(raw_scale - scales) > 1e-3) | ~np.isfinite(raw_scale)) & mask
    if off.any():
        raise FormatError(
            f"{source}: column {SCALE_COLUMN} (scale id) must hold integers, got e.g. "
            f"{float(raw_scale[off][0]):g} at {first_row(off)}; is this an AMES/LOCORE "
            "feature file?"
        )
    out = ((scales < 0) | (scales >= MAX_SCALE_ID)) & mask
    if out.any():
        raise FormatError(
            f"{source}: column {SCALE_COLUMN} (scale id) must be in [0, {MAX_SCALE_ID}), got "
            f"{float(raw_scale[out][0]):g} at {first_row(out)}"
        )
    # padding rows are never read: keep their scale ids when they are ids, else 0
    scales = np.where(mask | ((scales >= 0) & (scales < MAX_SCALE_ID)), scales, 0.0)
    finite = np.isfinite(rows[..., DESC_START:]).all(axis=-1)  # no float copy of the rows
    finite &= np.isfinite(rows[..., XY_COLUMNS]).all(axis=-1) & np.isfinite(
        rows[..., WEIGHT_COLUMN]
    )
    broken = ~finite & mask
    if broken.any():
        raise FormatError(
            f"{source}: a valid row holds NaN or infinite values (xy, weight or descriptor) at "
            f"{first_row(broken)}; the features are corrupt: re-extract them, or mark the row as "
            f"padding (column {MASK_COLUMN} = 1)"
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
        if not isinstance(dataset, str) or not dataset:
            raise UsageError(f"dataset must be the name of an HDF5 dataset, got {dataset!r}")
        if not self.path.is_file():
            raise FileNotFoundError(
                f"feature file {self.path} does not exist"
                + (" (it is a folder)" if self.path.is_dir() else "")
                + f"; expected {FILE_LAYOUT}"
            )
        if not os.access(self.path, os.R_OK):
            raise PermissionError(
                f"feature file {self.path} is not readable (permission denied); make it "
                "readable by this user"
            )
        h5py = require("h5py", "reading AMES/LOCORE feature files")
        try:
            self._file = h5py.File(self.path, "r")
        except PermissionError as exc:
            raise PermissionError(f"feature file {self.path} is not readable: {exc}") from exc
        except Exception as exc:  # h5py raises OSError, or others on damaged metadata
            raise FormatError(
                f"{self.path} is not a readable HDF5 file ({_reason(exc)}); expected "
                f"{FILE_LAYOUT}. Is the file truncated or of another format?"
            ) from exc
        try:
            self._dataset = self._open_dataset(dataset)
            shape = tuple(self._dataset.shape)
        except FormatError:
            self._file.close()
            raise
        except Exception as exc:
            self._file.close()
            raise FormatError(
                f"{self.path}: the HDF5 metadata is damaged ({_reason(exc)}); expected "
                f"{FILE_LAYOUT}"
            ) from exc
        # the file is open read-only: its N, T and row width are fixed
        self.num_images, self.num_desc, self._width = (int(n) for n in shape)
        self.desc_dim = self._width - DESC_START

    def _open_dataset(self, dataset: str) -> Any:
        if dataset not in self._file:
            keys = list(self._file.keys())
            raise FormatError(
                f"{self.path} has no dataset {dataset!r} (it has {keys}); AMES/LOCORE feature "
                f"files store [N, T, 5 + D] float32 in {FEATURES_DATASET!r}"
            )
        data = self._file[dataset]
        shape = tuple(getattr(data, "shape", None) or ())
        if len(shape) != 3 or shape[2] <= DESC_START:
            raise FormatError(
                f"{self.path}:{dataset} must be [N, T, 5 + D] (xy, scale, mask, weight, "
                f"descriptor), got shape {list(shape)}"
            )
        dtype = np.dtype(data.dtype)
        if dtype.kind != "f":
            raise FormatError(
                f"{self.path}:{dataset} must hold float32 rows, got {dtype}; integer rows would "
                "turn the descriptors into whole numbers (mostly 0). Rewrite the file with "
                "float32 rows"
            )
        return data

    def __len__(self) -> int:
        return self.num_images

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Turn h5py's errors on damaged data (OSError "Can't read data", ...) into a
        :class:`FormatError` naming the file."""
        try:
            yield
        except (FormatError, UsageError):
            raise
        except Exception as exc:
            raise FormatError(
                f"{self.path}: could not read the feature rows ({_reason(exc)}); the file is "
                f"damaged or truncated. Expected {FILE_LAYOUT}"
            ) from exc

    def _rows_to_read(self, num_desc: int | None) -> int:
        if num_desc is None:
            return self.num_desc
        if isinstance(num_desc, bool) or not isinstance(num_desc, int | np.integer) or num_desc < 1:
            raise UsageError(f"num_desc must be a positive integer (or None), got {num_desc!r}")
        return min(int(num_desc), self.num_desc)

    def read(self, index: IndexLike, num_desc: int | None = None) -> LocalFeatures:
        """Features of the images at ``index``: an int gives one image [T', ...], a sequence,
        array or slice gives a batch [n, T', ...] in the order asked (repeats allowed).

        ``num_desc``: read only the first T' = ``num_desc`` rows of each image (all if None).
        Indices must be whole numbers in ``[0, N)`` (:class:`ImageIdError` otherwise; -1 is
        never taken to mean the last image).
        """
        rows = self._rows_to_read(num_desc)
        source = str(self.path)
        if isinstance(index, slice):
            if index.step not in (None, 1):
                raise UsageError(
                    f"a slice of images must have step 1, got {index}; pass the indices as an "
                    "array instead"
                )
            with self._reading():
                data = self._dataset[index, :rows]
            return from_rows(data, source)
        ids = as_image_ids(index, self.num_images, "the indices asked", str(self.path))
        with self._reading():
            if ids.ndim == 0:
                data = self._dataset[int(ids), :rows]
                try:
                    return from_rows(data[None], source)[0]
                except FormatError as exc:
                    raise FormatError(_file_image(str(exc), ids.reshape(1))) from None
            flat = ids.ravel()
            if flat.size == 0:
                data = np.zeros((0, rows, self._width), dtype=np.float32)
            else:
                # h5py wants increasing, unique indices: read those, then put them in the asked
                # order.
                unique, inverse = np.unique(flat, return_inverse=True)
                data = self._dataset[unique.tolist(), :rows][inverse]
        data = data.reshape(*ids.shape, rows, data.shape[-1])
        try:
            return from_rows(data, source)
        except FormatError as exc:
            if ids.ndim == 1:  # name the file's image, not the position in this batch
                raise FormatError(_file_image(str(exc), ids)) from None
            raise

    def read_all(self, num_desc: int | None = None, chunk: int = 4096) -> LocalFeatures:
        """Every image, read in chunks of ``chunk`` images (memory: N * T' * (5 + D) floats)."""
        rows = self._rows_to_read(num_desc)
        if isinstance(chunk, bool) or not isinstance(chunk, int | np.integer) or chunk < 1:
            raise UsageError(f"chunk must be a positive integer, got {chunk!r}")
        out = np.empty((self.num_images, rows, self._width), dtype=np.float32)
        with self._reading():
            for start in range(0, self.num_images, chunk):
                out[start : start + chunk] = self._dataset[start : start + chunk, :rows]
        return from_rows(out, str(self.path))

    def close(self) -> None:
        file = self.__dict__.get("_file")
        if file is not None:
            file.close()


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _file_image(message: str, ids: np.ndarray) -> str:
    """Rewrite ``image <position>`` in a from_rows message as the file's image id."""
    import re

    match = re.search(r"\bimage (\d+)", message)
    if not match:
        return message
    pos = int(match.group(1))
    if pos >= len(ids):
        return message
    return message.replace(match.group(0), f"image {int(ids[pos])}", 1)


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
        if features.dtype.kind != "f":
            raise FormatError(
                f"feature rows must be float32, got {features.dtype}; convert them explicitly "
                "(integer descriptors are almost certainly truncated floats)"
            )
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
        # locking=False: the temporary file is private, and atomic_path holds its own lock on it
        with h5py.File(tmp, "w", locking=False) as handle:
            out = handle.create_dataset(
                dataset,
                shape=(n, t, width),
                dtype=np.float32,
                chunks=(max(1, min(n, 64)), t, width) if n and t else None,
            )
            for begin in range(0, n, chunk):
                part = source[begin : begin + chunk]
                if isinstance(part, LocalFeatures):
                    rows = to_rows(part)
                    try:
                        from_rows(rows, "features to write")  # the checks a reader makes
                    except FormatError as exc:
                        message = _file_image(str(exc), np.arange(begin, n))
                        raise FeatureError(message) from None
                else:
                    rows = part  # rows already in the layout are written as given
                out[begin : begin + chunk] = rows.astype(np.float32, copy=False)
    log.info("wrote %d images x %d rows x %d-d descriptors to %s", n, t, width - DESC_START, path)
