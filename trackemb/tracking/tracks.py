"""Tracks under construction -> harvest records: patches cut as a track grows, filters, pairs.

Shared by both motion paths (sparse flow + median flow, and background subtraction + blob
association): each hands over per-frame full-resolution boxes, this module cuts the patches
and decides which tracks and pairs are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trackemb.config import HarvestConfig
from trackemb.tracking.cooccur import apart_tracks
from trackemb.tracking.crops import blur_var, crop_patch, encode_jpeg, pair_change
from trackemb.tracking.motion import WorkBox
from trackemb.tracking.results import (
    Box,
    PairRecord,
    PatchRecord,
    TrackRecord,
    VideoHarvest,
    VideoRecord,
    patch_key,
)


@dataclass
class TrackBuild:
    """A track being followed. Only the patches that may be stored are cut: the first, the
    inner ones at fixed offsets, and the last (from a reference to the latest frame)."""

    seq: int  # creation order; kept tracks are numbered in this order
    tracker: Any  # the path's follower: a Tracker (flow path) or a blob state (background path)
    box: WorkBox
    inner_offsets: list[int]
    frames: list[int] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    patches: dict[int, np.ndarray] = field(default_factory=dict)  # position in frames -> patch
    last_bgr: np.ndarray | None = None
    end_reason: str = "video_end"


def to_full(box: WorkBox, scale: float) -> Box:
    # Rounded so that records do not carry float noise into the store's bytes.
    return tuple(round(v / scale, 2) for v in box)  # type: ignore[return-value]


def overlap(a: WorkBox, b: WorkBox) -> float:
    """Intersection area over the area of ``a``."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(a[2] * a[3], 1e-6)


def add_frame(trk: TrackBuild, idx: int, bgr: np.ndarray, box: Box, cfg: HarvestConfig) -> None:
    pos = len(trk.frames)
    if pos == 0 or (trk.inner_offsets and idx - trk.frames[0] >= trk.inner_offsets[0]):
        if pos > 0:
            trk.inner_offsets = trk.inner_offsets[1:]
        trk.patches[pos] = crop_patch(bgr, box, cfg.context_frac, cfg.patch_px)
    trk.frames.append(idx)
    trk.boxes.append(box)
    trk.last_bgr = bgr


def finish_track(trk: TrackBuild, cfg: HarvestConfig) -> None:
    """Cut the last patch and drop the frame reference (the last box may also be an inner one)."""
    last = len(trk.frames) - 1
    trk.patches.pop(last, None)
    if last > 0 and trk.last_bgr is not None:
        trk.patches[last] = crop_patch(trk.last_bgr, trk.boxes[-1], cfg.context_frac, cfg.patch_px)
    trk.last_bgr = None


def min_span(cfg: HarvestConfig, n_frames: int) -> int:
    """Shortest kept track (frames): ``min_track_frac`` of a full track, or of the whole clip when
    the clip is shorter than one track (a 20-frame clip still gives 10-frame tracks), at least 3."""
    return max(3, math.ceil(cfg.min_track_frac * min(cfg.track.track_len_frames, n_frames)))


def inner_offsets(track_len: int, k: int) -> list[int]:
    """Up to ``k`` evenly spaced frame offsets strictly inside a full-length track."""
    pos = np.round(np.linspace(0, track_len - 1, k + 2)[1:-1]).astype(int)
    return sorted({int(p) for p in pos if 0 < p < track_len - 1})


def _usable(trk: TrackBuild, cfg: HarvestConfig, span_min: int, side_min: float) -> bool:
    last = len(trk.frames) - 1
    if last == 0 or trk.frames[-1] - trk.frames[0] + 1 < span_min:
        return False
    if min(trk.boxes[0][2:]) < side_min or min(trk.boxes[-1][2:]) < side_min:
        return False
    first, final = trk.patches[0], trk.patches[last]
    if blur_var(first) < cfg.min_blur_var or blur_var(final) < cfg.min_blur_var:
        return False
    return pair_change(first, final) >= cfg.min_pair_change


def build_records(
    sha: str, tracks: list[TrackBuild], cfg: HarvestConfig, *, span_min: int, side_min: float
) -> VideoHarvest:
    """Keep the usable tracks (``span_min`` frames, boxes of ``side_min`` full-res px) and cut pairs."""
    out = VideoHarvest(video=VideoRecord(sha=sha, path="", status="done"))
    kept = [t for t in tracks if _usable(t, cfg, span_min, side_min)][: cfg.max_tracks_per_video]
    for tid, trk in enumerate(kept):
        out.tracks.append(
            TrackRecord(sha, tid, trk.frames[0], trk.frames[-1], trk.frames, trk.boxes, trk.end_reason)
        )
        first, last = trk.patches[0], len(trk.frames) - 1
        chosen = [(0, "first"), (last, "last")]
        for pos in sorted(p for p in trk.patches if 0 < p < last):
            patch = trk.patches[pos]
            if blur_var(patch) >= cfg.min_blur_var and pair_change(first, patch) >= cfg.min_pair_change:
                chosen.append((pos, "inner"))
        keys = []
        for pos, role in chosen:
            key = patch_key(sha, tid, trk.frames[pos])
            out.patches.append(PatchRecord(key, sha, tid, trk.frames[pos], trk.boxes[pos], role))
            out.jpegs[key] = encode_jpeg(trk.patches[pos], cfg.jpeg_quality)
            keys.append(key)
        out.pairs.extend(PairRecord(keys[0], key, sha, tid) for key in keys[1:])
    apart = apart_tracks([(t.track_id, t.frames, t.boxes) for t in out.tracks])
    for track in out.tracks:
        track.apart = apart[track.track_id]
    return out
