"""ONNX Runtime: the loader (:func:`open_session`) and the runner (:class:`OrtRunner`).

:class:`OrtRunner` runs any ONNX model (the portable re-ranker on the CPU or CUDA, the DINOv2
feature model); ``create_backend(path, "onnxruntime")`` wraps it in the re-ranker
:class:`~locore.runtime.backends.base.Backend`. The ``"pluginref"`` kind runs the plugin flavor
in the same runner, from the session of :func:`locore.runtime.backends.pluginref.pluginref_session`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from locore.config import TensorSpec
from locore.deps import MissingDependencyError, require
from locore.errors import UsageError
from locore.runtime.backends.base import Runner, check_threads

log = logging.getLogger(__name__)

# Short names accepted in ``providers``; full ONNX Runtime provider names are accepted as is.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

# ONNX Runtime type strings -> numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(bool)": "bool",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}


def resolve_providers(providers: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """ONNX Runtime provider names for ``providers``.

    ``None`` or ``"cpu"``: CPU only. ``"auto"``: CUDA when this onnxruntime has it, then CPU.
    A list of aliases (``cpu``, ``cuda``, ``tensorrt``) or full provider names is taken in
    order, with the CPU provider appended as the fallback. Asking for a provider this
    onnxruntime lacks raises :class:`~locore.deps.MissingDependencyError`.
    """
    cpu = PROVIDER_ALIASES["cpu"]
    if providers is None:
        return [cpu]
    if not isinstance(providers, str) and not (
        isinstance(providers, Sequence) and all(isinstance(p, str) for p in providers)
    ):
        raise UsageError(
            f"providers must be None, 'auto', a provider name or a list of names (aliases "
            f"{list(PROVIDER_ALIASES)}), got {providers!r}"
        )
    if isinstance(providers, str):
        if providers == "auto":
            cuda = PROVIDER_ALIASES["cuda"]
            return [cuda, cpu] if cuda in available else [cpu]
        providers = [providers]
    resolved: list[str] = []
    for name in providers:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            hint = (
                "install onnxruntime-gpu instead of onnxruntime: pip install 'locore-edge[gpu]'"
                if full in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
                else f"choose one of {list(PROVIDER_ALIASES)} or {list(available)}"
            )
            raise MissingDependencyError(
                f"ONNX Runtime provider {full!r} (asked for as {name!r}) is not available in "
                f"this onnxruntime, which has {list(available)}; {hint}"
            )
        if full not in resolved:
            resolved.append(full)
    if cpu not in resolved:
        resolved.append(cpu)
    return resolved


def _spec(node: Any) -> TensorSpec:
    """A session input/output (``onnxruntime.NodeArg``) as a TensorSpec; an unnamed dynamic dim
    gets the name ``<tensor>_dim<axis>``."""
    dtype = _ORT_TYPES.get(node.type, node.type)
    shape = tuple(
        d if isinstance(d, int) else (d if isinstance(d, str) and d else f"{node.name}_dim{i}")
        for i, d in enumerate(node.shape)
    )
    return TensorSpec(node.name, shape, dtype)


def open_session(
    path: str | Path,
    providers: str | Sequence[str] | None = None,
    threads: int | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for the ONNX file ``path`` (any model).

    ``providers`` and ``threads`` as for :class:`OrtRunner`. Raises FileNotFoundError for a
    missing file and RuntimeError, naming the file, when ONNX Runtime cannot load it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    ort = require("onnxruntime", "the ONNX Runtime backend")
    chosen = resolve_providers(providers, ort.get_available_providers())
    options = ort.SessionOptions()
    threads = check_threads(threads)
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT's warnings go to stderr, not our logs
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:
        if "SelectiveScan" in str(exc):
            raise RuntimeError(
                f"{path} is the plugin flavor (custom SelectiveScan nodes for the "
                "TensorRT plugin), which plain ONNX Runtime cannot run; export the portable "
                "flavor (`locore export --flavor portable`), use the TensorRT backend, or run "
                "it on the CPU with the pluginref backend (--backend pluginref)"
            ) from exc
        raise RuntimeError(f"ONNX Runtime could not load {path}: {exc}") from exc


class OrtRunner(Runner):
    """Any ONNX model in an ``onnxruntime.InferenceSession``, by named inputs and outputs.

    Args:
        path: the ``.onnx`` file (for a re-ranker, the portable flavor; the plugin flavor runs
            with the ``"pluginref"`` kind or TensorRT).
        providers: ``None`` (CPU), ``"auto"`` (CUDA if available) or a list such as
            ``["cuda"]``; see :func:`resolve_providers`.
        threads: intra-op threads (``None``: ONNX Runtime's default, all cores).

    :meth:`from_session` wraps a session opened by another loader.
    """

    kind = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        providers: str | Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        self._attach(open_session(path, providers, threads), Path(path))

    @classmethod
    def from_session(cls, session: Any, path: str | Path, kind: str | None = None) -> OrtRunner:
        """A runner over an already opened ``InferenceSession`` of the file ``path``.

        ``kind`` names the loader that opened it (default ``"onnxruntime"``).
        """
        runner = cls.__new__(cls)
        runner._attach(session, Path(path))
        if kind is not None:
            runner.kind = kind
        return runner

    def _attach(self, session: Any, path: Path) -> None:
        self.path = path
        self.session = session
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
        self._inputs = tuple(_spec(n) for n in session.get_inputs())
        self._outputs = tuple(_spec(n) for n in session.get_outputs())
        log.debug("%s\nproviders: %s", self.describe(), self.providers)

    @property
    def providers(self) -> list[str]:
        """The providers the session actually uses, in priority order."""
        return list(self.session.get_providers())

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self.output_names())
        try:
            values = self.session.run(names, dict(feeds))
        except Exception as exc:  # onnxruntime raises its own exception types
            shapes = ", ".join(
                f"{k} {list(np.shape(v))} {np.asarray(v).dtype}" for k, v in feeds.items()
            )
            raise RuntimeError(
                f"ONNX Runtime failed running {self.path} ({type(exc).__name__}: {exc}); the "
                f"inputs were {shapes}. Check that the inputs follow the model's metadata"
            ) from exc
        return dict(zip(names, values, strict=True))

    def close(self) -> None:
        self.__dict__.pop("session", None)


def load_pluginref_runner(
    path: str | Path,
    providers: str | Sequence[str] | None = None,
    threads: int | None = None,
) -> OrtRunner:
    """The ``"pluginref"`` kind: the plugin-flavor ONNX in ONNX Runtime on the CPU, its
    SelectiveScan nodes run by the CPU library (loader:
    :func:`locore.runtime.backends.pluginref.pluginref_session`).

    ``providers`` is accepted for the same options as ``"onnxruntime"`` but must mean the CPU
    (``None``, ``"cpu"``, ``"auto"``, ``["cpu"]``).
    """
    cpu = (None, "auto", "cpu", PROVIDER_ALIASES["cpu"])
    chosen = [providers] if providers is None or isinstance(providers, str) else list(providers)
    if any(p not in cpu and str(p).lower() != "cpu" for p in chosen):
        raise ValueError(
            f"the pluginref backend runs on the CPU only (SelectiveScan through the CPU library), "
            f"got providers={providers!r}; use --device cpu, or the tensorrt backend on a GPU"
        )
    from locore.runtime.backends.pluginref import pluginref_session

    return OrtRunner.from_session(pluginref_session(path, threads=threads), path, kind="pluginref")
