"""torch -> ONNX for the DINOv2 local-feature model (:class:`locore.model.dino.DinoLocalFeatures`).

One input ``image [batch, 3, S, S]`` (batch dynamic, S fixed) and the five outputs of
:func:`locore.config.dino_graph_io`; the top-k selection is an ONNX ``TopK``. The metadata
says what the file is (``locore.kind = dino_local_features``) and carries the
:class:`~locore.config.DinoConfig` JSON and the graph I/O, which
:class:`locore.runtime.dino.DinoExtractor` reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from locore import __version__
from locore.config import (
    BATCH_DIM,
    DINO_OUTPUT_NAMES,
    IMAGE,
    DinoConfig,
    dino_graph_io,
    dino_metadata,
)
from locore.export.onnx_export import DEFAULT_OPSET, ExportError, op_counts, quiet_export
from locore.fileio import atomic_path
from locore.model.dino import DinoLocalFeatures

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 1024
# torch.export specialises example sizes equal to 1; trace with 2 images so batch stays dynamic.
_TRACE_BATCH = 2


@dataclass(frozen=True)
class DinoExportResult:
    path: Path
    config: DinoConfig
    op_counts: dict[str, int]


# The exporter's INFO chatter, and its torchvision notice, stay out of the logs.
_EXPORT_LOGGERS = (
    "onnx_ir",
    "onnxscript",
    "torch.onnx",
    "torch.onnx._internal.exporter._registration",
)


class _Graph(torch.nn.Module):
    """``image -> (descriptors, weights, xy, scales, global_desc)`` as a plain tuple."""

    def __init__(self, model: DinoLocalFeatures) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(image))


def export_dino_onnx(
    module: DinoLocalFeatures,
    path: str | Path,
    image_size: int | None = None,
    opset: int = DEFAULT_OPSET,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> DinoExportResult:
    """Export ``module`` to ONNX at ``path`` (atomically); the batch is dynamic.

    ``image_size`` (default: the module's) fixes the input side; a size other than the
    module's exports :meth:`DinoLocalFeatures.with_image_size` (position embeddings
    resampled). The graph is checked with ``onnx.checker``. Returns what was written.
    """
    import onnx

    if not isinstance(module, DinoLocalFeatures):
        raise ExportError(f"expected a DinoLocalFeatures module, got {type(module).__name__}")
    if opset < 17:
        raise ExportError(f"opset {opset} is too old; use 17 or newer (default {DEFAULT_OPSET})")
    if image_size is not None and image_size != module.config.image_size:
        module = module.with_image_size(image_size)
    module = module.eval()
    cfg = module.config
    io = dino_graph_io(cfg)
    example = torch.randn(_TRACE_BATCH, 3, cfg.image_size, cfg.image_size)
    batch = torch.export.Dim(BATCH_DIM, min=1, max=max_batch)
    log.info(
        "exporting DINOv2 features (%d px, %d layers, top %d of %d patches, opset %d)",
        cfg.image_size,
        cfg.num_layers,
        cfg.num_desc,
        cfg.num_patches,
        opset,
    )
    with quiet_export(*_EXPORT_LOGGERS, level=logging.ERROR), torch.no_grad():
        program = torch.onnx.export(
            _Graph(module).eval(),
            (example,),
            dynamo=True,
            input_names=[IMAGE],
            output_names=list(DINO_OUTPUT_NAMES),
            opset_version=opset,
            dynamic_shapes=({0: batch},),
            optimize=True,
            external_data=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ExportError("torch.onnx.export returned no program")
    proto = program.model_proto
    _name_batch_dims(proto, {s.name: s.shape for s in (*io.inputs, *io.outputs)})
    del proto.metadata_props[:]
    for key, value in dino_metadata(cfg, __version__).items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "locore-edge"
    proto.producer_version = __version__
    proto.doc_string = "DINOv2-with-registers local features + AMES-style detector (locore-edge)"
    onnx.checker.check_model(proto)
    counts = op_counts(proto)
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    log.info("wrote %s (%d nodes)", path, sum(counts.values()))
    return DinoExportResult(path, cfg, counts)


def _name_batch_dims(proto: Any, shapes: dict[str, tuple[int | str, ...]]) -> None:
    """Name the dynamic axes ``batch`` and check the fixed ones against the contract."""
    for value in (*proto.graph.input, *proto.graph.output):
        want = shapes.get(value.name)
        if want is None:
            raise ExportError(f"unexpected graph I/O {value.name!r}; expected {sorted(shapes)}")
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(want):
            raise ExportError(f"{value.name} has rank {len(dims)}, expected {len(want)}")
        for dim, expected in zip(dims, want, strict=True):
            if isinstance(expected, str):
                dim.dim_param = expected
            elif dim.HasField("dim_value") and dim.dim_value != expected:
                raise ExportError(
                    f"{value.name} has a dim {dim.dim_value} where the contract says {expected}"
                )


__all__ = ["DEFAULT_MAX_BATCH", "DinoExportResult", "export_dino_onnx"]
