"""The LOCORE metadata stored in an exported ONNX model, read without torch or onnx.

The exporter writes these ``metadata_props`` entries into every re-ranker (keys in
:mod:`locore.config`):

| key | value |
|---|---|
| ``locore.config`` | the model's :class:`~locore.config.LocoreConfig` as JSON |
| ``locore.graph_io`` | ``graph_io(config, ...).to_dict()`` as JSON (names, shapes, dtypes) |

ONNX Runtime exposes them as ``session.get_modelmeta().custom_metadata_map``; both are returned
typed: ``(LocoreConfig, GraphIO | None)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from locore.config import META_CONFIG, META_GRAPH_IO, ConfigError, GraphIO, LocoreConfig
from locore.deps import require

__all__ = [
    "parse_graph_io",
    "parse_model_metadata",
    "read_model_metadata",
]


def parse_graph_io(metadata: Mapping[str, str], source: str = "the model") -> GraphIO | None:
    """The recorded ``locore.graph_io`` of a model's metadata map, or None if it has none."""
    if META_GRAPH_IO not in metadata:
        return None
    try:
        data = json.loads(metadata[META_GRAPH_IO])
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: metadata {META_GRAPH_IO!r} is not valid JSON: {exc}") from exc
    try:
        return GraphIO.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(
            f"{source}: metadata {META_GRAPH_IO!r} is invalid: {exc}. Re-export the model"
        ) from exc


def parse_model_metadata(
    metadata: Mapping[str, str], source: str = "the model"
) -> tuple[LocoreConfig, GraphIO | None]:
    """(config, graph I/O) from a model's custom metadata map.

    The graph I/O is None when the model has no ``locore.graph_io`` entry; a missing
    ``locore.config`` entry is an error, since nothing else says how to pack descriptors.
    """
    if META_CONFIG not in metadata:
        present = sorted(metadata) or "none"
        raise ConfigError(
            f"{source} has no {META_CONFIG!r} metadata (metadata keys present: "
            f"{present}); it was not exported by `locore export`. Re-export it, or pass the "
            "LocoreConfig explicitly (config=LocoreConfig.load('model.json'))"
        )
    try:
        config = LocoreConfig.from_json(metadata[META_CONFIG])
    except ConfigError as exc:
        raise ConfigError(f"{source}: metadata {META_CONFIG!r} is invalid: {exc}") from exc
    return config, parse_graph_io(metadata, source)


def read_model_metadata(path: str | Path) -> tuple[LocoreConfig, GraphIO | None]:
    """(config, graph I/O) of the ONNX model at ``path``, read with ONNX Runtime."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    ort = require("onnxruntime", "reading ONNX model metadata")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise RuntimeError(
            f"ONNX Runtime could not load {path} to read its metadata: {exc}; is it an ONNX file "
            "written by `locore export`?"
        ) from exc
    return parse_model_metadata(session.get_modelmeta().custom_metadata_map, str(path))
