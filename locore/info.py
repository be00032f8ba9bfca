"""``locore info``: presets, installed backends, what is missing and which extra brings it."""

from __future__ import annotations

import argparse
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        import json

        print(json.dumps(info, indent=2))
        return 0
    print(f"locore-edge {info['version']} (Python {info['python']}, {info['platform']})")
    print("\nPresets:")
    for name, p in info["presets"].items():
        print(
            f"  {name:6s} d_model={p['d_model']:<4d} layers={p['layers']:<3d} "
            f"heads={p['heads']:<3d} head_dim={p['head_dim']:<4d} d_state={p['d_state']:<4d} "
            f"tokens/100-image window={p['tokens_per_100_window']}"
        )
    print("\nBackends:")
    for name, ok in info["backends"].items():
        print(f"  {name:17s} {'available' if ok else 'not available'}")
    print("\nPackages:")
    missing = []
    for p in info["packages"]:
        state = p["version"] or ("installed" if p["available"] else "missing")
        print(f"  {p['distribution']:24s} {state:12s} {p['purpose']}")
        if not p["available"]:
            missing.append(p)
    if missing:
        print("\nTo install what is missing:")
        for p in missing:
            how = (
                f"pip install {p['distribution']}"
                if p["extra"] == "(base)"
                else f"pip install 'locore-edge[{p['extra']}]'"
            )
            print(f"  {p['distribution']:24s} {how}")
    return 0
