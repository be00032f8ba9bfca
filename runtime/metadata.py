"""The LOCORE metadata stored in an exported ONNX model, read without torch or onnx.

The exporter writes two ``metadata_props`` entries into every ONNX file:

| key | value |
|---|---|
| ``locore.config`` | the model's :class:`~locore.config.LocoreConfig` as JSON |
| ``locore.graph_io`` | ``graph_io(config, ...).to_dict()`` as JSON (names, shapes, dtypes) |

ONNX Runtime exposes them as ``session.get_modelmeta().custom_metadata_map``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from locore.config import META_CONFIG as CONFIG_METADATA_KEY
from locore.config import META_GRAPH_IO as GRAPH_IO_METADATA_KEY
from locore.config import ConfigError, LocoreConfig
from locore.deps import require

__all__ = [
    "CONFIG_METADATA_KEY",
    "GRAPH_IO_METADATA_KEY",
    "parse_model_metadata",
    "read_model_metadata",
]


def parse_model_metadata(
    metadata: Mapping[str, str], source: str = "the model"
) -> tuple[LocoreConfig, dict[str, Any]]:
    """(config, graph_io dict) from a model's custom metadata map.

    ``graph_io`` is ``{}`` when the model has no ``locore.graph_io`` entry; a missing
    ``locore.config`` entry is an error, since nothing else says how to pack descriptors.
    """
    if CONFIG_METADATA_KEY not in metadata:
        present = sorted(metadata) or "none"
        raise ConfigError(
            f"{source} has no {CONFIG_METADATA_KEY!r} metadata (metadata keys present: "
            f"{present}); it was not exported by `locore export`. Re-export it, or pass the "
            "LocoreConfig explicitly (config=LocoreConfig.load('model.json'))"
        )
    try:
        config = LocoreConfig.from_json(metadata[CONFIG_METADATA_KEY])
    except ConfigError as exc:
        raise ConfigError(f"{source}: metadata {CONFIG_METADATA_KEY!r} is invalid: {exc}") from exc
    io: dict[str, Any] = {}
    if GRAPH_IO_METADATA_KEY in metadata:
        try:
            io = json.loads(metadata[GRAPH_IO_METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{source}: metadata {GRAPH_IO_METADATA_KEY!r} is not valid JSON: {exc}"
            ) from exc
        if not isinstance(io, dict):
            raise ConfigError(
                f"{source}: metadata {GRAPH_IO_METADATA_KEY!r} must be a JSON object with "
                f"'inputs' and 'outputs', got {type(io).__name__}"
            )
    return config, io


def read_model_metadata(path: str | Path) -> tuple[LocoreConfig, dict[str, Any]]:
    """(config, graph_io dict) of the ONNX model at ``path``, read with ONNX Runtime."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    ort = require("onnxruntime", "reading ONNX model metadata")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return parse_model_metadata(session.get_modelmeta().custom_metadata_map, str(path))
