"""Shortlists: the first-stage retrieval results that the re-ranker re-orders.

In memory a :class:`Shortlist` holds, for each query, K database ids by decreasing global
similarity. :func:`search_shortlist` computes one by exact inner product (the one global search
of the package); files (DESIGN.md §8) hold ``np.stack((sims, ids))`` [2, Nq, K] as ``.npy``, or
as the pickle AMES/LOCORE write (loaded only with ``allow_pickle``, see
:func:`locore.fileio.load_pickle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from locore.fileio import PICKLE_SUFFIXES, atomic_path, atomic_write_pickle, load_pickle
from locore.runtime.ames import FormatError

# Similarity rows computed at once by search_shortlist: chunk * N float32 values at most.
SEARCH_BLOCK = 1 << 26


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


def search_shortlist(query_vecs: np.ndarray, db_vecs: np.ndarray, k: int) -> Shortlist:
    """The top ``k`` database vectors of each query by exact inner product.

    query_vecs: [Nq, D], db_vecs: [N, D] (cast to float32). Returns a :class:`Shortlist` with
    sims and ids [Nq, min(k, N)], by decreasing similarity; ties keep database order (the
    order of a stable sort), so results are deterministic.
    """
    q = np.asarray(query_vecs, dtype=np.float32)
    db = np.asarray(db_vecs, dtype=np.float32)
    if q.ndim != 2 or db.ndim != 2 or q.shape[1] != db.shape[1]:
        raise ValueError(
            f"query_vecs must be [Nq, D] and db_vecs [N, D] with the same D, got "
            f"{list(q.shape)} and {list(db.shape)}"
        )
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    n = db.shape[0]
    top = min(int(k), n)
    ids = np.zeros((q.shape[0], top), dtype=np.int64)
    sims = np.zeros((q.shape[0], top), dtype=np.float32)
    block = max(1, SEARCH_BLOCK // max(n, 1))
    for start in range(0, q.shape[0], block):
        scores = q[start : start + block] @ db.T  # [b, N]
        if not np.isfinite(scores).all():
            raise ValueError(
                "global similarities contain NaN or infinite values; check the global "
                "descriptors (finite float32 expected)"
            )
        for row, s in enumerate(scores, start):
            if top < n:
                # Every index scoring at least the k-th largest value, in database order; a
                # stable sort of those is the head of a stable sort of the whole row.
                kth = np.partition(s, n - top)[n - top]
                cand = np.flatnonzero(s >= kth)
                order = cand[np.argsort(-s[cand], kind="stable")[:top]]
            else:
                order = np.argsort(-s, kind="stable")
            ids[row] = order
            sims[row] = s[order]
    return Shortlist(sims, ids)


def read_shortlist(path: str | Path, allow_pickle: bool = False) -> Shortlist:
    """A shortlist from ``.npy`` [2, Nq, K], or from an AMES pickle with ``allow_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shortlist file {path} does not exist")
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif path.suffix in PICKLE_SUFFIXES:
        array = load_pickle(path, allow_pickle, "a shortlist")
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
    if path.suffix == ".npy":
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, array)
    else:
        atomic_write_pickle(path, array)
