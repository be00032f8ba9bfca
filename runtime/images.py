"""Images in, as uint8 arrays in OpenCV's channel order (no torch; OpenCV + numpy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from locore.deps import require
from locore.runtime.local_features import FeatureError

ImageInput = str | Path | np.ndarray


def load_image(image: ImageInput) -> np.ndarray:
    """An image as a uint8 array, ``[H, W, 3]`` BGR (OpenCV order) or ``[H, W]`` gray.

    Accepts a path to any file OpenCV decodes, or an array: uint8, or float in [0, 1];
    ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` (BGR) or ``[H, W, 4]`` (BGRA, alpha dropped).
    """
    cv2 = require("cv2")
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FeatureError(f"image file {path} does not exist")
        data = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if data is None:
            raise FeatureError(
                f"OpenCV could not decode {path}; expected an image file (jpg, png, ...)"
            )
        return np.asarray(data)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise FeatureError(
            f"an image array must be [H, W], [H, W, 3] (BGR) or [H, W, 4], got shape {arr.shape}"
        )
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise FeatureError(
                f"an image array must be uint8 or float in [0, 1], got dtype {arr.dtype}"
            )
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise FeatureError(f"an image must have at least 1x1 pixels, got shape {arr.shape}")
    return np.ascontiguousarray(arr)
