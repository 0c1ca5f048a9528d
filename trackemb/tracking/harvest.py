"""Video -> tracks -> patches and positive pairs: a pure function of the video and the config.

A probe of the first frames picks the motion path (probe.py). Then one pass over the decoded
frames: on the flow path active tracks are updated on each working frame and, on seed frames,
motion discovery starts new tracks on moving regions not already followed; on the background
path foreground blobs are chained into tracks (background.py).
Patches are cut from the full-resolution frames, so tracking resolution never limits patch
quality. The same file and config always give the same records and the same JPEG bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from trackemb.config import HarvestConfig
from trackemb.errors import VideoDecodeError
from trackemb.tracking.background import BackgroundModel, background_pass
from trackemb.tracking.files import video_sha
from trackemb.tracking.motion import (
    WorkFrame,
    find_moving_regions,
    make_work_frame,
    min_region_work_px,
    object_points,
)
from trackemb.tracking.prefetch import Prefetch
from trackemb.tracking.probe import Probe, probe_video
from trackemb.tracking.results import VideoHarvest, VideoRecord
from trackemb.tracking.stream import check_complete, iter_frames
from trackemb.tracking.tracker import build_tracker, update_trackers
from trackemb.tracking.tracks import (
    TrackBuild,
    add_frame,
    build_records,
    finish_track,
    inner_offsets,
    min_span,
    overlap,
    to_full,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

# After a frame pair without accepted motion, discovery skips this many frames before trying
# again. Why: most pairs of a clip are rejected (box.mp4: 139 of 160 calls) and discovery was a
# quarter of the harvest; skipping 2 cut the analysis thread's CPU by 25% on the first 150
# frames of the sample clips, with 230 instead of 216 pairs over the full clips (vtest 140,
# box 74, cup 16). Objects stay in view far longer than 3 frames, so none is missed for good.
_RETRY_SKIP_FRAMES = 2


# Frames rejected by each rule, as the yield columns name them; reasons of find_moving_regions map here.
RULES = ("camera_motion", "too_little_motion", "no_seeds")
_RULE_OF = {
    "camera_motion": "camera_motion",
    "no_homography": "camera_motion",
    "no_region": "too_little_motion",
}


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
        ``patch_key(sha, track_id, frame)``) and pairs (first-last, plus first-inner); the video
        record carries the yield: decoded/declared frames, motion path, frames rejected by rule.

    Raises:
        VideoDecodeError: the file is missing, unreadable, empty, not a video, has no frames, or
            decoding ended far short of the declared frame count (``truncated``).
    """
    t0 = time.perf_counter()
    sha = sha or video_sha(path)
    probe = probe_video(path, cfg)
    stream = iter_frames(path, cfg.decode)
    info = stream.info
    total = len(range(0, min(info.frames, cfg.decode.max_frames or info.frames), cfg.decode.frame_stride))
    bg = probe.path == "background" and probe.background is not None
    px = cfg.motion.background_long_side_px if bg else cfg.decode.work_long_side_px
    # Decoding and the gray working frame run one thread ahead of the analysis (prefetch.py).
    frames = Prefetch(stream, lambda f: (f[0], f[1], make_work_frame(f[0], f[1], px)))
    seen = [0, -1, 1.0]  # frames, last index, work scale

    def counted(
        items: Iterable[tuple[int, np.ndarray, WorkFrame]],
    ) -> Iterator[tuple[int, np.ndarray, WorkFrame]]:
        for item in items:
            seen[:] = [seen[0] + 1, item[0], item[2].scale]
            yield item
            if progress is not None:
                progress(int(seen[0]), max(total, int(seen[0])))

    rejected = dict.fromkeys(RULES, 0)
    if bg:
        if probe.background is None:  # the probe picks the background path only after building a model
            raise RuntimeError(f"{path}: background motion chosen without a background model")
        tracks, attempts = background_pass(
            counted(frames), BackgroundModel(probe.background, cfg.motion), cfg, rejected
        )
        side_min = 0.0  # blob size is checked on the foreground mask (bg_min_area_work_px)
    else:
        tracks, attempts = _flow_pass(counted(frames), cfg, rejected)
        side_min = min_region_work_px(cfg.motion, seen[2]) / seen[2]
    n_frames, last_index = int(seen[0]), int(seen[1])
    if n_frames == 0:
        raise VideoDecodeError(str(path), "no frame could be decoded", "zero_frames")
    decoded = max(stream.decoded_frames, last_index + 1)
    check_complete(path, stream.declared_frames, decoded, cfg.decode)
    tracks.sort(key=lambda t: t.seq)
    harvest = build_records(sha, tracks, cfg, span_min=min_span(cfg, n_frames), side_min=side_min)
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
        motion_path="background" if bg else "flow",
        camera_px=probe.camera_px if np.isfinite(probe.camera_px) else -1.0,
        analysed=attempts,
        rejected=rejected,
        candidates=len(tracks),
    )
    harvest.video.warning = _warning(harvest.video, probe, min_span(cfg, n_frames))
    log.info(
        "%s: %d of %d declared frames decoded, motion path %s, %d candidate tracks -> %d tracks, %d pairs in %.1fs%s",
        path, decoded, stream.declared_frames, harvest.video.motion_path, len(tracks), len(harvest.tracks),
        len(harvest.pairs), harvest.video.seconds, f"; WARNING {harvest.video.warning}" if harvest.video.warning else "",
    )  # fmt: skip
    return harvest


def _warning(rec: VideoRecord, probe: Probe, span: int) -> str:
    """Why a video with visible motion gave no track, naming the rule; a large count mismatch."""
    notes = []
    if rec.declared_frames and rec.frames > 1.1 * rec.declared_frames + 1:
        notes.append(f"container declares {rec.declared_frames} frames but {rec.frames} were decoded")
    if rec.n_tracks == 0 and probe.visible_motion:
        if rec.candidates:
            notes.append(
                f"visible motion but 0 tracks: all {rec.candidates} candidate tracks were dropped by the track "
                f"filters (shorter than {span} frames, boxes too small, blurry or near-duplicate patches)"
            )
        else:
            rule = max(RULES, key=lambda r: rec.rejected.get(r, 0))
            notes.append(
                f"visible motion but 0 tracks: rule '{rule}' rejected {rec.rejected.get(rule, 0)} of "
                f"{rec.analysed} analysed frames ({rec.motion_path} path)"
            )
    return "; ".join(notes)


def _flow_pass(
    frames: Iterable[tuple[int, np.ndarray, WorkFrame]], cfg: HarvestConfig, rejected: dict[str, int]
) -> tuple[list[TrackBuild], int]:
    """Sparse flow: seed tracks on camera-compensated moving regions, follow them with median flow.

    Returns all tracks and the number of frames on which discovery ran; each discovery that gave
    no track counts against the rule that stopped it in ``rejected``.
    """
    offsets = inner_offsets(cfg.track.track_len_frames, cfg.inner_samples)
    active: list[TrackBuild] = []
    done: list[TrackBuild] = []
    prev: WorkFrame | None = None
    next_seed, attempts = 0, 0
    for k, (idx, bgr, cur) in enumerate(frames):
        active = _advance(active, cur, bgr, cfg, done)
        room = len(done) + len(active) < cfg.max_tracks_per_video
        if prev is not None and k >= next_seed and room:
            attempts += 1
            motion = find_moving_regions(prev, cur, cfg.motion)
            next_seed = k + (cfg.motion.seed_every_frames if motion.accepted else 1 + _RETRY_SKIP_FRAMES)
            started = 0
            for box in motion.boxes:
                if any(overlap(box, t.box) > 0.25 for t in active):
                    started += 1  # already followed
                    continue
                # A region without enough independently moving texture is usually an
                # occlusion edge or flicker, not an object: following it tracks background.
                points = object_points(prev, cur, box, motion, cfg.motion)
                if len(points) < cfg.track.min_points:
                    continue
                trk = TrackBuild(len(done) + len(active), build_tracker(cfg.track), box, list(offsets))
                trk.tracker.init(cur, box, points)
                add_frame(trk, idx, bgr, to_full(box, cur.scale), cfg)
                active.append(trk)
                started += 1
            if not started:
                rejected[_RULE_OF.get(motion.reason, "no_seeds")] += 1
        prev = cur
    for trk in active:
        finish_track(trk, cfg)
    return done + active, attempts


def _advance(
    active: list[TrackBuild], cur: WorkFrame, bgr: np.ndarray, cfg: HarvestConfig, done: list[TrackBuild]
) -> list[TrackBuild]:
    """Update every active track on ``cur``; ended tracks move to ``done``. Returns those still active."""
    if not active:
        return active
    still: list[TrackBuild] = []
    for trk, step in zip(active, update_trackers([t.tracker for t in active], cur), strict=True):
        if step.box is not None:
            trk.box = step.box
            add_frame(trk, cur.index, bgr, to_full(step.box, cur.scale), cfg)
        if step.reason:
            trk.end_reason = step.reason
            finish_track(trk, cfg)
            done.append(trk)
        else:
            still.append(trk)
    return still
