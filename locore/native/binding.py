"""ctypes binding of the SelectiveScan CPU library (``liblocore_scan_cpu``), numpy in and out.

The struct layout, enums, status codes and input order come from :mod:`locore.scan_spec`;
:func:`selective_scan_cpu` has the signature and semantics of
``locore.model.selective_scan_ref`` (docs/design.md section 3).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from typing import Any

import numpy as np

from locore import scan_spec as spec
from locore.native.build import (
    BUILD_HINT,
    CPU_TARGET,
    LIBRARY_ENV,
    NativeLibraryError,
    build_plugins,
    ensure_current,
    find_cpu_library,
    library_filename,
    searched_locations,
)

__all__ = ["NativeLibraryError", "load_cpu_library", "selective_scan_cpu"]

log = logging.getLogger(__name__)

_DTYPES = {np.dtype(d.name.lower()): d for d in spec.DType}
_VARIANTS = {name: spec.Variant[name.upper()] for name in spec.VARIANTS}
_CTYPES: dict[str, type[ctypes.c_int32] | type[ctypes.c_void_p]] = {
    "int32": ctypes.c_int32,
    "pointer": ctypes.c_void_p,
}


class ScanParams(ctypes.Structure):
    """Mirror of ``LocoreScanParams`` (selectiveScan.h), fields from ``scan_spec.PARAMS_FIELDS``."""

    _fields_ = [(name, _CTYPES[kind]) for name, kind in spec.PARAMS_FIELDS]


# ---------------------------------------------------------------------------------------------
# loading

_REBUILD = (
    f"rebuild it from this package's sources with `locore build-plugins`, or unset ${LIBRARY_ENV} "
    "if it points at another library"
)


def _symbol(lib: ctypes.CDLL, path: object, name: str) -> Any:
    """``lib.<name>``, or NativeLibraryError naming the missing symbol and what to do."""
    try:
        return getattr(lib, name)
    except AttributeError:
        raise NativeLibraryError(
            f"{path} does not export {name}: it is not the SelectiveScan CPU library "
            f"({library_filename()}) or was built from older sources; {_REBUILD}"
        ) from None


_lib_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def load_cpu_library(build: bool = True) -> ctypes.CDLL:
    """Load ``liblocore_scan_cpu`` (cached); build it first if it is nowhere to be found."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = find_cpu_library()
        if path is not None and not os.environ.get(LIBRARY_ENV):
            # A library found in a build folder must be current with the sources it was built
            # from (rebuilt here when possible); one named by $LOCORE_SCAN_LIB is used as is.
            path = ensure_current(path)
        if path is None:
            if not build:
                raise NativeLibraryError(
                    f"{library_filename()} was not found ({searched_locations()}); {BUILD_HINT}"
                )
            log.info("%s not built yet: building it now (CPU only)", library_filename())
            try:
                out = build_plugins(cuda=False, targets=[CPU_TARGET])
            except (NativeLibraryError, FileNotFoundError) as exc:
                raise NativeLibraryError(
                    f"the SelectiveScan CPU library is not built and building it failed: {exc}"
                ) from exc
            path = out / library_filename()
            if not path.is_file():
                raise NativeLibraryError(
                    f"the build finished but {path} does not exist; {BUILD_HINT}"
                )
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise NativeLibraryError(
                f"could not load {path} ({exc}); rebuild it with `locore build-plugins`"
            ) from exc
        run, status_string, abi_version = (
            _symbol(lib, path, name)
            for name in (
                spec.CPU_ENTRY_POINT,
                spec.STATUS_STRING_FUNCTION,
                spec.ABI_VERSION_FUNCTION,
            )
        )
        run.argtypes = [ctypes.POINTER(ScanParams), ctypes.c_int32]
        run.restype = ctypes.c_int
        status_string.argtypes = [ctypes.c_int]
        status_string.restype = ctypes.c_char_p
        abi_version.argtypes = []
        abi_version.restype = ctypes.c_int
        if abi_version() != spec.ABI_VERSION:
            raise NativeLibraryError(
                f"{path} has SelectiveScan ABI version {abi_version()}, this package needs "
                f"{spec.ABI_VERSION}; {_REBUILD}"
            )
        log.debug("loaded %s", path)
        _lib = lib
        return lib


# ---------------------------------------------------------------------------------------------
# the op


def _describe(a: np.ndarray) -> str:
    return f"{list(a.shape)} {a.dtype}"


def _check(
    name: str, a: object, shape: tuple[int, ...], dtype: np.dtype, hint: str = ""
) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"selective_scan_cpu: {name} must be a numpy array {list(shape)} {dtype}, got "
            f"{type(a).__name__}; convert with np.asarray (torch: tensor.numpy())"
        )
    if tuple(a.shape) != shape or a.dtype != dtype:
        raise ValueError(
            f"selective_scan_cpu: {name} must be {list(shape)} {dtype}, got {_describe(a)}"
            + (f"; {hint}" if hint else "")
        )
    return np.ascontiguousarray(a)


def _weight_dtype(dtype: np.dtype, weights: dict[str, Any]) -> np.dtype:
    """The dtype of A, D and dt_bias for a call with I/O dtype ``dtype``: float32 (plugin
    version 2) when the first weight array given is float32, else ``dtype`` (version 1);
    ``_check`` then holds every weight to it."""
    float32 = np.dtype(np.float32)
    for value in weights.values():
        if isinstance(value, np.ndarray):
            return float32 if value.dtype == float32 else dtype
    return float32


def _symbols(dims: tuple[str, ...]) -> str:
    return "[" + ", ".join(dims) + "]"


def selective_scan_cpu(
    x: np.ndarray,
    dt: np.ndarray,
    A: np.ndarray,
    B: np.ndarray,
    C: np.ndarray,
    D: np.ndarray | None = None,
    z: np.ndarray | None = None,
    dt_bias: np.ndarray | None = None,
    dt_softplus: bool = False,
    reverse: bool = False,
    variant: str = "mamba2",
    chunk_size: int = 64,
    num_threads: int = 0,
) -> np.ndarray:
    """SelectiveScan on the CPU library; same arguments and semantics as ``selective_scan_ref``.

    mamba2: x [B, L, H, P], dt [B, L, H], A [H], B, C [B, L, G, N], D, dt_bias [H],
    z [B, L, H, P]; mamba1: x (u) [B, L, Dc], dt (delta) [B, L, Dc], A [Dc, N], D,
    dt_bias [Dc], z [B, L, Dc] (shapes: ``locore.scan_spec.INPUTS``). x, dt, B, C and z are
    all float32 or all float16; A, D and dt_bias (``scan_spec.WEIGHT_INPUTS``) are float32
    whatever x's dtype (plugin version 2) or, as in version 1, in x's dtype (state and
    accumulation are float32 either way); D, dt_bias and z may be None. Returns y with the
    shape and dtype of x. ``num_threads``: 0 uses every hardware thread.
    """
    if variant not in _VARIANTS:
        raise ValueError(
            f"selective_scan_cpu: variant must be one of {sorted(_VARIANTS)}, got {variant!r}"
        )
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"selective_scan_cpu: x must be a numpy array, got {type(x).__name__}; convert with "
            "np.asarray (torch: tensor.numpy())"
        )
    if x.dtype not in _DTYPES:
        raise ValueError(
            f"selective_scan_cpu: x must be {' or '.join(spec.IO_DTYPES)}, got {x.dtype}; cast "
            "with x.astype(np.float32)"
        )
    dtype = x.dtype
    same = f"x, dt, B, C and z must have x's dtype ({dtype}); cast with .astype(np.{dtype})"
    weight_dtype = _weight_dtype(dtype, {"A": A, "D": D, "dt_bias": dt_bias})
    weights = (
        f"A, D and dt_bias must all be float32 (plugin version 2) or all x's dtype ({dtype}, "
        "version 1); keep the weights float32"
    )
    x_dims = spec.INPUTS[0].shape(variant)
    if x.ndim != len(x_dims):
        raise ValueError(
            f"selective_scan_cpu: {variant} x must be {_symbols(x_dims)} {dtype}, got "
            f"{_describe(x)}"
        )
    batch, length, heads = (int(n) for n in x.shape[:3])
    hdim = int(x.shape[3]) if x.ndim == 4 else 1
    if not isinstance(B, np.ndarray) or B.ndim != 4:
        got = _describe(B) if isinstance(B, np.ndarray) else type(B).__name__
        raise ValueError(f"selective_scan_cpu: B must be [{batch}, {length}, G, N], got {got}")
    groups, nstate = int(B.shape[2]), int(B.shape[3])
    if groups < 1 or heads % groups:
        raise ValueError(
            f"selective_scan_cpu: B's group count G={groups} must divide the {heads} heads/"
            f"channels of x (head h reads group h // (H // G))"
        )
    sizes = {"B": batch, "L": length, "H": heads, "Dc": heads, "P": hdim, "G": groups, "N": nstate}
    given: dict[str, Any] = {"x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D}
    given.update(dt_bias=dt_bias, z=z)
    arrays: dict[str, np.ndarray | None] = {"x": np.ascontiguousarray(x)}
    for tensor in spec.INPUTS[1:]:
        value = given[tensor.name]
        if value is None and tensor.nullable:
            arrays[tensor.name] = None
            continue
        shape = tuple(sizes[d] for d in tensor.shape(variant))
        if tensor.same_dtype_as_x:
            arrays[tensor.name] = _check(tensor.name, value, shape, dtype, same)
        else:
            arrays[tensor.name] = _check(tensor.name, value, shape, weight_dtype, weights)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"selective_scan_cpu: chunk_size must be an int >= 1, got {chunk_size!r}")
    if not isinstance(num_threads, int) or num_threads < 0:
        raise ValueError(
            f"selective_scan_cpu: num_threads must be an int >= 0 (0 = all), got {num_threads!r}"
        )
    limit = 2**31 - 1
    if max(batch, length, heads, hdim, nstate) > limit:
        raise ValueError("selective_scan_cpu: every dimension must be < 2**31")
    y = np.empty_like(arrays["x"])
    pointers: dict[str, int | None] = {}
    for tensor in spec.INPUTS:
        array = arrays[tensor.name]
        pointers[tensor.field] = None if array is None else array.ctypes.data
    params = ScanParams(
        **{name: sizes[dim] for name, dim in spec.PARAMS_DIMS},
        variant=_VARIANTS[variant],
        dtSoftplus=int(bool(dt_softplus)),
        reverse=int(bool(reverse)),
        chunkSize=chunk_size,
        dtype=_DTYPES[dtype],
        weightDtype=_DTYPES[weight_dtype],
        **pointers,
        **{spec.OUTPUT.field: y.ctypes.data},
    )
    lib = load_cpu_library()
    status = getattr(lib, spec.CPU_ENTRY_POINT)(ctypes.byref(params), num_threads)
    if status != spec.Status.OK:
        text = getattr(lib, spec.STATUS_STRING_FUNCTION)(status).decode()
        raise NativeLibraryError(
            f"{spec.CPU_ENTRY_POINT} returned {status} ({text}) for x {_describe(x)}, "
            f"B {_describe(B)}, variant {variant}"
        )
    return y
