"""Calibration sets: windows (a query + W gallery images) packed with the model's graph I/O.

A set is drawn reproducibly from feature files and a shortlist in the AMES/LOCORE layout
(docs/design.md section 8): for each of N windows, a query (uniformly, seeded) and W consecutive
entries of its shortlist from a random start (the re-ranker sees consecutive shortlist windows),
packed by :class:`locore.runtime.packing.Packer` exactly as the runtime packs a call. By default
(:func:`demo_calibration_set`) the demo's train split is the source, so the test split the
accuracy report scores stays held out.

On disk a set is one ``.npz``: one array per graph input with the windows on the batch axis
(``query_desc`` [N, Nd, Dl], ``gallery_desc`` [N, W, Nd, Dl], ...), plus ``provenance``, a JSON
string (source files with size and SHA-256, seed, N, W, the model config's name and sizes,
locore-edge version). It is read without pickle.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from locore import __version__
from locore.config import LocoreConfig, TensorSpec
from locore.errors import UsageError

log = logging.getLogger(__name__)

__all__ = [
    "CalibrationSet",
    "CalibrationSetError",
    "DEFAULT_NUM_WINDOWS",
    "DEFAULT_WINDOW",
    "build_calibration_set",
    "demo_calibration_set",
]

DEFAULT_NUM_WINDOWS = 32
DEFAULT_WINDOW = 48  # the shipped model's training window
PROVENANCE_KEY = "provenance"
SET_FORMAT = "locore-calibration-set/1"


class CalibrationSetError(UsageError):
    """A calibration set that does not fit the model, or a malformed set file."""


def _file_record(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


@dataclass
class CalibrationSet:
    """``feeds``: graph input name -> array with the windows on the batch axis [N, ...];
    ``provenance``: where the windows came from (JSON-serialisable)."""

    feeds: dict[str, np.ndarray]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def num_windows(self) -> int:
        return int(next(iter(self.feeds.values())).shape[0]) if self.feeds else 0

    def windows(self, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """The windows one at a time, as feeds with B = 1."""
        count = self.num_windows if limit is None else min(limit, self.num_windows)
        for i in range(count):
            yield {name: array[i : i + 1] for name, array in self.feeds.items()}

    def check_fits(self, inputs: Sequence[TensorSpec], source: str = "the model") -> None:
        """Raise :class:`CalibrationSetError` unless every input of ``inputs`` (the model's graph
        I/O) is in the set with a fitting shape (fixed dims equal; B and G free) and dtype."""
        for spec in inputs:
            if spec.name not in self.feeds:
                raise CalibrationSetError(
                    f"the calibration set has no input {spec.name!r} (it has "
                    f"{sorted(self.feeds)}); {source} needs it. Build the set for this model "
                    "(`locore calibrate` without --calib draws one from the demo)"
                )
            array = self.feeds[spec.name]
            want = [d if isinstance(d, int) else "?" for d in spec.shape]
            fits = array.ndim == len(spec.shape) and all(
                not isinstance(d, int) or d == n
                for d, n in zip(spec.shape, array.shape, strict=True)
            )
            if not fits:
                raise CalibrationSetError(
                    f"calibration input {spec.name!r} is {list(array.shape)} but {source} takes "
                    f"{spec.name} {want} (? = any); the set was built for another model "
                    f"({self.provenance.get('config', {})}). Rebuild it for this model"
                )
            dtype = np.float32 if spec.dtype == "float" else np.dtype(spec.dtype)
            if array.dtype != dtype:
                raise CalibrationSetError(
                    f"calibration input {spec.name!r} is {array.dtype} but {source} takes "
                    f"{np.dtype(dtype).name}; rebuild the set"
                )

    def save(self, path: str | Path) -> Path:
        """Write the set to ``path`` (.npz) atomically."""
        from locore.fileio import atomic_path

        path = Path(path)
        if PROVENANCE_KEY in self.feeds:
            raise CalibrationSetError(f"{PROVENANCE_KEY!r} is reserved for the set's provenance")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                arrays: dict[str, Any] = dict(self.feeds)
                provenance = {"format": SET_FORMAT, **self.provenance}
                arrays[PROVENANCE_KEY] = np.array(json.dumps(provenance, sort_keys=True))
                np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CalibrationSet:
        """Read a set written by :meth:`save` (no pickle)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"calibration set {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (ValueError, OSError) as exc:
            raise CalibrationSetError(
                f"{path} is not a calibration set (.npz written by `locore calibrate`): {exc}"
            ) from exc
        raw = arrays.pop(PROVENANCE_KEY, None)
        if raw is None or raw.ndim != 0:
            raise CalibrationSetError(
                f"{path} has no {PROVENANCE_KEY!r} entry: not a calibration set"
            )
        provenance = json.loads(str(raw))
        if provenance.get("format") != SET_FORMAT:
            raise CalibrationSetError(
                f"{path}: unknown calibration set format {provenance.get('format')!r}, expected "
                f"{SET_FORMAT!r}"
            )
        counts = {k: v.shape[0] if v.ndim else 0 for k, v in arrays.items()}
        if len(set(counts.values())) != 1:
            raise CalibrationSetError(f"{path}: inputs have different window counts {counts}")
        return cls(arrays, provenance)


def build_calibration_set(
    config: LocoreConfig,
    query_features: str | Path,
    db_features: str | Path,
    shortlist: str | Path,
    *,
    num_windows: int = DEFAULT_NUM_WINDOWS,
    window: int = DEFAULT_WINDOW,
    seed: int = 0,
    allow_pickle: bool = False,
    input_specs: Sequence[TensorSpec] | None = None,
    role: str = "calibration",
) -> CalibrationSet:
    """``num_windows`` windows of ``window`` gallery images, drawn with ``seed`` from the feature
    files and shortlist (AMES layout) and packed for ``config`` (``input_specs``: the model's
    inputs; default the graph I/O of ``config``)."""
    from locore.runtime.ames import FeatureFile
    from locore.runtime.packing import Packer
    from locore.runtime.shortlist import read_shortlist

    for name, value in (("num_windows", num_windows), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value!r}")
    if config.use_global:
        raise UsageError(
            "calibration sets for models with global descriptors (use_global) are not supported "
            "yet; calibrate a model without them"
        )
    paths = [Path(p) for p in (query_features, db_features, shortlist)]
    short = read_shortlist(paths[2], allow_pickle=allow_pickle)
    rng = np.random.default_rng(seed)
    valid_counts = short.valid.sum(axis=1)
    eligible = np.flatnonzero(valid_counts >= window)
    if eligible.size == 0:
        raise UsageError(
            f"no query of {paths[2]} has {window} valid shortlist entries (longest: "
            f"{int(valid_counts.max()) if valid_counts.size else 0}); use a smaller --window"
        )
    packer = Packer(config, input_specs)
    stacked: dict[str, list[np.ndarray]] = {}
    drawn = []
    with FeatureFile(paths[0]) as qf, FeatureFile(paths[1]) as dbf:
        # A query without any valid descriptor cannot be re-ranked (the runtime keeps its
        # global ranking): never draw one.
        has_desc = np.any(np.asarray(qf.read_all(config.num_desc).mask), axis=-1, keepdims=False)
        eligible = eligible[has_desc[eligible]]
        if eligible.size == 0:
            raise UsageError(f"no query of {paths[0]} has a valid descriptor and {window} entries")
        for _ in range(num_windows):
            q = int(rng.choice(eligible))
            ids = short.ids[q][short.valid[q]]
            start = int(rng.integers(0, len(ids) - window + 1))
            gallery = ids[start : start + window]
            feeds = packer.pack(
                qf.read(q, config.num_desc), dbf.read(gallery.tolist(), config.num_desc)
            )
            for name, array in feeds.items():
                stacked.setdefault(name, []).append(array)
            drawn.append([q, start])
    provenance = {
        "format": SET_FORMAT,
        "role": role,
        "sources": {
            "query_features": _file_record(paths[0]),
            "db_features": _file_record(paths[1]),
            "shortlist": _file_record(paths[2]),
        },
        "seed": seed,
        "num_windows": num_windows,
        "window": window,
        "windows": drawn,  # [query, shortlist start] per window
        "config": {
            "name": config.name,
            "num_desc": config.num_desc,
            "desc_dim": config.desc_dim,
            "num_scales": config.num_scales,
        },
        "locore_version": __version__,
    }
    feeds = {name: np.concatenate(arrays) for name, arrays in stacked.items()}
    log.info("calibration set: %d windows of %d images from %s", num_windows, window, paths[2])
    return CalibrationSet(feeds, provenance)


def demo_calibration_set(
    config: LocoreConfig,
    *,
    split: str = "train",
    cache_dir: str | Path | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> CalibrationSet:
    """A calibration set drawn from the demo benchmark's ``split`` (built on first use in the
    demo cache; the train split by default, so that the test split stays held out)."""
    from locore.runtime.demo.split_files import prepare_split

    files = prepare_split(split, cache_dir, num_desc=config.num_desc, progress=progress)
    out = build_calibration_set(
        config, files.query_features, files.db_features, files.shortlist, **kwargs
    )
    out.provenance["demo_split"] = split
    return out
