"""The demo's picture: one query, its top results before and after LOCORE re-ranking."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from locore.deps import require
from locore.fileio import atomic_write_bytes
from locore.runtime.demo.dataset import DemoSplit


def write_picture(
    path: Path,
    demo: DemoSplit,
    before: np.ndarray,
    after: np.ndarray,
    gnd: Sequence[dict[str, Any]],
    top: int = 8,
    tile: int = 128,
) -> int:
    """A PNG: the query whose ranking LOCORE improved most, its top results before (global)
    and after re-ranking; green = positive, red = negative, grey = junk. Returns the query.

    before, after: [Nq, K] database ids, best first (rows of ``gnd``'s queries).
    """
    cv2 = require("cv2")
    gains = []
    for q, g in enumerate(gnd):
        pos = set(g["easy"]) | set(g["hard"])
        gains.append(
            sum(int(i) in pos for i in after[q, :top]) - sum(int(i) in pos for i in before[q, :top])
        )
    q = int(np.argmax(gains))
    g = gnd[q]
    pos, junk = set(g["easy"]) | set(g["hard"]), set(g["junk"])

    def thumb(img: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
        h, w = img.shape[:2]
        s = (tile - 8) / max(h, w)
        small = cv2.resize(
            img, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA
        )
        canvas = np.full((tile, tile, 3), 255, np.uint8)
        canvas[:] = color
        y, x = (tile - small.shape[0]) // 2, (tile - small.shape[1]) // 2
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
        return canvas

    def color(i: int) -> tuple[int, int, int]:
        return (60, 180, 60) if i in pos else ((160, 160, 160) if i in junk else (50, 50, 220))

    def row(label: str, ids: np.ndarray) -> np.ndarray:
        tiles = [thumb(cv2.imread(str(demo.db_paths[int(i)])), color(int(i))) for i in ids[:top]]
        strip = np.concatenate(tiles, axis=1)
        head = np.full((24, strip.shape[1], 3), 255, np.uint8)
        cv2.putText(head, label, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
        return np.concatenate([head, strip], axis=0)

    query = thumb(cv2.imread(str(demo.query_paths[q])), (0, 0, 0))
    qcol = np.full((2 * (tile + 24), tile, 3), 255, np.uint8)
    qcol[24 : 24 + tile] = query
    cv2.putText(qcol, f"query {q}", (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    rows = np.concatenate([row("global only", before[q]), row("LOCORE", after[q])], axis=0)
    sheet = np.concatenate([qcol, np.full((rows.shape[0], 8, 3), 255, np.uint8), rows], axis=1)
    ok, data = cv2.imencode(".png", sheet)
    if not ok:
        raise RuntimeError(f"could not encode the picture for {path}")
    atomic_write_bytes(path, data.tobytes())
    return q
