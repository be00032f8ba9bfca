"""Native SelectiveScan kernels: build them (:mod:`.build`), call the CPU library (:mod:`.binding`).

The C++/CUDA sources are ``plugins/`` (see plugins/README.md). :func:`build_plugins` runs CMake
on them; :func:`load_cpu_library` finds ``liblocore_scan_cpu`` (building it on first use) and
:func:`selective_scan_cpu` runs the scan on numpy arrays with the signature of
``locore.model.selective_scan_ref``. The op contract is :mod:`locore.scan_spec`.
"""

# The package re-exports the public names that its modules declare in their __all__.
from locore.native import binding, build
from locore.native.binding import *  # noqa: F403
from locore.native.build import *  # noqa: F403

__all__ = sorted({*binding.__all__, *build.__all__})
