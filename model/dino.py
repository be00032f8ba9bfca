"""DINOv2 (with registers) local features with an AMES-style detector head, in PyTorch.

:class:`DinoLocalFeatures` = a ``transformers`` ``Dinov2WithRegistersModel`` backbone (default
ViT-B/14, 4 registers) + :class:`AmesDetectorHead` on its patch tokens:

- descriptor branch: 1x1 conv + BatchNorm, then L2 normalisation -> ``[B, N, desc_dim]``;
- weight branch: ReLU -> 1x1 conv -> softplus -> ``[B, N]`` detector weights;

and keeps the ``num_desc`` patches with the highest weights (see
:func:`locore.config.dino_graph_io` for the outputs, which the exported ONNX file shares).

Weights (never downloaded; needs ``pip install 'locore-edge[dino]'``)::

    model = DinoLocalFeatures(DinoConfig())            # random weights, ViT-B/14 at 224 px
    model.load_weights(
        backbone_path="dinov2-with-registers-base/model.safetensors",  # fetched by you
        head_path="ames_head.safetensors",             # detector trained by you, or saved
    )                                                  # earlier with model.save_weights
    export_dino_onnx(model, "dino.onnx")               # locore.export.dino_export

The backbone file may be the ``model.safetensors`` of the Hugging Face checkpoint
``facebook/dinov2-with-registers-base`` (downloaded by the user with any tool they like), in the
key layout of transformers 4.x (``attention.attention.query``) or 5.x (``attention.q_proj``),
bare or under a ``dinov2_with_registers.`` / ``backbone.`` prefix. Its position embeddings are
resampled to this model's image size exactly as transformers does at run time (bicubic,
antialiased), so a 518-px checkpoint serves a 224-px model. The head file holds the keys of
:class:`AmesDetectorHead` (``desc_conv.*``, ``desc_bn.*``, ``weight_conv.*``, optionally under
``head.``); 1x1 conv weights may also be stored as linear ``[out, in]`` matrices.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from locore.config import META_DINO_CONFIG, DinoConfig
from locore.deps import MissingDependencyError, require
from locore.fileio import atomic_path
from locore.model.checkpoint import CheckpointError

log = logging.getLogger(__name__)

# transformers 4.x attention names -> 5.x names (the canonical form we compare keys in)
_LEGACY_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)
_BACKBONE_PREFIXES = ("backbone.", "dinov2_with_registers.", "dinov2.")
_IGNORED_BACKBONE_PREFIXES = ("classifier.",)  # the classification checkpoints' linear head
_OPTIONAL_BACKBONE_KEYS = ("embeddings.mask_token",)  # unused at inference
_POSITION_KEY = "embeddings.position_embeddings"
_OPTIONAL_HEAD_KEYS = ("desc_bn.num_batches_tracked",)
_LIST_AT_MOST = 8


class DinoWeightsError(CheckpointError):
    """A DINOv2 backbone or detector-head weights file does not fit the module."""


class DinoOutput(NamedTuple):
    """Per image, the ``num_desc`` strongest patches (strongest first) and the CLS vector."""

    descriptors: Tensor  # [B, Nd, Dl] float32, L2 norm 1
    weights: Tensor  # [B, Nd] float32, descending
    xy: Tensor  # [B, Nd, 2] float32 patch centres in [0, 1], (x, y)
    scales: Tensor  # [B, Nd] int64 scale id
    global_desc: Tensor  # [B, hidden] float32, L2 norm 1


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            f"DINOv2 local features need the Python package 'transformers' ({exc}). Install "
            "it with: pip install 'locore-edge[dino]' (or pip install 'transformers>=4.48')"
        ) from exc
    if not hasattr(transformers, "Dinov2WithRegistersModel"):
        raise MissingDependencyError(
            f"transformers {transformers.__version__} has no Dinov2WithRegistersModel; "
            "pip install 'transformers>=4.48'"
        )
    return transformers


def backbone_config(config: DinoConfig, attn_implementation: str = "sdpa") -> Any:
    """The ``transformers.Dinov2WithRegistersConfig`` of ``config``'s backbone."""
    tf = _transformers()
    return tf.Dinov2WithRegistersConfig(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        patch_size=config.patch_size,
        image_size=config.image_size,
        num_register_tokens=config.num_registers,
        layer_norm_eps=config.layer_norm_eps,
        attn_implementation=attn_implementation,
    )


def patch_centres(grid: int) -> Tensor:
    """Centres of a ``grid x grid`` patch grid, row-major: ``[grid * grid, 2] float32`` (x, y)."""
    c = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


def resample_position_embeddings(position: Tensor, grid: int) -> Tensor:
    """``[1, 1 + n*n, C]`` position embeddings resampled to ``[1, 1 + grid*grid, C]``.

    The same bicubic, antialiased interpolation that transformers applies at run time to an
    image whose patch grid differs from the checkpoint's, computed once instead.
    """
    n = math.isqrt(position.shape[1] - 1)
    if position.ndim != 3 or position.shape[0] != 1 or n * n != position.shape[1] - 1:
        raise DinoWeightsError(
            f"position embeddings must be [1, 1 + n*n, C] (a square patch grid), got "
            f"{list(position.shape)}"
        )
    if n == grid:
        return position
    dim = position.shape[-1]
    patches = position[:, 1:].reshape(1, n, n, dim).permute(0, 3, 1, 2).to(torch.float32)
    patches = F.interpolate(
        patches, size=(grid, grid), mode="bicubic", align_corners=False, antialias=True
    )
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(position.dtype)
    return torch.cat([position[:, :1], patches], dim=1)


class AmesDetectorHead(nn.Module):
    """AMES-style detector on a ``[B, C, h, w]`` patch-token grid.

    Returns descriptors ``[B, h*w, desc_dim]`` (1x1 conv + BatchNorm, L2-normalised) and
    weights ``[B, h*w]`` (ReLU -> 1x1 conv -> softplus), both in row-major patch order.
    """

    def __init__(self, in_dim: int, desc_dim: int) -> None:
        super().__init__()
        self.desc_conv = nn.Conv2d(in_dim, desc_dim, kernel_size=1)
        self.desc_bn = nn.BatchNorm2d(desc_dim)
        self.weight_conv = nn.Conv2d(in_dim, 1, kernel_size=1)

    def forward(self, grid: Tensor) -> tuple[Tensor, Tensor]:
        desc = self.desc_bn(self.desc_conv(grid)).flatten(2).transpose(1, 2)
        desc = F.normalize(desc, p=2.0, dim=-1, eps=1e-12)
        weights = F.softplus(self.weight_conv(F.relu(grid))).flatten(1)
        return desc, weights


class DinoLocalFeatures(nn.Module):
    """DINOv2-with-registers backbone + AMES-style detector -> top-``num_desc`` patches.

    Args:
        config: shapes (:class:`~locore.config.DinoConfig`; default ViT-B/14, 4 registers,
            224 px, 768-d descriptors, 48 patches per image).
        attn_implementation: transformers attention backend, ``"sdpa"`` (default) or ``"eager"``.

    The module starts with random weights and in eval mode; see :meth:`load_weights`.
    ``forward(pixel_values: [B, 3, S, S] float32)`` (RGB, ImageNet mean/std normalised,
    ``S = config.image_size``) returns a :class:`DinoOutput`.
    """

    patch_xy: Tensor  # [N, 2] patch centres (x, y), a buffer

    def __init__(self, config: DinoConfig | None = None, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.config = config if config is not None else DinoConfig()
        self.attn_implementation = attn_implementation
        tf = _transformers()
        self.backbone = tf.Dinov2WithRegistersModel(
            backbone_config(self.config, attn_implementation)
        )
        self.head = AmesDetectorHead(self.config.hidden_size, self.config.desc_dim)
        self.register_buffer("patch_xy", patch_centres(self.config.grid), persistent=False)
        self.eval()

    # ---- forward -----------------------------------------------------------------------------
    def _check_input(self, pixel_values: Tensor) -> None:
        s = self.config.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, s, s):
            raise ValueError(
                f"pixel_values must be [B, 3, {s}, {s}] (this model's image_size is {s}), got "
                f"{list(pixel_values.shape)}; resize the images or use model.with_image_size()"
            )

    def dense(self, pixel_values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Every patch: descriptors ``[B, N, Dl]``, weights ``[B, N]``, global ``[B, hidden]``."""
        self._check_input(pixel_values)
        cfg = self.config
        tokens = self.backbone(pixel_values=pixel_values).last_hidden_state
        patches = tokens[:, 1 + cfg.num_registers :]  # [B, N, C] after CLS and registers
        grid = patches.transpose(1, 2).unflatten(2, (cfg.grid, cfg.grid))  # [B, C, h, w]
        desc, weights = self.head(grid)
        global_desc = F.normalize(tokens[:, 0], p=2.0, dim=-1, eps=1e-12)
        return desc, weights, global_desc

    def forward(self, pixel_values: Tensor, scale_id: int = 0) -> DinoOutput:
        desc, weights, global_desc = self.dense(pixel_values)
        top_weights, index = torch.topk(weights, self.config.num_desc, dim=1, sorted=True)
        top_desc = torch.gather(desc, 1, index.unsqueeze(-1).expand(-1, -1, desc.shape[-1]))
        xy = self.patch_xy[index]
        scales = torch.full_like(index, scale_id)
        return DinoOutput(top_desc, top_weights, xy, scales, global_desc)

    # ---- weights -----------------------------------------------------------------------------
    def load_weights(
        self, backbone_path: str | Path | None = None, head_path: str | Path | None = None
    ) -> DinoLocalFeatures:
        """Load the backbone and/or the detector head from safetensors files (never downloads).

        Raises :class:`DinoWeightsError` naming missing, unexpected or mis-shaped keys.
        Returns ``self`` (in eval mode).
        """
        if backbone_path is None and head_path is None:
            raise DinoWeightsError("load_weights needs backbone_path, head_path or both")
        if backbone_path is not None:
            self._load_backbone(Path(backbone_path))
        if head_path is not None:
            self._load_head(Path(head_path))
        return self.eval()

    def save_weights(
        self, backbone_path: str | Path | None = None, head_path: str | Path | None = None
    ) -> None:
        """Write the backbone and/or head as safetensors (atomically), readable by
        :meth:`load_weights`; the backbone keys are those of transformers' own checkpoints."""
        require("safetensors", "saving DINOv2 weights")
        from safetensors.torch import save_file

        meta = {META_DINO_CONFIG: self.config.to_json()}
        for path, part, fmt in (
            (backbone_path, self.backbone, "locore-dino-backbone"),
            (head_path, self.head, "locore-dino-head"),
        ):
            if path is None:
                continue
            state = {k: v.detach().contiguous().cpu() for k, v in part.state_dict().items()}
            with atomic_path(path) as tmp:
                save_file(state, str(tmp), metadata={"format": fmt, **meta})

    def with_image_size(self, image_size: int) -> DinoLocalFeatures:
        """A copy for ``image_size x image_size`` inputs (position embeddings resampled)."""
        config = dataclasses.replace(self.config, image_size=image_size)
        other = DinoLocalFeatures(config, self.attn_implementation)
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        key = f"backbone.{_POSITION_KEY}"
        state[key] = resample_position_embeddings(state[key], config.grid)
        other.load_state_dict(state)
        return other.eval()

    def _load_backbone(self, path: Path) -> None:
        loaded = _read_safetensors(path, "backbone")
        state: dict[str, Tensor] = {}
        ignored = []
        for key, value in loaded.items():
            for prefix in _BACKBONE_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    break
            if key.startswith(_IGNORED_BACKBONE_PREFIXES):
                ignored.append(key)
                continue
            state[_canonical(key)] = value
        if ignored:
            log.info("%s: ignoring %d non-backbone keys %s", path, len(ignored), ignored[:4])
        position = state.get(_POSITION_KEY)
        if position is not None and position.ndim == 3:
            n = math.isqrt(max(position.shape[1] - 1, 0))
            if n * n == position.shape[1] - 1 and n != self.config.grid:
                log.info(
                    "%s: resampling position embeddings from a %dx%d to a %dx%d patch grid",
                    path,
                    n,
                    n,
                    self.config.grid,
                    self.config.grid,
                )
                state[_POSITION_KEY] = resample_position_embeddings(position, self.config.grid)
        own = {_canonical(k): k for k in self.backbone.state_dict()}
        matched = _match_state(
            self.backbone, own, state, path, "backbone", _OPTIONAL_BACKBONE_KEYS, self.config
        )
        self.backbone.load_state_dict(matched, strict=False)
        log.info("loaded DINOv2 backbone weights (%d tensors) from %s", len(matched), path)

    def _load_head(self, path: Path) -> None:
        loaded = _read_safetensors(path, "head")
        own_state = self.head.state_dict()
        state = {}
        for key, value in loaded.items():
            key = key[len("head.") :] if key.startswith("head.") else key
            target = own_state.get(key)
            if target is not None and target.ndim == 4 and value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)  # a linear layer stored as [out, in]
            state[key] = value
        own = {k: k for k in own_state}
        matched = _match_state(
            self.head, own, state, path, "head", _OPTIONAL_HEAD_KEYS, self.config
        )
        self.head.load_state_dict(matched, strict=False)
        log.info("loaded detector head weights (%d tensors) from %s", len(matched), path)


def _canonical(key: str) -> str:
    for old, new in _LEGACY_RENAMES:
        key = key.replace(old, new)
    return key


def _read_safetensors(path: Path, what: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise DinoWeightsError(
            f"{what} weights file {path} does not exist. locore-edge never downloads weights: "
            + (
                "fetch the model.safetensors of facebook/dinov2-with-registers-base yourself "
                "and pass its path"
                if what == "backbone"
                else "pass a head saved with DinoLocalFeatures.save_weights(head_path=...)"
            )
        )
    require("safetensors", "loading DINOv2 weights")
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as exc:
        raise DinoWeightsError(
            f"{path} is not a readable safetensors file ({exc}); {what} weights must be "
            "safetensors (convert a PyTorch .bin/.pth with safetensors.torch.save_file)"
        ) from exc


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_AT_MOST])
    more = len(keys) - _LIST_AT_MOST
    return shown + (f" and {more} more" if more > 0 else "")


def _shape_hint(state: dict[str, Tensor], what: str) -> str:
    """What the file's tensors say about the architecture it was trained for."""
    if what == "backbone":
        proj = state.get("embeddings.patch_embeddings.projection.weight")
        regs = state.get("embeddings.register_tokens")
        layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")}
        if proj is not None and proj.ndim == 4:
            n_regs = int(regs.shape[1]) if regs is not None and regs.ndim == 3 else 0
            return (
                f"; the file looks like hidden_size={proj.shape[0]}, patch_size={proj.shape[2]}, "
                f"num_layers={len(layers)}, num_registers={n_regs}: build the module with a "
                "DinoConfig that matches"
            )
        return ""
    conv = state.get("desc_conv.weight")
    if conv is not None and conv.ndim == 4:
        return (
            f"; the file's head maps {conv.shape[1]}-d tokens to {conv.shape[0]}-d descriptors: "
            "set DinoConfig(hidden_size=..., desc_dim=...) to match"
        )
    return ""


def _match_state(
    module: nn.Module,
    own: dict[str, str],
    state: dict[str, Tensor],
    path: Path,
    what: str,
    optional: tuple[str, ...],
    config: DinoConfig,
) -> dict[str, Tensor]:
    """``state`` (canonical keys) as a state dict of ``module`` (its own keys), or an error.

    ``own`` maps canonical key -> module key.
    """
    expected = module.state_dict()
    missing = sorted(k for k in own if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in own)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {_listing(unexpected)}")
    mismatched = []
    for key, value in state.items():
        if key in own:
            want = expected[own[key]]
            if tuple(value.shape) != tuple(want.shape):
                mismatched.append(f"{key} {list(value.shape)} (module {list(want.shape)})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched)}")
    if problems:
        other = "head" if what == "backbone" else "backbone"
        swapped = (
            f"; is this a {other} file? pass it as {other}_path"
            if unexpected and not set(own) & set(state)
            else ""
        )
        c = config
        raise DinoWeightsError(
            f"{path} does not fit the DINOv2 {what} (hidden_size={c.hidden_size}, "
            f"num_layers={c.num_layers}, patch_size={c.patch_size}, "
            f"num_registers={c.num_registers}, desc_dim={c.desc_dim}): "
            + "; ".join(problems)
            + (swapped or _shape_hint(state, what))
        )
    out = {}
    for key, value in state.items():
        target = expected[own[key]]
        out[own[key]] = value.to(dtype=target.dtype)
    return out


__all__ = [
    "AmesDetectorHead",
    "DinoConfig",
    "DinoLocalFeatures",
    "DinoOutput",
    "DinoWeightsError",
    "backbone_config",
    "patch_centres",
    "resample_position_embeddings",
]
