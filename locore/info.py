"""What `locore info` reports: presets, installed backends, missing packages and their extras."""

from __future__ import annotations

import platform
import sys
from typing import Any

from locore import __version__
from locore.config import PRESETS, LocoreConfig
from locore.deps import OPTIONAL, installed_version, is_available


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
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "presets": presets,
        "packages": packages,
        "backends": backends,
    }
