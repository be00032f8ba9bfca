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
    "OrtBackend": "locore.runtime.backends.ort",
    "read_model_metadata": "locore.runtime.metadata",
    "CONFIG_METADATA_KEY": "locore.runtime.metadata",
    "GRAPH_IO_METADATA_KEY": "locore.runtime.metadata",
    # AMES/LOCORE files
    "FeatureBatch": "locore.runtime.features_io",
    "as_feature_batch": "locore.runtime.features_io",
    "FeatureFile": "locore.runtime.features_io",
    "Shortlist": "locore.runtime.features_io",
    "GroundTruth": "locore.runtime.features_io",
    "FormatError": "locore.runtime.features_io",
    "PickleNotAllowedError": "locore.runtime.features_io",
    "write_features_h5": "locore.runtime.features_io",
    "write_feature_rows": "locore.runtime.features_io",
    "read_global_descriptors": "locore.runtime.features_io",
    "write_global_descriptors": "locore.runtime.features_io",
    "read_shortlist": "locore.runtime.features_io",
    "write_shortlist": "locore.runtime.features_io",
    "read_ground_truth": "locore.runtime.features_io",
    "write_ground_truth": "locore.runtime.features_io",
    # packing and re-ranking
    "Packer": "locore.runtime.packing",
    "PackingError": "locore.runtime.packing",
    "ORDERS": "locore.runtime.rerank",
    "RerankParams": "locore.runtime.rerank",
    "RerankResult": "locore.runtime.rerank",
    "Reranker": "locore.runtime.rerank",
    "fuse_scores": "locore.runtime.rerank",
    "sliding_window_rerank": "locore.runtime.rerank",
    "window_starts": "locore.runtime.rerank",
    # local features
    "LocalFeatures": "locore.runtime.features",
    "Keypoints": "locore.runtime.features",
    "FeatureExtractor": "locore.runtime.features",
    "SiftExtractor": "locore.runtime.features",
    "load_image": "locore.runtime.features",
    "write_h5": "locore.runtime.features",
    "Codebook": "locore.runtime.aggregation",
    "DinoConfig": "locore.runtime.dino",
    "DinoExtractor": "locore.runtime.dino",
    "OnnxModel": "locore.runtime.backends.ort",
    # the demo benchmark
    "DemoSplit": "locore.runtime.demo_data",
    "build_demo": "locore.runtime.demo_data",
    "compute_map": "locore.runtime.demo_data",
    "run_demo": "locore.runtime.demo",
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
