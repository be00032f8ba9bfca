"""locore-edge: LOCORE-style list-wise image re-ranking for NVIDIA edge and desktop GPUs.

Import names: ``locore`` (config, CLI), ``locore.model`` (PyTorch), ``locore.export``
(ONNX / TensorRT building), ``locore.calibration``, ``locore.runtime`` (torch-free inference).
Importing ``locore`` never imports torch.
"""

from locore.config import PRESETS, ConfigError, GraphIO, LocoreConfig, TensorSpec, graph_io

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "ConfigError",
    "GraphIO",
    "LocoreConfig",
    "TensorSpec",
    "__version__",
    "graph_io",
]
