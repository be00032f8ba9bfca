"""Building the C++ runtime (runtime/cpp) for the tests that compare it with the Python side.

One build folder for all of them: ``build/runtime-cpp`` (the folder .ci/native builds, reused
when present; configured here otherwise, with this Python for the fresh test vectors), or
``$LOCORE_RUNTIME_TEST_BUILD``; -j from ``LOCORE_CI_JOBS`` (default 2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "runtime" / "cpp"


def build_runtime_targets(*targets: str) -> Path:
    """Build ``targets`` of runtime/cpp (incrementally) in the shared build folder; the folder.

    The folder is the one .ci/native and tests/test_cpp_runtime.py use (``build/runtime-cpp``,
    configured here when it is not yet), or ``$LOCORE_RUNTIME_TEST_BUILD``. Skips the calling
    test without cmake or a C++ compiler; fails on configure or compile errors.
    """
    cmake = shutil.which("cmake")
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cmake is None or cxx is None:
        pytest.skip(
            "the C++ runtime needs cmake (>= 3.18) and a C++17 compiler, not found on PATH "
            f"(cmake: {cmake}, compiler: {cxx}); Debian: apt-get install cmake g++"
        )
    build = Path(os.environ.get("LOCORE_RUNTIME_TEST_BUILD", ROOT / "build" / "runtime-cpp"))
    if not (build / "CMakeCache.txt").is_file():
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        configure = subprocess.run(
            [cmake, "-S", str(SOURCE), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release",
             f"-DLOCORE_RUNTIME_PYTHON={sys.executable}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert configure.returncode == 0, configure.stdout[-4000:] + configure.stderr[-4000:]
    version = (build / "include" / "locore" / "version.hpp").read_text()
    jobs = os.environ.get("LOCORE_CI_JOBS", "2")
    for target in targets:
        if target == "locore_runtime_hdf5_tests" and "LOCORE_RUNTIME_HAS_HDF5 1" not in version:
            pytest.skip(
                "the HDF5 C library was not found when runtime/cpp was configured in "
                f"{build} (apt-get install libhdf5-dev, then delete that folder)"
            )
        result = subprocess.run(
            [cmake, "--build", str(build), "--target", target, "--parallel", jobs],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return build


def built_binary(build: Path, name: str) -> Path:
    found = [p for p in build.rglob(name) if p.is_file() and os.access(p, os.X_OK)]
    assert found, f"{name} was not built in {build}"
    return found[0]
