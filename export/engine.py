"""Build a TensorRT engine from an exported ONNX file through TensorRT's ONNX parser.

What :func:`build_serialized_engine` does, in the order of NVIDIA's documented Python API
(``tensorrt`` 10.3+ and 11):

1. ``trt.get_plugin_registry().load_library(plugin)``: the SelectiveScan plugin library is
   registered **before** parsing, so the parser's fallback plugin importer finds the creator by
   the node's op_type, ``plugin_version`` and ``plugin_namespace``.
2. ``builder.create_network(flags)`` with ``STRONGLY_TYPED`` (precision from the ONNX file),
   ``trt.OnnxParser(network, logger).parse_from_file(onnx)`` (external data beside the file).
3. ``builder.create_builder_config()``: memory pools, optimization level, hardware and version
   compatibility (with the plugin serialized into the engine: ``plugins_to_serialize``), the
   timing cache, one optimization profile per :class:`~locore.runtime.engines.ShapeProfile`.
4. ``builder.build_serialized_network(network, config)`` -> the engine's bytes.

TensorRT 10 vs 11, each difference named where it is handled (``TRT10``/``TRT11`` comments):

- TRT11: networks are always strongly typed; ``BuilderFlag.FP16``/``INT8`` and the INT8
  calibrators were removed, so ``--fp16``/``--int8`` are refused (precision comes from the ONNX
  file, :mod:`locore.calibration`). TRT10: they exist and apply to weakly typed networks only.
- TRT10: ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` must be passed to get a strongly typed
  network; TRT11 has no weakly typed networks (the flag is passed only where it still exists).
- TRT10 deprecated ``EXPLICIT_BATCH`` (always explicit); it is never passed.

No TensorRT import at module level: the module imports anywhere; the functions raise
:class:`~locore.deps.MissingDependencyError` naming what to install.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from locore.runtime.engines import (
    BuildFlags,
    EngineKey,
    MachineFacts,
    PluginLibrary,
    ShapeProfile,
    engine_key,
    probe_machine,
    read_onnx_metadata,
    write_engine,
)

log = logging.getLogger(__name__)

__all__ = [
    "EngineBuildError",
    "build_engine_file",
    "build_serialized_engine",
    "load_plugin_library",
    "tensorrt_major",
]

# trtexec's --memPoolSize names -> trt.MemoryPoolType members
_POOLS = {
    "workspace": "WORKSPACE",
    "dlaSRAM": "DLA_MANAGED_SRAM",
    "dlaLocalDRAM": "DLA_LOCAL_DRAM",
    "dlaGlobalDRAM": "DLA_GLOBAL_DRAM",
    "tacticSharedMem": "TACTIC_SHARED_MEMORY",
}


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX file or build the engine."""


def _tensorrt() -> Any:
    from locore.deps import require

    return require("tensorrt", "building TensorRT engines (`locore build`)")


def tensorrt_major(trt: Any | None = None) -> int:
    """The major version of the installed TensorRT (10 or 11)."""
    trt = trt or _tensorrt()
    return int(str(trt.__version__).split(".")[0])


class _Logger:
    """A ``trt.ILogger`` that forwards to Python logging (created lazily: it subclasses trt's)."""

    @staticmethod
    def create(trt: Any, verbose: bool) -> Any:
        # severities compared by value: INTERNAL_ERROR 0 < ERROR 1 < WARNING 2 < INFO 3 < VERBOSE 4
        levels = {
            int(trt.ILogger.INTERNAL_ERROR): logging.CRITICAL,
            int(trt.ILogger.ERROR): logging.ERROR,
            int(trt.ILogger.WARNING): logging.WARNING,
            int(trt.ILogger.INFO): logging.INFO,
            int(trt.ILogger.VERBOSE): logging.DEBUG,
        }
        floor = int(trt.ILogger.VERBOSE if verbose else trt.ILogger.WARNING)
        error = int(trt.ILogger.ERROR)

        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity: Any, msg: str) -> None:
                value = int(severity)
                if value <= error:
                    self.errors.append(msg)
                if value <= floor:
                    log.log(levels.get(value, logging.INFO), "TensorRT: %s", msg)

        return Logger()


def load_plugin_library(trt: Any, path: str | os.PathLike[str]) -> Any:
    """Register the plugin library's creators (``getCreators``) with TensorRT's registry;
    returns the handle. Must run before the ONNX parser sees a SelectiveScan node."""
    registry = trt.get_plugin_registry()
    try:
        return registry.load_library(str(path))
    except Exception as exc:  # TensorRT raises RuntimeError/TypeError, varying by version
        raise EngineBuildError(
            f"TensorRT could not load the plugin library {path} ({exc}); was it built against "
            f"this TensorRT ({trt.__version__})? Rebuild it with `locore build-plugins "
            "--tensorrt-root <TensorRT folder>`"
        ) from exc


def build_serialized_engine(
    onnx: str | os.PathLike[str],
    profiles: Sequence[ShapeProfile],
    flags: BuildFlags,
    plugin: str | os.PathLike[str] | None = None,
    *,
    static_plugins: Sequence[str | os.PathLike[str]] = (),
) -> bytes:
    """The serialized engine of ``onnx`` (see the module docstring); raises
    :class:`EngineBuildError` with TensorRT's own messages when parsing or building fails."""
    trt = _tensorrt()
    major = tensorrt_major(trt)
    flags.check(major)
    logger = _Logger.create(trt, flags.verbose)
    handles = []
    for lib in [*([plugin] if plugin is not None else []), *static_plugins]:
        handles.append(load_plugin_library(trt, lib))

    builder = trt.Builder(logger)
    creation = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flags.strongly_typed and strongly is not None:
        creation |= 1 << int(strongly)  # TRT10: opt in; TRT11: kept where the enum still has it
    elif not flags.strongly_typed and major >= 11:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} builds strongly typed networks only; drop "
            "--no-stronglyTyped"
        )
    network = builder.create_network(creation)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        hint = (
            "; a SelectiveScan node needs the plugin library (--dynamicPlugins)"
            if plugin is None and any("SelectiveScan" in e for e in errors)
            else ""
        )
        raise EngineBuildError(
            f"TensorRT's ONNX parser refused {onnx}: " + " | ".join(errors or logger.errors) + hint
        )

    config = builder.create_builder_config()
    for pool, size in flags.mem_pool_size.items():
        config.set_memory_pool_limit(getattr(trt.MemoryPoolType, _POOLS[pool]), size)
    if flags.builder_optimization_level is not None:
        config.builder_optimization_level = flags.builder_optimization_level
    if flags.hardware_compatibility_level == "ampere+":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if flags.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if plugin is not None:  # a version-compatible engine carries its plugin library
            config.plugins_to_serialize = [str(plugin)]
    if flags.fp16:  # TRT10 only (refused above on TRT11): weakly typed FP16
        config.set_flag(trt.BuilderFlag.FP16)
    if flags.int8:  # TRT10 only: INT8 from the Q/DQ scales in the ONNX file, no calibrator
        config.set_flag(trt.BuilderFlag.INT8)
    cache = None
    if flags.timing_cache is not None:
        data = Path(flags.timing_cache).read_bytes() if Path(flags.timing_cache).is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    for profile in profiles:
        optimization = builder.create_optimization_profile()
        for name in profile.min:
            optimization.set_shape(name, profile.min[name], profile.opt[name], profile.max[name])
        config.add_optimization_profile(optimization)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT could not build an engine from {onnx}: "
            + (" | ".join(logger.errors) or "no error message (run with --verbose)")
        )
    if cache is not None and flags.timing_cache is not None:
        from locore.fileio import atomic_write_bytes

        atomic_write_bytes(flags.timing_cache, bytes(cache.serialize()))
    del handles  # the registry keeps the creators; the handles only need to outlive the build
    return bytes(serialized)


def build_engine_file(
    onnx: str | os.PathLike[str],
    engine: str | os.PathLike[str],
    profiles: Sequence[ShapeProfile],
    flags: BuildFlags,
    plugin: str | os.PathLike[str] | None = None,
    *,
    machine: MachineFacts | None = None,
) -> tuple[EngineKey, MachineFacts]:
    """Build ``onnx`` into ``engine`` with its sidecar (both written atomically)."""
    machine = machine or probe_machine()
    library = PluginLibrary.at(plugin) if plugin is not None else None
    metadata = read_onnx_metadata(onnx)
    key = engine_key(onnx, profiles, flags, library, metadata)
    data = build_serialized_engine(onnx, profiles, flags, plugin if key.plugin else None)
    write_engine(engine, data, key, machine, onnx=onnx, metadata=metadata)
    return key, machine
