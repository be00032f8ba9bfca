"""ONNX Runtime backend: runs the portable ONNX flavor on the CPU (default) or CUDA."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from locore.config import LocoreConfig, TensorSpec
from locore.deps import MissingDependencyError, require
from locore.runtime.backends.base import Backend, FeedError, format_shape
from locore.runtime.metadata import CONFIG_METADATA_KEY, parse_model_metadata

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


def _spec(node: Any, descriptions: Mapping[str, str]) -> TensorSpec:
    dtype = _ORT_TYPES.get(node.type, node.type)
    shape = tuple(
        d if isinstance(d, int) else (d if isinstance(d, str) and d else f"{node.name}_dim{i}")
        for i, d in enumerate(node.shape)
    )
    return TensorSpec(node.name, shape, dtype, descriptions.get(node.name, ""))


def open_session(
    path: str | Path,
    providers: str | Sequence[str] | None = None,
    threads: int | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for the ONNX file ``path`` (any model).

    ``providers`` and ``threads`` as for :class:`OrtBackend`. Raises FileNotFoundError for a
    missing file and RuntimeError, naming the file, when ONNX Runtime cannot load it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    ort = require("onnxruntime", "the ONNX Runtime backend")
    chosen = resolve_providers(providers, ort.get_available_providers())
    options = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for all cores), got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT's warnings go to stderr, not our logs
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:
        if "SelectiveScan" in str(exc):
            raise RuntimeError(
                f"{path} is the plugin flavor (custom SelectiveScan nodes for the "
                "TensorRT plugin), which ONNX Runtime cannot run; export the portable flavor "
                "(`locore export --flavor portable`) or use the TensorRT backend"
            ) from exc
        raise RuntimeError(f"ONNX Runtime could not load {path}: {exc}") from exc


class OrtBackend(Backend):
    """An ONNX model in an ``onnxruntime.InferenceSession``.

    Args:
        path: the ``.onnx`` file (portable flavor; the plugin flavor needs TensorRT).
        providers: ``None`` (CPU), ``"auto"`` (CUDA if available) or a list such as
            ``["cuda"]``; see :func:`resolve_providers`.
        threads: intra-op threads (``None``: ONNX Runtime's default, all cores).
        config: the model's config when the file has no ``locore.config`` metadata.
    """

    kind = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        providers: str | Sequence[str] | None = None,
        threads: int | None = None,
        config: LocoreConfig | None = None,
    ) -> None:
        self.path = Path(path)
        self.model = OnnxModel(self.path, providers, threads)
        self.session = self.model.session
        meta = self.model.metadata
        if config is None:
            self.config, self.graph_io = parse_model_metadata(meta, str(self.path))
        else:  # the caller's config wins; the recorded graph I/O is still used if present
            self.config = config
            self.graph_io = {}
            if CONFIG_METADATA_KEY in meta:
                self.graph_io = parse_model_metadata(meta, str(self.path))[1]
        descriptions = {
            spec.get("name", ""): spec.get("description", "")
            for key in ("inputs", "outputs")
            for spec in self.graph_io.get(key, [])
            if isinstance(spec, dict)
        }
        self._inputs = tuple(
            replace(s, description=descriptions.get(s.name, "")) for s in self.model.input_specs()
        )
        self._outputs = tuple(
            replace(s, description=descriptions.get(s.name, "")) for s in self.model.output_specs()
        )
        self.check_contract()
        recorded = [
            str(s.get("name")) for s in self.graph_io.get("inputs", []) if isinstance(s, dict)
        ]
        if recorded and sorted(recorded) != sorted(self.input_names()):
            log.warning(
                "%s: graph inputs %s differ from the recorded locore.graph_io inputs %s",
                self.path,
                list(self.input_names()),
                recorded,
            )
        log.debug("%s\nproviders: %s", self.describe(), self.model.providers)

    @property
    def providers(self) -> list[str]:
        """The providers the session actually uses, in priority order."""
        return self.model.providers

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.model.run(feeds)

    def close(self) -> None:
        self.model.close()
        self.__dict__.pop("session", None)


class OnnxModel:
    """Any ONNX model in ONNX Runtime, by named inputs and outputs (not only re-rankers).

    The small generic runner under the feature extractors (e.g. the DINOv2 one): the session
    (:func:`open_session`, the same loading as :class:`OrtBackend`), the file's custom metadata,
    the graph I/O as :class:`~locore.config.TensorSpec` (dynamic dims as strings) and
    :meth:`run`, which checks names, dtypes and fixed dims before running.
    """

    def __init__(
        self,
        path: str | Path,
        providers: str | Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.session = open_session(self.path, providers, threads)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self._inputs = tuple(_spec(n, {}) for n in self.session.get_inputs())
        self._outputs = tuple(_spec(n, {}) for n in self.session.get_outputs())

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self._inputs)

    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self._outputs)

    def check_feeds(self, feeds: Mapping[str, Any]) -> None:
        """Raise :class:`FeedError` unless ``feeds`` has every input with its dtype and dims."""
        names = self.input_names()
        if sorted(feeds) != sorted(names):
            raise FeedError(f"{self.path} takes inputs {list(names)}, got {list(feeds)}")
        for spec in self._inputs:
            array = feeds[spec.name]
            ok = (
                isinstance(array, np.ndarray)
                and array.dtype == np.dtype(spec.dtype)
                and array.ndim == len(spec.shape)
                and all(
                    isinstance(dim, str) or dim == size
                    for dim, size in zip(spec.shape, array.shape, strict=False)
                )
            )
            if not ok:
                got = (
                    f"{format_shape(array.shape)} {array.dtype}"
                    if isinstance(array, np.ndarray)
                    else type(array).__name__
                )
                raise FeedError(
                    f"{self.path}: input {spec.name} must be {format_shape(spec.shape)} "
                    f"{spec.dtype}, got {got}"
                )

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the model: ``feeds`` by input name -> the requested outputs (all by default)."""
        self.check_feeds(feeds)
        names = list(self.output_names() if outputs is None else outputs)
        values = self.session.run(names, dict(feeds))
        return dict(zip(names, values, strict=True))

    def close(self) -> None:
        self.__dict__.pop("session", None)

    def __enter__(self) -> OnnxModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
