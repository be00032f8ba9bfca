"""TensorRT: the loader (:func:`load_tensorrt_runner`) and the runner (:class:`TrtRunner`).

The loader takes an engine (``.plan``/``.engine``/``.trt``, with the sidecar ``locore build``
writes) or an ONNX file, which goes through the engine cache
(:class:`~locore.runtime.engines.EngineCache`): built once for this machine, then reused. The
plugin library is registered (``trt.get_plugin_registry().load_library``) before the engine is
deserialized (``trt.Runtime.deserialize_cuda_engine``).

:class:`TrtRunner` follows NVIDIA's documented Python API (TensorRT 10.3+ and 11): I/O tensors
by name (``engine.get_tensor_name/mode/dtype/shape``), the profile's max shapes
(``engine.get_tensor_profile_shape``) as :attr:`max_shapes`, then per call
``context.set_input_shape``, ``context.set_tensor_address`` and ``context.execute_async_v3`` on
the context's own stream; context ``i`` runs on optimization profile ``i`` (TensorRT binds each
concurrently running context to its own profile). Memory: device buffers and **pinned** host
buffers sized for the profile's max shapes, allocated once per execution context, so addresses
never change (which also lets a CUDA graph be captured once per gallery size,
``cuda_graphs=True``). ``contexts=N``
keeps N execution contexts (each with its stream and buffers) for concurrent queries from N
threads. :meth:`last_timings` gives the last call's H2D / compute / D2H times, measured with CUDA
events.

CUDA calls go through cuda-python (``cuda.bindings.runtime``) by default, or pycuda when asked
(``cuda="pycuda"``). Nothing is imported at module level: this module imports without TensorRT.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from locore.config import TensorSpec
from locore.deps import MissingDependencyError, require
from locore.errors import UsageError
from locore.runtime.backends.base import Runner

log = logging.getLogger(__name__)

CUDA_APIS = ("cuda-python", "pycuda")
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")


# ---- CUDA through cuda-python or pycuda ---------------------------------------------------------
class CudaApi:
    """The few CUDA runtime calls the runner makes; pointers and handles are opaque."""

    name = "cuda"

    def malloc(self, nbytes: int) -> Any: ...
    def free(self, ptr: Any) -> None: ...
    def host_alloc(self, nbytes: int) -> tuple[Any, np.ndarray]:
        """Pinned host memory: (handle, uint8 view of ``nbytes``)."""
        raise NotImplementedError

    def host_free(self, handle: Any) -> None: ...
    def stream(self) -> Any: ...
    def stream_handle(self, stream: Any) -> int:
        raise NotImplementedError

    def stream_free(self, stream: Any) -> None: ...
    def htod(self, dst: Any, src: np.ndarray, nbytes: int, stream: Any) -> None: ...
    def dtoh(self, dst: np.ndarray, src: Any, nbytes: int, stream: Any) -> None: ...
    def event(self) -> Any: ...
    def record(self, event: Any, stream: Any) -> None: ...
    def elapsed_ms(self, start: Any, end: Any) -> float:
        raise NotImplementedError

    def synchronize(self, stream: Any) -> None: ...
    def address(self, ptr: Any) -> int:
        return int(ptr)

    def graph_capture(self, stream: Any, launch: Any) -> Any:
        """Capture what ``launch()`` enqueues on ``stream`` into an executable CUDA graph."""
        raise NotImplementedError

    def graph_launch(self, graph: Any, stream: Any) -> None:
        raise NotImplementedError

    def event_free(self, event: Any) -> None:
        """Destroy an event (a binding that frees it on garbage collection does nothing)."""

    def graph_free(self, graph: Any) -> None:
        """Destroy an executable CUDA graph."""


def _check(result: Any, what: str) -> Any:
    """cuda-python returns ``(err, *values)``; raise on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA {what} failed: {err}")
    return values[0] if len(values) == 1 else (tuple(values) if values else None)


class CudaPython(CudaApi):
    """cuda-python's runtime bindings (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""

    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            cudart = require("cuda.cudart", "the TensorRT backend (cuda-python)")
        self.rt = cudart

    def malloc(self, nbytes: int) -> Any:
        return _check(self.rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc")

    def free(self, ptr: Any) -> None:
        _check(self.rt.cudaFree(ptr), "cudaFree")

    def host_alloc(self, nbytes: int) -> tuple[Any, np.ndarray]:
        ptr = _check(self.rt.cudaMallocHost(max(nbytes, 1)), "cudaMallocHost")
        view = np.ctypeslib.as_array((ctypes.c_uint8 * max(nbytes, 1)).from_address(int(ptr)))
        return ptr, view

    def host_free(self, handle: Any) -> None:
        _check(self.rt.cudaFreeHost(handle), "cudaFreeHost")

    def stream(self) -> Any:
        return _check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_free(self, stream: Any) -> None:
        _check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def htod(self, dst: Any, src: np.ndarray, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, nbytes, kind, stream), "H2D copy")

    def dtoh(self, dst: np.ndarray, src: Any, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, nbytes, kind, stream), "D2H copy")

    def event(self) -> Any:
        return _check(self.rt.cudaEventCreate(), "cudaEventCreate")

    def record(self, event: Any, stream: Any) -> None:
        _check(self.rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(_check(self.rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def synchronize(self, stream: Any) -> None:
        _check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def graph_capture(self, stream: Any, launch: Any) -> Any:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _check(self.rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
        launch()
        graph = _check(self.rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        try:
            return _check(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:  # the executable graph does not need its template
            _check(self.rt.cudaGraphDestroy(graph), "cudaGraphDestroy")

    def graph_launch(self, graph: Any, stream: Any) -> None:
        _check(self.rt.cudaGraphLaunch(graph, stream), "cudaGraphLaunch")

    def event_free(self, event: Any) -> None:
        _check(self.rt.cudaEventDestroy(event), "cudaEventDestroy")

    def graph_free(self, graph: Any) -> None:
        _check(self.rt.cudaGraphExecDestroy(graph), "cudaGraphExecDestroy")


class PyCuda(CudaApi):
    """pycuda (``pycuda.driver``; a context made current by ``pycuda.autoinit``)."""

    name = "pycuda"

    def __init__(self) -> None:
        self.drv = require("pycuda.driver", "the TensorRT backend with cuda='pycuda'")
        require("pycuda.autoinit", "the TensorRT backend with cuda='pycuda'")

    def malloc(self, nbytes: int) -> Any:
        return self.drv.mem_alloc(max(nbytes, 1))

    def free(self, ptr: Any) -> None:
        ptr.free()

    def host_alloc(self, nbytes: int) -> tuple[Any, np.ndarray]:
        view = self.drv.pagelocked_empty(max(nbytes, 1), np.uint8)
        return view, view

    def host_free(self, handle: Any) -> None:
        del handle  # pycuda frees page-locked memory when the array is collected

    def stream(self) -> Any:
        return self.drv.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def htod(self, dst: Any, src: np.ndarray, nbytes: int, stream: Any) -> None:
        self.drv.memcpy_htod_async(dst, src[:nbytes], stream)

    def dtoh(self, dst: np.ndarray, src: Any, nbytes: int, stream: Any) -> None:
        self.drv.memcpy_dtoh_async(dst[:nbytes], src, stream)

    def event(self) -> Any:
        return self.drv.Event()

    def record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(start.time_till(end))

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()


def cuda_api(name: str = "cuda-python") -> CudaApi:
    """The CUDA binding ``name`` (:data:`CUDA_APIS`); MissingDependencyError when absent."""
    if name not in CUDA_APIS:
        raise UsageError(f"cuda must be one of {list(CUDA_APIS)}, got {name!r}")
    return CudaPython() if name == "cuda-python" else PyCuda()


# ---- the runner ---------------------------------------------------------------------------------
@dataclass
class _Context:
    """One execution context with its own stream, buffers, events and CUDA graphs."""

    context: Any
    stream: Any
    device: dict[str, Any]
    host: dict[str, tuple[Any, np.ndarray]]
    events: list[Any]
    graphs: dict[tuple[tuple[int, ...], ...], Any] = field(default_factory=dict)


def _trt_dtype(trt: Any, dtype: Any) -> str:
    return str(np.dtype(trt.nptype(dtype)))


class TrtRunner(Runner):
    """A deserialized TensorRT engine, run with ``execute_async_v3``.

    Args:
        engine: the serialized engine's bytes.
        path: the engine file (for messages).
        metadata: the model's ``locore.*`` metadata (from the engine's sidecar).
        contexts: execution contexts (concurrent calls from that many threads).
        cuda: ``"cuda-python"`` (default) or ``"pycuda"``.
        cuda_graphs: capture one CUDA graph per input shape (e.g. per gallery size) on first use
            and replay it (lower launch overhead on Jetson).
        plugins: plugin libraries registered before deserializing.
    """

    kind = "tensorrt"

    def __init__(
        self,
        engine: bytes,
        path: str | Path,
        metadata: Mapping[str, str] | None = None,
        *,
        contexts: int = 1,
        cuda: str = "cuda-python",
        cuda_graphs: bool = False,
        plugins: Sequence[str | Path] = (),
    ) -> None:
        if isinstance(contexts, bool) or not isinstance(contexts, int) or contexts < 1:
            raise UsageError(f"contexts must be an integer >= 1, got {contexts!r}")
        self.path = Path(path)
        self.metadata = dict(metadata or {})
        self.cuda = cuda_api(cuda)
        trt = require("tensorrt", "the TensorRT backend")
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        for lib in plugins:
            trt.get_plugin_registry().load_library(str(lib))
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine)
        if self.engine is None:
            raise RuntimeError(
                f"TensorRT could not deserialize {self.path} (built by another TensorRT "
                "version, for another GPU, or without its plugin library); rebuild it with "
                "`locore build`"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._inputs = tuple(self._spec(n) for n in inputs)
        self._outputs = tuple(self._spec(n) for n in names if n not in inputs)
        self._max = {
            n: tuple(int(d) for d in self.engine.get_tensor_profile_shape(n, 0)[2]) for n in inputs
        }
        profiles = int(self.engine.num_optimization_profiles)
        if contexts > profiles:
            raise UsageError(
                f"{self.path} has {profiles} optimization profile(s), so it runs at most "
                f"{profiles} concurrent execution context(s) (TensorRT binds each context running "
                f"at the same time to its own profile), asked for contexts={contexts}; give the "
                "ONNX model "
                "instead (the engine cache then builds one profile per context) or fewer contexts"
            )
        self.cuda_graphs = cuda_graphs
        self._pool: queue.Queue[_Context] = queue.Queue()
        self._all: list[_Context] = []
        self._timings = threading.local()
        try:
            for i in range(contexts):
                ctx = self._new_context(i)
                self._all.append(ctx)
                self._pool.put(ctx)
        except BaseException:
            self.close()
            raise

    # ---- specs --------------------------------------------------------------------------------
    def _spec(self, name: str) -> TensorSpec:
        dims = tuple(int(d) for d in self.engine.get_tensor_shape(name))
        shape = tuple(d if d >= 0 else f"{name}_dim{i}" for i, d in enumerate(dims))
        recorded = self._recorded_shape(name)
        if recorded is not None and len(recorded) == len(shape):  # the contract's dim names
            shape = tuple(
                r if isinstance(s, str) else s for s, r in zip(shape, recorded, strict=True)
            )
        return TensorSpec(name, shape, _trt_dtype(self._trt, self.engine.get_tensor_dtype(name)))

    def _recorded_shape(self, name: str) -> tuple[int | str, ...] | None:
        from locore.runtime.metadata import parse_graph_io

        graph = parse_graph_io(self.metadata, str(self.path))
        if graph is None:
            return None
        for spec in (*graph.inputs, *graph.outputs):
            if spec.name == name:
                return spec.shape
        return None

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    @property
    def max_shapes(self) -> Mapping[str, tuple[int, ...]] | None:
        return self._max

    # ---- buffers --------------------------------------------------------------------------------
    def _max_output_shape(self, context: Any, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in context.get_tensor_shape(name))

    def _new_context(self, index: int) -> _Context:
        context = self.engine.create_execution_context()
        stream = self.cuda.stream()
        if index > 0:  # context i runs on profile i (profile 0 is the default)
            if not context.set_optimization_profile_async(index, self.cuda.stream_handle(stream)):
                raise RuntimeError(f"TensorRT refused optimization profile {index} of {self.path}")
            self.cuda.synchronize(stream)
        for name, top in self._max.items():  # max shapes -> largest outputs
            context.set_input_shape(name, top)
        ctx = _Context(context, stream, {}, {}, [self.cuda.event() for _ in range(4)])
        sizes = {s.name: (self._max[s.name], s.dtype) for s in self._inputs}
        for s in self._outputs:
            sizes[s.name] = (self._max_output_shape(context, s.name), s.dtype)
        for name, (shape, dtype) in sizes.items():
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            ctx.device[name] = self.cuda.malloc(nbytes)
            ctx.host[name] = self.cuda.host_alloc(nbytes)
            context.set_tensor_address(name, self.cuda.address(ctx.device[name]))
        log.debug("TensorRT context %d of %s ready", index, self.path)
        return ctx

    # ---- running --------------------------------------------------------------------------------
    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ctx = self._pool.get()
        try:
            return self._run_on(ctx, feeds)
        finally:
            self._pool.put(ctx)

    def _run_on(self, ctx: _Context, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda, stream = self.cuda, ctx.stream
        start, h2d_done, compute_done, end = ctx.events
        cuda.record(start, stream)
        for spec in self._inputs:
            array = np.ascontiguousarray(feeds[spec.name])
            host = ctx.host[spec.name][1]
            host[: array.nbytes] = array.reshape(-1).view(np.uint8)
            ctx.context.set_input_shape(spec.name, array.shape)
            cuda.htod(ctx.device[spec.name], host, array.nbytes, stream)
        cuda.record(h2d_done, stream)
        shapes = {s.name: self._max_output_shape(ctx.context, s.name) for s in self._outputs}
        handle = cuda.stream_handle(stream)
        if self.cuda_graphs:
            key = tuple(tuple(np.shape(feeds[s.name])) for s in self._inputs)
            graph = ctx.graphs.get(key)
            if graph is None:
                ctx.context.execute_async_v3(handle)  # first run: lets TensorRT finish setup
                graph = cuda.graph_capture(stream, lambda: ctx.context.execute_async_v3(handle))
                ctx.graphs[key] = graph
            cuda.graph_launch(graph, stream)
        elif not ctx.context.execute_async_v3(handle):
            raise RuntimeError(f"TensorRT execute_async_v3 failed on {self.path}")
        cuda.record(compute_done, stream)
        outputs: dict[str, np.ndarray] = {}
        for spec in self._outputs:
            nbytes = int(np.prod(shapes[spec.name], dtype=np.int64)) * np.dtype(spec.dtype).itemsize
            cuda.dtoh(ctx.host[spec.name][1], ctx.device[spec.name], nbytes, stream)
        cuda.record(end, stream)
        cuda.synchronize(stream)
        for spec in self._outputs:
            nbytes = int(np.prod(shapes[spec.name], dtype=np.int64)) * np.dtype(spec.dtype).itemsize
            raw = ctx.host[spec.name][1][:nbytes].copy()
            outputs[spec.name] = raw.view(spec.dtype).reshape(shapes[spec.name])
        self._timings.value = {
            "h2d_ms": cuda.elapsed_ms(start, h2d_done),
            "compute_ms": cuda.elapsed_ms(h2d_done, compute_done),
            "d2h_ms": cuda.elapsed_ms(compute_done, end),
        }
        return outputs

    def last_timings(self) -> dict[str, float] | None:
        return getattr(self._timings, "value", None)

    def close(self) -> None:
        for ctx in getattr(self, "_all", []):
            for ptr in ctx.device.values():
                self.cuda.free(ptr)
            for handle, _ in ctx.host.values():
                self.cuda.host_free(handle)
            for graph in ctx.graphs.values():
                self.cuda.graph_free(graph)
            for event in ctx.events:
                self.cuda.event_free(event)
            self.cuda.stream_free(ctx.stream)
        self._all = []
        self.__dict__.pop("engine", None)


# ---- the loader ---------------------------------------------------------------------------------
def load_tensorrt_runner(
    path: str | Path,
    *,
    contexts: int = 1,
    cuda: str = "cuda-python",
    cuda_graphs: bool = False,
    plugin: str | Path | None = None,
    window: int | None = None,
    cache_dir: str | Path | None = None,
    **options: Any,
) -> TrtRunner:
    """A :class:`TrtRunner` for an engine file, or for an ONNX file through the engine cache.

    An engine with a sidecar is checked against this machine (TensorRT version, GPU, compute
    capability) and refused with what differs; an ONNX file is built once per (ONNX, profile,
    plugin, machine) with the default profile (gallery 1 to ``window``) and reused. ``options``
    from the ONNX Runtime kinds (``providers``, ``threads``) are not TensorRT's and are refused.
    """
    if options:
        raise UsageError(
            f"the TensorRT backend takes contexts, cuda, cuda_graphs, plugin, window and "
            f"cache_dir, got {sorted(options)}"
        )
    from locore.config import ConfigError
    from locore.runtime import engines as E
    from locore.runtime.metadata import parse_model_metadata

    path = Path(path)
    require("tensorrt", "the TensorRT backend")  # first: what to install, whatever the file
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    machine = E.probe_machine()
    library = E.find_plugin_library([plugin] if plugin is not None else [])
    if path.suffix.lower() in ENGINE_SUFFIXES:
        metadata: dict[str, str] = {}
        if E.sidecar_path(path).is_file():
            sidecar = E.read_sidecar(path)
            differs = E.engine_mismatches(sidecar, sidecar.key, machine)
            if differs:
                raise E.EngineMismatchError(
                    f"refusing TensorRT engine {path}: " + "; ".join(differs) + ". Rebuild it "
                    "on this machine with `locore build`"
                )
            metadata = sidecar.metadata
        else:
            log.warning("%s has no sidecar: its build settings cannot be checked", path)
        return TrtRunner(
            path.read_bytes(),
            path,
            metadata,
            contexts=contexts,
            cuda=cuda,
            cuda_graphs=cuda_graphs,
            plugins=[library] if library is not None else [],
        )
    metadata = E.read_onnx_metadata(path)
    _, graph = parse_model_metadata(metadata, str(path))
    if graph is None:
        raise ConfigError(f"{path} has no locore.graph_io metadata; re-export it")
    profile = E.resolve_profile(graph, window=window or E.DEFAULT_WINDOW)
    profiles = [profile] * contexts  # one (identical) profile per concurrent context
    flags = E.BuildFlags()
    plugin_info = E.PluginLibrary.at(library) if library is not None else None
    key = E.engine_key(path, profiles, flags, plugin_info, metadata)
    used = library if key.plugin is not None else None

    def build() -> bytes:
        from locore.export.engine import build_serialized_engine

        return build_serialized_engine(path, profiles, flags, used)

    engine, built = E.EngineCache(cache_dir).get(
        key, machine, build, stem=path.stem, onnx=path, metadata=metadata
    )
    log.info("%s engine %s", "built" if built else "cached", engine)
    return TrtRunner(
        engine.read_bytes(),
        engine,
        metadata,
        contexts=contexts,
        cuda=cuda,
        cuda_graphs=cuda_graphs,
        plugins=[used] if used is not None else [],
    )


__all__ = [
    "CUDA_APIS",
    "CudaApi",
    "MissingDependencyError",
    "TrtRunner",
    "cuda_api",
    "load_tensorrt_runner",
]
