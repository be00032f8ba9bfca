"""The AMES/LOCORE-layout files of a demo split: features, global descriptors, shortlist, gnd.

:func:`prepare_split` extracts SIFT/RootSIFT local features (the first ``num_desc`` by
response) and VLAD global descriptors (:func:`locore.runtime.demo.codebook.demo_codebook`)
of every image, searches the shortlist (exact inner product, top K) and writes the ground
truth, all cached in ``<cache>/v<DEMO_VERSION>/<split>-features-<digest>/``; the digest covers
:data:`FEATURES_VERSION`, the split's content hash, the codebook and the extractor settings, so
any change gives a new folder. Every kept keypoint of every image is also saved (xy in pixels,
RootSIFT float16, strongest first: the first ``num_desc`` are the feature file's rows) for the
RANSAC baselines.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from locore.fileio import atomic_write_bytes, atomic_write_text
from locore.runtime.ames import write_features
from locore.runtime.demo.baselines import KeypointSet
from locore.runtime.demo.codebook import demo_codebook
from locore.runtime.demo.dataset import DemoSplit, build_demo, default_cache_dir
from locore.runtime.global_descriptors import read_global_descriptors, write_global_descriptors
from locore.runtime.ground_truth import GroundTruth, write_ground_truth
from locore.runtime.local_features import LocalFeatures
from locore.runtime.shortlist import search_shortlist, write_shortlist
from locore.runtime.sift import Keypoints, SiftExtractor

log = logging.getLogger(__name__)

FEATURES_VERSION = 1  # bump when the files' content changes for the same inputs


@dataclass
class DemoFiles:
    """The AMES/LOCORE-layout files of one demo split (all cached in ``folder``)."""

    split: DemoSplit
    folder: Path
    query_features: Path  # HDF5 [Nq, Nd, 5 + 128]
    db_features: Path  # HDF5 [N, Nd, 5 + 128]
    query_global: Path  # raw float32 [Nq, Dg] (.npy)
    db_global: Path  # raw float32 [N, Dg] (.npy)
    shortlist: Path  # np.stack((sims, ids)) [2, Nq, K] (.npy)
    ground_truth: Path  # revisitop pickle
    db_keypoints: Path  # every kept keypoint of the database images, for spatial verification
    query_keypoints: Path


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def prepare_split(
    split: str = "test",
    cache_dir: str | Path | None = None,
    *,
    num_desc: int = 48,
    shortlist_k: int = 100,
    progress: bool = True,
) -> DemoFiles:
    """Features, global descriptors, shortlist and ground truth of a demo split (cached).

    Builds the split (:func:`locore.runtime.demo.dataset.build_demo`) and fits the codebook
    on first use. ``cache_dir`` defaults to :func:`default_cache_dir`.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    demo = build_demo(cache, split)
    book = demo_codebook(cache, progress=progress)
    ext = SiftExtractor(num_desc=num_desc, global_desc="vlad", codebook=book)
    key = _digest(FEATURES_VERSION, demo.content_hash, book.meta, repr(ext), shortlist_k)
    folder = demo.root.parent / f"{split}-features-{key}"
    files = DemoFiles(
        demo,
        folder,
        folder / "query.h5",
        folder / "db.h5",
        folder / "query_global.npy",
        folder / "db_global.npy",
        folder / "shortlist.npy",
        folder / "gnd.pkl",
        folder / "db_keypoints.npz",
        folder / "query_keypoints.npz",
    )
    done = folder / "done.json"
    if done.is_file():
        return files
    folder.mkdir(parents=True, exist_ok=True)
    log.info("extracting demo %s features into %s", split, folder)
    for paths, h5, glob, kp_path in (
        (demo.query_paths, files.query_features, files.query_global, files.query_keypoints),
        (demo.db_paths, files.db_features, files.db_global, files.db_keypoints),
    ):
        kps = ext.detect_many(paths, progress=progress)
        feats = [ext.features_from_keypoints(k, ext.global_descriptor(k)) for k in kps]
        batch = LocalFeatures.stack(feats)
        if batch.global_desc is None:  # the VLAD extractor always gives one
            raise RuntimeError("the demo extractor returned features without global descriptors")
        write_features(h5, batch)
        write_global_descriptors(glob, batch.global_desc)
        save_keypoints(kp_path, kps)
    shortlist = search_shortlist(
        read_global_descriptors(files.query_global),
        read_global_descriptors(files.db_global),
        shortlist_k,
    )
    write_shortlist(files.shortlist, shortlist.sims, shortlist.ids)
    gnd = [{k: np.asarray(v, dtype=np.int64) for k, v in g.items()} for g in demo.gnd]
    write_ground_truth(files.ground_truth, GroundTruth(gnd))
    atomic_write_text(done, json.dumps({"split": split, "hash": demo.content_hash}) + "\n")
    return files


def save_keypoints(path: Path, kps: Sequence[Keypoints]) -> None:
    """Every image's kept keypoints in one npz: ``counts [N]``, ``xy [sum, 2]`` in pixels of
    the extractor's working image, ``desc [sum, 128] float16``; written atomically."""
    counts = np.array([len(k) for k in kps], dtype=np.int64)
    xy_px = [k.xy * np.array(k.work_size[::-1], np.float32) for k in kps]
    buf = BytesIO()
    np.savez(
        buf,
        counts=counts,
        xy=np.concatenate(xy_px) if len(kps) else np.zeros((0, 2), np.float32),
        desc=np.concatenate([k.descriptors for k in kps]).astype(np.float16),
    )
    atomic_write_bytes(path, buf.getvalue())


def load_keypoints(path: Path) -> list[KeypointSet]:
    """The keypoints :func:`save_keypoints` wrote: per image ``(xy [n, 2], desc [n, 128]
    float32)``."""
    with np.load(path, allow_pickle=False) as data:
        counts, xy, desc = data["counts"], data["xy"], data["desc"].astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return [(xy[a:b], desc[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
