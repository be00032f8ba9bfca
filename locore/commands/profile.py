"""``locore profile``: trtexec-style latency of a re-ranker, or of the whole pipeline per stage.

A thin layer over :mod:`locore.runtime.profiling` (and :mod:`locore.runtime.tegrastats` for
Jetson telemetry). Window mode (the default) times one model call on a synthetic window
(``--shapes G=100``); ``--demo`` or ``--images DIR`` times every pipeline stage per query.
Several ``--model`` run interleaved and are compared to the first. Checkpoint folders are
exported to ONNX on first use (needs torch), as ``locore demo`` does.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from locore.commands.args import (
    DEVICES,
    add_progress_argument,
    add_rerank_arguments,
    add_threads_argument,
    finite_float,
    output_path,
    positive_int,
    rerank_params,
    thread_count,
)
from locore.errors import UsageError

# --backend: the runtime's kinds plus trtexec-like short names for ONNX Runtime
BACKEND_ALIASES = {"ort": ("onnxruntime", None), "ort-cuda": ("onnxruntime", ["cuda"])}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from locore.runtime.backends import BACKEND_KINDS
    from locore.runtime.profiling import (
        DEFAULT_DURATION_S,
        DEFAULT_ITERATIONS,
        DEFAULT_PERCENTILES,
        DEFAULT_WARMUP_MS,
    )

    models = parser.add_argument_group("models")
    models.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="[LABEL=]MODEL",
        help="re-ranker to profile: .onnx, .engine/.plan (TensorRT) or a checkpoint folder; "
        "repeat it to compare models interleaved (ratios to the first). Default with --demo: "
        "the shipped model",
    )
    models.add_argument(
        "--backend",
        choices=(*BACKEND_KINDS, *BACKEND_ALIASES),
        default="auto",
        help="ort (ONNX Runtime CPU), ort-cuda, tensorrt, pluginref, onnxruntime (with "
        "--device), or auto: by the file suffix (default)",
    )
    models.add_argument(
        "--device",
        choices=sorted(DEVICES),
        default="cpu",
        help="ONNX Runtime device for --backend onnxruntime/auto (default %(default)s)",
    )
    add_threads_argument(models, "ONNX Runtime intra-op threads")

    timing = parser.add_argument_group("timing (trtexec's flag names and defaults)")
    timing.add_argument(
        "--shapes",
        default=None,
        metavar="G=N",
        help="window mode: gallery images per call, G=100 (default), B=1 queries per call, or "
        "trtexec-style gallery_desc:1x100x48x128; checked against the model's range",
    )
    timing.add_argument(
        "--warmUp",
        dest="warmup_ms",
        type=finite_float,
        default=DEFAULT_WARMUP_MS,
        metavar="MS",
        help="warm-up time per model in ms (default %(default)g)",
    )
    timing.add_argument(
        "--iterations",
        type=positive_int,
        default=DEFAULT_ITERATIONS,
        metavar="N",
        help="time at least N calls per model (default %(default)s)",
    )
    timing.add_argument(
        "--duration",
        dest="duration_s",
        type=finite_float,
        default=DEFAULT_DURATION_S,
        metavar="S",
        help="and for at least S seconds (default %(default)g)",
    )
    timing.add_argument(
        "--percentile",
        default=",".join(f"{p:g}" for p in DEFAULT_PERCENTILES),
        metavar="P[,P...]",
        help="percentiles to report, nearest rank as trtexec (default %(default)s)",
    )

    pipe = parser.add_argument_group("pipeline mode (per query: every stage timed apart)")
    source = pipe.add_mutually_exclusive_group()
    source.add_argument(
        "--demo",
        action="store_true",
        help="the demo split's query photos against its database (built and cached on first "
        "use, see `locore demo`)",
    )
    source.add_argument(
        "--images",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder of images: each is a query against the whole folder (indexed first, "
        "untimed)",
    )
    pipe.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="demo data and exported checkpoints (default: $LOCORE_CACHE/demo or "
        "~/.cache/locore-edge/demo)",
    )
    pipe.add_argument("--split", choices=("test", "train"), default="test", help="demo split")
    pipe.add_argument(
        "--codebook",
        type=Path,
        default=None,
        help="--images: VLAD codebook (Codebook.save npz) for the global descriptor; default "
        "mean-pooled RootSIFT (no training)",
    )
    pipe.add_argument(
        "--shortlist", type=positive_int, default=100, help="shortlist length K, all re-ranked"
    )
    pipe.add_argument(
        "--max-queries", type=positive_int, default=None, help="profile the first N queries"
    )
    add_rerank_arguments(parser, with_topk=False)

    out = parser.add_argument_group("outputs")
    out.add_argument(
        "--export-json",
        type=Path,
        default=None,
        metavar="REPORT.json",
        help="the report as JSON (schema: locore.runtime.profiling.REPORT_SCHEMA)",
    )
    out.add_argument(
        "--export-times",
        type=Path,
        default=None,
        metavar="TIMES.json",
        help="every timed iteration (window) or query (pipeline), as JSON records",
    )
    out.add_argument(
        "--plots",
        type=Path,
        default=None,
        metavar="DIR",
        help="write latency_histogram.png and stages.png here (needs matplotlib)",
    )
    out.add_argument(
        "--print-schema",
        action="store_true",
        help="print the JSON schema of --export-json and exit (no model needed)",
    )

    tele = parser.add_argument_group("Jetson telemetry (tegrastats)")
    tele.add_argument(
        "--tegrastats-interval",
        type=positive_int,
        default=100,
        metavar="MS",
        help="tegrastats sampling interval in ms (default %(default)s)",
    )
    tele.add_argument(
        "--tegrastats", default=None, metavar="PATH", help="the tegrastats executable to run"
    )
    tele.add_argument("--no-telemetry", action="store_true", help="do not run tegrastats")
    add_progress_argument(parser)


def _split_label(item: str) -> tuple[str | None, Path]:
    """``LABEL=PATH`` -> (label, path); a plain path (even one with '=') -> (None, path)."""
    label, sep, rest = item.partition("=")
    if sep and label and "/" not in label and not Path(item).exists():
        return label, Path(rest)
    return None, Path(item)


def _resolve_models(args: argparse.Namespace, cache: Path) -> list[tuple[str, Path, dict]]:
    """(label, model file, recorded fusion) per --model; checkpoint folders are exported."""
    from locore.checkpoint_format import checkpoint_fusion, is_checkpoint_dir, shipped_model_dir

    items = list(args.model or [])
    if not items:
        if not (args.demo or args.images):
            raise UsageError(
                "give --model MODEL (.onnx, .engine/.plan or a checkpoint folder); only "
                "--demo/--images default to the shipped model"
            )
        items = [f"shipped={shipped_model_dir()}"]
    resolved: list[tuple[str, Path, dict]] = []
    for item in items:
        label, path = _split_label(item)
        fusion: dict[str, float] = {}
        if is_checkpoint_dir(path):
            try:
                from locore.export import cached_export
            except ImportError as exc:
                from locore.deps import MissingDependencyError

                raise MissingDependencyError(
                    f"{path} is a checkpoint folder, exported to ONNX on first use, which needs "
                    f"torch: pip install 'locore-edge[export]', or pass an .onnx file ({exc})"
                ) from exc
            fusion = checkpoint_fusion(path)
            path = cached_export(path, cache / "models")
        elif not path.exists():
            raise FileNotFoundError(f"--model {path} does not exist")
        name = label or path.stem
        taken = {r[0] for r in resolved}
        if name in taken:
            name = f"{name}#{len(resolved) + 1}"
        resolved.append((name, path, fusion))
    return resolved


def _open_backend(path: Path, args: argparse.Namespace) -> Any:
    from locore.runtime.backends import backend_kind_for, create_backend

    kind, providers = args.backend, DEVICES[args.device]
    if kind in BACKEND_ALIASES:
        kind, providers = BACKEND_ALIASES[kind]
    effective = backend_kind_for(path) if kind == "auto" else kind
    options: dict[str, Any] = {}
    if effective == "onnxruntime":
        options = {"providers": providers, "threads": thread_count(args.threads)}
    elif effective == "pluginref":
        options = {"threads": thread_count(args.threads)}
    try:
        return create_backend(path, effective, **options)
    except ImportError as exc:
        raise type(exc)(f"cannot profile {path} with the {effective} backend: {exc}") from exc
    except NotImplementedError as exc:  # a backend kind this version does not have yet
        raise RuntimeError(f"cannot profile {path} with the {effective} backend: {exc}") from exc


def _pipeline_inputs(args: argparse.Namespace, cache: Path, backends: list[Any]) -> Any:
    from locore.runtime.profiling import PipelineInputs, folder_pipeline_inputs
    from locore.runtime.sift import SiftExtractor

    progress = not args.no_progress
    configs = [b.config for b in backends]
    num_desc = max(c.num_desc for c in configs)
    if any(c.desc_dim != SiftExtractor.desc_dim for c in configs):
        raise UsageError(
            "pipeline mode extracts 128-d SIFT/RootSIFT features; every --model must take "
            f"desc_dim 128, got {[c.desc_dim for c in configs]}"
        )
    if args.images is not None:
        codebook = args.codebook
        extractor = SiftExtractor(
            num_desc=num_desc,
            num_scales=max(c.num_scales for c in configs),
            global_desc="vlad" if codebook is not None else "mean",
            codebook=codebook,
        )
        return folder_pipeline_inputs(
            args.images,
            extractor,
            shortlist_k=args.shortlist,
            max_queries=args.max_queries,
            progress=progress,
        )
    from locore.runtime.ames import FeatureFile
    from locore.runtime.demo import demo_codebook, prepare_split
    from locore.runtime.global_descriptors import read_global_descriptors

    files = prepare_split(
        args.split, cache, num_desc=num_desc, shortlist_k=args.shortlist, progress=progress
    )
    extractor = SiftExtractor(num_desc=num_desc, global_desc="vlad", codebook=demo_codebook(cache))
    with FeatureFile(files.db_features) as db:
        database = db.read_all(num_desc)
    queries = files.split.query_paths
    if args.max_queries is not None:
        queries = queries[: args.max_queries]
    return PipelineInputs(
        queries=queries,
        database=database,
        db_global=read_global_descriptors(files.db_global),
        extractor=extractor,
        source=f"demo {args.split} split: {len(queries)} query photos against "
        f"{files.split.num_db} database images, shortlist top {args.shortlist}",
        shortlist_k=args.shortlist,
    )


def run(args: argparse.Namespace) -> int:
    from locore.runtime.demo import default_cache_dir
    from locore.runtime.profiling import (
        ProfileSettings,
        TelemetryOptions,
        parse_shapes,
        profile,
        write_json,
        write_plots,
    )

    if args.print_schema:
        import json

        from locore.runtime.profiling import REPORT_SCHEMA

        print(json.dumps(REPORT_SCHEMA, indent=2))
        return 0
    for flag, path in (("--export-json", args.export_json), ("--export-times", args.export_times)):
        if path is not None:
            output_path(path, ".json", flag)
    pipeline_mode = args.demo or args.images is not None
    if pipeline_mode and args.shapes:
        raise UsageError("--shapes is for window mode; pipeline mode uses --window/--shortlist")
    settings = ProfileSettings(
        warmup_ms=args.warmup_ms,
        iterations=args.iterations,
        duration_s=args.duration_s,
        percentiles=args.percentile,
        shape=parse_shapes(args.shapes),
    )
    cache = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    models = _resolve_models(args, cache)
    backends: list[Any] = []
    try:
        for _, path, _ in models:
            backends.append(_open_backend(path, args))
        labelled = [(label, b) for (label, _, _), b in zip(models, backends, strict=True)]
        inputs = _pipeline_inputs(args, cache, backends) if pipeline_mode else None
        params = rerank_params(args, topk=args.shortlist, fusion=models[0][2])
        report = profile(
            labelled,
            settings,
            pipeline=inputs,
            params=params,
            threads=thread_count(args.threads),
            telemetry=TelemetryOptions(
                enabled=not args.no_telemetry,
                interval_ms=args.tegrastats_interval,
                command=args.tegrastats,
            ),
            progress=not args.no_progress,
        )
    finally:
        for backend in backends:
            backend.close()
    print(report.table())
    if args.export_json is not None:
        write_json(args.export_json, report.to_dict())
        print(f"report: {args.export_json}")
    if args.export_times is not None:
        write_json(args.export_times, report.times())
        print(f"times: {args.export_times}")
    if args.plots is not None:
        for written in write_plots(report, args.plots):
            print(f"plot: {written}")
    return 0
