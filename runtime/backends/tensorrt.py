"""TensorRT (not implemented yet): where its loader and runner plug in.

What they will do, following NVIDIA's documented Python API. The loader deserializes an engine
(``trt.Runtime.deserialize_cuda_engine``, after ``get_plugin_registry().load_library`` for the
SelectiveScan plugin). A ``TrtRunner(Runner)`` lists the engine's I/O tensors by name
(``engine.get_tensor_name``, ``get_tensor_shape``, ``get_tensor_dtype``) as ``input_specs`` /
``output_specs``, reports the optimization profile's max shapes
(``engine.get_tensor_profile_shape``) as ``max_shapes`` (the re-ranker
:class:`~locore.runtime.backends.base.Backend` reads ``max_gallery``/``max_batch`` from them),
holds device buffers (cuda-python), and in ``_run`` sets input shapes, binds addresses
(``set_tensor_address``) and calls ``execute_async_v3`` on a stream. ``create_backend`` wraps it
like any runner: nothing else in the runtime changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from locore.deps import require
from locore.runtime.backends.base import Runner


def load_tensorrt_runner(path: str | Path, **options: Any) -> Runner:
    """Raise MissingDependencyError without TensorRT, else NotImplementedError (for now)."""
    require("tensorrt", "the TensorRT backend")
    raise NotImplementedError(
        f"the TensorRT backend is not available in this version of locore-edge (asked to load "
        f"{path}); run the portable ONNX model with the onnxruntime backend instead "
        "(--backend onnxruntime, or providers=['tensorrt'] for ONNX Runtime's TensorRT provider)"
    )
