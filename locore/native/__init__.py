"""Native SelectiveScan kernels: build them (:mod:`.build`), call the CPU library (:mod:`.binding`).

The C++/CUDA sources are ``plugins/`` (see plugins/README.md). :func:`build_plugins` runs CMake
on them; :func:`load_cpu_library` finds ``liblocore_scan_cpu`` (building it on first use) and
:func:`selective_scan_cpu` runs the scan on numpy arrays with the signature of
``locore.model.selective_scan_ref``. The op contract is :mod:`locore.scan_spec`.
"""

from locore.native.binding import load_cpu_library, selective_scan_cpu
from locore.native.build import (
    LIBRARY_ENV,
    NativeLibraryError,
    build_plugins,
    built_libraries,
    default_build_dir,
    find_cpu_library,
    find_nvcc,
    plugins_source_dir,
)

__all__ = [
    "LIBRARY_ENV",
    "NativeLibraryError",
    "build_plugins",
    "built_libraries",
    "default_build_dir",
    "find_cpu_library",
    "find_nvcc",
    "load_cpu_library",
    "plugins_source_dir",
    "selective_scan_cpu",
]
