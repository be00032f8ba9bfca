"""Shortlists: the first-stage retrieval results that the re-ranker re-orders.

In memory a :class:`Shortlist` holds, for each query, K database ids by decreasing global
similarity. :func:`search_shortlist` computes one by exact inner product (the one global search
of the package); files (docs/design.md §8) hold ``np.stack((sims, ids))`` [2, Nq, K] as ``.npy``, or
as the pickle AMES/LOCORE write (loaded only with ``allow_pickle``, see
:func:`locore.fileio.load_pickle`): a numpy array, or a pickled torch tensor (LOCORE's
``extract/prepare_topk_global.py`` pickles ``torch.from_numpy(np.stack((D, I)))``), which needs
torch to unpickle.

**Padding** (the one place of the policy): faiss returns id ``-1`` (:data:`PAD_ID`) for the
slots it cannot fill when the database holds fewer than K images. A padded slot is accepted
(its similarity is never looked at), counted in the log, and dropped from everything that is
re-ranked or scored: :meth:`Shortlist.row` gives a query's valid slots only, so rows with fewer
than K valid ids work. Every other negative id, a non-integral id, an id that does not fit int64
and a non-finite similarity are refused with a :class:`~locore.runtime.ames.FormatError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from locore.fileio import (
    PICKLE_SUFFIXES,
    atomic_path,
    atomic_write_pickle,
    load_pickle,
    write_npy,
)
from locore.runtime.ames import FormatError

log = logging.getLogger(__name__)

# Similarity rows computed at once by search_shortlist: chunk * N float32 values at most.
SEARCH_BLOCK = 1 << 26

PAD_ID = -1  # faiss's id for an empty result slot
# "numpy": np.stack((sims, ids)) float64 as .npy or a pickled numpy array (this package's files);
# "ames": a pickled torch tensor of the same array, what AMES's and LOCORE's loaders expect.
SHORTLIST_FORMATS = ("numpy", "ames")
_INT64_LIMIT = 2.0**63  # floats at or beyond it do not fit int64


def as_ids(values: Any, source: str, what: str = "ids") -> np.ndarray:
    """``values`` as int64 ids, refusing what would change meaning in the cast.

    Accepts integer arrays and whole floats (``7.0``) within int64; refuses booleans,
    fractions (``224.7``), NaN/Inf, floats beyond int64 (``1e19``) and unsigned values above
    int64's range (``2**64 - 1``, which a plain cast would wrap to the padding id ``-1``).
    Negative values are returned as they are: the caller decides what they mean.
    """
    arr = np.asarray(values)
    if arr.size == 0:
        return arr.astype(np.int64).reshape(arr.shape)
    kind = arr.dtype.kind
    if kind == "b" or kind not in "iuf":
        raise FormatError(
            f"{source}: {what} must be integers, got dtype {arr.dtype}; write database indices "
            "as int64 (or whole floats)"
        )
    if kind == "u" and arr.dtype.itemsize >= 8 and int(arr.max()) > np.iinfo(np.int64).max:
        bad = int(arr.max())
        raise FormatError(
            f"{source}: {what} must fit int64, got {bad} ({arr.dtype}); is it -1 padding "
            "written as unsigned? Write ids as int64 with -1 for empty slots"
        )
    if kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            raise FormatError(
                f"{source}: {what} must be finite whole numbers, got {arr[~finite].ravel()[0]}"
            )
        big = np.abs(arr) >= _INT64_LIMIT
        if big.any():
            raise FormatError(
                f"{source}: {what} must fit int64, got {arr[big].ravel()[0]:g}; are rows "
                "swapped or the file corrupt?"
            )
        rounded = np.rint(arr)
        off = rounded != arr
        if off.any():
            raise FormatError(
                f"{source}: {what} must be whole numbers, got e.g. {arr[off].ravel()[0]}; for a "
                "shortlist, is the order np.stack((sims, ids))?"
            )
        arr = rounded
    return arr.astype(np.int64)


@dataclass
class Shortlist:
    """Initial retrieval results: for each query, K database ids by decreasing similarity.

    sims: [Nq, K] float32 global similarities; ids: [Nq, K] int64 database image indices, with
    :data:`PAD_ID` (-1) for empty slots (their similarity is ignored). ``source`` names the
    shortlist in errors. Construction validates ids and the similarities of valid slots.
    """

    sims: np.ndarray
    ids: np.ndarray
    source: str = field(default="shortlist", repr=False, compare=False)

    def __post_init__(self) -> None:
        sims = np.asarray(self.sims)
        ids = np.asarray(self.ids)
        if sims.ndim != 2 or sims.shape != ids.shape:
            raise FormatError(
                f"{self.source}: shortlist sims and ids must both be [Nq, K], got "
                f"{list(sims.shape)} and {list(ids.shape)}"
            )
        if sims.dtype.kind not in "iuf":
            raise FormatError(f"{self.source}: similarities must be numbers, got {sims.dtype}")
        self.ids = as_ids(ids, self.source)
        negative = self.ids < 0
        bad = negative & (self.ids != PAD_ID)
        if bad.any():
            q, k = (int(i) for i in np.argwhere(bad)[0])
            raise FormatError(
                f"{self.source}: ids must be >= 0 (or -1 for an empty slot, as faiss pads), got "
                f"{int(self.ids[q, k])} in query row {q}, slot {k}"
            )
        with np.errstate(over="ignore"):
            self.sims = sims.astype(np.float32)
        nonfinite = ~np.isfinite(self.sims) & ~negative
        if nonfinite.any():
            q, k = (int(i) for i in np.argwhere(nonfinite)[0])
            raise FormatError(
                f"{self.source}: similarity of query row {q}, slot {k} (id {int(self.ids[q, k])}) "
                f"is {sims[q, k]} as {sims.dtype} ({self.sims[q, k]} as float32); global "
                "similarities must be finite float32 values: recompute the shortlist from finite "
                "descriptors, or mark empty slots with id -1"
            )

    @property
    def num_queries(self) -> int:
        return int(self.ids.shape[0])

    @property
    def length(self) -> int:
        """K: shortlist length (padded slots included)."""
        return int(self.ids.shape[1])

    @property
    def valid(self) -> np.ndarray:
        """[Nq, K] bool: True where a slot holds a database id (not padding)."""
        return self.ids != PAD_ID

    @property
    def num_padded(self) -> int:
        """Slots holding the padding id -1."""
        return int(self.ids.size - np.count_nonzero(self.valid))

    def row(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        """Query ``q``'s valid slots in order: (ids [k] int64, sims [k] float32), k <= K."""
        keep = self.ids[q] != PAD_ID
        return self.ids[q][keep], self.sims[q][keep]

    def validate_ids(self, num_db: int, source: str | None = None) -> None:
        """Raise :class:`FormatError` if a valid id is ``>= num_db`` (``source``: the database
        the ids should index, named in the error)."""
        valid = self.valid
        too_big = valid & (self.ids >= num_db)
        if too_big.any():
            q, k = (int(i) for i in np.argwhere(too_big)[0])
            where = f" of {source}" if source else ""
            raise FormatError(
                f"{self.source}: query row {q}, slot {k} refers to database image "
                f"{int(self.ids[q, k])}, but the database{where} holds {num_db} images; do the "
                "shortlist and the database features belong together?"
            )

    @classmethod
    def from_array(cls, array: Any, source: str = "shortlist") -> Shortlist:
        """From the AMES layout ``np.stack((sims, ids))`` [2, Nq, K] (or a (sims, ids) pair);
        torch tensors are accepted (converted with ``.numpy()``)."""
        if isinstance(array, tuple | list) and len(array) == 2:
            sims, ids = (_to_numpy(a) for a in array)
        else:
            array = _to_numpy(array)
            if array.ndim != 3 or array.shape[0] != 2:
                raise FormatError(
                    f"{source} must be np.stack((sims, ids)) with shape [2, Nq, K], got "
                    f"{type(array).__name__} of shape {list(array.shape)}"
                )
            sims, ids = array[0], array[1]
        return cls(sims, ids, source)

    def to_array(self) -> np.ndarray:
        """``np.stack((sims, ids))`` [2, Nq, K] float64 (ids exact below 2**53)."""
        return np.stack((self.sims.astype(np.float64), self.ids.astype(np.float64)))


def _to_numpy(obj: Any) -> np.ndarray:
    """A numpy array of ``obj``; torch tensors through ``.detach().cpu().numpy()`` (duck-typed:
    the runtime never imports torch itself)."""
    if type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "detach"):
        return np.asarray(obj.detach().cpu().numpy())
    return np.asarray(obj)


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


def _load_shortlist_pickle(path: Path, allow_pickle: bool) -> Any:
    try:
        return load_pickle(path, allow_pickle, "a shortlist")
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "torch":
            raise
        from locore.deps import MissingDependencyError

        raise MissingDependencyError(
            f"{path} is a pickled torch tensor (as LOCORE/AMES write nn files), and unpickling "
            "it needs torch, which is not importable. Install it with: pip install "
            "'locore-edge[export]' (or pip install torch), or convert the file once to .npy "
            "where torch is installed: np.save('nn.npy', pickle.load(f).numpy())"
        ) from exc


def _load_npy(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file; a damaged header or a short file is a FormatError (numpy
    raises ValueError, EOFError, SyntaxError or tokenize.TokenError for those)."""
    import tokenize

    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, SyntaxError, tokenize.TokenError) as exc:
        raise FormatError(
            f"{path} is not a readable .npy file ({type(exc).__name__}: {exc}); expected "
            "np.stack((sims, ids)) [2, Nq, K] saved with np.save. Is the file damaged or "
            "truncated?"
        ) from exc


def read_shortlist(path: str | Path, allow_pickle: bool = False) -> Shortlist:
    """A shortlist from ``.npy`` [2, Nq, K], or from an AMES/LOCORE pickle with ``allow_pickle``
    (a numpy array, or a torch tensor: unpickling that needs torch). Padded slots (id -1) are
    counted in the log."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shortlist file {path} does not exist")
    if path.suffix == ".npy":
        array = _load_npy(path)
    elif path.suffix in PICKLE_SUFFIXES:
        array = _load_shortlist_pickle(path, allow_pickle)
    else:
        raise FormatError(
            f"{path}: unknown shortlist format {path.suffix!r}; expected .npy or "
            f"{'/'.join(PICKLE_SUFFIXES)} holding np.stack((sims, ids)) [2, Nq, K]"
        )
    shortlist = Shortlist.from_array(array, str(path))
    padded = shortlist.num_padded
    if padded:
        rows = int(np.count_nonzero((~shortlist.valid).any(axis=1)))
        log.info(
            "%s: %d padded slots (id -1) in %d of %d rows are ignored",
            path,
            padded,
            rows,
            shortlist.num_queries,
        )
    return shortlist


def write_shortlist(
    path: str | Path, sims: np.ndarray, ids: np.ndarray, *, format: str = "numpy"
) -> None:
    """Write ``np.stack((sims, ids))`` [2, Nq, K] float64, atomically.

    ``format="numpy"``: ``.npy``, or a pickled numpy array for ``.pkl``/``.pickle``.
    ``format="ames"``: a pickled torch tensor (``.pkl``), what AMES's and LOCORE's loaders
    expect (they call ``.clone()`` and ``nn[1].long()`` on it); needs torch. Padding ids (-1)
    are kept.
    """
    path = Path(path)
    if format not in SHORTLIST_FORMATS:
        raise ValueError(f"format must be one of {list(SHORTLIST_FORMATS)}, got {format!r}")
    if path.suffix not in (".npy", *PICKLE_SUFFIXES):
        raise FormatError(f"{path}: write shortlists as .npy or {'/'.join(PICKLE_SUFFIXES)}")
    array = Shortlist.from_array((np.asarray(sims), np.asarray(ids)), str(path)).to_array()
    if format == "ames":
        if path.suffix == ".npy":
            raise FormatError(
                f"{path}: AMES/LOCORE read shortlists as pickles; name the file nn_<name>.pkl"
            )
        from locore.deps import require

        torch = require("torch", "writing shortlists in the AMES/LOCORE format (a torch tensor)")
        atomic_write_pickle(path, torch.from_numpy(array))
    elif path.suffix == ".npy":
        with atomic_path(path) as tmp:
            write_npy(tmp, array)
    else:
        atomic_write_pickle(path, array)
