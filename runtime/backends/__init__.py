"""Inference backends: one loader + one :class:`Runner` per engine kind, one re-ranker view.

``load_runner(path, kind)`` opens any model with the runner of ``kind``;
``create_backend(path, kind)`` wraps that runner in the re-ranker :class:`Backend` (config,
graph I/O contract, limits). ``"auto"`` chooses by file suffix (``.engine``/``.plan``/``.trt``
-> TensorRT, anything else -> ONNX Runtime). Kinds (loader -> runner):

- ``onnxruntime``: ``ort.open_session`` -> ``OrtRunner``; the portable flavor, CPU or CUDA.
- ``pluginref``: ``pluginref.pluginref_session`` -> ``OrtRunner``; the plugin flavor in ONNX
  Runtime on the CPU, SelectiveScan run by the CPU library (a reference, as Polygraphy's
  pluginref).
- ``tensorrt``: ``tensorrt.load_tensorrt_runner`` -> ``TrtRunner``; an engine from
  ``locore build`` (checked against its sidecar), or an ONNX file built once through the engine
  cache (:mod:`locore.runtime.engines`).

A new kind (e.g. the C++ runtime) is one loader + runner registered in :data:`BACKENDS`. Runner
modules are imported only when chosen, so importing this package imports neither onnxruntime
nor tensorrt.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from locore.config import LocoreConfig
from locore.runtime.backends.base import Backend, FeedError, Runner, format_shape

# kind -> "module:callable" returning a Runner for (path, **options)
BACKENDS: dict[str, str] = {
    "onnxruntime": "locore.runtime.backends.ort:OrtRunner",
    "pluginref": "locore.runtime.backends.ort:load_pluginref_runner",
    "tensorrt": "locore.runtime.backends.tensorrt:load_tensorrt_runner",
}
BACKEND_KINDS = ("auto", *BACKENDS)
TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")


def backend_kind_for(path: str | Path) -> str:
    """The backend kind ``"auto"`` picks for ``path``."""
    return "tensorrt" if Path(path).suffix.lower() in TENSORRT_SUFFIXES else "onnxruntime"


def load_runner(path: str | Path, kind: str = "auto", **options: Any) -> Runner:
    """Open the model at ``path`` (any model) with the runner of ``kind``.

    ``options`` go to the kind's loader, e.g. ``providers=["cuda"]`` and ``threads=2`` for
    ONNX Runtime, ``threads`` for pluginref.
    """
    if kind not in BACKEND_KINDS:
        raise ValueError(f"backend kind must be one of {list(BACKEND_KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = backend_kind_for(path)
    module_name, attr = BACKENDS[kind].split(":")
    loader = getattr(importlib.import_module(module_name), attr)
    runner: Runner = loader(path, **options)
    return runner


def create_backend(
    path: str | Path, kind: str = "auto", *, config: LocoreConfig | None = None, **options: Any
) -> Backend:
    """Load the re-ranker at ``path`` with backend ``kind`` (see :data:`BACKEND_KINDS`).

    ``config`` is the model's :class:`~locore.config.LocoreConfig` when the file has no
    ``locore.config`` metadata; ``options`` go to the loader, as for :func:`load_runner`.
    """
    runner = load_runner(path, kind, **options)
    try:
        return Backend(runner, config)
    except BaseException:
        runner.close()
        raise


__all__ = [
    "BACKENDS",
    "BACKEND_KINDS",
    "Backend",
    "FeedError",
    "Runner",
    "backend_kind_for",
    "create_backend",
    "format_shape",
    "load_runner",
]
