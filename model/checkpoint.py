"""Checkpoints: a folder with ``model.safetensors`` and ``config.json``. Never unpickles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from locore.config import ConfigError, LocoreConfig
from locore.fileio import atomic_path, atomic_write_text
from locore.model.reranker import LocoreReranker

FORMAT = "locore-edge-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, corrupt, or does not match its config."""


def save_checkpoint(
    model: LocoreReranker, directory: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to ``directory`` (created if needed); each file is written atomically.

    ``extra`` (JSON-serialisable) is stored in config.json under ``"extra"``, e.g. training
    provenance. Returns the directory.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(
            state, str(tmp), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)}
        )
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "extra": extra or {},
    }
    atomic_write_text(directory / CONFIG_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def read_checkpoint_config(directory: str | Path) -> tuple[LocoreConfig, dict[str, Any]]:
    """The config and the ``extra`` dict of a checkpoint folder, without loading weights."""
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
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a locore-edge checkpoint config (format != {FORMAT})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this locore-edge reads version "
            f"{FORMAT_VERSION}. Upgrade locore-edge or re-export the checkpoint."
        )
    try:
        config = LocoreConfig.from_dict(meta.get("config"))  # type: ignore[arg-type]
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return config, dict(meta.get("extra") or {})


def load_checkpoint(directory: str | Path, map_location: str = "cpu") -> LocoreReranker:
    """Build a :class:`LocoreReranker` from a checkpoint folder, in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config, _ = read_checkpoint_config(directory)
    wpath = directory / WEIGHTS_FILE
    if not wpath.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        state = load_file(str(wpath), device=map_location)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{wpath} is not a readable safetensors file: {exc}") from exc
    model = LocoreReranker(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{wpath} does not match its config.json: missing tensors {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected tensors {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    for name, tensor in state.items():
        want = expected[name]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise CheckpointError(
                f"{wpath}: tensor {name} is {list(tensor.shape)} {tensor.dtype}, but the config "
                f"needs {list(want.shape)} {want.dtype}; weights and config.json do not match"
            )
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
]
