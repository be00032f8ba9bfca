"""The demo's VLAD codebook: k-means on RootSIFT of the TRAIN split only, cached as npz."""

from __future__ import annotations

import logging
from pathlib import Path

from locore.runtime.demo.dataset import build_demo
from locore.runtime.global_descriptors import Codebook, CodebookError
from locore.runtime.sift import SiftExtractor

logger = logging.getLogger(__name__)

DEFAULT_CODEBOOK_K = 64  # chosen by benchmarks/global_descriptor_choice.py


def demo_codebook(
    cache_dir: str | Path | None = None,
    *,
    k: int = DEFAULT_CODEBOOK_K,
    pca_dim: int | None = None,
    extractor: SiftExtractor | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Codebook:
    """The demo's VLAD codebook, fitted on the TRAIN split only and cached as an npz file.

    The file name records k, PCA and the extractor's resize/keypoint settings; the train
    split's content hash is stored inside and checked, so a rebuilt split refits the codebook.
    """
    ext = extractor or SiftExtractor(global_desc="mean")
    train = build_demo(cache_dir, "train")
    name = f"codebook_sift_k{k}_pca{pca_dim or 0}_side{ext.max_side}_kp{ext.max_keypoints}.npz"
    path = train.root.parent / name
    if path.is_file():
        try:
            book = Codebook.load(path)
            if book.meta.get("train_hash") == train.content_hash:
                return book
            logger.info("codebook %s was fitted on another train build; refitting", path)
        except (CodebookError, OSError, ValueError) as exc:
            logger.warning("codebook %s is unusable (%s); refitting", path, exc)
    kps = ext.detect_many(train.query_paths + train.db_paths, progress=progress)
    book = Codebook.fit([kp.descriptors for kp in kps], k, seed=seed, pca_dim=pca_dim)
    book.meta.update(
        train_hash=train.content_hash, max_side=ext.max_side, max_keypoints=ext.max_keypoints
    )
    book.save(path)
    logger.info("saved the demo codebook to %s", path)
    return book
