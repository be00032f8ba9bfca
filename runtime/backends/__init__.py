"""Inference backends: one :class:`Backend` interface, one class per engine kind.

``create_backend(path, kind)`` picks the class; ``"auto"`` chooses by file suffix
(``.engine``/``.plan`` -> TensorRT, anything else -> ONNX Runtime). Backend modules are imported
only when chosen, so importing this package imports neither onnxruntime nor tensorrt.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from locore.runtime.backends.base import Backend, FeedError, format_shape

# kind -> "module:callable" returning a Backend for (path, **options)
BACKENDS: dict[str, str] = {
    "onnxruntime": "locore.runtime.backends.ort:OrtBackend",
    "tensorrt": "locore.runtime.backends.tensorrt:load_tensorrt_backend",
}
BACKEND_KINDS = ("auto", *BACKENDS)
TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")


def backend_kind_for(path: str | Path) -> str:
    """The backend kind ``"auto"`` picks for ``path``."""
    return "tensorrt" if Path(path).suffix.lower() in TENSORRT_SUFFIXES else "onnxruntime"


def create_backend(path: str | Path, kind: str = "auto", **options: Any) -> Backend:
    """Load the model at ``path`` with backend ``kind``: auto, onnxruntime or tensorrt.

    ``options`` go to the backend class, e.g. ``providers=["cuda"]`` and ``threads=2`` for
    ONNX Runtime.
    """
    if kind not in BACKEND_KINDS:
        raise ValueError(f"backend kind must be one of {list(BACKEND_KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = backend_kind_for(path)
    module_name, attr = BACKENDS[kind].split(":")
    factory = getattr(importlib.import_module(module_name), attr)
    backend: Backend = factory(path, **options)
    return backend


__all__ = [
    "BACKENDS",
    "BACKEND_KINDS",
    "Backend",
    "FeedError",
    "backend_kind_for",
    "create_backend",
    "format_shape",
]
