"""Build the native SelectiveScan code with CMake and find what was built.

The C++/CUDA sources are the ``plugins/`` folder: beside the package in a checkout (editable
install), or ``locore/plugins`` inside an installed wheel. :func:`build_plugins` runs CMake on
them (CPU library always, CUDA kernel when nvcc is found, TensorRT plugin library when
``tensorrt_root`` is given); :func:`find_cpu_library` looks for the built
``liblocore_scan_cpu`` (``$LOCORE_SCAN_LIB``, then ``<checkout>/build/plugins``, then
``~/.cache/locore-edge/plugins``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

__all__ = [
    "BUILD_HINT",
    "LIBRARY_ENV",
    "NativeLibraryError",
    "build_plugins",
    "built_libraries",
    "configured_libraries",
    "configured_targets",
    "default_build_dir",
    "ensure_current",
    "find_cpu_library",
    "find_nvcc",
    "library_filename",
    "plugins_source_dir",
    "searched_locations",
    "stale_sources",
]

log = logging.getLogger(__name__)

LIBRARY_ENV = "LOCORE_SCAN_LIB"
"""Environment variable: path of a built CPU library to use instead of searching."""
CPU_TARGET = "locore_scan_cpu"
"""CMake target (and library stem) of the CPU library."""
BUILD_HINT = (
    "build it with `locore build-plugins` "
    "(or `cmake -S plugins -B build/plugins && cmake --build build/plugins`)"
)


class NativeLibraryError(RuntimeError):
    """The native library could not be built, found, loaded or run."""


# ---------------------------------------------------------------------------------------------
# locating sources and libraries


def library_filename(stem: str = CPU_TARGET) -> str:
    """File name of the shared library ``stem`` on this platform (``lib<stem>.so`` on Linux)."""
    if sys.platform == "win32":
        return f"{stem}.dll"
    if sys.platform == "darwin":
        return f"lib{stem}.dylib"
    return f"lib{stem}.so"


def _checkout_root() -> Path | None:
    """The repository checkout holding this package (editable install), or None (a wheel)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "plugins" / "CMakeLists.txt").is_file() else None


def _packaged_sources() -> Path:
    """Where a wheel installs the plugin sources: ``locore/plugins``."""
    return Path(__file__).resolve().parents[1] / "plugins"


def plugins_source_dir() -> Path:
    """The ``plugins/`` source folder (holding CMakeLists.txt): the checkout's, else the wheel's."""
    checkout = _checkout_root()
    if checkout is not None:
        return checkout / "plugins"
    packaged = _packaged_sources()
    if (packaged / "CMakeLists.txt").is_file():
        return packaged
    raise FileNotFoundError(
        "the native sources were not found: expected plugins/CMakeLists.txt in the checkout "
        f"({Path(__file__).resolve().parents[2]}) or in the installed package ({packaged}). "
        "Reinstall locore-edge (the wheel ships them), or build in a checkout with "
        "`cmake -S plugins -B build/plugins` and point "
        f"{LIBRARY_ENV} at the built {library_filename()}"
    )


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "locore-edge" / "plugins"


def default_build_dir() -> Path:
    """``<checkout>/build/plugins`` when the checkout is writable, else the user cache folder."""
    checkout = _checkout_root()
    if checkout is not None and os.access(checkout, os.W_OK):
        return checkout / "build" / "plugins"
    return _user_cache_dir()


def _search_dirs() -> list[Path]:
    checkout = _checkout_root()
    dirs = [checkout / "build" / "plugins"] if checkout is not None else []
    return [*dirs, _user_cache_dir()]


def find_cpu_library() -> Path | None:
    """Path of the built CPU library, or None: ``$LOCORE_SCAN_LIB``, build folder, user cache."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise NativeLibraryError(
                f"{LIBRARY_ENV} points at {path}, which is not a file; expected the path of a "
                f"built {library_filename()}; unset it or {BUILD_HINT}"
            )
        return path
    name = library_filename()
    for folder in _search_dirs():
        if (folder / name).is_file():
            return folder / name
    return None


def searched_locations() -> str:
    """Where :func:`find_cpu_library` looks, for error messages."""
    return f"{LIBRARY_ENV} unset; not in " + " nor ".join(str(d) for d in _search_dirs())


# ---------------------------------------------------------------------------------------------
# building


def find_nvcc() -> str | None:
    """nvcc from ``$CUDACXX``, PATH, ``$CUDA_HOME``, ``$CUDA_PATH`` or /usr/local/cuda; or None."""
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

    ``build_dir``: the CMake build folder (default :func:`default_build_dir`).
    ``cuda``: None builds the CUDA kernel when nvcc is found, False never, True requires it.
    ``tensorrt_root``: a TensorRT install (include/, lib/); also builds the TensorRT plugin.
    ``jobs``: parallel build jobs (default: the CPU count).
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
    nvcc = find_nvcc()
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


def built_libraries(build_dir: str | os.PathLike[str]) -> list[Path]:
    """The locore libraries in a build folder (shared and static), sorted by name; files an
    earlier configuration of the folder left (e.g. the CUDA kernel before a ``--no-cuda``
    build) included: :func:`configured_libraries` has only this configuration's."""
    suffixes = (".so", ".dylib", ".dll", ".a", ".lib")
    return [
        p for p in sorted(Path(build_dir).glob("*locore*")) if p.is_file() and p.suffix in suffixes
    ]


_TARGET_LINE = re.compile(r"^(?:\.\.\. )?(locore_\w+)(?::|\s|$)")


def configured_targets(build_dir: str | os.PathLike[str]) -> list[str] | None:
    """The ``locore_*`` CMake targets the build folder is configured for now (``cmake --build
    DIR --target help``, Ninja and Makefiles alike), or None when CMake cannot say."""
    cmake = _find_cmake()
    if cmake is None or not (Path(build_dir) / "CMakeCache.txt").is_file():
        return None
    try:
        proc = subprocess.run(
            [cmake, "--build", str(build_dir), "--target", "help"],
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    found = (_TARGET_LINE.match(line.strip()) for line in proc.stdout.splitlines())
    return sorted({m.group(1) for m in found if m})


def _library_target(path: Path) -> str:
    """``liblocore_scan_cpu.so`` -> ``locore_scan_cpu``."""
    stem = path.name.split(".", 1)[0]
    return stem[3:] if stem.startswith("lib") else stem


def configured_libraries(build_dir: str | os.PathLike[str]) -> tuple[list[Path], list[Path]]:
    """``(this configuration's libraries, leftovers)`` in a build folder: a library is this
    configuration's when its CMake target is configured now (:func:`configured_targets`); the
    others were built by an earlier configuration (e.g. ``liblocore_scan_cuda.a`` in a folder
    now configured with ``--no-cuda``). When CMake cannot list the targets, every library
    counts as this configuration's."""
    found = built_libraries(build_dir)
    targets = configured_targets(build_dir)
    if targets is None:
        return found, []
    ours = [p for p in found if _library_target(p) in targets]
    return ours, [p for p in found if p not in ours]


# ---------------------------------------------------------------------------------------------
# staleness: a library built before its sources last changed

_SOURCE_SUFFIXES = (".h", ".hpp", ".cpp", ".cc", ".cxx", ".inc")


def _cpu_library_sources(source_dir: Path) -> list[Path]:
    """What the CPU library is built from: CMakeLists.txt files and the C++ sources and headers
    under ``selective_scan/`` and ``common/`` of ``source_dir`` (the ``plugins/`` folder)."""
    found = [p for p in source_dir.glob("**/CMakeLists.txt") if p.is_file()]
    for sub in ("selective_scan", "common"):
        found += [
            p for p in (source_dir / sub).rglob("*") if p.is_file() and p.suffix in _SOURCE_SUFFIXES
        ]
    return found


def stale_sources(library: str | os.PathLike[str], source_dir: Path | None = None) -> list[Path]:
    """Sources of the CPU library modified after ``library`` was built, newest first (empty when
    it is current, or when no sources are found, as for a library given by path alone)."""
    if source_dir is None:
        try:
            source_dir = plugins_source_dir()
        except FileNotFoundError:
            return []
    built = Path(library).stat().st_mtime
    newer = [p for p in _cpu_library_sources(source_dir) if p.stat().st_mtime > built]
    return sorted(newer, key=lambda p: p.stat().st_mtime, reverse=True)


def _find_cmake() -> str | None:
    return shutil.which("cmake")


def _rebuild_cpu_library(build_dir: Path) -> None:
    """Rebuild the CPU target in ``build_dir`` (configured: ``cmake --build``, which re-runs the
    configure step itself when a CMakeLists.txt changed; else a fresh CPU-only build)."""
    cmake = _find_cmake()
    if cmake is not None and (build_dir / "CMakeCache.txt").is_file():
        _run_logged([cmake, "--build", str(build_dir), "--target", CPU_TARGET], "CMake build")
    else:
        build_plugins(build_dir, cuda=False, targets=[CPU_TARGET])


def ensure_current(library: str | os.PathLike[str], source_dir: Path | None = None) -> Path:
    """``library`` itself when no source under ``plugins/`` changed since it was built; else
    rebuild it in place (when its build folder is writable and CMake is on PATH) or raise
    :class:`NativeLibraryError` naming the stale library, the changed file and the command."""
    path = Path(library)
    stale = stale_sources(path, source_dir)
    if not stale:
        return path
    build_dir = path.parent
    if _find_cmake() is not None and os.access(build_dir, os.W_OK):
        log.info("%s is older than %s: rebuilding it", path, stale[0])
        try:
            _rebuild_cpu_library(build_dir)
        except (NativeLibraryError, FileNotFoundError) as exc:
            raise NativeLibraryError(
                f"{path} is older than its source {stale[0]} and rebuilding it failed: {exc}"
            ) from exc
        if not path.is_file():
            raise NativeLibraryError(
                f"the rebuild finished but {path} does not exist; {BUILD_HINT}"
            )
        if stale_sources(path, source_dir):
            # CMake had nothing to rebuild (the change does not reach this library): mark the
            # library current so that the next load does not rebuild again.
            os.utime(path)
        return path
    why = "CMake is not on PATH" if _find_cmake() is None else f"{build_dir} is not writable"
    raise NativeLibraryError(
        f"{path} is stale: {stale[0]} changed after it was built ({len(stale)} source file(s) "
        f"newer), and it cannot be rebuilt here ({why}); rebuild it with `locore build-plugins` "
        f"(or `cmake --build {build_dir} --target {CPU_TARGET}`), or set {LIBRARY_ENV} to use a "
        "library as it is"
    )
