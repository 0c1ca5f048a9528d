"""Contact sheets of patches (cv2 + numpy): cluster montages with a title, size and per-file mix."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trackemb.config import ExportConfig
from trackemb.pictures import jpeg_tile, save_png, with_caption


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


def _mix(files: list[str]) -> str:
    """``box.mp4 60%, cup.mp4 30%, 1 other 10%``: which files a cluster's patches come from."""
    counts = Counter(files).most_common()
    parts = [f"{name} {100 * n / len(files):.0f}%" for name, n in counts[:3]]
    if len(counts) > 3:
        rest = sum(n for _, n in counts[3:])
        parts.append(f"{len(counts) - 3} other {100 * rest / len(files):.0f}%")
    return ", ".join(parts)


def write_cluster_montages(
    out_dir: Path,
    reader: Any,
    keys: list[str],
    files: list[str],
    emb: np.ndarray,
    labels: np.ndarray,
    centroids: np.ndarray,
    cfg: ExportConfig,
) -> list[Path]:
    """One sheet per cluster: the patches nearest its centre under a title (size, per-file mix)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("cluster_*.png"):
        old.unlink()  # a previous run with a larger k must not leave stale sheets
    paths = []
    for c in range(len(centroids)):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        dist = np.linalg.norm(emb[members] - centroids[c], axis=1)
        nearest = members[np.argsort(dist, kind="stable")[: cfg.montage_per_cluster]]
        images = [jpeg_tile(b, cfg.montage_tile_px) for b in reader.get_jpegs([keys[i] for i in nearest])]
        title = f"cluster {c}: {len(members)} patches, {len(nearest)} nearest the centre shown"
        mix = _mix([files[i] for i in members])
        sheet = with_caption(tile(images), [title, mix], above=True)
        paths.append(save_png(out_dir / f"cluster_{c:02d}.png", sheet, {"Title": title, "Description": mix}))
    return paths
