"""What `locore info` reports: presets, installed backends, missing packages and their extras."""

from __future__ import annotations

import platform
import sys
from typing import Any

from locore import __version__
from locore.config import PRESETS, LocoreConfig
from locore.deps import OPTIONAL, installed_version, is_available


def tensorrt_info() -> dict[str, Any]:
    """TensorRT, CUDA, the GPU and the plugin library: versions, or why each is missing.

    Imports tensorrt and cuda-python only when they are installed (and then asks the GPU for its
    name and compute capability); never raises.
    """
    from locore import scan_spec
    from locore.runtime import engines

    out: dict[str, Any] = {
        "tensorrt": installed_version("tensorrt") if is_available("tensorrt") else None,
        "cuda_python": installed_version("cuda-python") if is_available("cuda") else None,
        "pycuda": installed_version("pycuda") if is_available("pycuda") else None,
        "gpu": None,
        "plugin_library": None,
    }
    try:
        machine = engines.probe_machine()
        out["gpu"] = {"name": machine.gpu_name, "compute_capability": machine.compute_capability}
        out["tensorrt"] = machine.tensorrt_version
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        out["gpu_error"] = str(exc).split(". Install")[0]
    try:
        path = engines.find_plugin_library()
    except OSError as exc:
        out["plugin_error"] = str(exc)
        path = None
    if path is not None:
        out["plugin_library"] = {
            "path": str(path),
            "sha256": engines.sha256_file(path),
            "plugin": scan_spec.PLUGIN_NAME,
            "versions": list(scan_spec.PLUGIN_VERSIONS),
            "namespace": scan_spec.PLUGIN_NAMESPACE,
        }
    else:
        out.setdefault(
            "plugin_error",
            f"{engines.plugin_library_filename()} not found ($LOCORE_TRT_PLUGIN, build/plugins, "
            "the user cache); `locore build-plugins --tensorrt-root <TensorRT folder>` builds it",
        )
    return out


def collect() -> dict[str, Any]:
    """Everything ``locore info`` shows, as a dict (no heavy imports)."""
    packages = []
    for dep in OPTIONAL:
        available = is_available(dep.module)
        packages.append(
            {
                "module": dep.module,
                "distribution": dep.distribution,
                "version": installed_version(dep.distribution) if available else None,
                "available": available,
                "extra": dep.extra,
                "purpose": dep.purpose,
            }
        )
    presets = {}
    for name in PRESETS:
        cfg = LocoreConfig.preset(name)
        presets[name] = {
            "d_model": cfg.d_model,
            "layers": cfg.n_layers,
            "heads": cfg.n_heads,
            "head_dim": cfg.head_dim,
            "d_state": cfg.d_state,
            "tokens_per_100_window": cfg.sequence_length(100),
        }
    ort_providers: list[str] = []
    if is_available("onnxruntime"):
        try:
            import onnxruntime

            ort_providers = list(onnxruntime.get_available_providers())
        except Exception:  # noqa: BLE001 - a broken install is reported, not raised
            ort_providers = []
    backends = {
        "onnxruntime-cpu": "CPUExecutionProvider" in ort_providers,
        "onnxruntime-cuda": "CUDAExecutionProvider" in ort_providers,
        "tensorrt": is_available("tensorrt") and (is_available("cuda") or is_available("pycuda")),
    }
    return {
        "tensorrt": tensorrt_info(),
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "presets": presets,
        "packages": packages,
        "backends": backends,
    }
