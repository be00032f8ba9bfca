"""The checkpoint folder layout, read and written without torch.

A checkpoint is a folder with ``model.safetensors`` (the weights, written by
:func:`locore.model.save_checkpoint`) and ``config.json``::

    {"format": "locore-edge-checkpoint", "format_version": 1,
     "config": {...LocoreConfig...}, "extra": {"fusion": {...}, "training": {...}}}

``extra`` holds what is not the model: the tuned fusion parameters (``alpha``, ``temperature``)
and the training recipe. The command layer and the torch-free runtime read it through this
module; only the weights need torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from locore.config import ConfigError, LocoreConfig
from locore.fileio import atomic_write_text

FORMAT = "locore-edge-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FUSION_KEY = "fusion"  # extra["fusion"] = {"alpha": ..., "temperature": ...}
SHIPPED_MODEL = "demo-tiny"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, corrupt, or does not match its config."""


def shipped_model_dir() -> Path:
    """The checkpoint folder of the model shipped inside the package (``locore/assets``),
    trained on the demo train split (README, "Shipped model")."""
    return Path(__file__).resolve().parent / "assets" / SHIPPED_MODEL


def is_checkpoint_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / CONFIG_FILE).is_file()


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    """The checked JSON of ``directory/config.json`` (format, version, config, extra)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder {directory} does not exist")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{directory} has no {CONFIG_FILE}; a checkpoint folder holds {CONFIG_FILE} and "
            f"{WEIGHTS_FILE} written by locore.model.save_checkpoint"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a locore-edge checkpoint config (format != {FORMAT})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this locore-edge reads version "
            f"{FORMAT_VERSION}. Upgrade locore-edge or re-export the checkpoint."
        )
    extra = meta.get("extra") or {}
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: 'extra' must be a JSON object, got {type(extra).__name__}")
    meta["extra"] = extra
    return meta


def read_checkpoint_config(directory: str | Path) -> tuple[LocoreConfig, dict[str, Any]]:
    """The config and the ``extra`` dict of a checkpoint folder, without loading weights."""
    meta = read_checkpoint_meta(directory)
    try:
        config = LocoreConfig.from_dict(meta.get("config"))  # type: ignore[arg-type]
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{Path(directory) / CONFIG_FILE}: {exc}") from exc
    return config, dict(meta["extra"])


def write_checkpoint_meta(
    directory: str | Path, config: LocoreConfig, extra: dict[str, Any] | None = None
) -> None:
    """Write ``directory/config.json`` atomically."""
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "extra": extra or {},
    }
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    atomic_write_text(Path(directory) / CONFIG_FILE, text)


def update_checkpoint_extra(directory: str | Path, key: str, value: Any) -> Path:
    """Set ``extra[key] = value`` in a checkpoint's config.json (atomically); returns its path."""
    config, extra = read_checkpoint_config(directory)
    extra[key] = value
    write_checkpoint_meta(directory, config, extra)
    return Path(directory) / CONFIG_FILE


def checkpoint_fusion(directory: str | Path) -> dict[str, float]:
    """The tuned fusion parameters a checkpoint records (``{}`` when it records none)."""
    path = Path(directory) / CONFIG_FILE
    fusion = read_checkpoint_meta(directory)["extra"].get(FUSION_KEY) or {}
    if not isinstance(fusion, dict):
        raise CheckpointError(
            f"{path}: extra.{FUSION_KEY} must be a JSON object with alpha and temperature, got "
            f"{fusion!r}"
        )
    out: dict[str, float] = {}
    for key in ("alpha", "temperature"):
        if key not in fusion:
            continue
        value = fusion[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise CheckpointError(
                f"{path}: extra.{FUSION_KEY}.{key} must be a finite number, got {value!r}"
            )
        out[key] = float(value)
    if not 0.0 <= out.get("alpha", 0.5) <= 1.0 or out.get("temperature", 1.0) <= 0.0:
        raise CheckpointError(
            f"{path}: extra.{FUSION_KEY} must have alpha in [0, 1] and temperature > 0, got {out}"
        )
    return out


def checkpoint_digest(directory: str | Path) -> str:
    """A short SHA-256 of the weights and the model config (not ``extra``): an export cache key."""
    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS_FILE}")
    digest = hashlib.sha256(weights.read_bytes())
    digest.update(json.dumps(meta.get("config"), sort_keys=True).encode())
    return digest.hexdigest()[:12]
