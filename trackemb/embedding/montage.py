"""Contact sheets of patches (cv2 + numpy) for cluster montages and projector thumbnails."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from trackemb.errors import TrackembError


def decode_bgr(jpeg: bytes, size_px: int) -> np.ndarray:
    """Decode one JPEG patch to a (size_px, size_px, 3) uint8 BGR image.

    Raises:
        TrackembError: the bytes are not a decodable image.
    """
    img = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise TrackembError(f"cannot decode a patch JPEG of {len(jpeg)} bytes")
    return cv2.resize(img, (size_px, size_px), interpolation=cv2.INTER_AREA)


def tile(images: Sequence[np.ndarray], *, cols: int | None = None, pad_px: int = 2) -> np.ndarray:
    """Lay equally sized images out on a grid, row-major, on a dark background.

    Args:
        images: each (h, w, 3) uint8, all the same size.
        cols: grid width; default is the smallest square that fits.
        pad_px: gap between tiles.

    Returns:
        (rows * (h + pad) + pad, cols * (w + pad) + pad, 3) uint8.
    """
    if not images:
        raise ValueError("tile() needs at least one image")
    h, w = images[0].shape[:2]
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    sheet = np.full((rows * (h + pad_px) + pad_px, cols * (w + pad_px) + pad_px, 3), 32, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad_px + r * (h + pad_px), pad_px + c * (w + pad_px)
        sheet[y : y + h, x : x + w] = img
    return sheet


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a BGR uint8 image as PNG atomically (a killed run never leaves half a file)."""
    path = Path(path)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise TrackembError(f"{path}: PNG encoding failed")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
    return path
