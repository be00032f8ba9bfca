"""Runners and the re-ranker backend, in the manner of Polygraphy's loaders and runners.

Two layers:

- A **loader** opens an engine: ``open_session`` (ONNX Runtime), ``pluginref_session`` (the
  plugin flavor in ONNX Runtime through the CPU library), later a TensorRT engine deserializer or
  the C++ runtime. Loaders live beside their runner, one module per engine kind.
- A :class:`Runner` runs any loaded model, whatever it computes: named, typed inputs and outputs
  (:class:`~locore.config.TensorSpec` with concrete dtypes, dynamic dims as strings), the file's
  ``metadata``, optional ``max_shapes`` (a TensorRT optimization profile's limits), the ONE strict
  :meth:`Runner.check_feeds` and ``infer(feeds) -> outputs`` on numpy arrays. An engine kind
  implements only :meth:`~Runner.input_specs`, :meth:`~Runner.output_specs` and
  :meth:`~Runner._run` (and :meth:`~Runner.close` when it holds memory). The DINOv2 feature
  extractor uses a runner directly.

**Design choice: the re-ranker** :class:`Backend` **wraps any runner.** It is itself a
:class:`Runner` (same ``infer``/``check_feeds``, so the check runs once, with re-ranker hints in
its messages) that adds what a re-ranker needs: the model's
:class:`~locore.config.LocoreConfig`, the recorded :class:`~locore.config.GraphIO`, the
contract check, ``float_dtype`` and ``max_gallery``/``max_batch`` (read from the runner's
``max_shapes``). So the ONNX Runtime, pluginref, TensorRT and C++ kinds each bring a loader and a
runner, never a second re-ranker class; ``create_backend`` (in :mod:`locore.runtime.backends`)
loads the runner of the chosen kind and wraps it. Composition was preferred over a mixin that the
factory would combine with each runner class: one concrete class, no dynamic types, and a runner
stays usable (and testable) on its own.
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from locore.closing import Closing
from locore.config import (
    BATCH_DIM,
    GALLERY_DESC,
    GALLERY_DIM,
    GALLERY_MASK,
    GALLERY_SCALE,
    QUERY_DESC,
    QUERY_MASK,
    QUERY_SCALE,
    SCORES,
    ConfigError,
    GraphIO,
    LocoreConfig,
    TensorSpec,
)
from locore.errors import UsageError
from locore.runtime.metadata import parse_graph_io, parse_model_metadata

log = logging.getLogger(__name__)

REQUIRED_INPUTS = (QUERY_DESC, QUERY_MASK, GALLERY_DESC, GALLERY_MASK)
REQUIRED_OUTPUTS = (SCORES,)
FLOAT_DTYPES = ("float32", "float16")


class FeedError(ValueError):
    """The arrays given to :meth:`Runner.infer` do not match the model's inputs."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_threads(threads: int | None, what: str = "threads") -> int | None:
    """``threads`` checked: None (the runtime's default: every core) or an integer in
    ``[1, available_cores()]``. More threads than cores only slows a run down (2,000 threads on
    2 cores turned a 1 s run into minutes), so it is refused with :class:`UsageError`."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int | np.integer):
        raise UsageError(f"{what} must be an integer or None, got {threads!r}")
    cores = available_cores()
    if not 1 <= threads <= cores:
        raise UsageError(
            f"{what} must be between 1 and {cores} (the CPU cores available to this process), "
            f"got {threads}; leave it unset to use every core"
        )
    return int(threads)


def format_shape(shape: tuple[int | str, ...] | tuple[int, ...]) -> str:
    """``[batch, num_gallery, 48, 128]``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


class Runner(Closing, abc.ABC):
    """One loaded model of any kind: named, typed inputs and outputs, and ``infer``.

    Subclasses set ``self.path`` (the model file) and ``self.metadata`` (the file's custom
    metadata, ``{}`` if none) and implement :meth:`input_specs`, :meth:`output_specs` and
    :meth:`_run`; one that holds an engine or buffers frees them in ``close()`` (``with runner:``
    calls it). Specs carry concrete dtypes (``float32``/``float16``/``bool``/``int64``...),
    never the contract's ``"float"`` placeholder. ``kind`` names the engine kind
    (``"onnxruntime"``, ``"pluginref"``...); an instance may override the class default.
    """

    kind: str = "runner"
    path: Path
    metadata: dict[str, str]

    # ---- what subclasses implement --------------------------------------------------------
    @abc.abstractmethod
    def input_specs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs, in graph order."""

    @abc.abstractmethod
    def output_specs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs, in graph order."""

    @abc.abstractmethod
    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on feeds already checked by :meth:`check_feeds`; every output."""

    @property
    def max_shapes(self) -> Mapping[str, tuple[int, ...]] | None:
        """The largest shape each input accepts, by input name (``None``: unlimited).

        A TensorRT engine reports its optimization profile's max shapes here; ONNX Runtime has
        no limit. :meth:`check_feeds` refuses feeds whose dynamic dims exceed them.
        """
        return None

    def last_timings(self) -> dict[str, float] | None:
        """Times of the last :meth:`infer`, ``{"h2d_ms", "compute_ms", "d2h_ms"}``, for a
        runner that copies between host and device (the TensorRT runner measures them with CUDA
        events); ``None`` when there are no transfers to report (ONNX Runtime on the CPU).
        ``locore profile`` prints them when present."""
        return None

    # ---- derived --------------------------------------------------------------------------
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.input_specs())

    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.output_specs())

    def has_input(self, name: str) -> bool:
        return name in self.input_names()

    def input_spec(self, name: str) -> TensorSpec:
        for spec in self.input_specs():
            if spec.name == name:
                return spec
        raise KeyError(f"{self.path} has no input {name!r}; inputs are {list(self.input_names())}")

    def output_spec(self, name: str) -> TensorSpec:
        for spec in self.output_specs():
            if spec.name == name:
                return spec
        raise KeyError(
            f"{self.path} has no output {name!r}; outputs are {list(self.output_names())}"
        )

    def dim_limits(self) -> dict[str, int]:
        """The most each named dynamic dim may be, from :attr:`max_shapes` (``{}``: unlimited)."""
        limits: dict[str, int] = {}
        shapes = self.max_shapes or {}
        for spec in self.input_specs():
            top = shapes.get(spec.name)
            if top is None:
                continue
            for dim, size in zip(spec.shape, top, strict=False):
                if isinstance(dim, str):
                    limits[dim] = min(limits.get(dim, size), size)
        return limits

    def describe(self) -> str:
        """One line per input/output, for logs and ``--verbose``."""
        lines = [self._title()]
        for role, specs in (("input", self.input_specs()), ("output", self.output_specs())):
            for spec in specs:
                lines.append(f"  {role:6s} {spec.name:14s} {format_shape(spec.shape)} {spec.dtype}")
        return "\n".join(lines)

    def _title(self) -> str:
        return f"{self.kind} runner for {self.path}"

    # ---- the one feed check -----------------------------------------------------------------
    def check_feeds(self, feeds: Mapping[str, Any]) -> None:
        """Raise :class:`FeedError` unless ``feeds`` has exactly the inputs, shapes and dtypes.

        Checked: the exact input names (none missing, none unknown), numpy arrays, dtypes,
        ranks, fixed dims, one size per named dynamic dim across all inputs, and the
        :attr:`max_shapes` limits.
        """
        specs = self.input_specs()
        names = [s.name for s in specs]
        missing = [n for n in names if n not in feeds]
        unknown = [n for n in feeds if n not in names]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unknown:
                parts.append(f"unknown {unknown}")
            raise FeedError(
                f"feeds do not match the model's inputs: {', '.join(parts)}; this model takes "
                f"{names} (got {list(feeds)}). {self._names_hint()}"
            )
        bound: dict[str, tuple[int, str]] = {}
        for spec in specs:
            array = feeds[spec.name]
            if not isinstance(array, np.ndarray):
                raise FeedError(
                    f"input {spec.name} must be a numpy array {format_shape(spec.shape)} "
                    f"{spec.dtype}, got {type(array).__name__}"
                )
            ok = array.dtype == np.dtype(spec.dtype) and array.ndim == len(spec.shape)
            if ok:
                for dim, size in zip(spec.shape, array.shape, strict=True):
                    if isinstance(dim, int) and dim != size:
                        ok = False
            if not ok:
                raise FeedError(
                    f"input {spec.name} must be {format_shape(spec.shape)} {spec.dtype}, got "
                    f"{format_shape(array.shape)} {array.dtype}; {self._shape_hint()}"
                )
            for dim, size in zip(spec.shape, array.shape, strict=True):
                if isinstance(dim, str):
                    if dim in bound and bound[dim][0] != size:
                        first_size, first_name = bound[dim]
                        raise FeedError(
                            f"inputs disagree on dynamic dim {dim!r}: {first_name} has "
                            f"{first_size}, {spec.name} has {size} "
                            f"({format_shape(array.shape)}); every input must use the same {dim}"
                        )
                    bound.setdefault(dim, (size, spec.name))
        for dim, limit in self.dim_limits().items():
            if dim in bound and bound[dim][0] > limit:
                raise FeedError(self._limit_message(dim, bound[dim][0], limit))

    def _names_hint(self) -> str:
        """What to do about wrong feed names (a subclass knows better)."""
        return f"Feed exactly the inputs of {self.path}"

    def _shape_hint(self) -> str:
        """What the model expects, appended to a shape or dtype error."""
        inputs = ", ".join(
            f"{s.name} {format_shape(s.shape)} {s.dtype}" for s in self.input_specs()
        )
        return f"{self.path} takes {inputs}"

    def _limit_message(self, dim: str, size: int, limit: int) -> str:
        return (
            f"dynamic dim {dim!r} is {size} in this call, but this engine takes at most {limit}; "
            "feed less, or rebuild the engine with a larger optimization profile"
        )

    # ---- running ------------------------------------------------------------------------------
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model: ``feeds`` keyed by input name -> every output keyed by output name."""
        self.check_feeds(feeds)
        return self._run(feeds)


class Backend(Runner):
    """A loaded LOCORE re-ranker: any :class:`Runner` plus the model's config and contract.

    Args:
        runner: the loaded model (any engine kind); the backend owns it and closes it.
        config: the model's config when the file has no ``locore.config`` metadata; when given,
            it wins over the metadata (the recorded graph I/O is still read).
        probe: run the model once at load on a 1-query, 1-image input built from the config
            (highest scale id, every descriptor valid), so that metadata that does not match
            the graph (e.g. ``num_scales=100`` for a graph with an 8-row scale table) or
            non-finite weights fail here, with both named, not in the middle of a run.

    Raises :class:`~locore.config.ConfigError` when the model does not honour the graph I/O
    contract of :func:`locore.config.graph_io` for its config, when its recorded
    ``locore.graph_io`` disagrees with the graph's inputs, or when the probe fails. ``infer``
    returns ``scores: [B, G] float32``, one logit per gallery image.
    """

    config: LocoreConfig
    graph_io: GraphIO | None

    def __init__(
        self, runner: Runner, config: LocoreConfig | None = None, *, probe: bool = True
    ) -> None:
        self.runner = runner
        self.kind = runner.kind
        self.path = runner.path
        self.metadata = runner.metadata
        source = str(self.path)
        if config is None:
            self.config, self.graph_io = parse_model_metadata(self.metadata, source)
        else:
            self.config, self.graph_io = config, parse_graph_io(self.metadata, source)
        recorded = self.graph_io or GraphIO((), ())
        descriptions = {s.name: s.description for s in (*recorded.inputs, *recorded.outputs)}
        self._inputs = tuple(
            replace(s, description=descriptions.get(s.name, s.description))
            for s in runner.input_specs()
        )
        self._outputs = tuple(
            replace(s, description=descriptions.get(s.name, s.description))
            for s in runner.output_specs()
        )
        self.check_contract()
        if self.graph_io is not None:
            self.check_recorded_graph_io(self.graph_io)
        if probe:
            self.probe()
        log.debug("%s", self.describe())

    # ---- the runner underneath --------------------------------------------------------------
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner._run(feeds)

    def close(self) -> None:
        self.runner.close()

    @property
    def max_shapes(self) -> Mapping[str, tuple[int, ...]] | None:
        return self.runner.max_shapes

    # ---- re-ranker view ----------------------------------------------------------------------
    @property
    def max_gallery(self) -> int | None:
        """Most gallery images per call (``None`` = unlimited)."""
        return self.dim_limits().get(GALLERY_DIM)

    @property
    def max_batch(self) -> int | None:
        """Most queries per call (``None`` = unlimited)."""
        return self.dim_limits().get(BATCH_DIM)

    @property
    def float_dtype(self) -> np.dtype:
        """The engine's float dtype (float32 or float16), read from the ``query_desc`` input."""
        dtype = self.input_spec(QUERY_DESC).dtype
        if dtype not in FLOAT_DTYPES:
            raise ConfigError(
                f"{self.path}: input {QUERY_DESC!r} must be float32 or float16, got {dtype}"
            )
        return np.dtype(dtype)

    def _title(self) -> str:
        return f"{self.kind} backend for {self.path} (config {self.config.name!r})"

    def check_contract(self) -> None:
        """Check that the model honours the graph I/O contract of ``locore.config.graph_io``."""
        inputs, outputs = self.input_names(), self.output_names()
        missing = [n for n in REQUIRED_INPUTS if n not in inputs]
        missing += [n for n in REQUIRED_OUTPUTS if n not in outputs]
        if missing:
            raise ConfigError(
                f"{self.path} is not a LOCORE re-ranker: it lacks {missing} (inputs "
                f"{list(inputs)}, outputs {list(outputs)}); expected the names of "
                "locore.config.graph_io. Export the model with `locore export`"
            )
        self.float_dtype  # noqa: B018 - raises if query_desc is not a float input
        cfg = self.config
        for name, axis, value, what in (
            (QUERY_DESC, -1, cfg.desc_dim, "desc_dim"),
            (QUERY_DESC, -2, cfg.num_desc, "num_desc"),
            (GALLERY_DESC, -1, cfg.desc_dim, "desc_dim"),
            (GALLERY_DESC, -2, cfg.num_desc, "num_desc"),
        ):
            dim = self.input_spec(name).shape[axis]
            if isinstance(dim, int) and dim != value:
                raise ConfigError(
                    f"{self.path}: input {name} has {what} {dim} but the model's locore.config "
                    f"says {what}={value}; the metadata does not match the graph. Re-export it"
                )

    def check_recorded_graph_io(self, recorded: GraphIO) -> None:
        """Raise :class:`ConfigError` unless the recorded ``locore.graph_io`` inputs are the
        graph's inputs: the same names, ranks, fixed dims and dtypes (``"float"`` stands for
        float32 or float16)."""
        graph = {s.name: s for s in self.input_specs()}
        names = sorted(s.name for s in recorded.inputs)
        if names != sorted(graph):
            raise ConfigError(
                f"{self.path}: its metadata locore.graph_io lists inputs {names}, but the graph "
                f"has {sorted(graph)}; the metadata does not match the graph. Re-export the model"
            )
        for want in recorded.inputs:
            got = graph[want.name]
            dtype_ok = (
                got.dtype in FLOAT_DTYPES if want.dtype == "float" else got.dtype == want.dtype
            )
            shape_ok = len(want.shape) == len(got.shape) and all(
                not (isinstance(a, int) and isinstance(b, int)) or a == b
                for a, b in zip(want.shape, got.shape, strict=False)
            )
            if not (dtype_ok and shape_ok):
                raise ConfigError(
                    f"{self.path}: input {want.name} is {format_shape(got.shape)} {got.dtype} in "
                    f"the graph, but its metadata locore.graph_io says {format_shape(want.shape)} "
                    f"{want.dtype}; the metadata does not match the graph. Re-export the model"
                )

    def probe_feeds(self, scale: int | None = None) -> dict[str, np.ndarray]:
        """Feeds of one query and one gallery image as the config describes them: unit-norm
        descriptors, every descriptor valid, scale id ``scale`` (default: the highest,
        ``num_scales - 1``), unit-norm global vectors."""
        cfg = self.config
        scale = cfg.num_scales - 1 if scale is None else scale
        feeds: dict[str, np.ndarray] = {}
        for spec in self.input_specs():
            shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
            dtype = np.dtype(spec.dtype)
            if spec.name in (QUERY_SCALE, GALLERY_SCALE):
                feeds[spec.name] = np.full(shape, scale, dtype=dtype)
            elif dtype == np.bool_:
                feeds[spec.name] = np.ones(shape, dtype=bool)
            elif dtype.kind == "f":
                values = np.cos(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape)
                if values.ndim:
                    norm = np.linalg.norm(values, axis=-1, keepdims=True)
                    values = values / np.maximum(norm, 1e-6)
                feeds[spec.name] = values.astype(dtype)
            else:
                feeds[spec.name] = np.zeros(shape, dtype=dtype)
        return feeds

    def probe(self) -> None:
        """Run the model once on :meth:`probe_feeds`; :class:`ConfigError` (naming the
        metadata's value and the engine's complaint) unless it returns finite ``scores`` [1, 1].
        """
        cfg = self.config
        with_scales = self.has_input(QUERY_SCALE) or self.has_input(GALLERY_SCALE)
        try:
            scores = self.runner._run(self.probe_feeds())[SCORES]
        except Exception as exc:
            cause = exc.__cause__ or exc  # the engine's own exception, not the runner's wrap
            problem = f"{type(cause).__name__}: {cause}"
            if with_scales and cfg.num_scales > 1:
                try:
                    self.runner._run(self.probe_feeds(scale=0))
                except Exception:
                    pass
                else:
                    raise ConfigError(
                        f"{self.path}: its metadata locore.config says num_scales="
                        f"{cfg.num_scales}, but the graph fails on scale id {cfg.num_scales - 1} "
                        f"(it runs with scale id 0): {problem}. The metadata does not match the "
                        "graph; re-export the model"
                    ) from exc
            raise ConfigError(
                f"{self.path}: the model fails on a probe input shaped by its metadata "
                f"(num_desc={cfg.num_desc}, desc_dim={cfg.desc_dim}, num_scales="
                f"{cfg.num_scales}): {problem}. The metadata does not match the graph; "
                "re-export the model"
            ) from exc
        scores = np.asarray(scores)
        if scores.shape != (1, 1) or not np.isfinite(scores).all():
            raise ConfigError(
                f"{self.path}: on a probe input (1 query, 1 gallery image) the model returned "
                f"scores {format_shape(scores.shape)} with values {scores.ravel()[:4].tolist()}; "
                "expected [1, 1] finite. Non-finite weights? Re-export from a valid checkpoint"
            )

    # ---- re-ranker wording of the feed errors ------------------------------------------------
    def _names_hint(self) -> str:
        return "Build feeds with locore.runtime.Packer"

    def _shape_hint(self) -> str:
        cfg = self.config
        return (
            f"this engine was exported for {cfg.num_desc} descriptors of dimension "
            f"{cfg.desc_dim} per image (config {cfg.name!r}) in {self.float_dtype.name}"
        )

    def _limit_message(self, dim: str, size: int, limit: int) -> str:
        if dim == GALLERY_DIM:
            return (
                f"{size} gallery images per call, but this engine takes at most {limit}; use a "
                f"window of at most {limit} or rebuild the engine with a larger optimization "
                "profile"
            )
        if dim == BATCH_DIM:
            return (
                f"{size} queries per call, but this engine takes at most {limit}; score fewer "
                "queries per call or rebuild the engine with a larger optimization profile"
            )
        return super()._limit_message(dim, size, limit)
