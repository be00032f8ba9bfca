"""torch -> ONNX export (portable and plugin flavors), ONNX checks, TensorRT engine building.

The ONNX exporters need ``pip install 'locore-edge[export]'`` (torch, onnx, onnxscript); engine
building (:mod:`locore.export.engine`) needs TensorRT only, so that ``locore build`` works on a
Jetson without torch. Public names are loaded on first use (PEP 562): importing this package
imports neither torch nor tensorrt; a missing one is named, with its extra, when a name that
needs it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    "DinoExportResult": "locore.export.dino_export",
    "export_dino_onnx": "locore.export.dino_export",
    "DEFAULT_OPSET": "locore.export.onnx_export",
    "FLAVORS": "locore.export.onnx_export",
    "ExportError": "locore.export.onnx_export",
    "ExportResult": "locore.export.onnx_export",
    "cached_export": "locore.export.onnx_export",
    "example_inputs": "locore.export.onnx_export",
    "export_onnx": "locore.export.onnx_export",
    "op_counts": "locore.export.onnx_export",
    "read_onnx_config": "locore.export.onnx_export",
}
_NEEDS = {
    "locore.export.dino_export": ("torch", "onnx"),
    "locore.export.onnx_export": ("torch", "onnx"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'locore.export' has no attribute {name!r}")
    from locore.deps import require

    for package in _NEEDS.get(module, ()):
        require(package, f"locore.export.{name} (ONNX export)")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
