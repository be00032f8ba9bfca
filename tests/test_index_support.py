"""Helpers shared by the visual-search tests (index, serve, browser, camera): no tests here.

The test index: the first 8 database views of every source of the demo test split (96 real
photos and video frames, 12 sources), built once per session (functools.cache) with the
library; its query crops are the sample queries.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

VIEWS_PER_SOURCE = 8


@functools.cache
def demo_subset(demo_cache: Path) -> tuple[Path, list[Path], list[str], dict[str, str]]:
    """(folder of images, demo query paths, query sources, image file name -> source)."""
    from locore.runtime.demo import build_demo

    split = build_demo(demo_cache, "test")
    folder = demo_cache / "search-subset"
    meta = json.loads((split.root / "meta.json").read_text())
    taken: dict[str, int] = {}
    source_of: dict[str, str] = {}
    folder.mkdir(exist_ok=True)
    for path, info in zip(split.db_paths, meta["db"], strict=True):
        source = info["source"]
        if taken.get(source, 0) >= VIEWS_PER_SOURCE:
            continue
        taken[source] = taken.get(source, 0) + 1
        if not (folder / path.name).is_file():
            shutil.copy(path, folder / path.name)
        source_of[path.name] = source
    return folder, list(split.query_paths), [q["source"] for q in meta["queries"]], source_of


@functools.cache
def demo_index(demo_cache: Path) -> Path:
    """The index of :func:`demo_subset`, built once (sample queries: the demo's queries)."""
    from locore.runtime.search_index import build_index

    folder, queries, _, _ = demo_subset(demo_cache)
    out = demo_cache / "search-index"
    build_index(folder, out, flush_every=32, sample_queries=queries, progress=False)
    return out


@functools.cache
def token_logits_onnx(demo_cache: Path) -> Path:
    """The shipped model exported with its token-logits output (as `locore serve` does)."""
    from locore.checkpoint_format import checkpoint_digest, shipped_model_dir
    from locore.export import export_onnx

    ckpt = shipped_model_dir()
    path = demo_cache / "models" / f"{ckpt.name}-{checkpoint_digest(ckpt)}-portable-tokens.onnx"
    if not path.is_file():
        export_onnx(ckpt, path, with_token_logits=True)
    return path
