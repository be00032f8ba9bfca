"""Images in, as uint8 arrays in OpenCV's channel order (no torch; OpenCV + numpy).

The rules :func:`load_image` applies to every image (extractors call it on every input):

- arrays: ``uint8`` (0-255), or float (``float16/32/64``) with every value in ``[0, 1]``;
  anything else is refused with :class:`~locore.runtime.local_features.FeatureError`: a float
  image in 0-255 is never clipped to black and white, integer images of other widths
  (``uint16``, ``int32``) and booleans are never guessed at, NaN is refused. Shapes ``[H, W]``,
  ``[H, W, 1]``, ``[H, W, 3]`` (BGR) or ``[H, W, 4]`` (BGRA, alpha dropped).
- size: at most :data:`MAX_PIXELS` pixels (100 megapixels; ``max_pixels=`` raises or lowers
  it). Files are measured from their header *before* decoding (PNG, JPEG, BMP, GIF, WebP), so a
  1.2-gigapixel PNG of a few kilobytes is refused without allocating a byte of pixels.
- files: JPEG and PNG files must be complete: a JPEG without its end-of-image marker after
  the scan data, or a PNG whose chunks stop before ``IEND``, is refused as truncated (OpenCV
  would silently decode the part that is there, grey below). Other formats are decoded by
  OpenCV as they are. Unreadable files raise ``PermissionError`` naming the file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from locore.deps import require
from locore.runtime.local_features import FeatureError

ImageInput = str | Path | np.ndarray

MAX_PIXELS = 100_000_000  # 100 megapixels: a 10,000 x 10,000 image
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"


def load_image(image: ImageInput, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image as a uint8 array, ``[H, W, 3]`` BGR (OpenCV order) or ``[H, W]`` gray.

    Accepts a path to any file OpenCV decodes, or an array; the rules (dtype, value range,
    size limit ``max_pixels``, complete files) are those of the module docstring. Raises
    :class:`~locore.runtime.local_features.FeatureError` naming the rule that was broken.
    """
    if isinstance(image, (str, Path)):
        return _load_file(Path(image), max_pixels)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise FeatureError(
            f"an image array must be [H, W], [H, W, 3] (BGR) or [H, W, 4], got shape {arr.shape}"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise FeatureError(f"an image must have at least 1x1 pixels, got shape {arr.shape}")
    _check_size(int(arr.shape[1]), int(arr.shape[0]), max_pixels, "the image array")
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if arr.dtype.kind != "f":
            raise FeatureError(
                f"an image array must be uint8 or float (uint8 in 0-255, float in [0, 1]), got "
                f"dtype {arr.dtype}; convert it explicitly, e.g. img / 65535.0 for 16-bit images"
            )
        low, high = float(np.min(arr)), float(np.max(arr))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise FeatureError(
                f"a float image must hold finite values, got NaN or inf ({arr.dtype})"
            )
        if low < 0.0 or high > 1.0:
            hint = " (a 0-255 image: divide by 255, or pass it as uint8)" if high <= 255 else ""
            raise FeatureError(
                f"a float image must have values in [0, 1], got values from {low:g} to "
                f"{high:g}{hint}; float images are never rescaled or clipped"
            )
        arr = np.rint(arr * 255.0).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise FeatureError(
            f"{what} is {width} x {height} = {width * height / 1e6:.1f} megapixels, more than "
            f"the limit of {max_pixels / 1e6:g} megapixels; resize it first (or pass a larger "
            "max_pixels if this machine has the memory)"
        )


def _load_file(path: Path, max_pixels: int) -> np.ndarray:
    if not path.is_file():
        what = "is a folder, not an image file" if path.is_dir() else "does not exist"
        raise FeatureError(f"image file {path} {what}")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"image file {path} is not readable (permission denied)")
    try:
        data = path.read_bytes()
    except PermissionError as exc:
        raise PermissionError(f"image file {path} is not readable: {exc}") from exc
    size = image_header_size(data)
    if size is not None:
        _check_size(size[0], size[1], max_pixels, f"image file {path}")
    problem = truncation(data)
    if problem:
        raise FeatureError(
            f"image file {path} is truncated or damaged ({problem}); it would decode only in "
            "part. Copy or download it again"
        )
    cv2 = require("cv2")
    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        message = " ".join(str(exc).split())
        raise FeatureError(f"OpenCV could not decode {path}: {message}") from exc
    if decoded is None:
        raise FeatureError(
            f"OpenCV could not decode {path}; expected an image file (jpg, png, bmp, webp, ...)"
        )
    _check_size(int(decoded.shape[1]), int(decoded.shape[0]), max_pixels, f"image file {path}")
    return np.asarray(decoded)


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, BMP, GIF or WebP file in ``data``;
    None for other formats or an unreadable header (the decoder then has the last word)."""
    try:
        if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return int(width), int(height)
        if data.startswith(JPEG_SOI):
            return _jpeg_size(data)
        if data.startswith(b"BM") and len(data) >= 26:
            width, height = struct.unpack("<ii", data[18:26])
            return abs(int(width)), abs(int(height))
        if data[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", data[6:10])
            return int(width), int(height)
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp_size(data)
    except struct.error:
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The frame size of the first SOFn segment of a JPEG."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def truncation(data: bytes) -> str | None:
    """Why the JPEG or PNG file in ``data`` is incomplete, or None (complete, or another
    format).

    PNG: the chunks are walked by their lengths; the file must reach an ``IEND`` chunk. JPEG:
    the segments are walked up to the first start-of-scan; after it the file must hold an
    end-of-image marker ``FF D9`` (inside scan data ``FF`` is always followed by ``00`` or a
    restart marker, so ``FF D9`` there is the marker; bytes after it, which some cameras
    append, are allowed).
    """
    if data.startswith(PNG_SIGNATURE):
        pos = len(PNG_SIGNATURE)
        while pos + 8 <= len(data):
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            kind = data[pos + 4 : pos + 8]
            end = pos + 12 + length
            if end > len(data):
                return f"PNG chunk {kind!r} needs {end - pos} bytes, {len(data) - pos} are left"
            if kind == b"IEND":
                return None
            pos = end
        return "the PNG file ends before its IEND chunk"
    if data.startswith(JPEG_SOI):
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                return f"no JPEG marker at byte {pos}"
            marker = data[pos + 1]
            if marker == 0xFF:
                pos += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):
                pos += 2
                continue
            if marker == 0xD9:
                return "the JPEG file ends before its image data"
            (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
            if marker == 0xDA:
                scan = pos + 2 + length
                if data.find(JPEG_EOI, scan) < 0:
                    return "no JPEG end-of-image marker (FF D9) after the scan data"
                return None
            pos += 2 + length
        return "the JPEG file ends before its image data"
    return None
