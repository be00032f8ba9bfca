"""TensorRT backend (not implemented yet): the place where it plugs in.

What it will do, following NVIDIA's documented Python API: deserialize an engine
(``trt.Runtime.deserialize_cuda_engine``, after ``get_plugin_registry().load_library`` for the
SelectiveScan plugin), list its I/O tensors by name (``engine.get_tensor_name``,
``get_tensor_shape``, ``get_tensor_dtype``), read the optimization-profile limits
(``engine.get_tensor_profile_shape``) into ``max_gallery``/``max_batch``, hold device buffers
(cuda-python), and in ``_run`` set input shapes, bind addresses (``set_tensor_address``) and
call ``execute_async_v3`` on a stream. Nothing else in the runtime changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from locore.deps import require
from locore.runtime.backends.base import Backend


def load_tensorrt_backend(path: str | Path, **options: Any) -> Backend:
    """Raise MissingDependencyError without TensorRT, else NotImplementedError (for now)."""
    require("tensorrt", "the TensorRT backend")
    raise NotImplementedError(
        f"the TensorRT backend is not available in this version of locore-edge (asked to load "
        f"{path}); run the portable ONNX model with the onnxruntime backend instead "
        "(--backend onnxruntime, or providers=['tensorrt'] for ONNX Runtime's TensorRT provider)"
    )
