"""Checkpoints: a folder with ``model.safetensors`` and ``config.json`` (layout and JSON part:
:mod:`locore.checkpoint_format`). Never unpickles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from locore.checkpoint_format import (
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    CheckpointError,
    read_checkpoint_config,
    write_checkpoint_meta,
)
from locore.fileio import atomic_path
from locore.model.reranker import LocoreReranker


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
    write_checkpoint_meta(directory, model.config, extra)
    return directory


def load_checkpoint(directory: str | Path, map_location: str = "cpu") -> LocoreReranker:
    """Build a :class:`LocoreReranker` from a checkpoint folder, in eval mode.

    Raises :class:`CheckpointError` for a missing, truncated or unreadable weights file, tensors
    that do not match config.json (names, shapes, dtypes) and non-finite weights (naming the
    tensor); nothing is allocated for the model before its shapes are checked.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config, _ = read_checkpoint_config(directory)
    wpath = directory / WEIGHTS_FILE
    if not wpath.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        state = load_file(str(wpath), device=map_location)
    except PermissionError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{wpath} is not a readable safetensors file ({type(exc).__name__}: {exc}); is it "
            "truncated? Copy the checkpoint again or re-train"
        ) from exc
    # Shapes first, on the meta device: a damaged config.json (d_model 10**9) allocates nothing.
    with torch.device("meta"):
        expected = LocoreReranker(config).state_dict()
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
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{wpath}: tensor {name} holds {bad} NaN or infinite value(s) of "
                f"{tensor.numel()}; the weights are corrupt (a diverged training run?). Use an "
                "earlier checkpoint or re-train"
            )
    model = LocoreReranker(config)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
]
