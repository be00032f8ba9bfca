"""The one small interface every inference backend implements (in the spirit of Polygraphy runners).

A backend holds one loaded re-ranker. It names its inputs and outputs
(:class:`~locore.config.TensorSpec`, dynamic dims as strings), knows its float dtype, its
limits (``max_gallery``: a TensorRT engine's optimization profile; None = unlimited) and the
model's :class:`~locore.config.LocoreConfig`, and runs ``infer(feeds) -> outputs`` on numpy
arrays. The rest of the runtime (packing, sliding windows, the CLI) uses nothing else, so a new
backend is one new class registered in :mod:`locore.runtime.backends`.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from locore.config import (
    GALLERY_DESC,
    GALLERY_DIM,
    GALLERY_MASK,
    QUERY_DESC,
    QUERY_MASK,
    SCORES,
    ConfigError,
    LocoreConfig,
    TensorSpec,
)

log = logging.getLogger(__name__)

REQUIRED_INPUTS = (QUERY_DESC, QUERY_MASK, GALLERY_DESC, GALLERY_MASK)
REQUIRED_OUTPUTS = (SCORES,)
FLOAT_DTYPES = ("float32", "float16")


class FeedError(ValueError):
    """The arrays given to :meth:`Backend.infer` do not match the model's inputs."""


def format_shape(shape: tuple[int | str, ...] | tuple[int, ...]) -> str:
    """``[batch, num_gallery, 48, 128]``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


class Backend(abc.ABC):
    """A loaded re-ranker: named, typed inputs and outputs, and ``infer``.

    Subclasses set ``self.path``, ``self.config`` and ``self.graph_io`` (the ``locore.graph_io``
    metadata dict, ``{}`` if absent) and implement :meth:`input_specs`, :meth:`output_specs` and
    :meth:`_run`. Input specs carry concrete dtypes (``float32``/``float16``/``bool``/``int64``),
    not the contract's ``"float"`` placeholder.
    """

    kind: ClassVar[str] = "abstract"

    path: Path
    config: LocoreConfig
    graph_io: dict[str, Any]

    # ---- what subclasses implement --------------------------------------------------------
    @abc.abstractmethod
    def input_specs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs, in graph order."""

    @abc.abstractmethod
    def output_specs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs, in graph order."""

    @abc.abstractmethod
    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on feeds already checked by :meth:`check_feeds`."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends have nothing to free
        """Free the engine and its buffers."""

    # ---- derived --------------------------------------------------------------------------
    @property
    def max_gallery(self) -> int | None:
        """Most gallery images per call (``None`` = unlimited)."""
        return None

    @property
    def max_batch(self) -> int | None:
        """Most queries per call (``None`` = unlimited)."""
        return None

    @property
    def float_dtype(self) -> np.dtype:
        """The engine's float dtype (float32 or float16), read from the ``query_desc`` input."""
        dtype = self.input_spec(QUERY_DESC).dtype
        if dtype not in FLOAT_DTYPES:
            raise ConfigError(
                f"{self.path}: input {QUERY_DESC!r} must be float32 or float16, got {dtype}"
            )
        return np.dtype(dtype)

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

    def describe(self) -> str:
        """One line per input/output, for logs and ``--verbose``."""
        lines = [f"{self.kind} backend for {self.path} (config {self.config.name!r})"]
        for role, specs in (("input", self.input_specs()), ("output", self.output_specs())):
            for spec in specs:
                lines.append(f"  {role:6s} {spec.name:14s} {format_shape(spec.shape)} {spec.dtype}")
        return "\n".join(lines)

    # ---- checks -----------------------------------------------------------------------------
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

    def check_feeds(self, feeds: Mapping[str, Any]) -> None:
        """Raise :class:`FeedError` unless ``feeds`` has exactly the inputs, shapes and dtypes."""
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
                f"{names} (got {list(feeds)}). Build feeds with locore.runtime.Packer"
            )
        bound: dict[str, tuple[int, str]] = {}
        for spec in specs:
            array = feeds[spec.name]
            if not isinstance(array, np.ndarray):
                raise FeedError(
                    f"{spec.name} must be a numpy array {format_shape(spec.shape)} {spec.dtype}, "
                    f"got {type(array).__name__}"
                )
            ok = array.dtype == np.dtype(spec.dtype) and array.ndim == len(spec.shape)
            if ok:
                for dim, size in zip(spec.shape, array.shape, strict=True):
                    if isinstance(dim, int) and dim != size:
                        ok = False
            if not ok:
                raise FeedError(
                    f"{spec.name} must be {format_shape(spec.shape)} {spec.dtype}, got "
                    f"{format_shape(array.shape)} {array.dtype}; {self._export_hint()}"
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
        limit = self.max_gallery
        if limit is not None and GALLERY_DIM in bound and bound[GALLERY_DIM][0] > limit:
            raise FeedError(
                f"{bound[GALLERY_DIM][0]} gallery images per call, but this engine takes at most "
                f"{limit}; use a window of at most {limit} or rebuild the engine with a larger "
                "optimization profile"
            )

    def _export_hint(self) -> str:
        cfg = self.config
        return (
            f"this engine was exported for {cfg.num_desc} descriptors of dimension "
            f"{cfg.desc_dim} per image (config {cfg.name!r}) in {self.float_dtype.name}"
        )

    # ---- running ------------------------------------------------------------------------------
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model: ``feeds`` keyed by input name -> outputs keyed by output name.

        ``scores``: [B, G] float32, one logit per gallery image.
        """
        self.check_feeds(feeds)
        return self._run(feeds)

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
