"""torch -> ONNX for the LOCORE-Mamba re-ranker, in two flavors (docs/design.md §4).

- ``portable``: the mamba2 scan in standard ONNX ops (chunked SSD: CumSum, Exp, MatMul; no
  Loop/Scan, no unrolling over L). Runs in any ONNX Runtime and in TensorRT without plugins.
- ``plugin``: every scan is one ``locore::SelectiveScan`` node for the TensorRT plugin.

Both come from the same torch module; the graph I/O contract (``locore.config.graph_io``) and the
model config are written into the ONNX metadata (keys ``locore.config``, ``locore.graph_io``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from locore import __version__
from locore.config import (
    BATCH_DIM,
    GALLERY_DIM,
    META_CONFIG,
    META_FLAVOR,
    META_GRAPH_IO,
    META_VERSION,
    SCORES,
    TOKEN_LOGITS,
    GraphIO,
    LocoreConfig,
    graph_io,
)
from locore.errors import UsageError
from locore.fileio import atomic_path
from locore.model import LocoreReranker, load_checkpoint
from locore.model.mamba import ScanFn

log = logging.getLogger(__name__)

FLAVORS = ("portable", "plugin")
DEFAULT_OPSET = 18
DEFAULT_MAX_GALLERY = 512
FORBIDDEN_PORTABLE_OPS = ("Loop", "Scan", "If")


class ExportError(RuntimeError):
    """The model could not be exported, or the exported graph broke a contract."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    flavor: str
    config: LocoreConfig
    io: GraphIO
    op_counts: dict[str, int]


class _GraphModule(nn.Module):
    """Positional inputs in graph_io order -> outputs, for the exporter."""

    def __init__(self, model: LocoreReranker, io: GraphIO) -> None:
        super().__init__()
        self.model = model
        self.names = [spec.name for spec in io.inputs]
        self.token_logits = any(spec.name == TOKEN_LOGITS for spec in io.outputs)

    def forward(self, *inputs: Tensor) -> Any:
        kwargs = dict(zip(self.names, inputs, strict=True))
        return self.model(**kwargs, return_token_logits=self.token_logits)


def example_inputs(
    config: LocoreConfig,
    io: GraphIO,
    batch: int = 2,
    num_gallery: int = 3,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[Tensor, ...]:
    """Random inputs that follow ``io``: one tensor per graph input, in order."""
    g = torch.Generator().manual_seed(seed)
    sizes = {BATCH_DIM: batch, GALLERY_DIM: num_gallery}
    out = []
    for spec in io.inputs:
        shape = [sizes[s] if isinstance(s, str) else s for s in spec.shape]
        if spec.dtype == "float":
            out.append(torch.randn(*shape, generator=g).to(dtype))
        elif spec.dtype == "bool":
            out.append(torch.rand(*shape, generator=g) > 0.15)
        elif spec.dtype == "int64":
            out.append(torch.randint(0, config.num_scales, shape, generator=g))
        else:  # pragma: no cover - graph_io only uses the dtypes above
            raise ExportError(f"no example for dtype {spec.dtype}")
    return tuple(out)


# What torch's exporter says on every export that is no news to a user of this package, matched
# by message only (everything else still shows): (logger, message start) and (warning category,
# message regex).
EXPORTER_LOG_NOISE = (
    # the exporter registers torchvision's ops, and logs each one it skips (4 lines per export)
    ("torch.onnx._internal.exporter._registration", "torchvision is not installed"),
)
EXPORTER_WARNING_NOISE: tuple[tuple[type[Warning], str], ...] = (
    (UserWarning, r"# The axis name: .* will not be used"),
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)


class _DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


@contextlib.contextmanager
def quiet_export(*names: str, level: int = logging.WARNING) -> Iterator[StringIO]:
    """Keep ``torch.onnx.export``'s chatter out of a library's output: the loggers ``names``
    (its passes log every rewrite at INFO) at ``level`` or quieter, the exporter's known
    per-export noise (:data:`EXPORTER_LOG_NOISE`, :data:`EXPORTER_WARNING_NOISE`) dropped by
    message, and stdout (where it prints progress) captured in the yielded buffer. Other
    warnings and log records pass."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    filters: list[tuple[logging.Logger, logging.Filter]] = []
    for name in {n for n, _ in EXPORTER_LOG_NOISE}:
        prefixes = tuple(m for n, m in EXPORTER_LOG_NOISE if n == name)
        filters.append((logging.getLogger(name), _DropMessages(prefixes)))
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), level))
    for lg, flt in filters:
        lg.addFilter(flt)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(StringIO()) as printed:
            for category, message in EXPORTER_WARNING_NOISE:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield printed
    finally:
        for lg, old in zip(loggers, levels, strict=True):
            lg.setLevel(old)
        for lg, flt in filters:
            lg.removeFilter(flt)


@contextlib.contextmanager
def _scan_swapped(model: LocoreReranker, scan: ScanFn | None) -> Iterator[None]:
    old = model.scan
    model.scan = scan
    try:
        yield
    finally:
        model.scan = old


def _example_gallery(cfg: LocoreConfig) -> int:
    """A gallery count for tracing whose sequence spans >= 2 chunks and ends mid-chunk.

    torch.export specialises sizes equal to 0 or 1: an example with a single chunk (or no
    padding) would freeze the chunk count into the graph and break every other G.
    """
    g = 3
    while True:
        length = cfg.sequence_length(g)
        if length > 2 * cfg.chunk_size and length % cfg.chunk_size:
            return g
        g += 1


def _resolve_model(
    model: LocoreReranker | str | Path, config: LocoreConfig | None
) -> LocoreReranker:
    if isinstance(model, str | Path):
        model = load_checkpoint(model)
    if not isinstance(model, LocoreReranker):
        raise ExportError(f"expected a LocoreReranker or a checkpoint folder, got {type(model)}")
    if config is not None and config != model.config:
        diff = {
            k: (v, getattr(model.config, k))
            for k, v in config.to_dict().items()
            if getattr(model.config, k) != v
        }
        raise ExportError(
            "the given config does not match the checkpoint's: "
            + ", ".join(f"{k}: config {a!r} vs checkpoint {b!r}" for k, (a, b) in diff.items())
            + ". Export the checkpoint with its own config.json (omit --config)."
        )
    return model.eval()


def export_onnx(
    model: LocoreReranker | str | Path,
    output: str | Path,
    flavor: str = "portable",
    opset: int = DEFAULT_OPSET,
    max_gallery: int = DEFAULT_MAX_GALLERY,
    with_scales: bool = True,
    with_token_logits: bool = False,
    config: LocoreConfig | None = None,
) -> ExportResult:
    """Export a re-ranker (or a checkpoint folder) to ONNX; B and G are dynamic.

    The file is written atomically and checked with ``onnx.checker``. Returns what was written.
    """
    import onnx

    if flavor not in FLAVORS:
        raise ExportError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
    check_export_options(opset, max_gallery)
    net = _resolve_model(model, config)
    cfg = net.config
    gio = graph_io(cfg, with_scales=with_scales, with_token_logits=with_token_logits)
    wrapper = _GraphModule(net, gio).eval()
    args = example_inputs(cfg, gio, batch=2, num_gallery=_example_gallery(cfg))
    batch = torch.export.Dim(BATCH_DIM, min=1, max=1024)
    ngal = torch.export.Dim(GALLERY_DIM, min=1, max=max_gallery)
    dims = {BATCH_DIM: batch, GALLERY_DIM: ngal}
    dynamic_shapes = tuple(
        {i: dims[s] for i, s in enumerate(spec.shape) if isinstance(s, str)} for spec in gio.inputs
    )
    scan: ScanFn | None = None
    table = None
    if flavor == "plugin":
        from locore.export.scan_op import plugin_scan, translation_table

        scan, table = plugin_scan, translation_table()
    log.info("exporting %s flavor of %s (opset %d)", flavor, cfg.name, opset)
    quiet = quiet_export("onnx_ir", "onnxscript", "torch.onnx")
    with _scan_swapped(net, scan), quiet as printed, torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            args,
            dynamo=True,
            input_names=[s.name for s in gio.inputs],
            output_names=[s.name for s in gio.outputs],
            opset_version=opset,
            dynamic_shapes=(dynamic_shapes,),  # one entry: forward(*inputs)
            custom_translation_table=table,
            optimize=True,
            external_data=False,
        )
    log.debug("%s", printed.getvalue())  # the exporter's progress: a library logs instead
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ExportError("torch.onnx.export returned no program")
    proto = program.model_proto
    written = default_opset(proto)
    if written != opset:  # never a silent substitution
        raise ExportError(
            f"asked for ONNX opset {opset}, but torch {torch.__version__}'s exporter wrote opset "
            f"{written}; nothing was written to {output}. Use --opset {written}"
        )
    _name_dynamic_dims(proto, gio)
    counts = op_counts(proto)
    _check_flavor(proto, flavor, counts)
    meta = {
        META_CONFIG: cfg.to_json(),
        META_GRAPH_IO: json.dumps(gio.to_dict()),
        META_FLAVOR: flavor,
        META_VERSION: __version__,
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "locore-edge"
    proto.producer_version = __version__
    onnx.checker.check_model(proto)
    output = Path(output)
    with atomic_path(output) as tmp:
        onnx.save_model(proto, str(tmp))
    log.info("wrote %s (%s)", output, ", ".join(f"{k}x{v}" for k, v in sorted(counts.items())))
    return ExportResult(output, flavor, cfg, gio, counts)


MIN_OPSET = 17
"""The lowest opset the graph can be written in (LayerNormalization is opset 17); the installed
torch's exporter may start higher (:func:`exporter_min_opset`)."""


def exporter_min_opset() -> int:
    """The lowest opset the installed torch's ONNX exporter writes itself (18 for torch 2.5 ..
    2.13). Below it, torch exports at its own opset and tries onnx's version converter, which has
    no 18 -> 17 adapter for ops this model uses (Split), so it would quietly keep opset 18."""
    try:
        from torch.onnx._internal.exporter import _constants

        return max(MIN_OPSET, int(_constants.TORCHLIB_OPSET))
    except (ImportError, AttributeError, TypeError, ValueError):  # a torch that moved it
        return DEFAULT_OPSET


def check_export_options(opset: object, max_gallery: object) -> None:
    """Raise :class:`~locore.errors.UsageError` unless ``opset`` is an ONNX opset this exporter
    writes (:func:`exporter_min_opset` .. the installed onnx's newest) and ``max_gallery`` a
    positive gallery count."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise UsageError(
            f"opset must be an integer from {MIN_OPSET} to {newest} (the installed onnx's newest), "
            f"got {opset!r}; omit it for the default {DEFAULT_OPSET}"
        )
    lowest = exporter_min_opset()
    if opset < lowest:
        raise UsageError(
            f"opset {opset} cannot be produced with torch {torch.__version__}: its ONNX exporter "
            f"writes opset {lowest} and newer, and onnx cannot convert this model down to "
            f"{opset} (no {lowest} -> {opset} adapter for Split). Use opset {lowest} to {newest}, "
            f"or omit it for the default {DEFAULT_OPSET}"
        )
    if isinstance(max_gallery, bool) or not isinstance(max_gallery, int) or max_gallery < 1:
        raise UsageError(
            f"max_gallery (the largest gallery count G the exported graph accepts) must be a "
            f"positive integer, got {max_gallery!r}; the default is {DEFAULT_MAX_GALLERY}"
        )


def default_opset(proto: Any) -> int | None:
    """The version of the default ONNX domain a model imports (None when it imports none)."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def op_counts(proto: Any) -> dict[str, int]:
    """Node count per ``domain::op_type`` (default domain written bare), subgraphs included."""
    counts: dict[str, int] = {}

    def walk(graph: Any) -> None:
        for node in graph.node:
            key = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
            counts[key] = counts.get(key, 0) + 1
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)

    walk(proto.graph)
    return counts


def _check_flavor(proto: Any, flavor: str, counts: dict[str, int]) -> None:
    scan_key = "locore::SelectiveScan"
    if any(f.name == "SelectiveScan" for f in proto.functions):
        raise ExportError(
            "the graph holds a FunctionProto named SelectiveScan; TensorRT would inline it "
            "instead of using the plugin"
        )
    if flavor == "portable":
        bad = [op for op in (*FORBIDDEN_PORTABLE_OPS, scan_key) if counts.get(op)]
        if bad or proto.functions:
            raise ExportError(f"portable graph must use standard ops only, found {bad}")
    elif counts.get(scan_key, 0) == 0:
        raise ExportError("plugin flavor produced no locore::SelectiveScan node")


def _name_dynamic_dims(proto: Any, io: GraphIO) -> None:
    """Give dynamic axes the contract's names (batch, num_gallery) in the graph I/O."""
    specs = {s.name: s for s in (*io.inputs, *io.outputs)}
    for value in (*proto.graph.input, *proto.graph.output):
        spec = specs.get(value.name)
        if spec is None:
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, want in zip(dims, spec.shape, strict=False):
            if isinstance(want, str):
                dim.dim_param = want


def read_onnx_config(path: str | Path) -> tuple[LocoreConfig, dict[str, Any], str]:
    """(config, graph_io dict, flavor) from an exported file's metadata."""
    import onnx

    from locore.runtime.metadata import parse_model_metadata

    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    config, io = parse_model_metadata(meta, str(path))
    return config, (io.to_dict() if io is not None else {}), meta.get(META_FLAVOR, "?")


def cached_export(checkpoint: str | Path, cache_dir: str | Path, flavor: str = "portable") -> Path:
    """The ONNX of a checkpoint folder, exported on first use into ``cache_dir`` and reused.

    The file name holds a digest of the weights and the model config
    (:func:`locore.checkpoint_format.checkpoint_digest`), so a changed checkpoint is re-exported;
    the checkpoint's ``extra`` (fusion, training recipe) does not change it. A plugin-flavor
    name also holds the plugin version and namespace the node names, so a file exported for
    another plugin identity is never reused.
    """
    from locore.checkpoint_format import checkpoint_digest

    checkpoint = Path(checkpoint)
    if flavor not in FLAVORS:
        raise ExportError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
    tag = flavor
    if flavor == "plugin":  # a plugin-flavor file is bound to the plugin identity it names
        from locore.scan_spec import PLUGIN_NAMESPACE, PLUGIN_VERSION

        tag += f"-v{PLUGIN_VERSION}-{PLUGIN_NAMESPACE or 'global'}"
    path = Path(cache_dir) / f"{checkpoint.name}-{checkpoint_digest(checkpoint)}-{tag}.onnx"
    if not path.is_file():
        log.info("exporting %s to %s (first use)", checkpoint, path)
        export_onnx(checkpoint, path, flavor=flavor)
    return path


__all__ = [
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "check_export_options",
    "cached_export",
    "default_opset",
    "exporter_min_opset",
    "FLAVORS",
    "SCORES",
    "ExportError",
    "ExportResult",
    "example_inputs",
    "export_onnx",
    "op_counts",
    "read_onnx_config",
]
