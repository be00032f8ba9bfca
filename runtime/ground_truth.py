"""Ground truth in the revisitop format (docs/design.md §8), as AMES/LOCORE evaluate with it.

The file is a pickle ``{"gnd": [{"easy", "hard", "junk", ...}, ...], "qimlist", "imlist"}``:
for each query, database indices of easy and hard positives and of junk images (neither
positive nor negative). GLDv2's ground truth (AMES's ``gnd_gldv2-test.pkl``) holds an ``ok``
list of positives instead (and possibly ``junk``): such entries are read too, the positives of
a query being ``easy + hard + ok``. Pickles are loaded only with ``allow_pickle`` (see
:func:`locore.fileio.load_pickle`).

Ids are validated on reading (integral, non-negative; in range with
:meth:`GroundTruth.validate_ids` once the database size is known). Files are written with
Python lists of ints, as revisitop's own ``gnd_*.pkl`` hold them: AMES's and LOCORE's hard
protocol computes ``gnd['junk'] + gnd['easy']``, which concatenates lists but would add numpy
arrays element-wise (or fail) — so arrays are never written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from locore.fileio import atomic_write_pickle, load_pickle
from locore.runtime.ames import FormatError
from locore.runtime.shortlist import as_ids

GND_KEYS = ("easy", "hard", "junk")  # revisitop; always present after reading
OK_KEY = "ok"  # GLDv2-style positives
ID_KEYS = (*GND_KEYS, OK_KEY)
POSITIVE_KEYS = ("easy", "hard", OK_KEY)


def positives(entry: Mapping[str, Any]) -> np.ndarray:
    """A ground-truth entry's positives: ``easy + hard + ok`` [P] int64 (repeats removed, first
    occurrence kept)."""
    parts = [np.asarray(entry.get(k, ()), dtype=np.int64).ravel() for k in POSITIVE_KEYS]
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    _, first = np.unique(ids, return_index=True)
    return ids[np.sort(first)]


@dataclass
class GroundTruth:
    """revisitop ground truth: ``gnd[q]`` holds int arrays ``easy``, ``hard``, ``junk`` (database
    indices), ``ok`` when the file has it, and any extra keys (e.g. ``bbx``); image name lists
    when the file has them."""

    gnd: list[dict[str, Any]]
    qimlist: list[str] | None = None
    imlist: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_queries(self) -> int:
        return len(self.gnd)

    def positives(self, q: int) -> np.ndarray:
        """Query ``q``'s positives (easy + hard + ok) [P] int64."""
        return positives(self.gnd[q])

    def validate_ids(self, num_db: int, source: str = "ground truth") -> None:
        """Raise :class:`FormatError` if an id is outside ``[0, num_db)``."""
        for q, entry in enumerate(self.gnd):
            for key in ID_KEYS:
                if key not in entry:
                    continue
                ids = as_ids(entry[key], source, f"gnd[{q}]['{key}']").ravel()
                bad = ids[(ids < 0) | (ids >= num_db)]
                if bad.size:
                    raise FormatError(
                        f"{source}: gnd[{q}]['{key}'] holds database index {int(bad[0])}, but the "
                        f"database holds {num_db} images (valid: 0..{num_db - 1}); does the "
                        "ground truth belong to these database features?"
                    )


def _entry(entry: Any, q: int, source: str) -> dict[str, Any]:
    """One gnd entry with int64 id arrays (``easy``, ``hard``, ``junk`` always; ``ok`` if there)."""
    if not isinstance(entry, Mapping) or not any(k in entry for k in ID_KEYS):
        raise FormatError(
            f"{source}: gnd[{q}] must be a dict with keys {list(GND_KEYS)} (revisitop) or "
            f"'{OK_KEY}' (GLDv2), got {entry!r:.80}"
        )
    item = dict(entry)
    for key in ID_KEYS:
        if key not in entry and key == OK_KEY:
            continue
        ids = as_ids(entry.get(key, ()), source, f"gnd[{q}]['{key}']").ravel()
        if ids.size and ids.min() < 0:
            raise FormatError(
                f"{source}: gnd[{q}]['{key}'] must hold database indices >= 0, got {ids.min()}"
            )
        item[key] = ids
    return item


def read_ground_truth(path: str | Path, allow_pickle: bool = False) -> GroundTruth:
    """revisitop ground truth (``gnd_roxford5k.pkl`` and the like, or GLDv2's ``ok`` lists);
    needs ``allow_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth file {path} does not exist")
    data = load_pickle(path, allow_pickle, "revisitop ground truth")
    if not isinstance(data, dict) or "gnd" not in data:
        raise FormatError(
            f"{path} must hold a dict with a 'gnd' list (revisitop format), got "
            f"{type(data).__name__}"
            + (f" with keys {sorted(data)}" if isinstance(data, dict) else "")
        )
    gnd = [_entry(entry, q, str(path)) for q, entry in enumerate(data["gnd"])]
    extra = {k: v for k, v in data.items() if k not in ("gnd", "qimlist", "imlist")}
    qimlist = list(data["qimlist"]) if "qimlist" in data else None
    imlist = list(data["imlist"]) if "imlist" in data else None
    if qimlist is not None and len(qimlist) != len(gnd):
        raise FormatError(f"{path}: {len(qimlist)} query names for {len(gnd)} gnd entries")
    return GroundTruth(gnd, qimlist, imlist, extra)


def write_ground_truth(path: str | Path, ground_truth: GroundTruth) -> None:
    """Write revisitop-format ground truth as a pickle, atomically: id keys (``easy``,
    ``hard``, ``junk``, and ``ok`` where present) as lists of Python ints, as revisitop's files
    and AMES's/LOCORE's loaders have them; other keys as they are."""
    data: dict[str, Any] = dict(ground_truth.extra)
    gnd = []
    for q, entry in enumerate(ground_truth.gnd):
        item = dict(entry)
        for key in ID_KEYS:
            if key in entry or key in GND_KEYS:
                item[key] = as_ids(entry.get(key, ()), str(path), f"gnd[{q}]['{key}']").tolist()
        gnd.append(item)
    data["gnd"] = gnd
    if ground_truth.qimlist is not None:
        data["qimlist"] = list(ground_truth.qimlist)
    if ground_truth.imlist is not None:
        data["imlist"] = list(ground_truth.imlist)
    atomic_write_pickle(path, data)


def ground_truth_from_labels(
    query_labels: Sequence[int] | np.ndarray,
    db_labels: Sequence[int] | np.ndarray,
    query_db_ids: Sequence[int] | np.ndarray | None = None,
) -> GroundTruth:
    """Ground truth of class-labelled benchmarks (SOP, In-Shop, CUB): positives are the database
    images with the query's label (``ok``); ``query_db_ids[q]``, when given, is query q's own
    index in the database (SOP and CUB query the database with itself), made ``junk`` so that
    the query never counts as its own match (LOCORE drops that first result the same way).

    query_labels: [Nq] int; db_labels: [N] int; query_db_ids: [Nq] int (-1: not in the database).
    """
    qlab = as_ids(query_labels, "query labels", "labels").ravel()
    dlab = as_ids(db_labels, "database labels", "labels").ravel()
    order = np.argsort(dlab, kind="stable")
    sorted_labels = dlab[order]
    self_ids = None if query_db_ids is None else as_ids(query_db_ids, "query_db_ids").ravel()
    if self_ids is not None and self_ids.shape != qlab.shape:
        raise ValueError(
            f"query_db_ids must have one entry per query ({qlab.size}), got {self_ids.size}"
        )
    gnd = []
    for q, label in enumerate(qlab):
        lo, hi = np.searchsorted(sorted_labels, [label, label + 1])
        ok = np.sort(order[lo:hi])
        junk = np.zeros(0, np.int64)
        if self_ids is not None and self_ids[q] >= 0:
            junk = self_ids[q : q + 1]
            ok = ok[ok != self_ids[q]]
        gnd.append(
            {"easy": np.zeros(0, np.int64), "hard": np.zeros(0, np.int64), "junk": junk, OK_KEY: ok}
        )
    return GroundTruth(gnd)
