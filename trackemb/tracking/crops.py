"""Square patches with context, cut from full-resolution frames, and their quality measures."""

from __future__ import annotations

import cv2
import numpy as np

from trackemb.tracking.results import Box


def square_box(box: Box, context_frac: float) -> tuple[int, int, int]:
    """Integer square ``(x0, y0, side)`` centred on ``box`` with ``context_frac`` of its long side added per edge."""
    x, y, w, h = box
    side = max(1, round(max(w, h) * (1.0 + 2.0 * context_frac)))
    cx, cy = x + w / 2.0, y + h / 2.0
    return round(cx - side / 2.0), round(cy - side / 2.0), side


def crop_patch(bgr: np.ndarray, box: Box, context_frac: float, patch_px: int) -> np.ndarray:
    """Cut a square patch around ``box`` (full-res px) and resize it.

    Args:
        bgr: (H, W, 3) uint8 full-resolution frame.
        box: (x, y, w, h) full-resolution px.
        context_frac: context added around the box on each side, as a fraction of its long side.
        patch_px: output side.

    Returns:
        (patch_px, patch_px, 3) uint8; parts outside the frame repeat the border pixels.
    """
    x0, y0, side = square_box(box, context_frac)
    ih, iw = bgr.shape[:2]
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(iw, x0 + side), min(ih, y0 + side)
    region = bgr[cy0:cy1, cx0:cx1]
    if region.size == 0:
        region = np.zeros((1, 1, 3), np.uint8)
    pad = (cy0 - y0, y0 + side - cy1, cx0 - x0, x0 + side - cx1)
    if any(p > 0 for p in pad) and region.size > 3:
        region = cv2.copyMakeBorder(region, *(max(0, p) for p in pad), cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if region.shape[0] > patch_px else cv2.INTER_LINEAR
    return cv2.resize(region, (patch_px, patch_px), interpolation=interp)


def blur_var(patch: np.ndarray) -> float:
    """Variance of the Laplacian of the gray patch; low values mean blurry or flat."""
    gray = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def pair_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference of two equal-size patches (0 means identical)."""
    return float(cv2.absdiff(a, b).mean())


def encode_jpeg(patch: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of a BGR patch; libjpeg is deterministic, so equal patches give equal bytes."""
    ok, buf = cv2.imencode(".jpg", patch, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
