"""locore.runtime: torch-free inference — feature files, packing, backends, sliding windows.

Never imports torch. Public names are loaded on first use (PEP 562), so ``import
locore.runtime`` stays cheap; onnxruntime, h5py and tensorrt are imported only by the code
that needs them.

>>> from locore.runtime import create_backend, Reranker, FeatureFile, read_shortlist
>>> reranker = Reranker(create_backend("model.onnx"), window=100, topk=400, stride=50)
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    # backends
    "Backend": "locore.runtime.backends",
    "BACKEND_KINDS": "locore.runtime.backends",
    "FeedError": "locore.runtime.backends",
    "create_backend": "locore.runtime.backends",
    "Runner": "locore.runtime.backends",
    "load_runner": "locore.runtime.backends",
    "OrtRunner": "locore.runtime.backends.ort",
    "read_model_metadata": "locore.runtime.metadata",
    "parse_model_metadata": "locore.runtime.metadata",
    # AMES/LOCORE files
    "FeatureFile": "locore.runtime.ames",
    "FormatError": "locore.runtime.ames",
    "write_features": "locore.runtime.ames",
    "PAD_ID": "locore.runtime.shortlist",
    "Shortlist": "locore.runtime.shortlist",
    "search_shortlist": "locore.runtime.shortlist",
    "read_shortlist": "locore.runtime.shortlist",
    "write_shortlist": "locore.runtime.shortlist",
    "GroundTruth": "locore.runtime.ground_truth",
    "read_ground_truth": "locore.runtime.ground_truth",
    "write_ground_truth": "locore.runtime.ground_truth",
    "ground_truth_from_labels": "locore.runtime.ground_truth",
    "read_global_descriptors": "locore.runtime.global_descriptors",
    "write_global_descriptors": "locore.runtime.global_descriptors",
    "PickleNotAllowedError": "locore.fileio",
    # packing and re-ranking
    "Packer": "locore.runtime.packing",
    "PackingError": "locore.runtime.packing",
    "ORDERS": "locore.runtime.sliding_windows",
    "RerankParams": "locore.runtime.sliding_windows",
    "RerankResult": "locore.runtime.sliding_windows",
    "Reranker": "locore.runtime.sliding_windows",
    "fuse_scores": "locore.runtime.sliding_windows",
    "sliding_window_rerank": "locore.runtime.sliding_windows",
    "window_starts": "locore.runtime.sliding_windows",
    # local features
    "LocalFeatures": "locore.runtime.local_features",
    "FeatureError": "locore.runtime.local_features",
    "FeatureExtractor": "locore.runtime.local_features",
    "load_image": "locore.runtime.images",
    "Keypoints": "locore.runtime.sift",
    "SiftExtractor": "locore.runtime.sift",
    "Codebook": "locore.runtime.global_descriptors",
    "DinoExtractor": "locore.runtime.dino",
    # evaluation: metrics and the official protocols
    "average_precision": "locore.runtime.metrics",
    "compute_map": "locore.runtime.metrics",
    "compute_map_per_query": "locore.runtime.metrics",
    "map_at_k": "locore.runtime.metrics",
    "query_recall_at_k": "locore.runtime.metrics",
    "recall_at_k": "locore.runtime.metrics",
    "DATASETS": "locore.runtime.evaluation",
    "EvalReport": "locore.runtime.evaluation",
    "FusionGrid": "locore.runtime.evaluation",
    "evaluate": "locore.runtime.evaluation",
    "write_report": "locore.runtime.evaluation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'locore.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
