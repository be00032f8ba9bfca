"""Native SelectiveScan kernels: build them, load the CPU library, call it on numpy arrays.

The C++/CUDA sources live in the repository's ``plugins/`` folder (not in the wheel); with an
editable install they are found next to this package. :func:`build_plugins` runs CMake on them
(CPU library always, CUDA kernel when nvcc is found, TensorRT plugin when ``tensorrt_root`` is
given); :func:`load_cpu_library` finds ``liblocore_scan_cpu`` (``$LOCORE_SCAN_LIB``, then
``<repo>/build/plugins``, then ``~/.cache/locore-edge/plugins``) and builds it on first use;
:func:`selective_scan_cpu` runs the scan (DESIGN.md section 3) with the signature of
``locore.model.selective_scan_ref``.

CLI: ``locore build-plugins [--build-dir DIR] [--tensorrt-root DIR] [--no-cuda] [--jobs N]``.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

import numpy as np

__all__ = [
    "LIBRARY_ENV",
    "NativeLibraryError",
    "build_plugins",
    "default_build_dir",
    "find_cpu_library",
    "load_cpu_library",
    "plugins_source_dir",
    "selective_scan_cpu",
]

log = logging.getLogger(__name__)

LIBRARY_ENV = "LOCORE_SCAN_LIB"
_BUILD_HINT = (
    "build it with `locore build-plugins` "
    "(or `cmake -S plugins -B build/plugins && cmake --build build/plugins`)"
)

# Status codes and enums of plugins/selective_scan/selectiveScan.h.
SCAN_OK = 0
SCAN_BAD_ARGUMENT = 1
SCAN_UNSUPPORTED = 2
SCAN_CUDA_ERROR = 3
_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}
_VARIANTS = {"mamba2": 0, "mamba1": 1}


class NativeLibraryError(RuntimeError):
    """The native library could not be built, found, loaded or run."""


class _ScanParams(ctypes.Structure):
    """Mirror of ``LocoreScanParams`` (selectiveScan.h); field order matters."""

    _fields_ = [
        ("batch", ctypes.c_int32),
        ("seqlen", ctypes.c_int32),
        ("nheads", ctypes.c_int32),
        ("headdim", ctypes.c_int32),
        ("ngroups", ctypes.c_int32),
        ("dstate", ctypes.c_int32),
        ("variant", ctypes.c_int32),
        ("dtSoftplus", ctypes.c_int32),
        ("reverse", ctypes.c_int32),
        ("chunkSize", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("x", ctypes.c_void_p),
        ("dt", ctypes.c_void_p),
        ("A", ctypes.c_void_p),
        ("B", ctypes.c_void_p),
        ("C", ctypes.c_void_p),
        ("D", ctypes.c_void_p),
        ("dtBias", ctypes.c_void_p),
        ("z", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
    ]


# ---------------------------------------------------------------------------------------------
# locating sources and libraries


def _library_filename(stem: str = "locore_scan_cpu") -> str:
    if sys.platform == "win32":
        return f"{stem}.dll"
    if sys.platform == "darwin":
        return f"lib{stem}.dylib"
    return f"lib{stem}.so"


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def plugins_source_dir() -> Path:
    """The ``plugins/`` source folder (with its CMakeLists.txt) of this checkout."""
    src = _repo_root() / "plugins"
    if not (src / "CMakeLists.txt").is_file():
        raise FileNotFoundError(
            f"the native sources were not found: expected {src}/CMakeLists.txt next to the "
            f"locore package ({Path(__file__).resolve().parent}). They are in the locore-edge "
            "repository, not in the installed wheel; install from a checkout with "
            "`pip install -e .`, or build there with `cmake -S plugins -B build/plugins` and "
            f"point {LIBRARY_ENV} at the built {_library_filename()}"
        )
    return src


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "locore-edge" / "plugins"


def default_build_dir() -> Path:
    """``<repo>/build/plugins`` when the checkout is writable, else the user cache folder."""
    repo = _repo_root()
    if os.access(repo, os.W_OK):
        return repo / "build" / "plugins"
    return _user_cache_dir()


def find_cpu_library() -> Path | None:
    """Path of the built CPU library, or None: ``$LOCORE_SCAN_LIB``, build folder, user cache."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise NativeLibraryError(
                f"{LIBRARY_ENV} points at {path}, which is not a file; expected the path of a "
                f"built {_library_filename()}; unset it or {_BUILD_HINT}"
            )
        return path
    name = _library_filename()
    for folder in (_repo_root() / "build" / "plugins", _user_cache_dir()):
        if (folder / name).is_file():
            return folder / name
    return None


# ---------------------------------------------------------------------------------------------
# building


def _find_nvcc() -> str | None:
    env = os.environ.get("CUDACXX")
    if env and Path(env).is_file():
        return env
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    return None


_PROGRESS = re.compile(r"^\[\s*(\d+%|\d+/\d+)\]")


def _run_logged(cmd: list[str], what: str) -> None:
    """Run a build command, streaming its output to the debug log; raise with the tail on error."""
    log.debug("running: %s", " ".join(cmd))
    tail: deque[str] = deque(maxlen=40)
    try:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
    except FileNotFoundError as exc:
        raise NativeLibraryError(f"{what}: could not run {cmd[0]!r} ({exc})") from exc
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail.append(line)
        log.debug("%s", line)
        if _PROGRESS.match(line):
            log.info("%s", line)  # "[ 50%] Building ..." (make) or "[3/6] Building ..." (ninja)
    if proc.wait() != 0:
        text = "\n".join(tail)
        raise NativeLibraryError(
            f"{what} failed (exit code {proc.returncode}) running: {' '.join(cmd)}\n"
            f"last output:\n{text}"
        )


def build_plugins(
    build_dir: str | os.PathLike[str] | None = None,
    tensorrt_root: str | os.PathLike[str] | None = None,
    cuda: bool | None = None,
    jobs: int | None = None,
    targets: list[str] | None = None,
) -> Path:
    """Configure and build ``plugins/`` with CMake; returns the build folder.

    ``cuda``: None builds the CUDA kernel when nvcc is found, False never, True requires it.
    ``tensorrt_root``: a TensorRT install (include/, lib/); also builds the TensorRT plugin.
    ``targets``: CMake targets to build (default: all). The CPU library lands in the build
    folder itself (``liblocore_scan_cpu.so``).
    """
    cmake = shutil.which("cmake")
    if cmake is None:
        raise NativeLibraryError(
            "building the native kernels needs CMake (>= 3.18) and a C++17 compiler, and "
            "`cmake` is not on PATH; install them (e.g. `apt-get install cmake g++` or "
            "`pip install cmake`) and retry"
        )
    compilers = [os.environ.get("CXX", ""), "c++", "g++", "clang++", "cl"]
    if not any(c and shutil.which(c) for c in compilers):
        raise NativeLibraryError(
            "building the native kernels needs a C++17 compiler, and none was found ($CXX, c++, "
            "g++, clang++); install one (e.g. `apt-get install g++`) or set CXX, and retry"
        )
    src = plugins_source_dir()
    out = Path(build_dir).expanduser() if build_dir is not None else default_build_dir()
    out.mkdir(parents=True, exist_ok=True)
    nvcc = _find_nvcc()
    if cuda and nvcc is None:
        raise NativeLibraryError(
            "cuda=True (no --no-cuda) but nvcc was not found on PATH, in $CUDACXX, $CUDA_HOME "
            "or /usr/local/cuda; install the CUDA toolkit or build the CPU library only "
            "(--no-cuda / cuda=False)"
        )
    use_cuda = nvcc is not None if cuda is None else bool(cuda)
    configure = [
        cmake,
        "-S",
        str(src),
        "-B",
        str(out),
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DLOCORE_BUILD_CUDA={'ON' if use_cuda else 'OFF'}",
    ]
    if use_cuda and nvcc is not None:
        configure.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
    if tensorrt_root is not None:
        root = Path(tensorrt_root).expanduser()
        if not (root / "include" / "NvInfer.h").is_file():
            raise NativeLibraryError(
                f"tensorrt_root {root} has no include/NvInfer.h; expected a TensorRT install "
                "folder (the one holding include/ and lib/)"
            )
        if not use_cuda:
            raise NativeLibraryError(
                "the TensorRT plugin needs the CUDA kernel; drop --no-cuda / cuda=False"
            )
        configure.append(f"-DTENSORRT_ROOT={root}")
    if shutil.which("ninja") and not (out / "CMakeCache.txt").is_file():
        configure += ["-G", "Ninja"]
    log.info(
        "configuring native kernels: %s -> %s (CUDA %s, TensorRT plugin %s)",
        src,
        out,
        "on" if use_cuda else "off",
        "on" if tensorrt_root is not None else "off",
    )
    _run_logged(configure, "CMake configure")
    njobs = jobs if jobs is not None else (os.cpu_count() or 1)
    build = [cmake, "--build", str(out), "--parallel", str(max(1, njobs))]
    for target in targets or []:
        build += ["--target", target]
    log.info(
        "building native kernels with %d job(s)%s",
        njobs,
        " (the CUDA kernel compiles for every architecture: minutes)" if use_cuda else "",
    )
    _run_logged(build, "CMake build")
    log.info("native kernels built in %s", out)
    return out


# ---------------------------------------------------------------------------------------------
# loading

_lib_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def load_cpu_library(build: bool = True) -> ctypes.CDLL:
    """Load ``liblocore_scan_cpu`` (cached); build it first if it is nowhere to be found."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = find_cpu_library()
        if path is None:
            if not build:
                raise NativeLibraryError(
                    f"{_library_filename()} was not found ({LIBRARY_ENV} unset; not in "
                    f"{_repo_root() / 'build' / 'plugins'} nor {_user_cache_dir()}); "
                    f"{_BUILD_HINT}"
                )
            log.info("%s not built yet: building it now (CPU only)", _library_filename())
            try:
                out = build_plugins(cuda=False, targets=["locore_scan_cpu"])
            except (NativeLibraryError, FileNotFoundError) as exc:
                raise NativeLibraryError(
                    f"the SelectiveScan CPU library is not built and building it failed: {exc}"
                ) from exc
            path = out / _library_filename()
            if not path.is_file():
                raise NativeLibraryError(
                    f"the build finished but {path} does not exist; {_BUILD_HINT}"
                )
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise NativeLibraryError(
                f"could not load {path} ({exc}); rebuild it with `locore build-plugins`"
            ) from exc
        lib.locore_selective_scan_cpu.argtypes = [ctypes.POINTER(_ScanParams), ctypes.c_int32]
        lib.locore_selective_scan_cpu.restype = ctypes.c_int
        lib.locore_scan_status_string.argtypes = [ctypes.c_int]
        lib.locore_scan_status_string.restype = ctypes.c_char_p
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
    dt_bias [Dc], z [B, L, Dc]. Every array is float32, or every array float16 (state and
    accumulation are float32 either way). Returns y with the shape and dtype of x.
    ``num_threads``: 0 uses every hardware thread.
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
            f"selective_scan_cpu: x must be float32 or float16, got {x.dtype}; cast with "
            "x.astype(np.float32)"
        )
    dtype = x.dtype
    same = f"every input must have x's dtype ({dtype}); cast with .astype(np.{dtype})"
    if variant == "mamba2":
        if x.ndim != 4:
            raise ValueError(
                f"selective_scan_cpu: mamba2 x must be [B, L, H, P] {dtype}, got {_describe(x)}"
            )
        batch, length, heads, hdim = x.shape
    else:
        if x.ndim != 3:
            raise ValueError(
                f"selective_scan_cpu: mamba1 x (u) must be [B, L, Dc] {dtype}, got {_describe(x)}"
            )
        batch, length, heads = x.shape
        hdim = 1
    if not isinstance(B, np.ndarray) or B.ndim != 4:
        got = _describe(B) if isinstance(B, np.ndarray) else type(B).__name__
        raise ValueError(f"selective_scan_cpu: B must be [{batch}, {length}, G, N], got {got}")
    groups, nstate = int(B.shape[2]), int(B.shape[3])
    if groups < 1 or heads % groups:
        raise ValueError(
            f"selective_scan_cpu: B's group count G={groups} must divide the {heads} heads/"
            f"channels of x (head h reads group h // (H // G))"
        )
    bc_shape = (batch, length, groups, nstate)
    x = np.ascontiguousarray(x)
    dt = _check("dt", dt, (batch, length, heads), dtype, same)
    A = _check("A", A, (heads,) if variant == "mamba2" else (heads, nstate), dtype, same)
    B = _check("B", B, bc_shape, dtype, same)
    C = _check("C", C, bc_shape, dtype, same)
    if D is not None:
        D = _check("D", D, (heads,), dtype, same)
    if dt_bias is not None:
        dt_bias = _check("dt_bias", dt_bias, (heads,), dtype, same)
    if z is not None:
        z = _check("z", z, tuple(x.shape), dtype, same)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"selective_scan_cpu: chunk_size must be an int >= 1, got {chunk_size!r}")
    if not isinstance(num_threads, int) or num_threads < 0:
        raise ValueError(
            f"selective_scan_cpu: num_threads must be an int >= 0 (0 = all), got {num_threads!r}"
        )
    limit = 2**31 - 1
    if max(batch, length, heads, hdim, nstate) > limit:
        raise ValueError("selective_scan_cpu: every dimension must be < 2**31")
    y = np.empty_like(x)

    def ptr(a: np.ndarray | None) -> int | None:
        return None if a is None else a.ctypes.data

    params = _ScanParams(
        batch,
        length,
        heads,
        hdim,
        groups,
        nstate,
        _VARIANTS[variant],
        int(bool(dt_softplus)),
        int(bool(reverse)),
        chunk_size,
        _DTYPES[dtype],
        ptr(x),
        ptr(dt),
        ptr(A),
        ptr(B),
        ptr(C),
        ptr(D),
        ptr(dt_bias),
        ptr(z),
        ptr(y),
    )
    lib = load_cpu_library()
    status = lib.locore_selective_scan_cpu(ctypes.byref(params), num_threads)
    if status != SCAN_OK:
        text = lib.locore_scan_status_string(status).decode()
        raise NativeLibraryError(
            f"locore_selective_scan_cpu returned {status} ({text}) for x {_describe(x)}, "
            f"B {_describe(B)}, variant {variant}"
        )
    return y


# ---------------------------------------------------------------------------------------------
# CLI: locore build-plugins


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=None,
        help="CMake build folder (default: <repo>/build/plugins, or ~/.cache/locore-edge/plugins "
        "when the checkout is read-only)",
    )
    parser.add_argument(
        "--tensorrt-root",
        type=Path,
        default=os.environ.get("TENSORRT_ROOT") or None,
        help="TensorRT install folder (include/, lib/) to also build the TensorRT plugin "
        "(default: $TENSORRT_ROOT)",
    )
    parser.add_argument(
        "--no-cuda", action="store_true", help="build the CPU library only (skip the CUDA kernel)"
    )
    parser.add_argument(
        "--jobs", "-j", type=int, default=None, help="parallel build jobs (default: CPU count)"
    )


def run(args: argparse.Namespace) -> int:
    out = build_plugins(
        build_dir=args.build_dir,
        tensorrt_root=args.tensorrt_root,
        cuda=False if args.no_cuda else None,
        jobs=args.jobs,
    )
    print(f"built native kernels in {out}")
    for path in sorted(out.glob("*locore*")):
        if path.is_file() and path.suffix in (".so", ".dylib", ".dll", ".a", ".lib"):
            print(f"  {path.name}")
    return 0
