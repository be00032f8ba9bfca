"""DINOv2 local features with an AMES-style detector, run from ONNX (no torch).

The optional extractor of DESIGN.md §2: a DINOv2 ViT/14 with registers reads a fixed-size
image; an AMES-style detector head turns its patch tokens into L2-normalised local descriptors
and softplus detector weights; the ``num_desc`` patches with the highest weights are the image's
local features (patch centres as xy, scale id 0), the CLS token its global descriptor.

The torch module is :class:`locore.model.dino.DinoLocalFeatures`; it is exported with
:func:`locore.export.dino_export.export_dino_onnx`. This module holds what both sides share
(:class:`DinoConfig`, graph I/O names, the ONNX metadata keys) and :class:`DinoExtractor`, which
runs the exported file with ONNX Runtime. Graph I/O (``S = image_size``)::

    image:       [batch, 3, S, S] float32    RGB, ImageNet mean/std normalised
    descriptors: [batch, Nd, Dl] float32     L2 norm 1, strongest patch first
    weights:     [batch, Nd] float32         softplus detector weight, descending
    xy:          [batch, Nd, 2] float32      patch centre, x / width and y / height, in [0, 1]
    scales:      [batch, Nd] int64           scale id (0: single scale)
    global_desc: [batch, hidden] float32     CLS token, L2 norm 1

Weights are never downloaded: build the module, call ``load_weights`` with files you have
(see :mod:`locore.model.dino`), export once, and give the ``.onnx`` file to the extractor.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from locore.config import BATCH_DIM, META_VERSION, JsonConfig, TensorSpec
from locore.deps import require
from locore.runtime.features import (
    FeatureError,
    ImageInput,
    LocalFeatures,
    _progress,
    load_image,
)

if TYPE_CHECKING:
    from locore.config import LocoreConfig
    from locore.runtime.backends.ort import OnnxModel

log = logging.getLogger(__name__)

# Graph I/O names, shared by export and runtime.
IMAGE = "image"
DESCRIPTORS = "descriptors"
WEIGHTS = "weights"
XY = "xy"
SCALES = "scales"
GLOBAL_DESC = "global_desc"
OUTPUT_NAMES = (DESCRIPTORS, WEIGHTS, XY, SCALES, GLOBAL_DESC)

# ONNX metadata keys (the re-ranker's ``locore.config`` key is deliberately not used, so a
# feature model is never mistaken for a re-ranker).
META_KIND = "locore.kind"
META_DINO_CONFIG = "locore.dino_config"
META_DINO_GRAPH_IO = "locore.dino_graph_io"
DINO_KIND = "dino_local_features"

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DinoConfig(JsonConfig):
    """Shapes of a DINOv2-with-registers backbone + AMES-style detector (JSON round-trip).

    The defaults are ViT-B/14 with 4 registers (``facebook/dinov2-with-registers-base``) at
    224 x 224 (16 x 16 = 256 patches), 768-d descriptors as in AMES, and the 48 strongest
    patches per image (LOCORE reads the first 48).
    """

    error = FeatureError

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_ratio: int = 4
    patch_size: int = 14
    image_size: int = 224
    num_registers: int = 4
    layer_norm_eps: float = 1e-6
    desc_dim: int = 768
    num_desc: int = 48

    def __post_init__(self) -> None:
        self.validate()

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def global_dim(self) -> int:
        return self.hidden_size

    def validate(self) -> None:
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "mlp_ratio",
            "patch_size",
            "image_size",
            "desc_dim",
            "num_desc",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FeatureError(f"DinoConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_registers, int) or self.num_registers < 0:
            raise FeatureError(f"DinoConfig.num_registers must be >= 0, got {self.num_registers}")
        if self.hidden_size % self.num_heads:
            raise FeatureError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        if self.image_size % self.patch_size:
            raise FeatureError(
                f"image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size}), e.g. {self.grid * self.patch_size} or "
                f"{(self.grid + 1) * self.patch_size}"
            )
        if self.num_desc > self.num_patches:
            raise FeatureError(
                f"num_desc ({self.num_desc}) exceeds the {self.num_patches} patches of a "
                f"{self.image_size} x {self.image_size} image with patch {self.patch_size}; "
                "lower num_desc or raise image_size"
            )


def dino_graph_io(config: DinoConfig) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of an exported DINOv2 feature model; ``batch`` is dynamic."""
    b, s, nd = BATCH_DIM, config.image_size, config.num_desc
    inputs = (TensorSpec(IMAGE, (b, 3, s, s), "float32", "RGB, ImageNet mean/std normalised"),)
    outputs = (
        TensorSpec(DESCRIPTORS, (b, nd, config.desc_dim), "float32", "L2-normalised, best first"),
        TensorSpec(WEIGHTS, (b, nd), "float32", "detector weight (softplus), descending"),
        TensorSpec(XY, (b, nd, 2), "float32", "patch centre in [0, 1], (x, y)"),
        TensorSpec(SCALES, (b, nd), "int64", "scale id (0: single scale)"),
        TensorSpec(GLOBAL_DESC, (b, config.hidden_size), "float32", "CLS token, L2-normalised"),
    )
    return inputs, outputs


def dino_metadata(config: DinoConfig, version: str) -> dict[str, str]:
    """The ``metadata_props`` an exported DINOv2 feature model carries."""
    inputs, outputs = dino_graph_io(config)
    io = {"inputs": [s.to_dict() for s in inputs], "outputs": [s.to_dict() for s in outputs]}
    return {
        META_KIND: DINO_KIND,
        META_DINO_CONFIG: config.to_json(),
        META_DINO_GRAPH_IO: json.dumps(io),
        META_VERSION: version,
    }


def preprocess(image: ImageInput, image_size: int) -> np.ndarray:
    """One image as the model's input: ``[3, S, S] float32``, RGB, ImageNet-normalised.

    The image is resized to ``S x S`` (aspect ratio not kept, so patch centres map back to the
    original image as x / width, y / height): area interpolation when shrinking, bicubic when
    enlarging. Gray images are replicated to three channels.
    """
    cv2 = require("cv2")
    img = load_image(image)
    rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB if img.ndim == 2 else cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    if (h, w) != (image_size, image_size):
        shrink = h * w >= image_size * image_size
        interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, (image_size, image_size), interpolation=interp)
    x = rgb.astype(np.float32) / 255.0
    x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


class DinoExtractor:
    """DINOv2 + AMES-style detector features from an exported ONNX file, in ONNX Runtime.

    Implements :class:`~locore.runtime.features.FeatureExtractor` like ``SiftExtractor``:
    every image gives ``num_desc`` valid local features (the strongest patches; no padding),
    scale id 0 (``num_scales = 1``) and a ``hidden_size``-d global descriptor (the CLS token).

    Args:
        model: path of a file written by ``locore.export.dino_export.export_dino_onnx``.
        providers, threads: as for :class:`~locore.runtime.backends.ort.OrtBackend`.
        batch_size: images per ONNX Runtime call in :meth:`extract_many`.
    """

    name = "dino"
    num_scales = 1

    def __init__(
        self,
        model: str | Path,
        *,
        providers: str | Sequence[str] | None = None,
        threads: int | None = None,
        batch_size: int = 8,
    ) -> None:
        from locore.runtime.backends.ort import OnnxModel

        if batch_size < 1:
            raise FeatureError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.model: OnnxModel = OnnxModel(model, providers=providers, threads=threads)
        self.config = self._read_config(self.model)
        self.desc_dim = self.config.desc_dim
        self.num_desc = self.config.num_desc

    @staticmethod
    def _read_config(model: OnnxModel) -> DinoConfig:
        meta = model.metadata
        kind = meta.get(META_KIND)
        if kind != DINO_KIND or META_DINO_CONFIG not in meta:
            raise FeatureError(
                f"{model.path} is not a DINOv2 feature model (metadata {META_KIND}={kind!r}, "
                f"expected {DINO_KIND!r}); export one with "
                "locore.export.dino_export.export_dino_onnx"
            )
        config = DinoConfig.from_json(meta[META_DINO_CONFIG])
        inputs, outputs = dino_graph_io(config)
        want = [(s.name, s.dtype) for s in inputs], [(s.name, s.dtype) for s in outputs]
        got = (
            [(s.name, s.dtype) for s in model.input_specs()],
            [(s.name, s.dtype) for s in model.output_specs()],
        )
        if sorted(want[0]) != sorted(got[0]) or sorted(want[1]) != sorted(got[1]):
            raise FeatureError(
                f"{model.path}: graph I/O {got} does not match its recorded DinoConfig, which "
                f"implies {want}; re-export the model"
            )
        return config

    @classmethod
    def from_config(cls, config: LocoreConfig, model: str | Path, **kwargs: Any) -> DinoExtractor:
        """An extractor whose Nd and Dl match the re-ranker ``config`` (else an error)."""
        extractor = cls(model, **kwargs)
        got = (extractor.num_desc, extractor.desc_dim)
        if got != (config.num_desc, config.desc_dim):
            raise FeatureError(
                f"{model} gives {got[0]} descriptors of dimension {got[1]} per image but the "
                f"re-ranker expects num_desc={config.num_desc}, desc_dim={config.desc_dim}; "
                "export the DINOv2 model with a matching DinoConfig(num_desc=..., desc_dim=...)"
            )
        return extractor

    def __repr__(self) -> str:
        c = self.config
        return (
            f"DinoExtractor({str(self.model.path)!r}, image_size={c.image_size}, "
            f"num_desc={c.num_desc}, desc_dim={c.desc_dim}, global_dim={c.global_dim})"
        )

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def global_dim(self) -> int:
        return self.config.global_dim

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The raw graph outputs for preprocessed ``images: [B, 3, S, S] float32``."""
        return self.model.run({IMAGE: np.ascontiguousarray(images, dtype=np.float32)})

    def _features(
        self, outputs: dict[str, np.ndarray], i: int, size: tuple[int, int]
    ) -> LocalFeatures:
        nd = self.num_desc
        return LocalFeatures(
            descriptors=np.ascontiguousarray(outputs[DESCRIPTORS][i], dtype=np.float32),
            scales=np.asarray(outputs[SCALES][i], dtype=np.int64),
            xy=np.clip(outputs[XY][i], 0.0, 1.0).astype(np.float32),
            weights=np.asarray(outputs[WEIGHTS][i], dtype=np.float32),
            mask=np.ones(nd, dtype=bool),
            global_desc=np.asarray(outputs[GLOBAL_DESC][i], dtype=np.float32),
            image_size=size,
        )

    def extract_batch(self, images: Sequence[ImageInput]) -> list[LocalFeatures]:
        """Features of several images in one ONNX Runtime call."""
        if not images:
            return []
        loaded = [load_image(im) for im in images]
        batch = np.stack([preprocess(im, self.image_size) for im in loaded])
        outputs = self.run(batch)
        return [
            self._features(outputs, i, (int(im.shape[0]), int(im.shape[1])))
            for i, im in enumerate(loaded)
        ]

    def extract(self, image: ImageInput) -> LocalFeatures:
        """Local and global features of one image (path or array)."""
        return self.extract_batch([image])[0]

    def extract_many(
        self, images: Iterable[ImageInput], *, progress: bool = True
    ) -> list[LocalFeatures]:
        """:meth:`extract` over ``images``, ``batch_size`` images per call, with a progress bar."""
        out: list[LocalFeatures] = []
        pending: list[ImageInput] = []
        for image in _progress(images, progress, "DINOv2 features"):
            pending.append(image)
            if len(pending) == self.batch_size:
                out.extend(self.extract_batch(pending))
                pending = []
        out.extend(self.extract_batch(pending))
        return out

    def close(self) -> None:
        self.model.close()


__all__ = [
    "DESCRIPTORS",
    "DINO_KIND",
    "GLOBAL_DESC",
    "IMAGE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "META_DINO_CONFIG",
    "META_DINO_GRAPH_IO",
    "META_KIND",
    "OUTPUT_NAMES",
    "SCALES",
    "WEIGHTS",
    "XY",
    "DinoConfig",
    "DinoExtractor",
    "dino_graph_io",
    "dino_metadata",
    "preprocess",
]
