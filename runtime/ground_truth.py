"""Ground truth in the revisitop format (DESIGN.md §8), as AMES/LOCORE evaluate with it.

The file is a pickle ``{"gnd": [{"easy", "hard", "junk", ...}, ...], "qimlist", "imlist"}``:
for each query, database indices of easy and hard positives and of junk images (neither
positive nor negative). Pickles are loaded only with ``allow_pickle`` (see
:func:`locore.fileio.load_pickle`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from locore.fileio import atomic_write_pickle, load_pickle
from locore.runtime.ames import FormatError

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
    data = load_pickle(path, allow_pickle, "revisitop ground truth")
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
    atomic_write_pickle(path, data)
