"""Latency profiling, trtexec-style: one re-ranking window at a time, or the whole pipeline.

Two modes, one report (:class:`ProfileReport`, JSON schema :data:`REPORT_SCHEMA`, versioned by
:data:`SCHEMA_VERSION`):

- **window** (:func:`profile_windows`): one model call on a synthetic window of ``B`` queries
  and ``G`` gallery images (valid descriptors everywhere, the worst case), repeated like
  trtexec: warm up for ``warmup_ms``, then time at least ``iterations`` calls and at least
  ``duration_s`` seconds. Several models run **interleaved**, one call each per round, so that
  machine noise hits them alike; ratios are taken to the first model's median.
- **pipeline** (:func:`profile_pipeline`): per query image, every stage of
  docs/design.md §2, timed apart: decode, local features (SIFT/RootSIFT), global descriptor (VLAD or
  mean-pooled), shortlist search, packing (gathering the window's gallery features and building
  the feeds), inference (every window's model call, also listed per window), fusion (fused scores
  and re-sorting: the sliding-window loop minus packing and inference) and total.

Statistics (:class:`LatencyStats`) follow trtexec's ``samples/common/sampleReporting.cpp``
(NVIDIA/TensorRT): min, max, mean, the median (the mean of the two middle values for an even
count) and percentiles by **nearest rank** on the ascending times: ``findPercentile`` takes
index ``max(n - 1 - floor((1 - p / 100) * n), 0)``, which is the ``ceil(p * n / 100)``-th
smallest value (1-based; the minimum for p = 0). Here the arithmetic is exact (``Fraction``),
so p99 of 100 times is the 99th smallest; trtexec computes it in float and may land one rank
higher at exact boundaries. NumPy's ``np.percentile(..., method="inverted_cdf")`` gives the same
values. Throughput is windows (or queries) per second of the model's own time, one at a time.

**Transfers.** A runner that can time its host-to-device copy, compute and device-to-host copy
(the TensorRT runner, with CUDA events) exposes ``last_timings() -> {"h2d_ms", "compute_ms",
"d2h_ms"}`` for its last ``infer``; the report then gives their statistics apart. ONNX Runtime
has no such hook (on the CPU there are no transfers): the report says ``n/a``, never an estimate.

Telemetry (Jetson power, loads, clocks) comes from :mod:`locore.runtime.tegrastats`; the
machine section (:func:`machine_info`) from ``/proc/cpuinfo``, ``lscpu``, ``nvidia-smi``, the
device tree and package metadata, each ``None`` when not readable. Library code: logs, never
prints; the ``locore profile`` command prints :meth:`ProfileReport.table`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from locore import __version__
from locore.config import BATCH_DIM, GALLERY_DIM, SCORES
from locore.deps import installed_version
from locore.errors import UsageError
from locore.fileio import atomic_path, atomic_write_text
from locore.progress import progress_bar
from locore.runtime.tegrastats import command_output

if TYPE_CHECKING:
    from locore.runtime.backends.base import Backend
    from locore.runtime.images import ImageInput
    from locore.runtime.local_features import LocalFeatures
    from locore.runtime.sift import SiftExtractor
    from locore.runtime.sliding_windows import RerankParams

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_PERCENTILES = (90.0, 95.0, 99.0)
# trtexec's defaults: --warmUp=200 (ms), --iterations=10, --duration=3 (s)
DEFAULT_WARMUP_MS = 200.0
DEFAULT_ITERATIONS = 10
DEFAULT_DURATION_S = 3.0
STAGES = (
    "decode",
    "local_features",
    "global_descriptor",
    "shortlist",
    "packing",
    "inference",
    "fusion",
    "total",
)
TRANSFERS = ("h2d", "compute", "d2h")  # keys of a runner's last_timings(): "<name>_ms"
# --shapes names of the two dynamic dims (trtexec-like "name:dims" also accepted, see parse_shapes)
_DIM_ALIASES = {
    "g": GALLERY_DIM,
    "gallery": GALLERY_DIM,
    "window": GALLERY_DIM,
    GALLERY_DIM: GALLERY_DIM,
    "b": BATCH_DIM,
    BATCH_DIM: BATCH_DIM,
}


# ---- statistics ----------------------------------------------------------------------------------
def percentile(values: Sequence[float] | np.ndarray, p: float) -> float:
    """The ``p``-th percentile of ``values`` by nearest rank (trtexec's ``findPercentile``).

    The ``ceil(p * n / 100)``-th smallest value (1-based), the minimum for ``p = 0``; computed
    with exact fractions of ``p`` as written (``99.9`` is 999/1000). Raises ValueError for no
    values or ``p`` outside [0, 100].
    """
    arr = np.sort(np.asarray(values, dtype=np.float64))
    if arr.size == 0:
        raise ValueError("the percentile of no values is undefined")
    frac = Fraction(str(p))
    if not 0 <= frac <= 100:
        raise ValueError(f"a percentile must be in [0, 100], got {p}")
    n = arr.size
    exclude = math.floor((1 - frac / 100) * n)
    return float(arr[max(n - 1 - exclude, 0)])


def percentile_key(p: float) -> str:
    """``90.0`` -> ``"p90"``, ``99.9`` -> ``"p99.9"`` (the JSON key of a percentile)."""
    return "p" + f"{float(p):.6f}".rstrip("0").rstrip(".")


@dataclass
class LatencyStats:
    """Summary of one series of times, in milliseconds (trtexec's statistics).

    ``percentiles``: ``{"p90": ms, ...}`` by nearest rank (:func:`percentile`); ``stdev``: the
    population standard deviation.
    """

    count: int
    min: float
    mean: float
    median: float
    max: float
    stdev: float
    percentiles: dict[str, float]

    @classmethod
    def from_times(
        cls, times_ms: Sequence[float] | np.ndarray, percentiles: Sequence[float]
    ) -> LatencyStats:
        arr = np.asarray(times_ms, dtype=np.float64)
        if arr.size == 0:
            raise ValueError("no times to summarize")
        return cls(
            count=int(arr.size),
            min=float(arr.min()),
            mean=float(arr.mean()),
            median=float(np.median(arr)),
            max=float(arr.max()),
            stdev=float(arr.std()),
            percentiles={percentile_key(p): percentile(arr, p) for p in percentiles},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "min_ms": self.min,
            "mean_ms": self.mean,
            "median_ms": self.median,
            "max_ms": self.max,
            "stdev_ms": self.stdev,
            "percentiles_ms": dict(self.percentiles),
        }


def parse_percentiles(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"90,95,99"`` (or numbers) -> ``(90.0, 95.0, 99.0)``, each in [0, 100], no repeats."""
    items = text.split(",") if isinstance(text, str) else list(text)
    values: list[float] = []
    for item in items:
        try:
            value = float(str(item).strip())
        except ValueError:
            raise UsageError(
                f"percentiles must be numbers in [0, 100] separated by commas (e.g. 90,95,99), "
                f"got {item!r} in {text!r}"
            ) from None
        if not 0.0 <= value <= 100.0:
            raise UsageError(f"a percentile must be in [0, 100], got {value:g}")
        if value not in values:
            values.append(value)
    if not values:
        raise UsageError("give at least one percentile, e.g. 90,95,99")
    return tuple(values)


# ---- the window shape ----------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowShape:
    """One model call: ``batch`` queries, each with ``gallery`` images.

    ``tensors``: explicit trtexec-style dims (``gallery_desc:1x100x48x128``), checked against the
    model's inputs by :func:`check_window_shape`.
    """

    batch: int = 1
    gallery: int = 100
    tensors: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def describe(self) -> str:
        return f"{BATCH_DIM}={self.batch}, {GALLERY_DIM}={self.gallery}"


def parse_shapes(text: str | None, default_gallery: int = 100) -> WindowShape:
    """``--shapes``: ``G=100`` (also ``num_gallery=``, ``gallery=``, ``window=``; ``B=``/``batch=``
    for queries per call) or trtexec-style ``gallery_desc:1x100x48x128`` (B and G read from it,
    the other dims checked against the model), several separated by commas."""
    if text is None or not text.strip():
        return WindowShape(1, default_gallery)
    dims: dict[str, int] = {}
    tensors: list[tuple[str, tuple[int, ...]]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if "=" in item:
            name, _, value = item.partition("=")
            dim = _DIM_ALIASES.get(name.strip().lower()) or _DIM_ALIASES.get(name.strip())
            if dim is None:
                raise UsageError(
                    f"--shapes: unknown dimension {name.strip()!r} in {item!r}; use G=<gallery "
                    "images per window> and B=<queries per call>, e.g. --shapes G=100, or "
                    "trtexec-style gallery_desc:1x100x48x128"
                )
            dims[dim] = _positive_int(value, item)
        elif ":" in item:
            name, _, value = item.partition(":")
            parts = value.lower().split("x")
            shape = tuple(_positive_int(p, item) for p in parts)
            tensors.append((name.strip(), shape))
        else:
            raise UsageError(
                f"--shapes: expected NAME=SIZE (G=100) or TENSOR:DIMS (gallery_desc:1x100x48x128), "
                f"got {item!r}"
            )
    for name, shape in tensors:
        if name == "gallery_desc" and len(shape) >= 2:
            dims.setdefault(BATCH_DIM, shape[0])
            dims.setdefault(GALLERY_DIM, shape[1])
        if name == "query_desc" and len(shape) >= 1:
            dims.setdefault(BATCH_DIM, shape[0])
    return WindowShape(
        dims.get(BATCH_DIM, 1), dims.get(GALLERY_DIM, default_gallery), tuple(tensors)
    )


def _positive_int(value: str, item: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise UsageError(f"--shapes: {value.strip()!r} in {item!r} is not an integer") from None
    if number < 1:
        raise UsageError(f"--shapes: sizes must be >= 1, got {number} in {item!r}")
    return number


def check_window_shape(backend: Backend, shape: WindowShape) -> None:
    """Raise :class:`~locore.errors.UsageError` unless ``backend`` takes ``shape``.

    The range is the model's: B, G >= 1, at most the engine's profile limits
    (``backend.max_batch`` / ``max_gallery``; ONNX Runtime has none), and every explicit tensor
    dim must equal the model's fixed dims (``Nd``, ``Dl``) and agree with B and G.
    """
    where = f"{backend.path} ({backend.kind}, config {backend.config.name!r})"
    for dim, size, limit in (
        (BATCH_DIM, shape.batch, backend.max_batch),
        (GALLERY_DIM, shape.gallery, backend.max_gallery),
    ):
        if size < 1:
            raise UsageError(f"--shapes: {dim} must be >= 1, got {size}")
        if limit is not None and size > limit:
            raise UsageError(
                f"--shapes asks for {dim}={size}, outside the range of {where}: 1..{limit} "
                "(its optimization profile); profile a smaller window or rebuild the engine "
                "with a larger profile"
            )
    bound = {BATCH_DIM: shape.batch, GALLERY_DIM: shape.gallery}
    names = backend.input_names()
    for name, dims in shape.tensors:
        if name not in names:
            raise UsageError(f"--shapes names {name!r}, but {where} has inputs {list(names)}")
        spec = backend.input_spec(name)
        expected = [bound.get(d, d) if isinstance(d, str) else d for d in spec.shape]
        if len(dims) != len(spec.shape) or any(
            isinstance(e, int) and e != got for e, got in zip(expected, dims, strict=False)
        ):
            raise UsageError(
                f"--shapes {name}:{'x'.join(map(str, dims))} is outside the range of {where}: "
                f"it takes {name} {list(spec.shape)} (here {expected}); only {BATCH_DIM} and "
                f"{GALLERY_DIM} may vary"
            )


def synthetic_window(backend: Backend, shape: WindowShape, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds of one call: random unit-norm descriptors, every row valid (the most work), random
    scale ids in range, random unit global vectors for ``use_global`` models."""
    from locore.runtime.local_features import LocalFeatures
    from locore.runtime.packing import Packer

    cfg = backend.config
    rng = np.random.default_rng(seed)

    def images(*lead: int) -> LocalFeatures:
        desc = rng.standard_normal((*lead, cfg.num_desc, cfg.desc_dim)).astype(np.float32)
        desc /= np.linalg.norm(desc, axis=-1, keepdims=True)
        glob = None
        if cfg.use_global:
            glob = rng.standard_normal((*lead, cfg.global_dim)).astype(np.float32)
            glob /= np.linalg.norm(glob, axis=-1, keepdims=True)
        return LocalFeatures(
            descriptors=desc,
            scales=rng.integers(0, cfg.num_scales, size=(*lead, cfg.num_desc)).astype(np.int64),
            xy=rng.random((*lead, cfg.num_desc, 2)).astype(np.float32),
            weights=np.ones((*lead, cfg.num_desc), np.float32),
            mask=np.ones((*lead, cfg.num_desc), bool),
            global_desc=glob,
        )

    return Packer.for_backend(backend).pack(images(shape.batch), images(shape.batch, shape.gallery))


# ---- results ----------------------------------------------------------------------------------
def runner_timings(backend: Any) -> dict[str, float] | None:
    """``{"h2d_ms", "compute_ms", "d2h_ms"}`` of the last call, when the runner (or the runner a
    :class:`~locore.runtime.backends.base.Backend` wraps) has a ``last_timings()`` hook."""
    for obj in (backend, getattr(backend, "runner", None)):
        hook = getattr(obj, "last_timings", None)
        if callable(hook):
            value = hook()
            if value:
                return {f"{k}_ms": float(value[f"{k}_ms"]) for k in TRANSFERS}
    return None


@dataclass
class ModelProfile:
    """One model's window-mode result.

    times_ms: every timed call; starts_ms: when each began, from the start of the timed phase;
    transfers_ms: per call ``{"h2d_ms", "compute_ms", "d2h_ms"}`` when the runner reports them.
    """

    label: str
    path: str
    backend: str
    providers: list[str] | None
    config: str
    precision: str
    times_ms: list[float] = field(default_factory=list)
    starts_ms: list[float] = field(default_factory=list)
    transfers_ms: list[dict[str, float]] = field(default_factory=list)

    def stats(self, percentiles: Sequence[float]) -> LatencyStats:
        return LatencyStats.from_times(self.times_ms, percentiles)

    def transfer_stats(self, percentiles: Sequence[float]) -> dict[str, LatencyStats] | None:
        if not self.transfers_ms or len(self.transfers_ms) != len(self.times_ms):
            return None
        return {
            name: LatencyStats.from_times([t[f"{name}_ms"] for t in self.transfers_ms], percentiles)
            for name in TRANSFERS
        }


@dataclass
class PipelineQuery:
    """One query through the pipeline: each stage's ms and each window's inference ms."""

    image: str
    stages_ms: dict[str, float]
    windows_ms: list[float]


@dataclass
class PipelineProfile:
    """One model's pipeline-mode result (see :func:`profile_pipeline`)."""

    label: str
    queries: list[PipelineQuery] = field(default_factory=list)

    def stage_stats(self, percentiles: Sequence[float]) -> dict[str, LatencyStats]:
        return {
            s: LatencyStats.from_times([q.stages_ms[s] for q in self.queries], percentiles)
            for s in STAGES
        }

    def window_stats(self, percentiles: Sequence[float]) -> LatencyStats | None:
        times = [t for q in self.queries for t in q.windows_ms]
        return LatencyStats.from_times(times, percentiles) if times else None


@dataclass
class ProfileSettings:
    """How to profile (trtexec's flag names in the command: --warmUp --iterations --duration
    --percentile)."""

    warmup_ms: float = DEFAULT_WARMUP_MS
    iterations: int = DEFAULT_ITERATIONS
    duration_s: float = DEFAULT_DURATION_S
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    shape: WindowShape = field(default_factory=WindowShape)

    def __post_init__(self) -> None:
        if not self.warmup_ms >= 0:
            raise UsageError(f"--warmUp must be >= 0 ms, got {self.warmup_ms}")
        if self.iterations < 1:
            raise UsageError(f"--iterations must be >= 1, got {self.iterations}")
        if not self.duration_s >= 0:
            raise UsageError(f"--duration must be >= 0 s, got {self.duration_s}")
        self.percentiles = parse_percentiles(self.percentiles)

    def to_dict(self) -> dict[str, Any]:
        return {
            "warmup_ms": self.warmup_ms,
            "iterations": self.iterations,
            "duration_s": self.duration_s,
            "percentiles": list(self.percentiles),
            "batch": self.shape.batch,
            "gallery": self.shape.gallery,
        }


def _model_profile(label: str, backend: Backend) -> ModelProfile:
    runner = getattr(backend, "runner", backend)
    providers = getattr(runner, "providers", None)
    return ModelProfile(
        label=label,
        path=str(backend.path),
        backend=backend.kind,
        providers=list(providers) if providers is not None else None,
        config=backend.config.name,
        precision=backend.float_dtype.name,
    )


# ---- window mode -----------------------------------------------------------------------------
def profile_windows(
    models: Sequence[tuple[str, Backend]],
    settings: ProfileSettings | None = None,
    *,
    progress: bool = True,
    seed: int = 0,
) -> tuple[list[ModelProfile], tuple[float, float]]:
    """Time one window per call for each of ``models`` (``(label, backend)``), interleaved.

    Warm-up: each model runs for ``settings.warmup_ms`` (at least once). Timed phase: rounds of
    one call per model, until at least ``iterations`` rounds and ``duration_s`` seconds have
    passed. Returns the profiles and the timed phase's ``(t0, t1)`` in
    :func:`time.perf_counter` seconds (for telemetry).
    """
    settings = settings or ProfileSettings()
    if not models:
        raise UsageError("give at least one model to profile")
    feeds = []
    for _, backend in models:
        check_window_shape(backend, settings.shape)
        feeds.append(synthetic_window(backend, settings.shape, seed))
    results = [_model_profile(label, backend) for label, backend in models]
    for (_, backend), feed in zip(models, feeds, strict=True):
        began = time.perf_counter()
        while True:
            backend.infer(feed)
            if time.perf_counter() - began >= settings.warmup_ms / 1e3:
                break
    bar = progress_bar(total=settings.iterations, desc="profiling", unit="round", enabled=progress)
    rounds = 0
    t0 = time.perf_counter()
    try:
        while rounds < settings.iterations or time.perf_counter() - t0 < settings.duration_s:
            for (_, backend), feed, result in zip(models, feeds, results, strict=True):
                start = time.perf_counter()
                out = backend.infer(feed)
                end = time.perf_counter()
                if SCORES not in out:
                    raise RuntimeError(f"{backend.path} returned no {SCORES!r} output")
                result.times_ms.append((end - start) * 1e3)
                result.starts_ms.append((start - t0) * 1e3)
                timings = runner_timings(backend)
                if timings is not None:
                    result.transfers_ms.append(timings)
            rounds += 1
            if rounds > settings.iterations:
                bar.total = rounds
            bar.update(1)
    finally:
        bar.close()
    t1 = time.perf_counter()
    log.debug("profiled %d rounds of %d model(s) in %.2f s", rounds, len(models), t1 - t0)
    return results, (t0, t1)


# ---- pipeline mode ---------------------------------------------------------------------------
@dataclass
class PipelineInputs:
    """What the pipeline runs on: query images and an indexed gallery.

    queries: image paths (or arrays); database: the gallery's features ``[N, T, ...]``;
    db_global: ``[N, Dg]`` float32 global descriptors (same kind as the extractor's);
    extractor: the SIFT extractor that made them; source: a description for the report.
    """

    queries: Sequence[ImageInput]
    database: LocalFeatures
    db_global: np.ndarray
    extractor: SiftExtractor
    source: str
    shortlist_k: int = 100


def _query_name(image: ImageInput) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"<array {np.shape(image)}>"


class _PipelineRun:
    """One model's pipeline: the stages of one query, timed apart."""

    def __init__(self, backend: Backend, inputs: PipelineInputs, params: RerankParams) -> None:
        from locore.runtime.packing import Packer

        self.backend = backend
        self.inputs = inputs
        self.params = params
        self.packer = Packer.for_backend(backend, clip_scales=True)
        self.database = inputs.database.first(backend.config.num_desc)
        self.db_global = np.asarray(inputs.db_global, dtype=np.float32)
        if self.db_global.shape[0] != len(self.database):
            raise UsageError(
                f"{self.db_global.shape[0]} gallery global descriptors for {len(self.database)} "
                "gallery images; they must match"
            )
        if self.packer.with_global:
            raise UsageError(
                f"{backend.path} uses global descriptors inside the model (use_global); the "
                "pipeline profile supports models without them"
            )

    def query(self, image: ImageInput) -> PipelineQuery:
        from locore.runtime.images import load_image
        from locore.runtime.shortlist import search_shortlist
        from locore.runtime.sliding_windows import sliding_window_rerank

        ext, clock = self.inputs.extractor, time.perf_counter
        stages = dict.fromkeys(STAGES, 0.0)
        windows: list[float] = []
        t_start = clock()
        img = load_image(image)
        t1 = clock()
        keypoints = ext.detect(img)
        t2 = clock()
        global_desc = ext.global_descriptor(keypoints, img)
        t3 = clock()
        query = ext.features_from_keypoints(keypoints, global_desc)
        t4 = clock()
        shortlist = search_shortlist(global_desc[None], self.db_global, self.inputs.shortlist_k)
        t5 = clock()
        ids, sims = shortlist.ids[0], shortlist.sims[0]
        k = min(self.params.topk, ids.shape[0])
        spent = {"packing": 0.0, "inference": 0.0}

        def score(positions: np.ndarray) -> np.ndarray:
            a = clock()
            feeds = self.packer.pack(query, self.database[ids[:k][positions]])
            b = clock()
            logits = self.backend.infer(feeds)[SCORES][0]
            c = clock()
            spent["packing"] += b - a
            spent["inference"] += c - b
            windows.append((c - b) * 1e3)
            return np.asarray(logits, dtype=np.float32)

        sliding_window_rerank(np.arange(ids.shape[0]), sims, score, self.params)
        t6 = clock()
        stages["decode"] = t1 - t_start
        stages["local_features"] = (t2 - t1) + (t4 - t3)
        stages["global_descriptor"] = t3 - t2
        stages["shortlist"] = t5 - t4
        stages["packing"] = spent["packing"]
        stages["inference"] = spent["inference"]
        stages["fusion"] = (t6 - t5) - spent["packing"] - spent["inference"]
        stages["total"] = t6 - t_start
        return PipelineQuery(_query_name(image), {s: v * 1e3 for s, v in stages.items()}, windows)


def profile_pipeline(
    models: Sequence[tuple[str, Backend]],
    inputs: PipelineInputs,
    params: RerankParams | None = None,
    *,
    warmup_queries: int = 1,
    progress: bool = True,
) -> tuple[list[PipelineProfile], tuple[float, float]]:
    """Run every query of ``inputs`` through the pipeline with each model, interleaved per query.

    ``params``: the sliding windows and fusion (default LOCORE's); its ``topk`` becomes
    ``inputs.shortlist_k`` (the whole shortlist is re-ranked, as in ``locore demo``). The first
    ``warmup_queries`` queries run once untimed per model first. Returns the profiles and the
    timed phase's ``(t0, t1)`` (perf_counter seconds).
    """
    from locore.runtime.sliding_windows import RerankParams

    if not models:
        raise UsageError("give at least one model to profile")
    if not inputs.queries:
        raise UsageError(f"no query images in {inputs.source}")
    params = replace(params or RerankParams(), topk=inputs.shortlist_k)
    runs = [(label, _PipelineRun(backend, inputs, params)) for label, backend in models]
    for _, run in runs:
        for image in list(inputs.queries)[:warmup_queries]:
            run.query(image)
    results = [PipelineProfile(label) for label, _ in runs]
    t0 = time.perf_counter()
    for image in progress_bar(inputs.queries, desc="pipeline", unit="query", enabled=progress):
        for (_, run), result in zip(runs, results, strict=True):
            result.queries.append(run.query(image))
    t1 = time.perf_counter()
    return results, (t0, t1)


def folder_pipeline_inputs(
    folder: str | Path,
    extractor: SiftExtractor,
    *,
    shortlist_k: int = 100,
    max_queries: int | None = None,
    progress: bool = True,
) -> PipelineInputs:
    """Pipeline inputs from a folder of images: the folder is both the gallery and the queries.

    Every image (``*.jpg *.jpeg *.png *.bmp *.tif *.tiff *.webp``, sorted by name) is indexed
    first (untimed: features and global descriptors of the gallery); then each image, or the
    first ``max_queries``, is a query against the whole folder, itself included.
    """
    from locore.runtime.local_features import LocalFeatures

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"--images must be a folder of images, got {root}")
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in suffixes and p.is_file())
    if not paths:
        raise FileNotFoundError(
            f"no images in {root} (looked for {sorted(suffixes)}); give a folder of photos"
        )
    features = extractor.extract_many(paths, progress=progress)
    database = LocalFeatures.stack(features)
    if database.global_desc is None:
        raise RuntimeError("the extractor returned features without global descriptors")
    queries = paths if max_queries is None else paths[:max_queries]
    return PipelineInputs(
        queries=queries,
        database=database,
        db_global=database.global_desc,
        extractor=extractor,
        source=f"{root} ({len(paths)} images, each a query against all)",
        shortlist_k=shortlist_k,
    )


# ---- one run: models + telemetry -> report -------------------------------------------------------
@dataclass
class TelemetryOptions:
    """Jetson telemetry during a run: sample ``tegrastats`` every ``interval_ms`` when present.

    ``command``: the tegrastats executable (default: found on PATH); ``enabled=False`` turns
    sampling off (the report says so).
    """

    enabled: bool = True
    interval_ms: int = 100
    command: str | Path | None = None


def profile(
    models: Sequence[tuple[str, Backend]],
    settings: ProfileSettings | None = None,
    *,
    pipeline: PipelineInputs | None = None,
    params: RerankParams | None = None,
    threads: int | None = None,
    telemetry: TelemetryOptions | None = None,
    progress: bool = True,
) -> ProfileReport:
    """Profile ``models`` in window mode, or in pipeline mode when ``pipeline`` is given, with
    Jetson telemetry sampled over the timed phase; the whole report.

    ``threads`` is recorded in the machine section (the backends were opened with it).
    """
    from locore.runtime import tegrastats as ts

    settings = settings or ProfileSettings()
    telemetry = telemetry or TelemetryOptions()
    sampler = None
    note = ts.NOT_A_JETSON
    if not telemetry.enabled:
        note = "telemetry off (--no-telemetry)"
    elif ts.find_tegrastats(telemetry.command) is not None:
        sampler = ts.TegrastatsSampler(telemetry.interval_ms, telemetry.command)
        sampler.start()
        sampler.wait_for_samples(1, timeout=max(2.0, 3 * telemetry.interval_ms / 1e3))
    elif telemetry.command is not None:
        note = f"tegrastats {telemetry.command} not found: no telemetry"
    try:
        if pipeline is None:
            results, span = profile_windows(models, settings, progress=progress)
            report = ProfileReport(
                "window", settings, machine_info(threads), {}, span[1] - span[0], models=results
            )
            windows = sum(len(m.times_ms) for m in results) * settings.shape.batch
            queries = None
        else:
            pipes, span = profile_pipeline(models, pipeline, params, progress=progress)
            report = ProfileReport(
                "pipeline",
                settings,
                machine_info(threads),
                {},
                span[1] - span[0],
                pipelines=pipes,
                pipeline_source=pipeline.source,
                rerank=replace(params or _default_params(), topk=pipeline.shortlist_k).to_dict(),
            )
            windows = sum(len(q.windows_ms) for p in pipes for q in p.queries)
            queries = sum(len(p.queries) for p in pipes)
        if sampler is not None:
            time.sleep(min(0.5, 1.5 * telemetry.interval_ms / 1e3))  # the sample after t1
    finally:
        if sampler is not None:
            sampler.stop()
    if sampler is None:
        report.telemetry = ts.unavailable(note)
    elif not sampler.samples:
        report.telemetry = ts.unavailable("tegrastats printed no line during the run")
    else:
        summary = ts.summarize(
            sampler.samples,
            span[0],
            span[1],
            windows=windows,
            queries=queries,
            margin_s=telemetry.interval_ms / 1e3,
        )
        summary.update(
            interval_ms=telemetry.interval_ms,
            nvpmodel=ts.nvpmodel_mode(),
            jetson_clocks=ts.jetson_clocks_state(),
            shared_by_models=len(models) > 1,
        )
        report.telemetry = summary
    return report


def _default_params() -> RerankParams:
    from locore.runtime.sliding_windows import RerankParams

    return RerankParams()


# ---- the machine -------------------------------------------------------------------------------
def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _cpu_model() -> str | None:
    info = _read_text("/proc/cpuinfo") or ""
    match = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    if match:
        return match.group(1).strip()
    lscpu = command_output(["lscpu"]) or ""
    match = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
    if match:
        return match.group(1).strip()
    return platform.processor() or None


def _physical_cores() -> int | None:
    info = _read_text("/proc/cpuinfo") or ""
    pairs = set(re.findall(r"physical id\s*:\s*(\d+)\s*\n(?:.*\n)*?core id\s*:\s*(\d+)", info))
    if pairs:
        return len(pairs)
    lscpu = command_output(["lscpu"]) or ""
    cores = re.search(r"^Core\(s\) per (?:socket|cluster):\s*(\d+)", lscpu, re.MULTILINE)
    sockets = re.search(r"^(?:Socket|Cluster)\(s\):\s*(\d+)", lscpu, re.MULTILINE)
    if cores:
        return int(cores.group(1)) * (int(sockets.group(1)) if sockets else 1)
    return None


def _gpus() -> list[dict[str, Any]]:
    gpus: list[dict[str, Any]] = []
    text = command_output(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    )
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0]:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    model = _read_text("/proc/device-tree/model")
    if model and "jetson" in model.lower():
        gpus.append({"name": f"{model.strip(chr(0)).strip()} (integrated GPU)", "driver": None})
    return gpus


def _cuda_versions() -> dict[str, str | None]:
    toolkit = None
    raw = _read_text("/usr/local/cuda/version.json")
    if raw:
        try:
            toolkit = json.loads(raw).get("cuda", {}).get("version")
        except (json.JSONDecodeError, AttributeError):
            toolkit = None
    if toolkit is None:
        nvcc = command_output(["nvcc", "--version"]) or ""
        match = re.search(r"release (\d+\.\d+)", nvcc)
        toolkit = match.group(1) if match else None
    smi = command_output(["nvidia-smi"]) or ""
    match = re.search(r"CUDA Version:\s*([\d.]+)", smi)
    return {"toolkit": toolkit, "driver_supports": match.group(1) if match else None}


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """The machine a profile ran on; every field ``None`` (or empty) when not readable.

    ``threads``: the ONNX Runtime intra-op threads asked for (``None``: its default, one per
    physical core).
    """
    from locore.runtime.tegrastats import l4t_release

    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    ort_providers: list[str] | None = None
    try:
        import onnxruntime

        ort_providers = list(onnxruntime.get_available_providers())
    except Exception:  # noqa: BLE001 - a broken install is reported as absent, not raised
        ort_providers = None
    ort_version = installed_version("onnxruntime") or installed_version("onnxruntime-gpu")
    return {
        "os": platform.platform(),
        "arch": platform.machine(),
        "cpu_model": _cpu_model(),
        "physical_cores": _physical_cores(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "threads": threads,
        "gpus": _gpus(),
        "l4t_release": l4t_release(),
        "versions": {
            "locore_edge": __version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "onnxruntime": ort_version,
            "onnxruntime_providers": ort_providers,
            "tensorrt": installed_version("tensorrt"),
            "opencv": installed_version("opencv-python-headless")
            or installed_version("opencv-python"),
            "cuda": _cuda_versions(),
        },
    }


# ---- the report --------------------------------------------------------------------------------
@dataclass
class ProfileReport:
    """Everything one ``locore profile`` run measured; :meth:`to_dict` follows
    :data:`REPORT_SCHEMA`, :meth:`times` lists every iteration (``--export-times``)."""

    mode: str  # "window" or "pipeline"
    settings: ProfileSettings
    machine: dict[str, Any]
    telemetry: dict[str, Any]
    span_s: float
    models: list[ModelProfile] = field(default_factory=list)
    pipelines: list[PipelineProfile] = field(default_factory=list)
    pipeline_source: str | None = None
    rerank: dict[str, Any] | None = None
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )

    # ---- numbers ----------------------------------------------------------------------------
    def _medians(self) -> list[float]:
        if self.mode == "window":
            return [float(np.median(m.times_ms)) for m in self.models]
        return [float(np.median([q.stages_ms["total"] for q in p.queries])) for p in self.pipelines]

    def ratios(self) -> list[float]:
        """Each model's median over the first model's (1.0 for the first)."""
        medians = self._medians()
        return [m / medians[0] for m in medians] if medians else []

    def to_dict(self) -> dict[str, Any]:
        pct = self.settings.percentiles
        ratios = self.ratios()
        models = []
        for i, model in enumerate(self.models):
            stats = model.stats(pct)
            transfers = model.transfer_stats(pct)
            busy_s = sum(model.times_ms) / 1e3
            models.append(
                {
                    "label": model.label,
                    "path": model.path,
                    "backend": model.backend,
                    "providers": model.providers,
                    "config": model.config,
                    "precision": model.precision,
                    "latency": stats.to_dict(),
                    "throughput_per_s": self.settings.shape.batch * stats.count / busy_s,
                    "transfers": (
                        {k: v.to_dict() for k, v in transfers.items()} if transfers else None
                    ),
                    "ratio_to_first": ratios[i],
                }
            )
        pipelines = []
        for i, pipe in enumerate(self.pipelines):
            stages = pipe.stage_stats(pct)
            windows = pipe.window_stats(pct)
            total_s = sum(q.stages_ms["total"] for q in pipe.queries) / 1e3
            pipelines.append(
                {
                    "label": pipe.label,
                    "queries": len(pipe.queries),
                    "queries_per_s": len(pipe.queries) / total_s,
                    "windows_per_query": sum(len(q.windows_ms) for q in pipe.queries)
                    / len(pipe.queries),
                    "stages": {k: v.to_dict() for k, v in stages.items()},
                    "window_inference": windows.to_dict() if windows else None,
                    "ratio_to_first": ratios[i],
                }
            )
        return {
            "schema": "locore-profile",
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "mode": self.mode,
            "settings": self.settings.to_dict(),
            "span_s": self.span_s,
            "machine": self.machine,
            "telemetry": self.telemetry,
            "models": models,
            "pipeline": (
                {"source": self.pipeline_source, "rerank": self.rerank, "models": pipelines}
                if self.mode == "pipeline"
                else None
            ),
        }

    def times(self) -> list[dict[str, Any]]:
        """Every timed iteration, one record each (trtexec's ``--exportTimes`` habit)."""
        records: list[dict[str, Any]] = []
        for model in self.models:
            for i, (start, ms) in enumerate(zip(model.starts_ms, model.times_ms, strict=True)):
                record: dict[str, Any] = {
                    "model": model.label,
                    "iteration": i,
                    "startMs": start,
                    "latencyMs": ms,
                }
                if model.transfers_ms:
                    t = model.transfers_ms[i]
                    record.update(h2dMs=t["h2d_ms"], computeMs=t["compute_ms"], d2hMs=t["d2h_ms"])
                records.append(record)
        for pipe in self.pipelines:
            for i, q in enumerate(pipe.queries):
                records.append(
                    {
                        "model": pipe.label,
                        "query": i,
                        "image": q.image,
                        "stagesMs": dict(q.stages_ms),
                        "windowsMs": list(q.windows_ms),
                    }
                )
        return records

    # ---- text -------------------------------------------------------------------------------
    def table(self) -> str:
        """The stdout report: machine, settings, per-model (or per-stage) statistics, telemetry."""
        data = self.to_dict()
        pct = self.settings.percentiles
        keys = [percentile_key(p) for p in pct]
        lines = [_machine_line(self.machine)]
        s = self.settings
        if self.mode == "window":
            lines.append(
                f"window mode: {s.shape.describe()} per call, one call at a time; warm-up "
                f"{s.warmup_ms:g} ms, at least {s.iterations} iterations and {s.duration_s:g} s"
                + (", models interleaved" if len(self.models) > 1 else "")
            )
            head = f"{'model':32s} {'n':>5s} {'min':>8s} {'mean':>8s} {'median':>8s} " + " ".join(
                f"{k:>8s}" for k in keys
            )
            head += f" {'max':>8s} {'win/s':>8s}"
            if len(self.models) > 1:
                head += f" {'x first':>8s}"
            lines += ["latency per window (ms):", head]
            for m in data["models"]:
                lat = m["latency"]
                row = (
                    f"{m['label'][:32]:32s} {lat['count']:5d} {lat['min_ms']:8.2f} "
                    f"{lat['mean_ms']:8.2f} {lat['median_ms']:8.2f} "
                    + " ".join(f"{lat['percentiles_ms'][k]:8.2f}" for k in keys)
                    + f" {lat['max_ms']:8.2f} {m['throughput_per_s']:8.2f}"
                )
                if len(self.models) > 1:
                    row += f" {m['ratio_to_first']:8.2f}"
                lines.append(row)
            for m in data["models"]:
                if m["transfers"]:
                    for name in TRANSFERS:
                        t = m["transfers"][name]
                        lines.append(
                            f"  {m['label']}: {name:7s} median {t['median_ms']:.3f} ms, "
                            + ", ".join(f"{k} {t['percentiles_ms'][k]:.3f}" for k in keys)
                        )
                else:
                    lines.append(
                        f"  {m['label']}: H2D / compute / D2H: n/a ({m['backend']} does not "
                        "report transfers; on the CPU there are none)"
                    )
        else:
            pipe = data["pipeline"]
            lines.append(f"pipeline mode: {pipe['source']}")
            for p in pipe["models"]:
                lines.append(
                    f"{p['label']}: {p['queries']} queries, {p['queries_per_s']:.2f} queries/s, "
                    f"{p['windows_per_query']:.1f} windows per query"
                    + (f", {p['ratio_to_first']:.2f}x first" if len(pipe["models"]) > 1 else "")
                )
                head = f"  {'stage (ms per query)':22s} {'median':>8s} {'mean':>8s} " + " ".join(
                    f"{k:>8s}" for k in keys
                )
                lines.append(head + f" {'max':>8s}")
                rows: list[tuple[str, dict[str, Any]]] = []
                for name, st in p["stages"].items():
                    rows.append((name, st))
                    if name == "inference" and p["window_inference"]:
                        rows.append(("  per window", p["window_inference"]))
                for name, st in rows:
                    lines.append(
                        f"  {name:22s} {st['median_ms']:8.2f} {st['mean_ms']:8.2f} "
                        + " ".join(f"{st['percentiles_ms'][k]:8.2f}" for k in keys)
                        + f" {st['max_ms']:8.2f}"
                    )
        lines.append(telemetry_line(self.telemetry))
        return "\n".join(lines)


def _machine_line(machine: Mapping[str, Any]) -> str:
    v = machine.get("versions", {})
    gpus = ", ".join(g["name"] for g in machine.get("gpus") or []) or "no NVIDIA GPU found"
    cuda = v.get("cuda") or {}
    return (
        f"machine: {machine.get('cpu_model') or 'unknown CPU'}, "
        f"{machine.get('physical_cores') or '?'} cores / {machine.get('logical_cpus') or '?'} "
        f"CPUs, threads {machine.get('threads') or 'default'}; GPU: {gpus}; ONNX Runtime "
        f"{v.get('onnxruntime') or 'absent'}, TensorRT {v.get('tensorrt') or 'absent'}, CUDA "
        f"{cuda.get('toolkit') or 'absent'}"
        + (f" (driver {cuda['driver_supports']})" if cuda.get("driver_supports") else "")
    )


def telemetry_line(telemetry: Mapping[str, Any]) -> str:
    """One or a few lines on the Jetson telemetry (or why there is none)."""
    if not telemetry.get("available"):
        return f"telemetry: {telemetry.get('reason', 'not available')}"

    def mean(key: str, unit: str) -> str:
        value = telemetry.get(key)
        return f"{value['mean']:.0f}{unit}" if value else "n/a"

    parts = [
        f"telemetry: {telemetry['samples']} tegrastats samples every "
        f"{telemetry.get('interval_ms', '?')} ms; power mode {_mode(telemetry.get('nvpmodel'))}, "
        f"jetson_clocks {telemetry.get('jetson_clocks', 'unknown')}"
        + (
            "; models ran interleaved: power and energy cover all of them together"
            if telemetry.get("shared_by_models")
            else ""
        ),
        f"  GPU (GR3D) load {mean('gpu_load_pct', '%')} at {mean('gpu_freq_mhz', ' MHz')}, "
        f"EMC {mean('emc_freq_mhz', ' MHz')}, CPU load {mean('cpu_load_pct', '%')}",
    ]
    for name, rail in (telemetry.get("rails") or {}).items():
        per = []
        if rail.get("energy_per_window_mj") is not None:
            per.append(f"{rail['energy_per_window_mj']:.1f} mJ/window")
        if rail.get("energy_per_query_mj") is not None:
            per.append(f"{rail['energy_per_query_mj']:.1f} mJ/query")
        mean_mw = rail.get("mean_mw")
        parts.append(
            f"  {name:16s} {mean_mw if mean_mw is not None else float('nan'):8.0f} mW mean, "
            f"{rail['energy_mj']:.0f} mJ" + (f" ({', '.join(per)})" if per else "")
        )
    return "\n".join(parts)


def _mode(mode: Any) -> str:
    if isinstance(mode, dict):
        return f"{mode.get('name')} (id {mode.get('id')})"
    return str(mode or "unknown")


# ---- outputs -------------------------------------------------------------------------------------
def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def write_plots(report: ProfileReport, folder: str | Path) -> list[Path]:
    """``latency_histogram.png`` (every timed window or query, per model) and ``stages.png``
    (pipeline: median ms per stage; window mode: median and top percentile per model, with the
    H2D / compute / D2H split when reported) in ``folder``. Returns the files written; none
    (and a logged note) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning(
            "matplotlib is not installed: no PNGs written (pip install 'locore-edge[demo]' or "
            "pip install matplotlib)"
        )
        return []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    top = percentile_key(max(report.settings.percentiles))

    fig, ax = plt.subplots(figsize=(7, 4))
    if report.mode == "window":
        series = [(m.label, m.times_ms) for m in report.models]
        ax.set_xlabel("latency per window (ms)")
    else:
        series = [(p.label, [q.stages_ms["total"] for q in p.queries]) for p in report.pipelines]
        ax.set_xlabel("total latency per query (ms)")
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    everything = np.concatenate([np.asarray(t, dtype=np.float64) for _, t in series])
    low, high = float(everything.min()), float(everything.max())
    log_scale = low > 0 and high / low > 10  # models an order of magnitude apart
    if log_scale:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # major decades only: no overlapping labels
    for i, (label, times) in enumerate(series):
        color = palette[i % len(palette)]
        count = min(50, max(5, len(times) // 2))
        bins: int | list[float] = (
            np.geomspace(min(times), max(times) * 1.0001, count + 1).tolist()
            if log_scale
            else count
        )
        ax.hist(
            times,
            bins=bins,
            histtype="step",
            label=label,
            color=color,
        )
        ax.axvline(float(np.median(times)), color=color, linestyle="--", linewidth=0.8)
    ax.set_ylabel("count")
    ax.set_title("latency histogram (dashed: medians)")
    ax.legend(fontsize=8)
    written.append(_save(fig, folder / "latency_histogram.png"))
    plt.close(fig)

    data = report.to_dict()
    fig, ax = plt.subplots(figsize=(8, 4))
    if report.mode == "pipeline":
        stages = [s for s in STAGES if s != "total"]
        width = 0.8 / max(1, len(data["pipeline"]["models"]))
        x = np.arange(len(stages))
        for i, p in enumerate(data["pipeline"]["models"]):
            ax.bar(
                x + i * width,
                [p["stages"][s]["median_ms"] for s in stages],
                width,
                label=p["label"],
            )
        ax.set_xticks(x + width * (len(data["pipeline"]["models"]) - 1) / 2, stages, rotation=20)
        ax.set_ylabel("median ms per query")
        ax.set_title("pipeline stages")
    else:
        labels = [m["label"] for m in data["models"]]
        x = np.arange(len(labels))
        split = [m for m in data["models"] if m["transfers"]]
        if split and len(split) == len(labels):
            bottom = np.zeros(len(labels))
            for name in TRANSFERS:
                values = np.array([m["transfers"][name]["median_ms"] for m in data["models"]])
                ax.bar(x, values, 0.5, bottom=bottom, label=name)
                bottom += values
        else:
            ax.bar(
                x - 0.2, [m["latency"]["median_ms"] for m in data["models"]], 0.4, label="median"
            )
            ax.bar(
                x + 0.2,
                [m["latency"]["percentiles_ms"][top] for m in data["models"]],
                0.4,
                label=top,
            )
        ax.set_xticks(x, labels)
        ax.set_ylabel("ms per window")
        ax.set_title("per-window latency")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(_save(fig, folder / "stages.png"))
    plt.close(fig)
    return written


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    return path


# ---- the JSON schema ---------------------------------------------------------------------------
_NUM = {"type": "number"}
_INT = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}
_NULL_STR = {"type": ["string", "null"]}
_STATS: dict[str, Any] = {
    "type": "object",
    "required": ["count", "min_ms", "mean_ms", "median_ms", "max_ms", "stdev_ms", "percentiles_ms"],
    "additionalProperties": False,
    "properties": {
        "count": {"type": "integer", "minimum": 1},
        "min_ms": _NUM,
        "mean_ms": _NUM,
        "median_ms": _NUM,
        "max_ms": _NUM,
        "stdev_ms": _NUM,
        "percentiles_ms": {
            "type": "object",
            "patternProperties": {r"^p\d+(\.\d+)?$": _NUM},
            "additionalProperties": False,
        },
    },
}
_MINMAX = {
    "type": ["object", "null"],
    "required": ["mean", "min", "max"],
    "properties": {"mean": _NUM, "min": _NUM, "max": _NUM},
}
_RAIL = {
    "type": "object",
    "required": ["mean_mw", "max_mw", "energy_mj", "energy_per_window_mj", "energy_per_query_mj"],
    "properties": {
        "mean_mw": {"type": ["number", "null"]},
        "max_mw": {"type": ["number", "null"]},
        "energy_mj": _NUM,
        "energy_per_window_mj": {"type": ["number", "null"]},
        "energy_per_query_mj": {"type": ["number", "null"]},
    },
}
REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "locore profile report",
    "description": (
        "Written by `locore profile --export-json`. Times in milliseconds; percentiles by "
        "nearest rank (trtexec). schema_version changes when a field changes meaning or goes."
    ),
    "type": "object",
    "required": [
        "schema",
        "schema_version",
        "created",
        "mode",
        "settings",
        "span_s",
        "machine",
        "telemetry",
        "models",
        "pipeline",
    ],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": "locore-profile"},
        "schema_version": {"const": SCHEMA_VERSION},
        "created": _STR,
        "mode": {"enum": ["window", "pipeline"]},
        "span_s": _NUM,
        "settings": {
            "type": "object",
            "required": [
                "warmup_ms",
                "iterations",
                "duration_s",
                "percentiles",
                "batch",
                "gallery",
            ],
            "additionalProperties": False,
            "properties": {
                "warmup_ms": _NUM,
                "iterations": {"type": "integer", "minimum": 1},
                "duration_s": _NUM,
                "percentiles": {"type": "array", "items": _NUM, "minItems": 1},
                "batch": {"type": "integer", "minimum": 1},
                "gallery": {"type": "integer", "minimum": 1},
            },
        },
        "machine": {
            "type": "object",
            "required": [
                "cpu_model",
                "physical_cores",
                "logical_cpus",
                "threads",
                "gpus",
                "versions",
            ],
            "properties": {
                "cpu_model": _NULL_STR,
                "physical_cores": {"type": ["integer", "null"]},
                "logical_cpus": {"type": ["integer", "null"]},
                "usable_cpus": {"type": ["integer", "null"]},
                "threads": {"type": ["integer", "null"]},
                "gpus": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                "l4t_release": _NULL_STR,
                "versions": {
                    "type": "object",
                    "required": ["locore_edge", "onnxruntime", "tensorrt", "cuda"],
                    "properties": {
                        "onnxruntime": _NULL_STR,
                        "tensorrt": _NULL_STR,
                        "cuda": {
                            "type": "object",
                            "required": ["toolkit", "driver_supports"],
                            "properties": {"toolkit": _NULL_STR, "driver_supports": _NULL_STR},
                        },
                    },
                },
            },
        },
        "telemetry": {
            "type": "object",
            "required": ["available"],
            "properties": {
                "available": {"type": "boolean"},
                "reason": _STR,
                "interval_ms": _INT,
                "samples": _INT,
                "nvpmodel": {"type": ["object", "string"]},
                "jetson_clocks": {"enum": ["on", "off", "unknown"]},
                "gpu_load_pct": _MINMAX,
                "gpu_freq_mhz": _MINMAX,
                "emc_load_pct": _MINMAX,
                "emc_freq_mhz": _MINMAX,
                "cpu_load_pct": _MINMAX,
                "ram_used_mb": _MINMAX,
                "rails": {"type": "object", "additionalProperties": _RAIL},
                "input_rail": _NULL_STR,
                "shared_by_models": {"type": "boolean"},
            },
        },
        "models": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "label",
                    "path",
                    "backend",
                    "config",
                    "precision",
                    "latency",
                    "throughput_per_s",
                    "transfers",
                    "ratio_to_first",
                ],
                "additionalProperties": False,
                "properties": {
                    "label": _STR,
                    "path": _STR,
                    "backend": _STR,
                    "providers": {"type": ["array", "null"], "items": _STR},
                    "config": _STR,
                    "precision": {"enum": ["float32", "float16"]},
                    "latency": _STATS,
                    "throughput_per_s": _NUM,
                    "transfers": {
                        "type": ["object", "null"],
                        "required": list(TRANSFERS),
                        "additionalProperties": False,
                        "properties": {name: _STATS for name in TRANSFERS},
                    },
                    "ratio_to_first": _NUM,
                },
            },
        },
        "pipeline": {
            "type": ["object", "null"],
            "required": ["source", "rerank", "models"],
            "additionalProperties": False,
            "properties": {
                "source": _STR,
                "rerank": {"type": ["object", "null"]},
                "models": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": [
                            "label",
                            "queries",
                            "queries_per_s",
                            "windows_per_query",
                            "stages",
                            "window_inference",
                            "ratio_to_first",
                        ],
                        "additionalProperties": False,
                        "properties": {
                            "label": _STR,
                            "queries": {"type": "integer", "minimum": 1},
                            "queries_per_s": _NUM,
                            "windows_per_query": _NUM,
                            "stages": {
                                "type": "object",
                                "required": list(STAGES),
                                "additionalProperties": False,
                                "properties": {s: _STATS for s in STAGES},
                            },
                            "window_inference": {"anyOf": [_STATS, {"type": "null"}]},
                            "ratio_to_first": _NUM,
                        },
                    },
                },
            },
        },
    },
}

_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_errors(value: Any, schema: Mapping[str, Any], where: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema``: the JSON Schema keywords this module's schema uses
    (type, const, enum, required, properties, patternProperties, additionalProperties, items,
    minItems, minimum, anyOf). ``[]`` means valid."""
    errors: list[str] = []
    if "anyOf" in schema:
        if all(schema_errors(value, sub, where) for sub in schema["anyOf"]):
            errors.append(f"{where}: matches none of the allowed forms")
        return errors
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_JSON_TYPES[t](value) for t in names):
            return [f"{where}: expected {' or '.join(names)}, got {type(value).__name__}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: expected one of {schema['enum']}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} is below the minimum {schema['minimum']}")
        if isinstance(value, float) and not math.isfinite(value):
            errors.append(f"{where}: {value} is not a finite number")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing {key!r}")
        props = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            sub = f"{where}.{key}"
            if key in props:
                errors += schema_errors(item, props[key], sub)
                continue
            matched = [p for p in patterns if re.search(p, key)]
            for p in matched:
                errors += schema_errors(item, patterns[p], sub)
            if matched:
                continue
            if extra is False:
                errors.append(f"{where}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, sub)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: needs at least {schema['minItems']} items, got {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    return errors
