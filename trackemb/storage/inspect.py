"""Looking inside a PatchStore: counts per video, error records, and a montage of positive pairs.

Backs ``trackemb inspect STORE``. Uses numpy and OpenCV only (no torch), so it runs
wherever harvesting runs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trackemb import pictures
from trackemb.errors import StoreError
from trackemb.storage.records import frames_text, rejected_text
from trackemb.storage.schema import PAIRS, PATCHES, TRACKS
from trackemb.storage.shards import StoreView, open_reader

if TYPE_CHECKING:
    from rich.table import Table

log = logging.getLogger(__name__)

_GAP_PX = 16  # between pair cells: wide enough that neighbouring pairs never read as one
_SEP_PX = 2  # thin line between the first and last patch of one pair
_BACKGROUND = 32
_SEPARATOR = 230
_BORDER = 110


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _summary_line(stats: dict[str, Any]) -> str:
    shards = f", {len(stats['shards'])} shards" if stats["shards"] else ""
    return (
        f"{stats['path']} (schema {stats['schema_version']}, harvest config {stats['config_fingerprint'] or '-'}"
        f"{shards}): {stats['videos_done']} videos done, {stats['videos_failed']} failed, {stats['tracks']} "
        f"tracks, {stats['patches']} patches, {stats['pairs']} pairs, {stats['triplets']} triplets, "
        f"{_mib(stats['used_bytes'])} used"
    )


def format_stats(stats: dict[str, Any]) -> str:
    """Plain-text report of :func:`collect_stats` output (for logs and non-terminal output)."""
    lines = [
        _summary_line(stats),
        "",
        f"{'video':<40} {'status':<7} {'frames':>11} {'motion':<10} {'tracks':>6} {'patches':>7} {'pairs':>6}"
        "  rejected frames",
    ]
    for v in stats["per_video"]:
        lines.append(
            f"{Path(v['path']).name[:40]:<40} {v['status']:<7} {frames_text(v):>11} {v['motion'] or '-':<10} "
            f"{v[TRACKS]:>6} {v[PATCHES]:>7} {v[PAIRS]:>6}  {rejected_text(v)}"
        )
    warned = [v for v in stats["per_video"] if v.get("warning")]
    if warned:
        lines += ["", "warnings:"] + [f"  {v['path']}: {v['warning']}" for v in warned]
    if stats["errors"]:
        lines += ["", "errors:"] + [
            f"  {e['path']} [{e['error_kind']}] {e['error']}" for e in stats["errors"]
        ]
    return "\n".join(lines)


def stats_tables(stats: dict[str, Any]) -> list[Table]:
    """Rich tables for ``trackemb inspect``: summary, per-video counts, and errors (if any)."""
    from rich.table import Table

    summary = Table(title=f"PatchStore {stats['path']}", show_header=False)
    for name in ("videos_done", "videos_failed", "tracks", "patches", "pairs", "triplets"):
        summary.add_row(name.replace("_", " "), str(stats[name]))
    summary.add_row("shards", str(len(stats["shards"])))
    summary.add_row("disk used", _mib(stats["used_bytes"]))
    summary.add_row("schema / config", f"{stats['schema_version']} / {stats['config_fingerprint'] or '-'}")
    videos = Table(title="videos")
    for col in ("video", "status", "tracks", "patches", "pairs", "seconds", "shard"):
        videos.add_column(
            col, justify="right" if col in ("tracks", "patches", "pairs", "seconds") else "left"
        )
    for v in stats["per_video"]:
        status = v["status"] if v["status"] == "done" else f"[red]{v['status']}[/]"
        videos.add_row(
            Path(v["path"]).name,
            status,
            str(v[TRACKS]),
            str(v[PATCHES]),
            str(v[PAIRS]),
            f"{v['seconds']:.1f}",
            v["shard"] or "-",
        )
    # Yield in its own table: what was decoded, which motion path, what each rule threw away.
    yields = Table(title="yield")  # frames decoded/declared, analysed frames rejected per rule
    warned = any(v.get("warning") for v in stats["per_video"])
    cols = ("video", "frames", "motion", "analysed", "rejected", "candidates", "tracks") + (
        "warning",
    ) * warned
    for col in cols:
        yields.add_column(
            col, justify="right" if col in ("frames", "analysed", "candidates", "tracks") else "left"
        )
    for v in stats["per_video"]:
        if v["status"] == "done":
            cells = [Path(v["path"]).name, frames_text(v), v["motion"] or "-", str(v["analysed"]), rejected_text(v),
                     str(v["candidates"]), str(v[TRACKS])]  # fmt: skip
            yields.add_row(*cells, *([f"[yellow]{v['warning']}[/]" if v["warning"] else ""] * warned))
    tables = [summary, videos, yields]
    if stats["errors"]:
        errors = Table(title="errors")
        for col in ("video", "kind", "error"):
            errors.add_column(col)
        for e in stats["errors"]:
            errors.add_row(e["path"], e["error_kind"], e["error"])
        tables.append(errors)
    return tables


def _pair_caption(pair: Any, paths: dict[str, str], frames: dict[str, int]) -> tuple[str, str]:
    name = Path(paths.get(pair.video_sha, pair.video_sha[:12])).name
    return (
        f"{name} track {pair.track_id}",
        f"frames {frames.get(pair.anchor, '?')} -> {frames.get(pair.positive, '?')}",
    )


def store_montage(
    store: str | Path | StoreView, out_png: str | Path, n_pairs: int = 16, seed: int = 0, tile_px: int = 96
) -> Path:
    """Write a PNG grid of random positive pairs; each cell is ``first | last`` patch of one track.

    Under each cell a caption names the file, the track and the two frames; the same captions
    are stored as PNG text chunks (``pair 1``, ``pair 2``, ...).

    Args:
        store: store path (single or sharded), or an open store/reader.
        out_png: where to write the image (parent directories are created).
        n_pairs: pairs shown (fewer if the store has fewer).
        seed: which pairs.
        tile_px: side of each patch in the montage.

    Returns:
        ``out_png`` as a Path.

    Raises:
        StoreError: the store has no pairs, or the image cannot be written.
    """
    reader = store if isinstance(store, StoreView) else open_reader(store)
    pairs = reader.pairs()
    if not pairs:
        raise StoreError(f"{reader.path}: no positive pairs in this store, nothing to show")
    rng = np.random.default_rng(seed)
    chosen = [pairs[i] for i in sorted(rng.choice(len(pairs), size=min(n_pairs, len(pairs)), replace=False))]
    wanted = {k for p in chosen for k in (p.anchor, p.positive)}
    frames = {r.key: r.frame for r in reader.patches() if r.key in wanted}
    paths = {v.sha: v.path for v in reader.videos()}
    cells, text = [], {"Description": "random positive pairs: first | last patch of one track"}
    for n, pair in enumerate(chosen, 1):
        first, last = (
            pictures.jpeg_tile(reader.get_jpeg(k), tile_px, corrupt_ok=True)
            for k in (pair.anchor, pair.positive)
        )
        sep = np.full((tile_px, _SEP_PX, 3), _SEPARATOR, np.uint8)
        caption = _pair_caption(pair, paths, frames)
        cells.append(pictures.with_caption(np.hstack([first, sep, last]), caption))
        text[f"pair {n}"] = " | ".join(caption)
    cols = max(1, math.ceil(math.sqrt(len(cells) / 2)))  # cells are about 2:1, so this is roughly square
    rows = math.ceil(len(cells) / cols)
    cell_h, cell_w = cells[0].shape[:2]
    canvas = np.full(
        (rows * (cell_h + _GAP_PX) + _GAP_PX, cols * (cell_w + _GAP_PX) + _GAP_PX, 3), _BACKGROUND, np.uint8
    )
    for n, cell in enumerate(cells):
        y, x = _GAP_PX + (n // cols) * (cell_h + _GAP_PX), _GAP_PX + (n % cols) * (cell_w + _GAP_PX)
        canvas[y - 1 : y + cell_h + 1, x - 1 : x + cell_w + 1] = _BORDER  # a frame around each pair
        canvas[y : y + cell_h, x : x + cell_w] = cell
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() != ".png":
        raise StoreError(f"{out}: the montage must be a .png file")
    try:
        return pictures.save_png(out, canvas, text)
    except OSError as exc:
        raise StoreError(f"{out}: could not write the montage PNG: {exc}") from exc
