"""TensorRT engines without TensorRT: profiles, build flags, the trtexec command, sidecars, cache.

Everything here is plain Python (no torch, no tensorrt import), so it is tested on any machine;
:mod:`locore.export.engine` builds the engine itself through ``trt.OnnxParser`` and
:mod:`locore.runtime.backends.tensorrt` runs it. An engine is described by two things:

- its **key** (:class:`EngineKey`): what it was built from and how: the ONNX file's sha256, the
  model config, the precision and flavor recorded in the ONNX metadata, the optimization
  profiles, the build flags that change the engine, and the plugin library's sha256, versions
  and namespace. All computable here.
- the **machine** (:class:`MachineFacts`): TensorRT version, GPU name and compute capability,
  read by :func:`probe_machine` (which needs TensorRT and cuda-python; without them it raises
  :class:`~locore.deps.MissingDependencyError` naming what to install).

An engine file ``E.plan`` is written atomically together with its sidecar ``E.plan.json``
(:func:`write_engine`); :func:`check_engine` refuses an engine whose sidecar differs from the
wanted key or machine, with one line per difference. :class:`EngineCache` keys engines by both,
so ``locore rerank --backend tensorrt --model M.onnx`` builds once and reuses.

Flag names and meanings are trtexec's (``--minShapes=query_desc:1x48x128,...``);
:func:`trtexec_command` prints the command that reproduces a build with NVIDIA's tool.

TensorRT 10 vs 11 (named where it matters, see :data:`TRT11_REMOVED_FLAGS`): TensorRT 11 builds
strongly typed networks only (``--fp16``/``--int8``, the weak-typing builder flags and
calibrators are gone), so the precision is the ONNX file's (``locore calibrate``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locore.config import (
    BATCH_DIM,
    GALLERY_DIM,
    META_CONFIG,
    META_FLAVOR,
    META_PRECISION,
    ConfigError,
    GraphIO,
)
from locore.deps import MissingDependencyError
from locore.errors import UsageError
from locore.runtime.metadata import parse_model_metadata

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_WINDOW",
    "ENGINE_FORMAT",
    "EngineCache",
    "EngineKey",
    "EngineMismatchError",
    "BuildFlags",
    "MachineFacts",
    "META_PRECISION",
    "PLUGIN_ENV",
    "PluginLibrary",
    "ShapeProfile",
    "Sidecar",
    "check_engine",
    "default_profile",
    "engine_key",
    "engine_mismatches",
    "find_plugin_library",
    "format_shapes",
    "parse_mem_pool_size",
    "parse_shapes",
    "probe_machine",
    "read_onnx_metadata",
    "read_sidecar",
    "resolve_profile",
    "sha256_file",
    "sidecar_path",
    "trtexec_command",
    "write_engine",
]

ENGINE_FORMAT = 1
"""Version of the sidecar's layout; a sidecar of another format is refused (rebuild)."""
PLUGIN_ENV = "LOCORE_TRT_PLUGIN"
"""Environment variable: path of the TensorRT plugin library (liblocore_trt_plugins.so)."""
PLUGIN_STEM = "locore_trt_plugins"
"""CMake target and library stem of the TensorRT plugin library."""
CACHE_ENV = "LOCORE_ENGINE_CACHE"
"""Environment variable: the engine cache folder (default ``~/.cache/locore-edge/engines``)."""
DEFAULT_WINDOW = 100
"""Largest gallery of the default profile: LOCORE's window (``RerankParams.window``)."""
MEM_POOLS = ("workspace", "dlaSRAM", "dlaLocalDRAM", "dlaGlobalDRAM", "tacticSharedMem")
"""trtexec's ``--memPoolSize`` pool names."""
HARDWARE_COMPATIBILITY = ("none", "ampere+")
"""trtexec's ``--hardwareCompatibilityLevel`` modes."""
TRT11_REMOVED_FLAGS = ("--fp16", "--int8")
"""Weak-typing precision flags: TensorRT 10 only. TensorRT 11 removed ``BuilderFlag.FP16``/
``INT8`` and the INT8 calibrators: every network is strongly typed."""


class EngineMismatchError(RuntimeError):
    """An engine file does not match the ONNX model, the build settings or this machine."""


# ---- shapes and profiles ------------------------------------------------------------------------
Shape = tuple[int, ...]
_SHAPE_ITEM = re.compile(r"^(?:'(?P<quoted>[^']+)'|(?P<name>[^:']+)):(?P<dims>\d+(?:x\d+)*)$")


def parse_shapes(text: str, flag: str = "--shapes") -> dict[str, Shape]:
    """trtexec's shape spec ``name:1x48x128,other:1x5x48`` -> ``{name: (1, 48, 128), ...}``.

    Names may be single-quoted (``'in:0':1x3``), as in trtexec. A malformed spec or a name given
    twice raises :class:`UsageError` naming ``flag``.
    """
    shapes: dict[str, Shape] = {}
    items = [t.strip() for t in text.split(",")] if text.strip() else []
    if not items:
        raise UsageError(
            f"{flag} is empty; expected name:AxBxC[,name:...], e.g. query_desc:1x48x128"
        )
    for item in items:
        match = _SHAPE_ITEM.match(item)
        if match is None:
            raise UsageError(
                f"{flag}: {item!r} is not name:AxBxC (dims are non-negative integers joined by "
                "'x'), e.g. query_desc:1x48x128"
            )
        name = match["quoted"] or match["name"]
        if name in shapes:
            raise UsageError(f"{flag} gives input {name!r} twice")
        shapes[name] = tuple(int(d) for d in match["dims"].split("x"))
    return shapes


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def format_shapes(shapes: Mapping[str, Sequence[int]]) -> str:
    """The inverse of :func:`parse_shapes` (names quoted when they hold ``:`` or ``,``)."""
    parts = []
    for name, shape in shapes.items():
        shown = f"'{name}'" if any(c in name for c in ":,") else name
        parts.append(f"{shown}:{_shape_text(shape)}")
    return ",".join(parts)


@dataclass(frozen=True)
class ShapeProfile:
    """One optimization profile: min/opt/max shape of every input, by name, in graph order."""

    min: dict[str, Shape]
    opt: dict[str, Shape]
    max: dict[str, Shape]

    def to_dict(self) -> dict[str, dict[str, list[int]]]:
        return {
            kind: {name: list(shape) for name, shape in getattr(self, kind).items()}
            for kind in ("min", "opt", "max")
        }

    @classmethod
    def from_dict(cls, data: Any) -> ShapeProfile:
        try:
            return cls(
                **{
                    kind: {str(n): tuple(int(d) for d in s) for n, s in data[kind].items()}
                    for kind in ("min", "opt", "max")
                }
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"invalid optimization profile {data!r}: {exc}") from exc


def default_profile(
    graph: GraphIO, *, window: int = DEFAULT_WINDOW, batch: int = 1
) -> ShapeProfile:
    """The profile of :func:`resolve_profile` without overrides: ``batch`` (B) queries, ``G``
    from 1 to ``window`` with ``opt = window``; fixed dims as in the graph."""
    return resolve_profile(graph, window=window, batch=batch)


def resolve_profile(
    graph: GraphIO,
    min_shapes: Mapping[str, Shape] | None = None,
    opt_shapes: Mapping[str, Shape] | None = None,
    max_shapes: Mapping[str, Shape] | None = None,
    *,
    window: int = DEFAULT_WINDOW,
    batch: int = 1,
) -> ShapeProfile:
    """The optimization profile of ``graph`` (the ONNX metadata's graph I/O).

    Defaults per input: ``batch`` -> ``batch`` in min/opt/max; ``num_gallery`` -> 1 (min),
    ``window`` (opt, max); fixed dims as recorded. ``--minShapes``/``--optShapes``/
    ``--maxShapes`` override single inputs (as in trtexec; the others keep their defaults).
    Raises :class:`UsageError` for an unknown input name, a wrong rank, a fixed dim that
    differs from the graph, a dynamic dim that differs between inputs, or min > opt > max.
    """
    if window < 1 or batch < 1:
        raise UsageError(f"window and batch must be >= 1, got window={window}, batch={batch}")
    names = [s.name for s in graph.inputs]
    given = {"--minShapes": min_shapes, "--optShapes": opt_shapes, "--maxShapes": max_shapes}
    for flag, shapes in given.items():
        unknown = sorted(set(shapes or {}) - set(names))
        if unknown:
            raise UsageError(f"{flag} names {unknown}, which are not inputs of the model {names}")
    defaults = {
        "min": {BATCH_DIM: batch, GALLERY_DIM: 1},
        "opt": {BATCH_DIM: batch, GALLERY_DIM: window},
        "max": {BATCH_DIM: batch, GALLERY_DIM: window},
    }
    out: dict[str, dict[str, Shape]] = {}
    for (kind, dims), (flag, shapes) in zip(defaults.items(), given.items(), strict=True):
        resolved: dict[str, Shape] = {}
        bound: dict[str, tuple[int, str]] = {}
        for spec in graph.inputs:
            override = (shapes or {}).get(spec.name)
            if override is None:
                resolved[spec.name] = tuple(
                    d if isinstance(d, int) else dims.get(d, 1) for d in spec.shape
                )
                continue
            if len(override) != len(spec.shape):
                raise UsageError(
                    f"{flag}: input {spec.name} has {len(spec.shape)} dims "
                    f"{list(spec.shape)}, got {_shape_text(override)}"
                )
            for axis, (dim, size) in enumerate(zip(spec.shape, override, strict=True)):
                if isinstance(dim, int) and dim != size:
                    raise UsageError(
                        f"{flag}: input {spec.name} dim {axis} is fixed at {dim} in this model, "
                        f"got {size} ({_shape_text(override)})"
                    )
                if isinstance(dim, str) and size < 1:
                    raise UsageError(f"{flag}: input {spec.name} dim {dim} must be >= 1, got 0")
            resolved[spec.name] = tuple(override)
        for spec in graph.inputs:  # one size per named dynamic dim in one profile shape
            for dim, size in zip(spec.shape, resolved[spec.name], strict=True):
                if isinstance(dim, str):
                    if dim in bound and bound[dim][0] != size:
                        raise UsageError(
                            f"{flag}: inputs disagree on {dim!r}: {bound[dim][1]} has "
                            f"{bound[dim][0]}, {spec.name} has {size}; give every input the "
                            "same size"
                        )
                    bound.setdefault(dim, (size, spec.name))
        out[kind] = resolved
    for name in names:
        lo, mid, hi = out["min"][name], out["opt"][name], out["max"][name]
        if not all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)):
            raise UsageError(
                f"input {name}: shapes must satisfy min <= opt <= max in every dim, got min "
                f"{_shape_text(lo)}, opt {_shape_text(mid)}, max {_shape_text(hi)}"
            )
    return ShapeProfile(out["min"], out["opt"], out["max"])


# ---- build flags --------------------------------------------------------------------------------
_SIZE = re.compile(r"^(?P<num>\d+(?:\.\d+)?)(?P<unit>[BKMG]?)$")
_UNITS = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "": 1 << 20}


def parse_mem_pool_size(text: str) -> dict[str, int]:
    """trtexec's ``--memPoolSize=workspace:1024,tacticSharedMem:64K`` -> bytes per pool.

    Units as trtexec: B, K, M, G (base 2); no suffix means MiB.
    """
    pools: dict[str, int] = {}
    for item in (t.strip() for t in text.split(",")):
        pool, _, size = item.partition(":")
        match = _SIZE.match(size.strip())
        if pool not in MEM_POOLS or match is None:
            raise UsageError(
                f"--memPoolSize: {item!r} is not pool:size with pool one of {list(MEM_POOLS)} "
                "and size a number with an optional unit B, K, M or G (MiB if none), e.g. "
                "workspace:1024"
            )
        pools[pool] = int(float(match["num"]) * _UNITS[match["unit"]])
    return pools


def _pool_text(size: int) -> str:
    for unit in ("G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size}B"


@dataclass(frozen=True)
class BuildFlags:
    """The trtexec build flags ``locore build`` accepts (meanings as trtexec's).

    ``strongly_typed`` (default on): precision from the ONNX file. ``fp16``/``int8``: TensorRT
    10 weakly typed builds only (see :meth:`check`). ``timing_cache``, ``verbose`` and
    ``plugins`` do not change the engine and are not part of its key.
    """

    mem_pool_size: dict[str, int] = field(default_factory=dict)
    builder_optimization_level: int | None = None
    hardware_compatibility_level: str = "none"
    version_compatible: bool = False
    strongly_typed: bool = True
    fp16: bool = False
    int8: bool = False
    timing_cache: Path | None = None
    verbose: bool = False

    def check(self, trt_major: int | None = None) -> None:
        """Raise :class:`UsageError` for flags that do not go together, or that TensorRT
        ``trt_major`` (10 or 11; ``None``: unknown, checked later) refuses."""
        if self.builder_optimization_level is not None and not (
            0 <= self.builder_optimization_level <= 5
        ):
            raise UsageError(
                "--builderOptimizationLevel must be an integer from 0 to 5 (TensorRT's default "
                f"is 3), got {self.builder_optimization_level}"
            )
        if self.hardware_compatibility_level not in HARDWARE_COMPATIBILITY:
            raise UsageError(
                f"--hardwareCompatibilityLevel must be one of {list(HARDWARE_COMPATIBILITY)}, "
                f"got {self.hardware_compatibility_level!r}"
            )
        weak = [f for f, on in (("--fp16", self.fp16), ("--int8", self.int8)) if on]
        if weak and trt_major is not None and trt_major >= 11:
            raise UsageError(
                f"{' and '.join(weak)}: TensorRT {trt_major} removed the weak-typing precision "
                "flags (every network is strongly typed); the precision comes from the ONNX "
                "file: make an FP16 or INT8 model with `locore calibrate --precision fp16|int8` "
                "and build it without these flags"
            )
        if weak and self.strongly_typed:
            raise UsageError(
                f"{' and '.join(weak)} need a weakly typed build: add --no-stronglyTyped "
                "(TensorRT 10 only), or better, build an ONNX file of that precision made by "
                "`locore calibrate` (strongly typed, the default)"
            )

    def key(self) -> dict[str, Any]:
        """The flags that change the engine, as JSON data (part of :class:`EngineKey`)."""
        return {
            "mem_pool_size": dict(sorted(self.mem_pool_size.items())),
            "builder_optimization_level": self.builder_optimization_level,
            "hardware_compatibility_level": self.hardware_compatibility_level,
            "version_compatible": self.version_compatible,
            "strongly_typed": self.strongly_typed,
            "fp16": self.fp16,
            "int8": self.int8,
        }


# ---- the plugin library -------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def plugin_library_filename() -> str:
    """``liblocore_trt_plugins.so`` (the platform's shared-library name)."""
    from locore.native.build import library_filename

    return library_filename(PLUGIN_STEM)


def _plugin_search_dirs() -> list[Path]:
    from locore.native.build import _search_dirs

    return _search_dirs()


def find_plugin_library(
    explicit: Sequence[str | os.PathLike[str]] = (),
    environ: Mapping[str, str] | None = None,
    search_dirs: Sequence[Path] | None = None,
) -> Path | None:
    """The TensorRT plugin library: the first of ``explicit`` (``--dynamicPlugins``), else
    ``$LOCORE_TRT_PLUGIN``, else the package's build folders (``build/plugins`` of the checkout,
    then the user cache of ``locore build-plugins``); ``None`` when none has it.

    A path given explicitly or by the environment that is not a file raises
    :class:`FileNotFoundError` naming where it came from.
    """
    environ = os.environ if environ is None else environ
    for item in explicit:
        path = Path(item).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--dynamicPlugins {path}: no such file")
        return path
    env = environ.get(PLUGIN_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{PLUGIN_ENV}={path} is not a file; point it at a built "
                f"{plugin_library_filename()} (`locore build-plugins --tensorrt-root ...`) or "
                "unset it"
            )
        return path
    name = plugin_library_filename()
    for folder in _plugin_search_dirs() if search_dirs is None else search_dirs:
        if (folder / name).is_file():
            return folder / name
    return None


@dataclass(frozen=True)
class PluginLibrary:
    """The plugin library an engine was built with: path, sha256 and what it registers."""

    path: Path
    sha256: str
    versions: tuple[str, ...]
    namespace: str

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> PluginLibrary:
        from locore import scan_spec

        return cls(
            Path(path),
            sha256_file(path),
            tuple(scan_spec.PLUGIN_VERSIONS),
            scan_spec.PLUGIN_NAMESPACE,
        )

    def key(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "versions": list(self.versions), "namespace": self.namespace}


# ---- ONNX metadata without onnx or a session ----------------------------------------------------
def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """The top-level (field number, wire type, value) of a protobuf message."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        out.append((number, wire, value))
    return out


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (``ModelProto`` field 14), read from its bytes.

    Works for both flavors (ONNX Runtime cannot open the plugin flavor) without the onnx
    package. Raises FileNotFoundError, or :class:`ConfigError` for a file that is not ONNX.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    try:
        metadata: dict[str, str] = {}
        for number, wire, value in _fields(path.read_bytes()):
            if number == 14 and wire == 2:  # repeated StringStringEntryProto metadata_props
                entry = {n: v for n, w, v in _fields(value) if w == 2}
                metadata[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not an ONNX model ({exc}); give the .onnx file") from exc
    return metadata


# ---- the key and the machine --------------------------------------------------------------------
@dataclass(frozen=True)
class EngineKey:
    """What an engine is built from and how (everything computable without TensorRT)."""

    onnx_sha256: str
    config: dict[str, Any]
    precision: str
    flavor: str
    profiles: tuple[ShapeProfile, ...]
    flags: dict[str, Any]
    plugin: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["profiles"] = [p.to_dict() for p in self.profiles]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineKey:
        try:
            return cls(
                onnx_sha256=str(data["onnx_sha256"]),
                config=dict(data["config"]),
                precision=str(data["precision"]),
                flavor=str(data["flavor"]),
                profiles=tuple(ShapeProfile.from_dict(p) for p in data["profiles"]),
                flags=dict(data["flags"]),
                plugin=None if data["plugin"] is None else dict(data["plugin"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid engine key: {exc!r}") from exc

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class MachineFacts:
    """The TensorRT and GPU an engine runs on (an engine is specific to both)."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"

    @property
    def tensorrt_major(self) -> int:
        return int(self.tensorrt_version.split(".")[0])

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MachineFacts:
        try:
            return cls(
                str(data["tensorrt_version"]),
                str(data["gpu_name"]),
                str(data["compute_capability"]),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"invalid machine facts: {exc!r}") from exc


def probe_machine(device: int = 0) -> MachineFacts:
    """TensorRT version, GPU name and compute capability of ``device`` on this machine.

    Needs the ``tensorrt`` package and cuda-python (``cuda.bindings``), or pycuda; raises
    :class:`~locore.deps.MissingDependencyError` naming what is missing, and RuntimeError when
    no CUDA device answers.
    """
    from locore.deps import require

    trt = require("tensorrt", "building and running TensorRT engines")
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        cudart = None
    if cudart is not None:
        err, props = cudart.cudaGetDeviceProperties(device)
        if int(err) != 0:
            raise RuntimeError(f"no CUDA device {device} (cudaGetDeviceProperties: {err})")
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        cc = f"{props.major}.{props.minor}"
        return MachineFacts(str(trt.__version__), name.rstrip("\x00"), cc)
    try:
        import pycuda.driver as drv
    except ImportError as exc:
        raise MissingDependencyError(
            "reading the GPU's name and compute capability needs cuda-python (cuda.bindings) or "
            "pycuda; install it with: pip install 'locore-edge[gpu]' (or pip install cuda-python)"
        ) from exc
    drv.init()
    dev = drv.Device(device)
    major, minor = dev.compute_capability()
    return MachineFacts(str(trt.__version__), str(dev.name()), f"{major}.{minor}")


def engine_key(
    onnx: str | os.PathLike[str],
    profiles: Sequence[ShapeProfile],
    flags: BuildFlags,
    plugin: PluginLibrary | None,
    metadata: Mapping[str, str] | None = None,
) -> EngineKey:
    """The :class:`EngineKey` of building ``onnx`` with these profiles, flags and plugin.

    The plugin counts only for the plugin flavor (the portable flavor has no plugin node); a
    plugin-flavor model without a plugin library raises :class:`FileNotFoundError` saying how to
    get one.
    """
    metadata = read_onnx_metadata(onnx) if metadata is None else metadata
    config, _ = parse_model_metadata(metadata, str(onnx))
    flavor = metadata.get(META_FLAVOR, "portable")
    if flavor == "plugin" and plugin is None:
        raise FileNotFoundError(
            f"{onnx} is the plugin flavor (SelectiveScan nodes), which needs the TensorRT plugin "
            f"library {plugin_library_filename()}; build it with `locore build-plugins "
            f"--tensorrt-root <TensorRT folder>`, then pass --dynamicPlugins <path> or set "
            f"{PLUGIN_ENV}; or build the portable flavor"
        )
    return EngineKey(
        onnx_sha256=sha256_file(onnx),
        config=json.loads(config.to_json()) if META_CONFIG in metadata else {},
        precision=metadata.get(META_PRECISION, "fp32"),
        flavor=flavor,
        profiles=tuple(profiles),
        flags=flags.key(),
        plugin=plugin.key() if plugin is not None and flavor == "plugin" else None,
    )


# ---- sidecars -----------------------------------------------------------------------------------
def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    """``E.plan`` -> ``E.plan.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


@dataclass(frozen=True)
class Sidecar:
    """The JSON beside an engine: its key, the machine it was built on, the engine's sha256."""

    key: EngineKey
    machine: MachineFacts
    engine_sha256: str
    onnx: str = ""
    locore_version: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    format: int = ENGINE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "locore_version": self.locore_version,
            "onnx": self.onnx,
            "engine_sha256": self.engine_sha256,
            "machine": self.machine.to_dict(),
            "metadata": dict(self.metadata),
            **self.key.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Sidecar:
        if not isinstance(data, dict):
            raise ConfigError(f"an engine sidecar must be a JSON object, got {type(data).__name__}")
        fmt = data.get("format")
        if fmt != ENGINE_FORMAT:
            raise ConfigError(
                f"engine sidecar format {fmt!r}, this locore-edge reads format {ENGINE_FORMAT}; "
                "rebuild the engine with `locore build`"
            )
        try:
            return cls(
                key=EngineKey.from_dict(data),
                machine=MachineFacts.from_dict(data["machine"]),
                engine_sha256=str(data["engine_sha256"]),
                onnx=str(data.get("onnx", "")),
                locore_version=str(data.get("locore_version", "")),
                metadata={str(k): str(v) for k, v in dict(data.get("metadata", {})).items()},
            )
        except KeyError as exc:
            raise ConfigError(f"engine sidecar lacks {exc}; rebuild the engine") from exc


def read_sidecar(engine: str | os.PathLike[str]) -> Sidecar:
    """The sidecar of ``engine``; FileNotFoundError / ConfigError naming the file."""
    path = sidecar_path(engine)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: {engine} has no sidecar, so nothing says what it was built "
            "from; rebuild it with `locore build` (which writes both)"
        )
    try:
        return Sidecar.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); rebuild the engine") from exc
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    digest = len(text) == 64 and all(c in "0123456789abcdef" for c in text)
    return text[:12] + "…" if digest else text


def engine_mismatches(sidecar: Sidecar, key: EngineKey, machine: MachineFacts | None) -> list[str]:
    """One line per way the engine of ``sidecar`` differs from ``key`` and ``machine``
    (``machine`` ``None``: not compared); empty when it matches."""
    found = sidecar.key
    lines: list[str] = []
    checks: list[tuple[str, Any, Any]] = [
        ("ONNX sha256", found.onnx_sha256, key.onnx_sha256),
        ("model config", found.config, key.config),
        ("precision", found.precision, key.precision),
        ("flavor", found.flavor, key.flavor),
        (
            "optimization profiles",
            [p.to_dict() for p in found.profiles],
            [p.to_dict() for p in key.profiles],
        ),
    ]
    for name in sorted(set(found.flags) | set(key.flags)):
        checks.append((f"build flag {name}", found.flags.get(name), key.flags.get(name)))
    plugin_a, plugin_b = found.plugin or {}, key.plugin or {}
    for name in ("sha256", "versions", "namespace"):
        checks.append((f"plugin library {name}", plugin_a.get(name), plugin_b.get(name)))
    if machine is not None:
        checks += [
            ("TensorRT version", sidecar.machine.tensorrt_version, machine.tensorrt_version),
            ("GPU", sidecar.machine.gpu_name, machine.gpu_name),
            ("compute capability", sidecar.machine.compute_capability, machine.compute_capability),
        ]
    for what, built, wanted in checks:
        if built != wanted:
            if what == "model config" and isinstance(built, dict) and isinstance(wanted, dict):
                keys = sorted(k for k in set(built) | set(wanted) if built.get(k) != wanted.get(k))
                detail = ", ".join(f"{k} {built.get(k)!r} -> {wanted.get(k)!r}" for k in keys)
                lines.append(f"model config differs ({detail})")
            else:
                lines.append(f"{what}: engine has {_short(built)}, wanted {_short(wanted)}")
    return lines


def check_engine(
    engine: str | os.PathLike[str],
    key: EngineKey,
    machine: MachineFacts | None,
    *,
    verify_bytes: bool = True,
) -> Sidecar:
    """The sidecar of ``engine`` if it was built from ``key`` on ``machine``; else
    :class:`EngineMismatchError` listing every difference (and what to do)."""
    engine = Path(engine)
    if not engine.is_file():
        raise FileNotFoundError(f"TensorRT engine {engine} does not exist")
    sidecar = read_sidecar(engine)
    lines = engine_mismatches(sidecar, key, machine)
    if verify_bytes and sha256_file(engine) != sidecar.engine_sha256:
        lines.append(
            "engine file sha256 differs from its sidecar's (the engine was replaced or damaged)"
        )
    if lines:
        raise EngineMismatchError(
            f"refusing TensorRT engine {engine}: it does not match — " + "; ".join(lines) + ". "
            "Rebuild it with `locore build` (or delete it to let the engine cache rebuild it)"
        )
    return sidecar


def write_engine(
    engine: str | os.PathLike[str],
    data: bytes,
    key: EngineKey,
    machine: MachineFacts,
    *,
    onnx: str | os.PathLike[str] = "",
    metadata: Mapping[str, str] | None = None,
) -> Sidecar:
    """Write the serialized engine ``data`` and its sidecar together, atomically.

    ``metadata``: the ONNX file's ``locore.*`` metadata (config, graph I/O...), kept in the
    sidecar so that the TensorRT backend knows the model's config without the ONNX file.
    """
    from locore import __version__
    from locore.fileio import atomic_outputs

    sidecar = Sidecar(
        key=key,
        machine=machine,
        engine_sha256=hashlib.sha256(data).hexdigest(),
        onnx=str(onnx),
        locore_version=__version__,
        metadata={k: v for k, v in (metadata or {}).items() if k.startswith("locore.")},
    )
    text = json.dumps(sidecar.to_dict(), indent=2, sort_keys=True) + "\n"
    with atomic_outputs({"engine": engine, "sidecar": sidecar_path(engine)}) as tmp:
        tmp["engine"].write_bytes(data)
        tmp["sidecar"].write_text(text)
    return sidecar


# ---- the engine cache ---------------------------------------------------------------------------
def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$LOCORE_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/locore-edge/engines`` (``~/.cache``)."""
    environ = os.environ if environ is None else environ
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV]).expanduser()
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "locore-edge" / "engines"


class EngineCache:
    """Engines keyed by (:class:`EngineKey`, :class:`MachineFacts`) in one folder.

    ``path(key, machine)`` is ``<root>/<onnx stem>-<digest>.plan``: a different ONNX, profile,
    flag, plugin, TensorRT or GPU gives a different file, so engines for several machines (an
    NFS home shared by a Jetson and a desktop) live side by side. :meth:`get` builds once and
    reuses; an entry whose sidecar or bytes do not match is rebuilt (logged with the reason).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: EngineKey, machine: MachineFacts, stem: str = "model") -> Path:
        both = json.dumps({"key": key.to_dict(), "machine": machine.to_dict()}, sort_keys=True)
        digest = hashlib.sha256(both.encode()).hexdigest()[:20]
        return self.root / f"{stem}-{digest}.plan"

    def lookup(self, key: EngineKey, machine: MachineFacts, stem: str = "model") -> Path | None:
        """The cached engine for ``key`` on ``machine`` when it is present and valid."""
        path = self.path(key, machine, stem)
        if not path.is_file():
            return None
        try:
            check_engine(path, key, machine)
        except (EngineMismatchError, ConfigError, FileNotFoundError) as exc:
            log.warning("engine cache: %s; rebuilding it", exc)
            return None
        return path

    def get(
        self,
        key: EngineKey,
        machine: MachineFacts,
        build: Callable[[], bytes],
        *,
        stem: str = "model",
        onnx: str | os.PathLike[str] = "",
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[Path, bool]:
        """``(engine path, built)``: the cached engine, or ``build()``'s bytes written there."""
        from locore.fileio import locked_folder

        lock = self.root / ".lock"  # not the root: atomic_outputs locks that to commit
        lock.mkdir(parents=True, exist_ok=True)
        with locked_folder(lock):  # two processes asking at once build once
            found = self.lookup(key, machine, stem)
            if found is not None:
                log.info("engine cache: reusing %s", found)
                return found, False
            path = self.path(key, machine, stem)
            log.info("engine cache: building %s (a few minutes the first time)", path)
            write_engine(path, build(), key, machine, onnx=onnx, metadata=metadata)
            return path, True


# ---- trtexec ------------------------------------------------------------------------------------
def trtexec_command(
    onnx: str | os.PathLike[str],
    engine: str | os.PathLike[str],
    profile: ShapeProfile,
    flags: BuildFlags,
    plugins: Sequence[str | os.PathLike[str]] = (),
    *,
    static_plugins: Sequence[str | os.PathLike[str]] = (),
    trtexec: str = "trtexec",
) -> list[str]:
    """The trtexec command line that builds the same engine (``shlex.join`` it to print).

    ``--skipInference``: build and save only, as ``locore build`` does. With
    ``--versionCompatible`` the plugin library is also serialized into the engine
    (``--setPluginsToSerialize``), as TensorRT requires for version-compatible engines.
    """
    cmd = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}"]
    cmd += [
        f"--minShapes={format_shapes(profile.min)}",
        f"--optShapes={format_shapes(profile.opt)}",
        f"--maxShapes={format_shapes(profile.max)}",
    ]
    if flags.strongly_typed:
        cmd.append("--stronglyTyped")
    if flags.fp16:
        cmd.append("--fp16")
    if flags.int8:
        cmd.append("--int8")
    if flags.mem_pool_size:
        pools = ",".join(f"{p}:{_pool_text(s)}" for p, s in sorted(flags.mem_pool_size.items()))
        cmd.append(f"--memPoolSize={pools}")
    if flags.builder_optimization_level is not None:
        cmd.append(f"--builderOptimizationLevel={flags.builder_optimization_level}")
    if flags.hardware_compatibility_level != "none":
        cmd.append(f"--hardwareCompatibilityLevel={flags.hardware_compatibility_level}")
    if flags.version_compatible:
        cmd.append("--versionCompatible")
    if flags.timing_cache is not None:
        cmd.append(f"--timingCacheFile={flags.timing_cache}")
    for lib in plugins:
        cmd.append(f"--dynamicPlugins={lib}")
        if flags.version_compatible:
            cmd.append(f"--setPluginsToSerialize={lib}")
    for lib in static_plugins:
        cmd.append(f"--staticPlugins={lib}")
    if flags.verbose:
        cmd.append("--verbose")
    cmd.append("--skipInference")
    return cmd


def format_command(cmd: Sequence[str]) -> str:
    """A command line a shell reads back as ``cmd``."""
    return shlex.join(cmd)
