"""Descriptor packing: local features -> the feeds of one backend call.

Accepts :class:`~locore.runtime.local_features.LocalFeatures` (one image or a batch, extracted
or read from a feature file) or a list of single-image records (stacked into a batch).

Each image contributes its first ``config.num_desc`` rows (AMES/LOCORE files sort rows by
detector weight, so these are the best; LOCORE takes 48). Images with fewer rows are padded with
zero descriptors and ``mask = False``. Valid descriptors must be finite in the engine's dtype; a
query must have at least one valid descriptor (:class:`PackingError` otherwise), while a gallery
image may have none (the re-ranker then scores it as "no evidence", see
:mod:`locore.runtime.sliding_windows`). Descriptors take the engine's float dtype, masks and
scale ids the dtypes of the model's inputs (``bool`` and ``int64`` in the graph I/O contract).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from locore.config import (
    GALLERY_DESC,
    GALLERY_GLOBAL,
    GALLERY_MASK,
    GALLERY_SCALE,
    QUERY_DESC,
    QUERY_GLOBAL,
    QUERY_MASK,
    QUERY_SCALE,
    LocoreConfig,
    TensorSpec,
    graph_io,
)
from locore.runtime.local_features import FeaturesLike, as_local_features, first_row

if TYPE_CHECKING:
    from locore.runtime.backends.base import Backend

log = logging.getLogger(__name__)

# What the usual descriptor dimensions are, for error messages.
DESCRIPTOR_KINDS = {128: "SIFT", 768: "DINOv2 ViT-B/14"}


class PackingError(ValueError):
    """Features do not fit the model (descriptor dimension, scale ids, global vectors)."""


def check_query_mask(valid: np.ndarray, name: str | None = None) -> None:
    """Raise :class:`PackingError` if a query's mask ``valid`` ([T] or [B, T]) has no True:
    with no valid descriptor there is nothing to match (``name`` names the query)."""
    empty = ~np.asarray(valid, dtype=bool).any(axis=-1)
    if empty.any():
        if name is None:
            name = f"query {int(np.argwhere(empty)[0][0])}" if empty.ndim else "the query"
        raise PackingError(
            f"{name} has no valid descriptor (every row is masked as padding), so there is "
            "nothing to match its gallery against. Re-extract its features (an image without "
            "keypoints cannot be re-ranked; keep its global ranking instead)"
        )


class Packer:
    """Packs a query and its gallery images into the feeds dict of a backend.

    Args:
        config: the model's config (``num_desc``, ``desc_dim``, ``num_scales``, ``global_dim``).
        input_specs: the model's inputs (names and dtypes); default: ``graph_io(config)`` with
            ``float_dtype`` for the float inputs.
        float_dtype: descriptor dtype when ``input_specs`` is not given.
        clip_scales: clamp scale ids into ``[0, num_scales)`` instead of raising.
    """

    def __init__(
        self,
        config: LocoreConfig,
        input_specs: Sequence[TensorSpec] | None = None,
        float_dtype: np.dtype | type = np.float32,
        clip_scales: bool = False,
    ) -> None:
        self.config = config
        if input_specs is None:
            name = np.dtype(float_dtype).name
            input_specs = [
                TensorSpec(s.name, s.shape, name if s.dtype == "float" else s.dtype)
                for s in graph_io(config).inputs
            ]
        self.dtypes = {spec.name: np.dtype(spec.dtype) for spec in input_specs}
        for required in (QUERY_DESC, QUERY_MASK, GALLERY_DESC, GALLERY_MASK):
            if required not in self.dtypes:
                raise PackingError(
                    f"the model has no input {required!r} (inputs: {list(self.dtypes)}); it does "
                    "not follow the graph I/O contract of locore.config.graph_io"
                )
        self.with_scales = QUERY_SCALE in self.dtypes and GALLERY_SCALE in self.dtypes
        self.with_global = QUERY_GLOBAL in self.dtypes and GALLERY_GLOBAL in self.dtypes
        self.clip_scales = clip_scales

    @classmethod
    def for_backend(cls, backend: Backend, clip_scales: bool = False) -> Packer:
        """A packer producing exactly the inputs, shapes and dtypes ``backend`` takes."""
        return cls(backend.config, backend.input_specs(), clip_scales=clip_scales)

    @property
    def float_dtype(self) -> np.dtype:
        return self.dtypes[QUERY_DESC]

    # ---- one role (query or gallery) ------------------------------------------------------------
    def pack_images(
        self, features: FeaturesLike, role: str = "gallery"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First ``num_desc`` rows of each image: desc [..., Nd, Dl] (engine float dtype),
        valid [..., Nd] bool, scale [..., Nd] int64 (0 on padding)."""
        features = as_local_features(features)
        cfg = self.config
        nd, dl = cfg.num_desc, cfg.desc_dim
        if features.desc_dim != dl:
            lead = "G, " if role == "gallery" and features.is_batch else ""
            kind = DESCRIPTOR_KINDS.get(dl)
            raise PackingError(
                f"{role} descriptors must be [{lead}{nd}, {dl}] float32, got "
                f"[{lead}{features.num_desc}, {features.desc_dim}]; this engine was exported for "
                f"{dl}-d {kind + ' ' if kind else ''}features (config {cfg.name!r}). Use features "
                "from the extractor the model was trained with"
            )
        feats = features.first(nd)
        lead_shape = feats.descriptors.shape[:-2]
        rows = feats.num_desc
        desc = np.zeros((*lead_shape, nd, dl), dtype=self.float_dtype)
        valid = np.zeros((*lead_shape, nd), dtype=bool)
        scale = np.zeros((*lead_shape, nd), dtype=np.int64)
        valid[..., :rows] = feats.mask
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below
            desc[..., :rows, :] = np.where(feats.mask[..., None], feats.descriptors, 0.0)
        scale[..., :rows] = np.where(feats.mask, feats.scales, 0)
        broken = ~np.isfinite(desc).all(axis=-1)
        if broken.any():
            raise PackingError(
                f"{role} descriptors contain NaN or infinite values at {first_row(broken)} "
                f"(after conversion to {self.float_dtype.name}, whose largest value is "
                f"{float(np.finfo(self.float_dtype).max):.4g}); check the features"
            )
        if role == "query":
            check_query_mask(valid)
        if self.with_scales:
            scale = self._check_scales(scale, valid, role)
        return desc, valid, scale

    def _check_scales(self, scale: np.ndarray, valid: np.ndarray, role: str) -> np.ndarray:
        n = self.config.num_scales
        used = scale[valid]
        if used.size and (used.min() < 0 or used.max() >= n):
            if self.clip_scales:
                return np.clip(scale, 0, n - 1)
            raise PackingError(
                f"{role} scale ids must be in [0, {n - 1}] (the model has num_scales={n}), got "
                f"ids from {used.min()} to {used.max()}; the features were extracted with other "
                "scales than the model was trained with. Pass clip_scales=True (CLI "
                "--clip-scales) to clamp them"
            )
        return scale

    def _global(self, vectors: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray:
        if vectors is None:
            raise PackingError(
                f"this model uses global descriptors (use_global=True): pass {name} "
                f"{list(shape)} (CLI: --query-global and --db-global)"
            )
        array = np.asarray(vectors)
        if array.shape != shape:
            raise PackingError(
                f"{name} must be {list(shape)}, got {list(array.shape)}; this engine was exported "
                f"for {self.config.global_dim}-d global descriptors"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            array = array.astype(self.dtypes[name], copy=False)
        if array.dtype.kind != "f" or not np.isfinite(array).all():
            raise PackingError(
                f"{name} must hold finite numbers (in {self.dtypes[name].name}), got "
                f"{'NaN or inf' if array.dtype.kind == 'f' else array.dtype}; check the global "
                "descriptors"
            )
        return array

    # ---- feeds ----------------------------------------------------------------------------
    def pack(
        self,
        query: FeaturesLike,
        gallery: FeaturesLike,
        query_global: np.ndarray | None = None,
        gallery_global: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Feeds for one call.

        query: one image [T, ...] (B = 1) or a batch [B, T, ...]; gallery: [G, T, ...] for one
        query or [B, G, T, ...]. Global vectors (only for ``use_global`` models): query [Dg] or
        [B, Dg], gallery [G, Dg] or [B, G, Dg]; when not given, the records' ``global_desc``
        are used. Returns ``query_desc`` [B, Nd, Dl],
        ``query_mask`` [B, Nd], ``gallery_desc`` [B, G, Nd, Dl], ``gallery_mask`` [B, G, Nd], and
        ``query_scale`` [B, Nd] / ``gallery_scale`` [B, G, Nd] int64 when the model takes them.
        """
        query, gallery = as_local_features(query), as_local_features(gallery)
        single = query.descriptors.ndim == 2
        if single != (gallery.descriptors.ndim == 3) or query.descriptors.ndim not in (2, 3):
            raise PackingError(
                "give one query [T, D] with its gallery [G, T, D], or a batch of queries "
                f"[B, T, D] with galleries [B, G, T, D]; got query {list(query.descriptors.shape)} "
                f"and gallery {list(gallery.descriptors.shape)}"
            )
        q_desc, q_valid, q_scale = self.pack_images(query, "query")
        g_desc, g_valid, g_scale = self.pack_images(gallery, "gallery")
        if single:
            q_desc, q_valid, q_scale = q_desc[None], q_valid[None], q_scale[None]
            g_desc, g_valid, g_scale = g_desc[None], g_valid[None], g_scale[None]
        bsz, ngal = g_desc.shape[:2]
        if q_desc.shape[0] != bsz:
            raise PackingError(f"{q_desc.shape[0]} queries but {bsz} galleries; they must match")
        feeds = {
            QUERY_DESC: q_desc,
            QUERY_MASK: q_valid.astype(self.dtypes[QUERY_MASK], copy=False),
            GALLERY_DESC: g_desc,
            GALLERY_MASK: g_valid.astype(self.dtypes[GALLERY_MASK], copy=False),
        }
        if self.with_scales:
            feeds[QUERY_SCALE] = q_scale.astype(self.dtypes[QUERY_SCALE], copy=False)
            feeds[GALLERY_SCALE] = g_scale.astype(self.dtypes[GALLERY_SCALE], copy=False)
        if self.with_global:
            dg = self.config.global_dim
            qg = query.global_desc if query_global is None else np.asarray(query_global)
            gg = gallery.global_desc if gallery_global is None else np.asarray(gallery_global)
            if single:
                qg = None if qg is None else qg[None]
                gg = None if gg is None else gg[None]
            feeds[QUERY_GLOBAL] = self._global(qg, (bsz, dg), QUERY_GLOBAL)
            feeds[GALLERY_GLOBAL] = self._global(gg, (bsz, ngal, dg), GALLERY_GLOBAL)
        return feeds
