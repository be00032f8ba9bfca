"""``locore build``: a TensorRT engine from an exported ONNX file, with trtexec's flag names.

A thin layer over :mod:`locore.runtime.engines` (profiles, flags, the trtexec command line) and
:mod:`locore.export.engine` (the build through TensorRT's ONNX parser). ``--print-trtexec``
prints the equivalent ``trtexec`` command and needs no TensorRT; without TensorRT a build says
what is missing and prints that command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from locore.commands.args import int_at_least, positive_int

HARDWARE = ("none", "ampere+")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, type=Path, help="model from `locore export`")
    parser.add_argument(
        "--saveEngine",
        dest="save_engine",
        type=Path,
        default=None,
        help="engine file to write, with its sidecar <engine>.json (required to build)",
    )
    shapes = parser.add_argument_group(
        "optimization profile (trtexec syntax name:AxBxC,...; default from the ONNX metadata: "
        "batch 1, gallery 1 to --window, opt = --window)"
    )
    shapes.add_argument("--minShapes", dest="min_shapes", default=None, help="smallest shapes")
    shapes.add_argument("--optShapes", dest="opt_shapes", default=None, help="tuned shapes")
    shapes.add_argument("--maxShapes", dest="max_shapes", default=None, help="largest shapes")
    shapes.add_argument(
        "--window", type=positive_int, default=None, help="gallery images per call (default 100)"
    )
    build = parser.add_argument_group("build options (as trtexec's)")
    build.add_argument(
        "--memPoolSize",
        dest="mem_pool_size",
        default=None,
        help="pool:size[,...], e.g. workspace:1024 (MiB unless suffixed B, K, M, G)",
    )
    build.add_argument("--timingCacheFile", dest="timing_cache", type=Path, default=None)
    build.add_argument(
        "--dynamicPlugins",
        dest="dynamic_plugins",
        action="append",
        type=Path,
        default=[],
        help="plugin library to load (default: $LOCORE_TRT_PLUGIN, then the build folder)",
    )
    build.add_argument(
        "--staticPlugins", dest="static_plugins", action="append", type=Path, default=[]
    )
    build.add_argument(
        "--builderOptimizationLevel",
        dest="builder_optimization_level",
        type=int_at_least(0),
        default=None,
        help="0 to 5 (TensorRT's default 3)",
    )
    build.add_argument(
        "--hardwareCompatibilityLevel",
        dest="hardware_compatibility_level",
        choices=HARDWARE,
        default="none",
    )
    build.add_argument(
        "--versionCompatible",
        "--vc",
        dest="version_compatible",
        action="store_true",
        help="version-compatible engine (the plugin library is serialized into it)",
    )
    build.add_argument(
        "--stronglyTyped",
        dest="strongly_typed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="precision from the ONNX file (default on; TensorRT 11 has no other mode)",
    )
    build.add_argument("--fp16", action="store_true", help="TensorRT 10 weakly typed only")
    build.add_argument("--int8", action="store_true", help="TensorRT 10 weakly typed only")
    parser.add_argument(
        "--print-trtexec",
        dest="print_trtexec",
        action="store_true",
        help="print the equivalent trtexec command and exit (no TensorRT needed)",
    )


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the build needs, checked, without TensorRT: profile, flags, plugin, command."""
    from locore.config import ConfigError
    from locore.runtime.engines import (
        DEFAULT_WINDOW,
        BuildFlags,
        find_plugin_library,
        parse_mem_pool_size,
        parse_shapes,
        plugin_library_filename,
        read_onnx_metadata,
        resolve_profile,
        trtexec_command,
    )
    from locore.runtime.metadata import parse_model_metadata

    onnx: Path = args.onnx
    if not onnx.is_file():
        raise FileNotFoundError(f"--onnx {onnx}: no such file")
    metadata = read_onnx_metadata(onnx)
    _, graph = parse_model_metadata(metadata, str(onnx))
    if graph is None:
        raise ConfigError(
            f"{onnx} has no locore.graph_io metadata, so its inputs' shapes are unknown; "
            "re-export it with `locore export`, or give --minShapes/--optShapes/--maxShapes "
            "to trtexec directly"
        )
    profile = resolve_profile(
        graph,
        parse_shapes(args.min_shapes, "--minShapes") if args.min_shapes else None,
        parse_shapes(args.opt_shapes, "--optShapes") if args.opt_shapes else None,
        parse_shapes(args.max_shapes, "--maxShapes") if args.max_shapes else None,
        window=args.window or DEFAULT_WINDOW,
    )
    flags = BuildFlags(
        mem_pool_size=parse_mem_pool_size(args.mem_pool_size) if args.mem_pool_size else {},
        builder_optimization_level=args.builder_optimization_level,
        hardware_compatibility_level=args.hardware_compatibility_level,
        version_compatible=args.version_compatible,
        strongly_typed=args.strongly_typed,
        fp16=args.fp16,
        int8=args.int8,
        timing_cache=args.timing_cache,
        verbose=bool(getattr(args, "verbose", False)),  # locore's -v/--verbose, trtexec's too
    )
    flags.check(None)
    flavor = metadata.get("locore.flavor", "portable")
    plugin = find_plugin_library(args.dynamic_plugins) if flavor == "plugin" else None
    shown: list[Any] = []
    if flavor == "plugin":
        shown = [plugin if plugin is not None else plugin_library_filename()]
    engine = args.save_engine or onnx.with_suffix(".plan")
    command = trtexec_command(
        onnx, engine, profile, flags, shown, static_plugins=args.static_plugins
    )
    return {
        "profile": profile,
        "flags": flags,
        "plugin": plugin,
        "flavor": flavor,
        "command": command,
        "engine": engine,
    }


def run(args: argparse.Namespace) -> int:
    from locore.deps import MissingDependencyError, is_available
    from locore.errors import UsageError
    from locore.fileio import check_outputs
    from locore.runtime.engines import format_command, plugin_library_filename

    check_outputs({"--saveEngine": args.save_engine}, {"--onnx": args.onnx})
    built = plan(args)
    command = format_command(built["command"])
    if built["flavor"] == "plugin" and built["plugin"] is None:
        print(
            f"note: {args.onnx} is the plugin flavor and no {plugin_library_filename()} was "
            "found (--dynamicPlugins, $LOCORE_TRT_PLUGIN, build/plugins); build it with "
            "`locore build-plugins --tensorrt-root <TensorRT folder>`",
            file=sys.stderr,
        )
    if args.print_trtexec:
        print(command)
        return 0
    if args.save_engine is None:
        raise UsageError("give --saveEngine E.plan (the engine to write), or --print-trtexec")
    missing = [
        name
        for name, ok in (
            ("the Python package 'tensorrt' (TensorRT 10.3+ or 11)", is_available("tensorrt")),
            (
                "cuda-python or pycuda (the GPU's name and compute capability for the sidecar)",
                is_available("cuda") or is_available("pycuda"),
            ),
        )
        if not ok
    ]
    if missing:
        raise MissingDependencyError(
            "locore build needs " + " and ".join(missing) + ", not importable here; install "
            "them with pip install 'locore-edge[gpu]' on a machine with an NVIDIA GPU (JetPack "
            "ships TensorRT's Python package). Or build with NVIDIA's trtexec: " + command
        )
    if built["flavor"] == "plugin" and built["plugin"] is None:
        raise FileNotFoundError(
            f"{args.onnx} is the plugin flavor and needs {plugin_library_filename()}: build it "
            "with `locore build-plugins --tensorrt-root <TensorRT folder>`, then pass "
            "--dynamicPlugins <path>; or build the portable flavor"
        )
    from locore.export.engine import build_engine_file

    key, machine = build_engine_file(
        args.onnx,
        args.save_engine,
        [built["profile"]],
        built["flags"],
        built["plugin"],
    )
    print(
        f"wrote {args.save_engine} ({key.precision}, {key.flavor} flavor, TensorRT "
        f"{machine.tensorrt_version}, {machine.gpu_name} sm {machine.compute_capability}) and "
        f"its sidecar {args.save_engine}.json"
    )
    print(f"trtexec equivalent: {command}")
    return 0
