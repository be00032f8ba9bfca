"""Packing against an oracle written from the AMES row layout (docs/design.md §8), not from
the packer.

AMES rows are ``[T, 5 + D]``: xy in columns 0:2, scale id in 2, mask in 3 (0 = valid,
1 = padding), weight in 4, descriptor from 5. The rows here hold GARBAGE in their padding
(random non-zero descriptors, scale ids, xy and weights), as feature files written by other
tools may: the packed feeds must not let any of it through.
"""

from __future__ import annotations

import numpy as np
import pytest

from locore import config as C  # graph I/O tensor names
from locore.config import LocoreConfig
from locore.runtime.ames import from_rows
from locore.runtime.local_features import LocalFeatures
from locore.runtime.packing import Packer

ND, D, SCALES = 6, 8, 4
CONFIG = LocoreConfig(desc_dim=D, num_desc=ND, num_scales=SCALES, name="oracle")


def _garbage_rows(rng: np.random.Generator, images: int, rows: int) -> np.ndarray:
    """AMES rows [images, rows, 5 + D]: about a third of the rows are padding, and every
    column of a padding row holds a non-zero random value (scale ids there are not even
    integers, nor in range)."""
    out = np.empty((images, rows, 5 + D), np.float32)
    pad = rng.random((images, rows)) < 0.35
    pad[:, 0] = False  # every image has at least one valid row
    out[..., 0:2] = rng.uniform(0.0, 1.0, (images, rows, 2))
    out[..., 2] = rng.integers(0, SCALES, (images, rows))
    out[..., 3] = pad.astype(np.float32)
    out[..., 4] = rng.uniform(0.1, 1.0, (images, rows))
    out[..., 5:] = rng.uniform(0.5, 2.0, (images, rows, D)) * rng.choice([-1, 1], (images, rows, D))
    # garbage in the padding rows: scale ids like 57.3, huge descriptors
    out[..., 2] = np.where(pad, rng.uniform(9.0, 99.0, (images, rows)), out[..., 2])
    out[..., 5:] = np.where(
        pad[..., None], rng.uniform(50.0, 99.0, (images, rows, D)), out[..., 5:]
    )
    return out


def _expected(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(desc [n, ND, D], valid [n, ND], scale [n, ND]) of rows [n, T, 5 + D], by plain loops
    over the layout: the first ND rows of each image; padding rows and rows past T are zero
    descriptors, mask False, scale 0."""
    n, t = rows.shape[:2]
    desc = np.zeros((n, ND, D), np.float64)
    valid = np.zeros((n, ND), bool)
    scale = np.zeros((n, ND), np.int64)
    for i in range(n):
        for j in range(min(t, ND)):
            row = rows[i, j]
            if row[3] == 0.0:  # column 3: 0 = valid
                valid[i, j] = True
                desc[i, j] = row[5:]
                scale[i, j] = int(row[2])
    return desc, valid, scale


@pytest.mark.parametrize("rows_per_image", [4, ND, 9])  # fewer rows, exactly Nd, more than Nd
def test_pack_matches_layout_oracle(rows_per_image: int) -> None:
    rng = np.random.default_rng(rows_per_image)
    query_rows = _garbage_rows(rng, 1, rows_per_image)
    gallery_rows = _garbage_rows(rng, 5, rows_per_image)
    assert (query_rows[..., 3] == 1).any() and (gallery_rows[..., 3] == 1).any()
    feeds = Packer(CONFIG).pack(from_rows(query_rows[0]), from_rows(gallery_rows))

    q_desc, q_valid, q_scale = _expected(query_rows)
    g_desc, g_valid, g_scale = _expected(gallery_rows)
    assert feeds[C.QUERY_DESC].shape == (1, ND, D) and feeds[C.QUERY_DESC].dtype == np.float32
    assert feeds[C.GALLERY_DESC].shape == (1, 5, ND, D)
    assert feeds[C.QUERY_MASK].dtype == np.bool_ and feeds[C.QUERY_SCALE].dtype == np.int64
    np.testing.assert_array_equal(feeds[C.QUERY_DESC], q_desc.astype(np.float32))
    np.testing.assert_array_equal(feeds[C.QUERY_MASK], q_valid)
    np.testing.assert_array_equal(feeds[C.QUERY_SCALE], q_scale)
    np.testing.assert_array_equal(feeds[C.GALLERY_DESC][0], g_desc.astype(np.float32))
    np.testing.assert_array_equal(feeds[C.GALLERY_MASK][0], g_valid)
    np.testing.assert_array_equal(feeds[C.GALLERY_SCALE][0], g_scale)
    # the headline: nothing of the padding garbage (all >= 50 in magnitude) gets through
    assert np.abs(feeds[C.GALLERY_DESC]).max() <= 2.0


def test_batched_pack_and_list_of_records_match_oracle() -> None:
    rng = np.random.default_rng(7)
    query_rows = _garbage_rows(rng, 2, 9)
    gallery_rows = _garbage_rows(rng, 6, 9).reshape(2, 3, 9, 5 + D)
    feeds = Packer(CONFIG).pack(from_rows(query_rows), from_rows(gallery_rows))
    q_desc, q_valid, q_scale = _expected(query_rows)
    g_desc, g_valid, g_scale = _expected(gallery_rows.reshape(6, 9, 5 + D))
    np.testing.assert_array_equal(feeds[C.QUERY_DESC], q_desc.astype(np.float32))
    np.testing.assert_array_equal(feeds[C.QUERY_MASK], q_valid)
    np.testing.assert_array_equal(feeds[C.QUERY_SCALE], q_scale)
    np.testing.assert_array_equal(
        feeds[C.GALLERY_DESC], g_desc.reshape(2, 3, ND, D).astype(np.float32)
    )
    np.testing.assert_array_equal(feeds[C.GALLERY_MASK], g_valid.reshape(2, 3, ND))
    np.testing.assert_array_equal(feeds[C.GALLERY_SCALE], g_scale.reshape(2, 3, ND))
    # a list of single-image records packs like the batch
    records = [from_rows(r) for r in gallery_rows[0]]
    listed = Packer(CONFIG).pack(from_rows(query_rows[0]), records)
    np.testing.assert_array_equal(listed[C.GALLERY_DESC][0], g_desc[:3].astype(np.float32))


def test_float16_packing_zeroes_padding() -> None:
    rng = np.random.default_rng(3)
    gallery_rows = _garbage_rows(rng, 4, 5)
    desc, valid, scale = Packer(CONFIG, float_dtype=np.float16).pack_images(from_rows(gallery_rows))
    g_desc, g_valid, g_scale = _expected(gallery_rows)
    assert desc.dtype == np.float16
    np.testing.assert_array_equal(desc, g_desc.astype(np.float16))
    np.testing.assert_array_equal(valid, g_valid)
    np.testing.assert_array_equal(scale, g_scale)


def test_records_built_directly_match_oracle() -> None:
    """LocalFeatures made by hand (as an extractor does), garbage under mask False."""
    rng = np.random.default_rng(11)
    rows = _garbage_rows(rng, 3, 8)
    feats = LocalFeatures(
        descriptors=rows[..., 5:].copy(),
        scales=np.rint(rows[..., 2]).astype(np.int64),
        xy=rows[..., 0:2].copy(),
        weights=rows[..., 4].copy(),
        mask=rows[..., 3] == 0.0,
    )
    desc, valid, scale = Packer(CONFIG).pack_images(feats)
    g_desc, g_valid, g_scale = _expected(rows)
    np.testing.assert_array_equal(desc, g_desc.astype(np.float32))
    np.testing.assert_array_equal(valid, g_valid)
    np.testing.assert_array_equal(scale, g_scale)
