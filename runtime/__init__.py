"""locore.runtime: torch-free inference — feature files, packing, backends, sliding windows.

Never imports torch. Public names are loaded on first use (PEP 562), so ``import
locore.runtime`` stays cheap; onnxruntime, h5py and tensorrt are imported only by the code
that needs them.

>>> from locore.runtime import create_backend, Reranker, FeatureFile, read_shortlist
>>> reranker = Reranker(create_backend("model.onnx"), window=100, topk=400, stride=50)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
}

__all__ = [
    "BACKEND_KINDS",
    "Backend",
    "CONFIG_METADATA_KEY",
    "FeatureBatch",
    "FeatureFile",
    "FeedError",
    "FormatError",
    "GRAPH_IO_METADATA_KEY",
    "GroundTruth",
    "ORDERS",
    "OrtBackend",
    "Packer",
    "PackingError",
    "PickleNotAllowedError",
    "RerankParams",
    "RerankResult",
    "Reranker",
    "Shortlist",
    "as_feature_batch",
    "create_backend",
    "fuse_scores",
    "read_global_descriptors",
    "read_ground_truth",
    "read_model_metadata",
    "read_shortlist",
    "sliding_window_rerank",
    "window_starts",
    "write_feature_rows",
    "write_features_h5",
    "write_global_descriptors",
    "write_ground_truth",
    "write_shortlist",
]

if TYPE_CHECKING:
    from locore.runtime.backends import BACKEND_KINDS, Backend, FeedError, create_backend
    from locore.runtime.backends.ort import OrtBackend
    from locore.runtime.features_io import (
        FeatureBatch,
        FeatureFile,
        FormatError,
        GroundTruth,
        PickleNotAllowedError,
        Shortlist,
        as_feature_batch,
        read_global_descriptors,
        read_ground_truth,
        read_shortlist,
        write_feature_rows,
        write_features_h5,
        write_global_descriptors,
        write_ground_truth,
        write_shortlist,
    )
    from locore.runtime.metadata import (
        CONFIG_METADATA_KEY,
        GRAPH_IO_METADATA_KEY,
        read_model_metadata,
    )
    from locore.runtime.packing import Packer, PackingError
    from locore.runtime.rerank import (
        ORDERS,
        Reranker,
        RerankParams,
        RerankResult,
        fuse_scores,
        sliding_window_rerank,
        window_starts,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'locore.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
