"""torch -> ONNX export (portable and plugin flavors) and ONNX checks.

Needs ``pip install 'locore-edge[export]'`` (torch, onnx, onnxscript).
"""

from locore.deps import require

require("torch", "locore.export (ONNX export)")
require("onnx", "locore.export (ONNX export)")

from locore.export.dino_export import DinoExportResult, export_dino_onnx  # noqa: E402
from locore.export.onnx_export import (  # noqa: E402
    DEFAULT_OPSET,
    FLAVORS,
    ExportError,
    ExportResult,
    cached_export,
    example_inputs,
    export_onnx,
    op_counts,
    read_onnx_config,
)

__all__ = [
    "DinoExportResult",
    "export_dino_onnx",
    "DEFAULT_OPSET",
    "FLAVORS",
    "ExportError",
    "ExportResult",
    "cached_export",
    "example_inputs",
    "export_onnx",
    "op_counts",
    "read_onnx_config",
]
