"""Pictures that explain themselves: caption bands drawn into the image, and the same captions
stored as PNG text chunks so tools (and tests) can read what a picture shows.

numpy + OpenCV only, so the store's ``inspect`` montage (no torch) uses it too.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from trackemb.atomic import write_bytes
from trackemb.errors import TrackembError

log = logging.getLogger(__name__)
BACKGROUND = 32
TEXT = (235, 235, 235)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def fit_text(text: str, width_px: int, scale: float) -> str:
    """``text`` shortened with an ellipsis so it fits ``width_px`` at ``scale``."""
    while text and cv2.getTextSize(text, _FONT, scale, 1)[0][0] > width_px:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text.replace("…", "..")  # Hershey fonts have ASCII glyphs only


def text_band(width_px: int, lines: Sequence[str], *, scale: float = 0.4, pad_px: int = 4) -> np.ndarray:
    """A dark (h, width_px, 3) uint8 BGR band with one line of light text per entry."""
    line_h = int(cv2.getTextSize("Ag", _FONT, scale, 1)[0][1] * 1.9) + 2
    band = np.full((pad_px * 2 + line_h * len(lines), width_px, 3), BACKGROUND, np.uint8)
    for i, line in enumerate(lines):
        y = pad_px + line_h * (i + 1) - line_h // 3
        shown = fit_text(line.encode("ascii", "replace").decode(), width_px - 2 * pad_px, scale)
        cv2.putText(band, shown, (pad_px, y), _FONT, scale, TEXT, 1, cv2.LINE_AA)
    return band


def with_caption(
    image: np.ndarray, lines: Sequence[str], *, above: bool = False, scale: float = 0.4
) -> np.ndarray:
    """``image`` with a caption band under it (or above it, as a title)."""
    band = text_band(image.shape[1], lines, scale=scale)
    return np.vstack([band, image] if above else [image, band])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def save_png(path: str | Path, image: np.ndarray, text: dict[str, str] | None = None) -> Path:
    """Write a BGR uint8 image as PNG atomically, with ``text`` as iTXt chunks (UTF-8 captions)."""
    path = Path(path)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    data = buf.tobytes()
    end_of_ihdr = 8 + 8 + 13 + 4  # signature, then the IHDR chunk (length, type, 13 bytes, crc)
    chunks = b"".join(
        _chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8"))
        for key, value in (text or {}).items()
    )
    return write_bytes(path, data[:end_of_ihdr] + chunks + data[end_of_ihdr:])


def png_text(path: str | Path) -> dict[str, str]:
    """The iTXt/tEXt captions of a PNG written by :func:`save_png` (or any PNG)."""
    data, pos, found = Path(path).read_bytes(), 8, {}
    while pos + 8 <= len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            found[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            # compression flag, method, then language tag and translated keyword (NUL-terminated)
            _, _, rest = rest[2:].partition(b"\0")
            _, _, value = rest.partition(b"\0")
            found[key.decode("latin-1")] = value.decode("utf-8")
        pos += 12 + length
    return found


def labelled_grid(
    rows: Sequence[Sequence[np.ndarray]], headers: Sequence[str], captions: Sequence[str], *, pad_px: int = 2
) -> np.ndarray:
    """Tiles in rows under one header per column, with a caption band under each row.

    Args:
        rows: each row a sequence of (h, w, 3) uint8 tiles, all the same size.
        headers: one label per column (e.g. ``anchor``, ``positive``, ``negative``).
        captions: one line under each row (e.g. its distances).

    Returns:
        (H, W, 3) uint8, same channel order as the tiles.
    """
    w = rows[0][0].shape[1]

    def join(items: Sequence[np.ndarray]) -> np.ndarray:
        parts: list[np.ndarray] = []
        for item in items:
            parts += [item, np.full((item.shape[0], pad_px, 3), BACKGROUND, np.uint8)]
        return np.hstack(parts[:-1])

    header = join([text_band(w, [label], scale=0.35) for label in headers])
    blocks = [header]
    for tiles, caption in zip(rows, captions, strict=True):
        row = join(list(tiles))
        blocks += [
            np.full((pad_px, row.shape[1], 3), BACKGROUND, np.uint8),
            row,
            text_band(row.shape[1], [caption], scale=0.35),
        ]
    return np.vstack(blocks)


def jpeg_tile(jpeg: bytes, side_px: int, *, corrupt_ok: bool = False) -> np.ndarray:
    """Decode one JPEG patch to a (side_px, side_px, 3) uint8 BGR tile.

    Args:
        corrupt_ok: an undecodable patch becomes a red tile (with a warning) instead of an error,
            so one bad patch does not hide the rest of a montage.

    Raises:
        TrackembError: the bytes are not a decodable image (unless ``corrupt_ok``).
    """
    img = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        if not corrupt_ok:
            raise TrackembError(f"cannot decode a patch JPEG of {len(jpeg)} bytes")
        log.warning("undecodable JPEG in montage")
        return np.full((side_px, side_px, 3), (0, 0, 200), dtype=np.uint8)
    return cv2.resize(img, (side_px, side_px), interpolation=cv2.INTER_AREA)
