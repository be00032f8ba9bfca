"""Readers and writers for the AMES/LOCORE file formats that users already have.

- local features: HDF5 dataset ``features`` [N, T, 5 + D] float32; columns 0:2 xy in [0, 1],
  2 scale id, 3 mask (0 valid, 1 padding), 4 detector weight, 5: descriptor; the rows of each
  image sorted by weight, best first.
- global descriptors: raw float32 [N, D] (read as a memmap), or ``.npy``.
- shortlist: pickle of ``np.stack((sims, ids))`` [2, Nq, K], or the same array as ``.npy``.
- ground truth: revisitop pickle ``{"gnd": [{"easy", "hard", "junk", ...}, ...], "qimlist",
  "imlist"}``.

Pickles can run arbitrary code when loaded, so every pickle reader refuses unless the caller
passes ``allow_pickle=True`` (CLI: ``--allow-pickle``). Feature files are read lazily: only the
requested images and their first rows are sliced out of the HDF5 dataset.

In memory, :class:`FeatureBatch` holds ``mask`` True = a real descriptor (as the graph inputs
do), the inverse of the file's mask column.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from locore.deps import require
from locore.fileio import atomic_path

log = logging.getLogger(__name__)

FEATURES_DATASET = "features"
XY_COLUMNS = slice(0, 2)
SCALE_COLUMN = 2
MASK_COLUMN = 3  # 0 = valid, 1 = padding
WEIGHT_COLUMN = 4
DESC_START = 5
PICKLE_SUFFIXES = (".pkl", ".pickle")

IndexLike = int | slice | Sequence[int] | np.ndarray


class FormatError(ValueError):
    """A file does not have the AMES/LOCORE layout."""


class PickleNotAllowedError(ValueError):
    """A pickle was about to be loaded without the caller's explicit permission."""


# ---- local features ---------------------------------------------------------------------------
@dataclass
class FeatureBatch:
    """Local features as read from a feature file: one image ([T, ...]) or a batch ([N, T, ...]).

    descriptors: [..., T, D] float32; scales: [..., T] int64 scale ids; xy: [..., T, 2]
    float32 in [0, 1]; weights: [..., T] float32 detector weights; mask: [..., T] bool
    (True = real descriptor, the inverse of the file's mask column). Rows are sorted by weight,
    best first. Field names follow :class:`locore.runtime.features.LocalFeatures` (one
    extracted image); :func:`as_feature_batch` converts those.
    """

    descriptors: np.ndarray
    scales: np.ndarray
    xy: np.ndarray
    weights: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        if self.descriptors.ndim < 2:
            raise FormatError(
                f"descriptors must be [..., T, D], got shape {list(self.descriptors.shape)}"
            )
        lead = self.descriptors.shape[:-1]
        for name, extra in (("scales", ()), ("xy", (2,)), ("weights", ()), ("mask", ())):
            arr = getattr(self, name)
            if tuple(arr.shape) != tuple(lead) + extra:
                raise FormatError(
                    f"{name} must have shape {list(lead) + list(extra)} to match descriptors "
                    f"{list(self.descriptors.shape)}, got {list(arr.shape)}"
                )

    @property
    def num_desc(self) -> int:
        """T: rows per image."""
        return int(self.descriptors.shape[-2])

    @property
    def desc_dim(self) -> int:
        """D: descriptor dimension."""
        return int(self.descriptors.shape[-1])

    @property
    def is_batch(self) -> bool:
        return self.descriptors.ndim == 3

    def __len__(self) -> int:
        if not self.is_batch:
            raise TypeError("FeatureBatch of a single image has no len(); it is [T, ...]")
        return int(self.descriptors.shape[0])

    def __getitem__(self, index: IndexLike) -> FeatureBatch:
        """Images of a batch: an int gives one image [T, ...], a slice or array a batch."""
        if not self.is_batch:
            raise TypeError("index a batch [N, T, ...], not the features of a single image")
        return FeatureBatch(
            self.descriptors[index], self.scales[index], self.xy[index], self.weights[index],
            self.mask[index],
        )  # fmt: skip

    def first(self, num_desc: int) -> FeatureBatch:
        """The first ``num_desc`` rows (the best by weight) of each image."""
        return FeatureBatch(
            self.descriptors[..., :num_desc, :], self.scales[..., :num_desc],
            self.xy[..., :num_desc, :], self.weights[..., :num_desc], self.mask[..., :num_desc],
        )  # fmt: skip

    @classmethod
    def from_rows(cls, rows: np.ndarray, source: str = "features") -> FeatureBatch:
        """Split AMES rows [..., T, 5 + D] into fields."""
        rows = np.asarray(rows)
        if rows.ndim < 2 or rows.shape[-1] <= DESC_START:
            raise FormatError(
                f"{source}: rows must be [..., T, 5 + D] (xy, scale, mask, weight, descriptor), "
                f"got shape {list(rows.shape)}"
            )
        mask = rows[..., MASK_COLUMN] < 0.5
        raw_scale = rows[..., SCALE_COLUMN]
        scales = np.rint(raw_scale)
        off = (np.abs(raw_scale - scales) > 1e-3) & mask
        if off.any():
            raise FormatError(
                f"{source}: column {SCALE_COLUMN} (scale id) must hold integers, got e.g. "
                f"{raw_scale[off][0]}; is this an AMES/LOCORE feature file?"
            )
        return cls(
            descriptors=np.ascontiguousarray(rows[..., DESC_START:], dtype=np.float32),
            scales=scales.astype(np.int64),
            xy=np.ascontiguousarray(rows[..., XY_COLUMNS], dtype=np.float32),
            weights=np.ascontiguousarray(rows[..., WEIGHT_COLUMN], dtype=np.float32),
            mask=mask,
        )

    def to_rows(self) -> np.ndarray:
        """AMES rows [..., T, 5 + D] float32 (mask column: 0 valid, 1 padding)."""
        lead = self.descriptors.shape[:-1]
        rows = np.empty((*lead, DESC_START + self.desc_dim), dtype=np.float32)
        rows[..., XY_COLUMNS] = self.xy
        rows[..., SCALE_COLUMN] = self.scales
        rows[..., MASK_COLUMN] = ~np.asarray(self.mask, dtype=bool)
        rows[..., WEIGHT_COLUMN] = self.weights
        rows[..., DESC_START:] = self.descriptors
        return rows


def as_feature_batch(features: Any) -> FeatureBatch:
    """A :class:`FeatureBatch` from a FeatureBatch, from any object with ``to_rows()`` (e.g.
    :class:`locore.runtime.features.LocalFeatures` of one image), or from a sequence of those
    (stacked into a batch; all must have the same number of rows)."""
    if isinstance(features, FeatureBatch):
        return features
    if hasattr(features, "to_rows"):
        return FeatureBatch.from_rows(features.to_rows())
    if isinstance(features, Sequence) and features and hasattr(features[0], "to_rows"):
        return FeatureBatch.from_rows(np.stack([f.to_rows() for f in features]))
    raise TypeError(
        "expected a FeatureBatch, a LocalFeatures (anything with to_rows()) or a list of them, "
        f"got {type(features).__name__}"
    )


class FeatureFile:
    """An AMES/LOCORE HDF5 feature file, read lazily.

    >>> with FeatureFile("db.h5") as db:
    ...     gallery = db.read([17, 3, 42], num_desc=48)   # FeatureBatch [3, 48, ...]
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

    @property
    def num_images(self) -> int:
        return int(self._dataset.shape[0])

    @property
    def num_desc(self) -> int:
        """T: rows stored per image."""
        return int(self._dataset.shape[1])

    @property
    def desc_dim(self) -> int:
        return int(self._dataset.shape[2]) - DESC_START

    def __len__(self) -> int:
        return self.num_images

    def read(self, index: IndexLike, num_desc: int | None = None) -> FeatureBatch:
        """Features of the images at ``index``: an int gives one image [T', ...], a sequence,
        array or slice gives a batch [n, T', ...] in the order asked (repeats allowed).

        ``num_desc``: read only the first T' = ``num_desc`` rows of each image (all if None).
        """
        rows = self.num_desc if num_desc is None else min(int(num_desc), self.num_desc)
        if num_desc is not None and num_desc < 1:
            raise ValueError(f"num_desc must be >= 1, got {num_desc}")
        source = str(self.path)
        if isinstance(index, slice):
            return FeatureBatch.from_rows(self._dataset[index, :rows], source)
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
            return FeatureBatch.from_rows(self._dataset[int(ids), :rows], source)
        flat = ids.ravel()
        if flat.size == 0:
            data = np.zeros((0, rows, self._dataset.shape[2]), dtype=np.float32)
        else:
            # h5py wants increasing, unique indices: read those, then put them in the asked order.
            unique, inverse = np.unique(flat, return_inverse=True)
            data = self._dataset[unique.tolist(), :rows][inverse]
        return FeatureBatch.from_rows(data.reshape(*ids.shape, rows, data.shape[-1]), source)

    def read_all(self, num_desc: int | None = None, chunk: int = 4096) -> FeatureBatch:
        """Every image, read in chunks of ``chunk`` images (memory: N * T' * (5 + D) floats)."""
        rows = self.num_desc if num_desc is None else min(num_desc, self.num_desc)
        out = np.empty((self.num_images, rows, self._dataset.shape[2]), dtype=np.float32)
        for start in range(0, self.num_images, chunk):
            out[start : start + chunk] = self._dataset[start : start + chunk, :rows]
        return FeatureBatch.from_rows(out, str(self.path))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_features_h5(
    path: str | Path,
    *,
    xy: np.ndarray,
    scales: np.ndarray,
    mask: np.ndarray,
    weights: np.ndarray,
    descriptors: np.ndarray,
    dataset: str = FEATURES_DATASET,
) -> None:
    """Write an AMES/LOCORE feature file atomically.

    xy [N, T, 2], scales [N, T] ids, mask [N, T] bool (True = real descriptor; stored as the
    file's mask column, 0 valid / 1 padding), weights [N, T], descriptors [N, T, D]. The rows
    of each image should be sorted by weight, best first (readers take the first rows).
    """
    batch = FeatureBatch(
        descriptors=np.asarray(descriptors), scales=np.asarray(scales), xy=np.asarray(xy),
        weights=np.asarray(weights), mask=np.asarray(mask, dtype=bool),
    )  # fmt: skip
    if not batch.is_batch:
        raise FormatError(
            f"write a batch [N, T, D] of descriptors, got {list(batch.descriptors.shape)}"
        )
    write_feature_rows(path, batch.to_rows(), dataset=dataset)


def write_feature_rows(
    path: str | Path, rows: np.ndarray, dataset: str = FEATURES_DATASET, chunk: int = 4096
) -> None:
    """Write AMES rows [N, T, 5 + D] (see :meth:`FeatureBatch.to_rows`) as HDF5, atomically."""
    rows = np.asarray(rows)
    if rows.ndim != 3 or rows.shape[2] <= DESC_START:
        raise FormatError(
            f"feature rows must be [N, T, 5 + D] (xy, scale, mask, weight, descriptor), got "
            f"shape {list(rows.shape)}"
        )
    h5py = require("h5py", "writing AMES/LOCORE feature files")
    n, t, width = rows.shape
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            out = handle.create_dataset(
                dataset, shape=(n, t, width), dtype=np.float32,
                chunks=(max(1, min(n, 64)), t, width) if n and t else None,
            )  # fmt: skip
            for begin in range(0, n, chunk):
                out[begin : begin + chunk] = rows[begin : begin + chunk].astype(np.float32)
    log.debug("wrote %d images x %d rows x %d-d descriptors to %s", n, t, width - DESC_START, path)


# ---- global descriptors --------------------------------------------------------------------
def read_global_descriptors(
    path: str | Path, dim: int | None = None, num_images: int | None = None
) -> np.ndarray:
    """Global descriptors [N, D] float32 as a read-only memmap.

    Raw files carry no shape: give ``dim`` (D), or ``num_images`` (N) to infer D from the file
    size. ``.npy`` files carry their shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"global descriptor file {path} does not exist")
    if path.suffix == ".npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if array.ndim != 2 or array.dtype != np.float32:
            raise FormatError(
                f"{path} must hold [N, D] float32, got {list(array.shape)} {array.dtype}"
            )
        if dim is not None and array.shape[1] != dim:
            raise FormatError(f"{path} holds {array.shape[1]}-d descriptors, expected {dim}-d")
        return array
    size = path.stat().st_size
    if size % 4:
        raise FormatError(f"{path} has {size} bytes, not a whole number of float32 values")
    count = size // 4
    if dim is None and num_images is None:
        raise ValueError(
            f"{path} is a raw float32 file without a shape; give its descriptor dimension "
            "(dim=..., CLI --global-dim) or its number of images (num_images=...)"
        )
    if dim is None:
        assert num_images is not None
        if num_images < 1 or count % num_images:
            raise FormatError(
                f"{path} holds {count} float32 values, not divisible by {num_images} images"
            )
        dim = count // num_images
    if dim < 1 or count % dim:
        raise FormatError(f"{path} holds {count} float32 values, not divisible by dim {dim}")
    n = count // dim
    if num_images is not None and n != num_images:
        raise FormatError(
            f"{path} holds {n} descriptors of dimension {dim}, expected {num_images} images"
        )
    return np.memmap(path, dtype=np.float32, mode="r", shape=(n, dim))


def write_global_descriptors(path: str | Path, descriptors: np.ndarray) -> None:
    """Write [N, D] descriptors as raw float32 (or ``.npy`` by suffix), atomically."""
    array = np.ascontiguousarray(descriptors, dtype=np.float32)
    if array.ndim != 2:
        raise FormatError(f"global descriptors must be [N, D], got {list(array.shape)}")
    with atomic_path(path) as tmp:
        if Path(path).suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, array)
        else:
            array.tofile(tmp)


# ---- pickles --------------------------------------------------------------------------------
def _load_pickle(path: Path, allow_pickle: bool, what: str) -> Any:
    if not allow_pickle:
        raise PickleNotAllowedError(
            f"{path} is a pickle ({what}); loading a pickle can execute arbitrary code, so it is "
            "refused by default. If you trust the file, pass allow_pickle=True (CLI: "
            "--allow-pickle), or convert it once to .npy"
        )
    with open(path, "rb") as handle:
        return pickle.load(handle)


# ---- shortlists ----------------------------------------------------------------------------
@dataclass
class Shortlist:
    """Initial retrieval results: for each query, K database ids by decreasing similarity.

    sims: [Nq, K] float32 global similarities; ids: [Nq, K] int64 database image indices.
    """

    sims: np.ndarray
    ids: np.ndarray

    def __post_init__(self) -> None:
        if self.sims.ndim != 2 or self.sims.shape != self.ids.shape:
            raise FormatError(
                f"shortlist sims and ids must both be [Nq, K], got {list(self.sims.shape)} and "
                f"{list(self.ids.shape)}"
            )

    @property
    def num_queries(self) -> int:
        return int(self.ids.shape[0])

    @property
    def length(self) -> int:
        """K: shortlist length."""
        return int(self.ids.shape[1])

    @classmethod
    def from_array(cls, array: Any, source: str = "shortlist") -> Shortlist:
        """From the AMES layout ``np.stack((sims, ids))`` [2, Nq, K] (or a (sims, ids) pair)."""
        if isinstance(array, tuple | list) and len(array) == 2:
            sims, ids = (np.asarray(a) for a in array)
        else:
            array = np.asarray(array)
            if array.ndim != 3 or array.shape[0] != 2:
                raise FormatError(
                    f"{source} must be np.stack((sims, ids)) with shape [2, Nq, K], got "
                    f"{type(array).__name__} of shape {list(array.shape)}"
                )
            sims, ids = array[0], array[1]
        if ids.dtype.kind == "f":
            rounded = np.rint(ids)
            if not np.array_equal(rounded, ids):
                raise FormatError(
                    f"{source}: ids (row 1 of the [2, Nq, K] array) must be whole numbers, got "
                    f"e.g. {ids[rounded != ids].ravel()[0]}; is the order (sims, ids)?"
                )
            ids = rounded
        if ids.size and ids.min() < 0:
            raise FormatError(f"{source}: ids must be >= 0, got {ids.min()}")
        return cls(np.asarray(sims, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def to_array(self) -> np.ndarray:
        """``np.stack((sims, ids))`` [2, Nq, K] float64 (ids exact below 2**53)."""
        return np.stack((self.sims.astype(np.float64), self.ids.astype(np.float64)))


def read_shortlist(path: str | Path, allow_pickle: bool = False) -> Shortlist:
    """A shortlist from ``.npy`` [2, Nq, K], or from an AMES pickle with ``allow_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shortlist file {path} does not exist")
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif path.suffix in PICKLE_SUFFIXES:
        array = _load_pickle(path, allow_pickle, "a shortlist")
    else:
        raise FormatError(
            f"{path}: unknown shortlist format {path.suffix!r}; expected .npy or "
            f"{'/'.join(PICKLE_SUFFIXES)} holding np.stack((sims, ids)) [2, Nq, K]"
        )
    return Shortlist.from_array(array, str(path))


def write_shortlist(path: str | Path, sims: np.ndarray, ids: np.ndarray) -> None:
    """Write ``np.stack((sims, ids))`` [2, Nq, K] as ``.npy`` or pickle (by suffix), atomically."""
    path = Path(path)
    if path.suffix not in (".npy", *PICKLE_SUFFIXES):
        raise FormatError(f"{path}: write shortlists as .npy or {'/'.join(PICKLE_SUFFIXES)}")
    array = Shortlist.from_array((np.asarray(sims), np.asarray(ids)), str(path)).to_array()
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        if path.suffix == ".npy":
            np.save(handle, array)
        else:
            pickle.dump(array, handle, protocol=pickle.HIGHEST_PROTOCOL)


# ---- ground truth ------------------------------------------------------------------------------
GND_KEYS = ("easy", "hard", "junk")


@dataclass
class GroundTruth:
    """revisitop ground truth: ``gnd[q]`` holds int arrays ``easy``, ``hard``, ``junk`` (database
    indices) and any extra keys (e.g. ``bbx``); image name lists when the file has them."""

    gnd: list[dict[str, Any]]
    qimlist: list[str] | None = None
    imlist: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_queries(self) -> int:
        return len(self.gnd)


def read_ground_truth(path: str | Path, allow_pickle: bool = False) -> GroundTruth:
    """revisitop ground truth (``gnd_roxford5k.pkl`` and the like); needs ``allow_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth file {path} does not exist")
    data = _load_pickle(path, allow_pickle, "revisitop ground truth")
    if not isinstance(data, dict) or "gnd" not in data:
        raise FormatError(
            f"{path} must hold a dict with a 'gnd' list (revisitop format), got "
            f"{type(data).__name__}"
            + (f" with keys {sorted(data)}" if isinstance(data, dict) else "")
        )
    gnd = []
    for q, entry in enumerate(data["gnd"]):
        if not isinstance(entry, dict) or not any(k in entry for k in GND_KEYS):
            raise FormatError(
                f"{path}: gnd[{q}] must be a dict with keys {list(GND_KEYS)}, got {entry!r:.80}"
            )
        item = dict(entry)
        for key in GND_KEYS:
            item[key] = np.asarray(entry.get(key, ()), dtype=np.int64).ravel()
        gnd.append(item)
    extra = {k: v for k, v in data.items() if k not in ("gnd", "qimlist", "imlist")}
    qimlist = list(data["qimlist"]) if "qimlist" in data else None
    imlist = list(data["imlist"]) if "imlist" in data else None
    if qimlist is not None and len(qimlist) != len(gnd):
        raise FormatError(f"{path}: {len(qimlist)} query names for {len(gnd)} gnd entries")
    return GroundTruth(gnd, qimlist, imlist, extra)


def write_ground_truth(path: str | Path, ground_truth: GroundTruth) -> None:
    """Write revisitop-format ground truth as a pickle, atomically."""
    data: dict[str, Any] = dict(ground_truth.extra)
    data["gnd"] = [
        {**entry, **{k: np.asarray(entry.get(k, ()), dtype=np.int64) for k in GND_KEYS}}
        for entry in ground_truth.gnd
    ]
    if ground_truth.qimlist is not None:
        data["qimlist"] = list(ground_truth.qimlist)
    if ground_truth.imlist is not None:
        data["imlist"] = list(ground_truth.imlist)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(data, handle, protocol=pickle.HIGHEST_PROTOCOL)
