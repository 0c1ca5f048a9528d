"""Background path for fixed cameras: MOG2 foreground blobs, associated frame to frame.

Sparse corners fail on plain scenes with small objects (a light tank with thin dark animals:
a few corners, all on the movers). With a static camera the empty scene is known (the
probe's per-pixel median seeds OpenCV's MOG2 model), every frame's foreground blobs are the
objects, and a track is the chain of blobs whose centres follow a constant-velocity
prediction. Boxes come from the foreground pixels themselves, so they fit thin objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from trackemb.config import HarvestConfig, MotionConfig
from trackemb.tracking.motion import WorkBox, WorkFrame
from trackemb.tracking.tracks import TrackBuild, add_frame, finish_track, inner_offsets, overlap, to_full

_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


class BackgroundModel:
    """MOG2 seeded with the empty scene ``background: (h, w) uint8``, then following slow changes."""

    def __init__(self, background: np.ndarray, cfg: MotionConfig) -> None:
        self.cfg = cfg
        self.sub = cv2.createBackgroundSubtractorMOG2(
            history=500, varThreshold=cfg.bg_var_threshold, detectShadows=False
        )
        self.sub.apply(background, learningRate=1.0)

    def boxes(self, gray: np.ndarray) -> list[WorkBox]:
        """Foreground blobs of ``gray`` (h, w) uint8 as boxes (px), largest first."""
        fg = self.sub.apply(gray, learningRate=self.cfg.bg_learning_rate)
        joined = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, _KERNEL)  # joins a thin object's fragments
        n, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
        h, w = gray.shape
        out: list[WorkBox] = []
        for comp in range(1, n):
            x, y, bw, bh, _ = stats[comp]
            inside = (labels[y : y + bh, x : x + bw] == comp) & (fg[y : y + bh, x : x + bw] > 0)
            area = int(inside.sum())
            if area < self.cfg.bg_min_area_work_px or bw * bh > self.cfg.max_region_frac * w * h:
                continue
            ys, xs = np.nonzero(inside)  # the box of the foreground pixels, not of the closed mask
            x0, y0 = x + xs.min(), y + ys.min()
            out.append((float(x0), float(y0), float(x + xs.max() + 1 - x0), float(y + ys.max() + 1 - y0)))
        out.sort(key=lambda b: (-b[2] * b[3], b[0], b[1]))
        return out


@dataclass
class Blob:
    """Follower state of one background-path track: last box, velocity (px/frame), misses."""

    box: WorkBox
    vel: tuple[float, float] = (0.0, 0.0)
    miss: int = 0

    def predicted(self) -> WorkBox:
        k = self.miss + 1
        return (self.box[0] + k * self.vel[0], self.box[1] + k * self.vel[1], self.box[2], self.box[3])


def _centre(b: WorkBox) -> np.ndarray:
    return np.array([b[0] + b[2] / 2, b[1] + b[3] / 2])


def match(blobs: list[Blob], dets: list[WorkBox]) -> dict[int, int]:
    """Greedy nearest-centre matching, blob index -> detection index: a detection joins the blob
    whose prediction is closest, within the larger of the two boxes' long sides."""
    pairs = []
    for i, blob in enumerate(blobs):
        pred = blob.predicted()
        for j, det in enumerate(dets):
            dist = float(np.linalg.norm(_centre(pred) - _centre(det)))
            if dist <= max(pred[2], pred[3], det[2], det[3]):
                pairs.append((dist, i, j))
    out: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in sorted(pairs):
        if i not in out and j not in used:
            out[i] = j
            used.add(j)
    return out


def background_pass(
    frames: Iterable[tuple[int, np.ndarray, WorkFrame]],
    model: BackgroundModel,
    cfg: HarvestConfig,
    rejected: dict[str, int],
) -> tuple[list[TrackBuild], int]:
    """Follow foreground blobs through ``frames``; returns (all tracks, frames analysed).

    ``rejected["too_little_motion"]`` counts frames without a foreground blob.
    """
    offsets = inner_offsets(cfg.track.track_len_frames, cfg.inner_samples)
    active: list[TrackBuild] = []
    done: list[TrackBuild] = []
    n = 0
    for idx, bgr, cur in frames:
        n += 1
        dets = model.boxes(cur.gray)
        if not dets:
            rejected["too_little_motion"] += 1
        links = match([t.tracker for t in active], dets)
        still = []
        for i, trk in enumerate(active):
            blob: Blob = trk.tracker
            if i not in links:
                blob.miss += 1
                if blob.miss > cfg.motion.bg_max_miss_frames:
                    trk.end_reason = "lost_points"
                    finish_track(trk, cfg)
                    done.append(trk)
                else:
                    still.append(trk)
                continue
            det = dets[links[i]]
            area, old = det[2] * det[3], blob.box[2] * blob.box[3]
            if max(area, old) > (1 + cfg.track.max_scale_change) ** 2 * max(min(area, old), 1e-6) * 2:
                trk.end_reason = "scale"  # two blobs merged or one split: the box no longer fits one object
                finish_track(trk, cfg)
                done.append(trk)
                continue
            step = (_centre(det) - _centre(blob.box)) / (blob.miss + 1)
            blob.vel = (0.5 * blob.vel[0] + 0.5 * step[0], 0.5 * blob.vel[1] + 0.5 * step[1])
            blob.box, blob.miss, trk.box = det, 0, det
            add_frame(trk, idx, bgr, to_full(det, cur.scale), cfg)
            if len(trk.frames) >= cfg.track.track_len_frames:
                trk.end_reason = "length"
                finish_track(trk, cfg)
                done.append(trk)
            else:
                still.append(trk)
        active = still
        taken = set(links.values())
        for j, det in enumerate(dets):
            room = len(done) + len(active) < cfg.max_tracks_per_video
            if j in taken or not room or any(overlap(det, t.box) > 0.25 for t in active):
                continue
            trk = TrackBuild(len(done) + len(active), Blob(det), det, list(offsets))
            add_frame(trk, idx, bgr, to_full(det, cur.scale), cfg)
            active.append(trk)
    for trk in active:
        finish_track(trk, cfg)
    done.extend(active)
    return [t for t in done if _moved(t)], n


def _moved(trk: TrackBuild) -> bool:
    """A blob that never moves is a left-behind object or a background change, not a mover."""
    first, last = trk.boxes[0], trk.boxes[-1]
    shift = float(np.linalg.norm(_centre(last) - _centre(first)))
    return shift >= 0.5 * min(first[2], first[3], last[2], last[3])
