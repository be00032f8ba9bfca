"""``locore info``: presets, installed backends, missing packages (no torch needed)."""

from __future__ import annotations

import argparse

from locore.info import collect


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
    trt = info["tensorrt"]
    print("\nTensorRT:")
    print(f"  tensorrt          {trt['tensorrt'] or 'not installed'}")
    print(f"  cuda-python       {trt['cuda_python'] or 'not installed'}")
    gpu = trt["gpu"]
    gpu_text = f"{gpu['name']} (sm {gpu['compute_capability']})" if gpu else trt.get("gpu_error")
    print(f"  GPU               {gpu_text}")
    lib = trt["plugin_library"]
    lib_text = (
        f"{lib['path']} ({lib['plugin']} versions {', '.join(lib['versions'])}, namespace "
        f"{lib['namespace']!r}, sha256 {lib['sha256'][:12]})"
        if lib
        else trt.get("plugin_error")
    )
    print(f"  plugin library    {lib_text}")
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
