"""DINOv2 local features with an AMES-style detector, run from ONNX (no torch).

The optional extractor of docs/design.md §2: a DINOv2 ViT/14 with registers reads a fixed-size
image; an AMES-style detector head turns its patch tokens into L2-normalised local descriptors
and softplus detector weights; the ``num_desc`` patches with the highest weights are the image's
local features (patch centres as xy, scale id 0), the CLS token its global descriptor.

The torch module is :class:`locore.model.dino.DinoLocalFeatures`; it is exported with
:func:`locore.export.dino_export.export_dino_onnx`. What both sides share
(:class:`~locore.config.DinoConfig`, :func:`~locore.config.dino_graph_io`, the graph I/O names
and the ONNX metadata keys) lives in :mod:`locore.config`; this module holds the preprocessing
and :class:`DinoExtractor`, which runs the exported file in the generic ONNX Runtime runner
(:class:`~locore.runtime.backends.ort.OrtRunner`). Graph I/O (``S = image_size``)::

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

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from locore.closing import Closing
from locore.config import (
    DESCRIPTORS,
    DINO_KIND,
    GLOBAL_DESC,
    IMAGE,
    META_DINO_CONFIG,
    META_KIND,
    SCALES,
    WEIGHTS,
    XY,
    ConfigError,
    DinoConfig,
    LocoreConfig,
    dino_graph_io,
)
from locore.deps import require
from locore.progress import progress_bar
from locore.runtime.images import ImageInput, load_image
from locore.runtime.local_features import FeatureError, LocalFeatures

if TYPE_CHECKING:
    from locore.runtime.backends.ort import OrtRunner

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB
IMAGENET_STD = (0.229, 0.224, 0.225)


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


class DinoExtractor(Closing):
    """DINOv2 + AMES-style detector features from an exported ONNX file, in ONNX Runtime.

    Implements :class:`~locore.runtime.local_features.FeatureExtractor` like ``SiftExtractor``:
    every image gives ``num_desc`` valid local features (the strongest patches; no padding),
    scale id 0 (``num_scales = 1``) and a ``hidden_size``-d global descriptor (the CLS token).

    Args:
        model: path of a file written by ``locore.export.dino_export.export_dino_onnx``.
        providers, threads: as for :class:`~locore.runtime.backends.ort.OrtRunner`.
        batch_size: images per ONNX Runtime call in :meth:`extract_many`.

    ``close()`` (or leaving ``with DinoExtractor(...) as extractor:``) frees the session.
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
        from locore.runtime.backends.ort import OrtRunner

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise FeatureError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.model: OrtRunner = OrtRunner(model, providers=providers, threads=threads)
        try:
            self.config = self._read_config(self.model)
        except BaseException:
            self.model.close()
            raise
        self.desc_dim = self.config.desc_dim
        self.num_desc = self.config.num_desc

    @staticmethod
    def _read_config(model: OrtRunner) -> DinoConfig:
        meta = model.metadata
        kind = meta.get(META_KIND)
        if kind != DINO_KIND or META_DINO_CONFIG not in meta:
            raise FeatureError(
                f"{model.path} is not a DINOv2 feature model (metadata {META_KIND}={kind!r}, "
                f"expected {DINO_KIND!r}); export one with "
                "locore.export.dino_export.export_dino_onnx"
            )
        try:
            config = DinoConfig.from_json(meta[META_DINO_CONFIG])
        except ConfigError as exc:
            raise FeatureError(
                f"{model.path}: metadata {META_DINO_CONFIG!r} is invalid: {exc}; re-export the "
                "model"
            ) from exc
        io = dino_graph_io(config)
        want = [(s.name, s.dtype) for s in io.inputs], [(s.name, s.dtype) for s in io.outputs]
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
        return self.model.infer({IMAGE: np.ascontiguousarray(images, dtype=np.float32)})

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
        for image in progress_bar(images, desc="DINOv2 features", unit="img", enabled=progress):
            pending.append(image)
            if len(pending) == self.batch_size:
                out.extend(self.extract_batch(pending))
                pending = []
        out.extend(self.extract_batch(pending))
        return out

    def close(self) -> None:
        self.model.close()


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DinoExtractor",
    "preprocess",
]
