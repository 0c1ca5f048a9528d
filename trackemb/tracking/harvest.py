"""Video -> tracks -> patches and positive pairs: a pure function of the video and the config.

One pass over the decoded frames: active tracks are updated on each working frame, and on
seed frames motion discovery starts new tracks on moving regions not already followed.
Patches are cut from the full-resolution frames, so tracking resolution never limits patch
quality. The same file and config always give the same records and the same JPEG bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trackemb.config import HarvestConfig
from trackemb.errors import VideoDecodeError
from trackemb.storage.records import (
    Box,
    PairRecord,
    PatchRecord,
    TrackRecord,
    VideoHarvest,
    VideoRecord,
    patch_key,
)
from trackemb.tracking.cooccur import apart_tracks
from trackemb.tracking.crops import blur_var, crop_patch, encode_jpeg, pair_change
from trackemb.tracking.decode import video_sha
from trackemb.tracking.motion import WorkBox, WorkFrame, find_moving_regions, make_work_frame, object_points
from trackemb.tracking.prefetch import Prefetch
from trackemb.tracking.stream import check_complete, iter_frames
from trackemb.tracking.tracker import Tracker, build_tracker, update_trackers

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

# After a frame pair without accepted motion, discovery skips this many frames before trying
# again. Why: most pairs of a clip are rejected (box.mp4: 139 of 160 calls) and discovery was a
# quarter of the harvest; skipping 2 cut the analysis thread's CPU by 25% on the first 150
# frames of the sample clips, with 230 instead of 216 pairs over the full clips (vtest 140,
# box 74, cup 16). Objects stay in view far longer than 3 frames, so none is missed for good.
_RETRY_SKIP_FRAMES = 2


@dataclass
class _Track:
    """A track being followed. Only the patches that may be stored are cut: the first, the
    inner ones at fixed offsets, and the last (from a reference to the latest frame)."""

    seq: int  # creation order; kept tracks are numbered in this order
    tracker: Tracker
    box: WorkBox
    inner_offsets: list[int]
    frames: list[int] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    patches: dict[int, np.ndarray] = field(default_factory=dict)  # position in frames -> patch
    last_bgr: np.ndarray | None = None
    end_reason: str = "video_end"


def _to_full(box: WorkBox, scale: float) -> Box:
    # Rounded so that records do not carry float noise into the store's bytes.
    return tuple(round(v / scale, 2) for v in box)  # type: ignore[return-value]


def _overlap(a: WorkBox, b: WorkBox) -> float:
    """Intersection area over the area of ``a``."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(a[2] * a[3], 1e-6)


def harvest_video(
    path: str | Path, cfg: HarvestConfig, *, sha: str | None = None, progress: Progress | None = None
) -> VideoHarvest:
    """Track moving objects through one video and cut positive pairs of patches.

    Args:
        path: video file.
        cfg: harvest config (decode, motion, track and patch settings).
        sha: content hash of the file if the caller already has it (else computed here).
        progress: optional ``progress(frames_done, frames_total)`` callback (total is an estimate).

    Returns:
        VideoHarvest with status "done", kept tracks, patches (JPEG bytes keyed by
        ``patch_key(sha, track_id, frame)``) and pairs (first-last, plus first-inner).

    Raises:
        VideoDecodeError: the file is missing, unreadable, empty, not a video, or has no frames.
    """
    t0 = time.perf_counter()
    sha = sha or video_sha(path)
    stream = iter_frames(path, cfg.decode)
    info = stream.info
    total = len(range(0, min(info.frames, cfg.decode.max_frames or info.frames), cfg.decode.frame_stride))
    inner_offsets = _inner_offsets(cfg.track.track_len_frames, cfg.inner_samples)
    active: list[_Track] = []
    done: list[_Track] = []
    prev: WorkFrame | None = None
    next_seed, n_frames, last_index = 0, 0, -1
    px = cfg.decode.work_long_side_px
    # Decoding and the gray working frame run one thread ahead of the analysis (prefetch.py).
    frames = Prefetch(stream, lambda f: (f[0], f[1], make_work_frame(f[0], f[1], px)))
    for k, (idx, bgr, cur) in enumerate(frames):
        active = _advance(active, cur, bgr, cfg, done)
        room = len(done) + len(active) < cfg.max_tracks_per_video
        if prev is not None and k >= next_seed and room:
            motion = find_moving_regions(prev, cur, cfg.motion)
            next_seed = k + (cfg.motion.seed_every_frames if motion.accepted else 1 + _RETRY_SKIP_FRAMES)
            if motion.accepted:
                for box in motion.boxes:
                    if any(_overlap(box, t.box) > 0.25 for t in active):
                        continue  # already followed
                    # A region without enough independently moving texture is usually an
                    # occlusion edge or flicker, not an object: following it tracks background.
                    points = object_points(prev, cur, box, motion, cfg.motion)
                    if len(points) < cfg.track.min_points:
                        continue
                    trk = _Track(len(done) + len(active), build_tracker(cfg.track), box, inner_offsets)
                    trk.tracker.init(cur, box, points)
                    _add(trk, idx, bgr, _to_full(box, cur.scale), cfg)
                    active.append(trk)
        prev, n_frames, last_index = cur, n_frames + 1, idx
        if progress is not None:
            progress(n_frames, max(total, n_frames))
    if n_frames == 0:
        raise VideoDecodeError(str(path), "no frame could be decoded", "zero_frames")
    decoded = max(stream.decoded_frames, last_index + 1)
    check_complete(path, stream.declared_frames, decoded, cfg.decode)
    for trk in active:
        _finish(trk, cfg)
    done.extend(active)
    harvest = _records(sha, sorted(done, key=lambda t: t.seq), cfg)
    harvest.video = VideoRecord(
        sha=sha,
        path=str(path),
        status="done",
        frames=decoded,
        declared_frames=stream.declared_frames,
        fps=round(info.fps, 4),
        width=info.width,
        height=info.height,
        backend=stream.backend,
        n_tracks=len(harvest.tracks),
        n_patches=len(harvest.patches),
        n_pairs=len(harvest.pairs),
        seconds=round(time.perf_counter() - t0, 3),
    )
    log.info(
        "%s: %d frames, %d candidate tracks -> %d tracks, %d pairs in %.1fs",
        path, n_frames, len(done), len(harvest.tracks), len(harvest.pairs), harvest.video.seconds,
    )  # fmt: skip
    return harvest


def _advance(
    active: list[_Track], cur: WorkFrame, bgr: np.ndarray, cfg: HarvestConfig, done: list[_Track]
) -> list[_Track]:
    """Update every active track on ``cur``; ended tracks move to ``done``. Returns those still active."""
    if not active:
        return active
    still: list[_Track] = []
    for trk, step in zip(active, update_trackers([t.tracker for t in active], cur), strict=True):
        if step.box is not None:
            trk.box = step.box
            _add(trk, cur.index, bgr, _to_full(step.box, cur.scale), cfg)
        if step.reason:
            trk.end_reason = step.reason
            _finish(trk, cfg)
            done.append(trk)
        else:
            still.append(trk)
    return still


def _add(trk: _Track, idx: int, bgr: np.ndarray, box: Box, cfg: HarvestConfig) -> None:
    pos = len(trk.frames)
    if pos == 0 or (trk.inner_offsets and idx - trk.frames[0] >= trk.inner_offsets[0]):
        if pos > 0:
            trk.inner_offsets = trk.inner_offsets[1:]
        trk.patches[pos] = crop_patch(bgr, box, cfg.context_frac, cfg.patch_px)
    trk.frames.append(idx)
    trk.boxes.append(box)
    trk.last_bgr = bgr


def _finish(trk: _Track, cfg: HarvestConfig) -> None:
    """Cut the last patch and drop the frame reference (the last box may also be an inner one)."""
    last = len(trk.frames) - 1
    trk.patches.pop(last, None)
    if last > 0 and trk.last_bgr is not None:
        trk.patches[last] = crop_patch(trk.last_bgr, trk.boxes[-1], cfg.context_frac, cfg.patch_px)
    trk.last_bgr = None


def _usable(trk: _Track, cfg: HarvestConfig) -> bool:
    last = len(trk.frames) - 1
    span = trk.frames[-1] - trk.frames[0] + 1
    if last == 0 or span < cfg.min_track_frac * cfg.track.track_len_frames:
        return False
    min_side = cfg.motion.min_region_px
    if min(trk.boxes[0][2:]) < min_side or min(trk.boxes[-1][2:]) < min_side:
        return False
    first, final = trk.patches[0], trk.patches[last]
    if blur_var(first) < cfg.min_blur_var or blur_var(final) < cfg.min_blur_var:
        return False
    return pair_change(first, final) >= cfg.min_pair_change


def _inner_offsets(track_len: int, k: int) -> list[int]:
    """Up to ``k`` evenly spaced frame offsets strictly inside a full-length track."""
    pos = np.round(np.linspace(0, track_len - 1, k + 2)[1:-1]).astype(int)
    return sorted({int(p) for p in pos if 0 < p < track_len - 1})


def _records(sha: str, tracks: list[_Track], cfg: HarvestConfig) -> VideoHarvest:
    out = VideoHarvest(video=VideoRecord(sha=sha, path="", status="done"))
    kept = [t for t in tracks if _usable(t, cfg)][: cfg.max_tracks_per_video]
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
