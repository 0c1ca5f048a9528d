"""Single-object trackers behind one small interface, plus a registry to plug in others.

A tracker is initialised on a working frame with a box and then updated frame by frame;
each update returns the new box, or ``None`` with the reason the track ended. Boxes are
``(x, y, w, h)`` in working-resolution px.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from trackemb.config import TrackConfig
from trackemb.tracking.motion import WorkBox, WorkFrame, flow_fb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackStep:
    """Result of one update: ``box`` is None when the track was lost; ``reason`` is "" while it goes on.

    ``reason == "length"`` comes with a valid final box: the track reached its length.
    """

    box: WorkBox | None
    reason: str = ""


class Tracker(Protocol):
    def init(self, frame: WorkFrame, box: WorkBox, points: np.ndarray | None = None) -> None: ...

    def update(self, frame: WorkFrame) -> TrackStep: ...


# Topped-up points steer the box, and keep a track alive, only after moving with it this long.
_TRUSTED_AGE = 3


class MedianFlowTracker:
    """Median-flow tracker (Kalal et al., 2010): LK forward-backward, median motion and scale.

    Without object points it re-samples a grid in the box every frame (the classic tracker);
    given object points at ``init`` it follows that persistent set, pruning points that stop
    moving with the object and topping it up from the box centre. The batched path (``propose`` then ``accept``) lets :func:`update_trackers` follow the points
    of every active track with a single pair of LK calls per frame.
    """

    def __init__(self, cfg: TrackConfig) -> None:
        self.cfg = cfg
        self.frame: WorkFrame | None = None
        self.box: WorkBox = (0.0, 0.0, 0.0, 0.0)
        self.start_index = 0
        self.points: np.ndarray | None = None
        self.age = np.zeros(0, np.int32)  # frames each point has moved with the object
        self.n_init = 0

    def init(self, frame: WorkFrame, box: WorkBox, points: np.ndarray | None = None) -> None:
        """Start on ``box``; ``points`` (N, 2) are optional known object points (e.g. moving corners).

        With points, the tracker follows that persistent set (dropping unreliable ones) instead of
        re-sampling a grid each frame: a grid over a small, slow object (a pedestrian seen from
        afar) is half background, and its median motion then sticks to the background.
        """
        self.frame, self.box, self.start_index = frame, box, frame.index
        self.points = None
        if points is not None:
            x, y, w, h = box
            inside = (
                (points[:, 0] >= x) & (points[:, 0] <= x + w) & (points[:, 1] >= y) & (points[:, 1] <= y + h)
            )
            if inside.sum() >= self.cfg.min_points:
                self.points = np.ascontiguousarray(points[inside], np.float32)
                self.n_init = len(self.points)
                self.age = np.full(self.n_init, _TRUSTED_AGE, np.int32)  # object points from motion

    def propose(self) -> np.ndarray:
        """Points to follow from the current frame, (N, 2) float32 working px."""
        if self.points is not None:
            return self.points
        x, y, w, h = self.box
        g = self.cfg.grid_points
        # Inset by half a cell so that no point sits on the box edge, where background dominates.
        xs = x + (np.arange(g) + 0.5) * w / g
        ys = y + (np.arange(g) + 0.5) * h / g
        gx, gy = np.meshgrid(xs, ys)
        return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)

    def accept(self, frame: WorkFrame, pts: np.ndarray, new_pts: np.ndarray, fb: np.ndarray) -> TrackStep:
        """Move the box from the flow of its ``propose()`` points: (N, 2), (N, 2), (N,)."""
        ok = np.isfinite(fb)
        if ok.sum() < self.cfg.min_points:
            return TrackStep(None, "lost_points")
        fb_med = float(_median(fb[ok]))
        if fb_med > self.cfg.fb_max_px:
            return TrackStep(None, "fb_error")
        keep = ok & (fb <= fb_med)  # at least half of the ok points, hence >= min_points / 2
        if self.points is not None and (keep & (self.age >= _TRUSTED_AGE)).sum() >= 3:
            keep &= self.age >= _TRUSTED_AGE  # points added on probation do not steer the box yet
        p0, p1 = pts[keep], new_pts[keep]
        flow = p1 - p0
        dx, dy = _median(flow[:, 0]), _median(flow[:, 1])
        scale = _median_scale(p0, p1)
        if abs(scale - 1.0) > self.cfg.max_scale_change:
            return TrackStep(None, "scale")
        x, y, w, h = self.box
        nw, nh = w * scale, h * scale
        box = (float(x + dx - (nw - w) / 2), float(y + dy - (nh - h) / 2), float(nw), float(nh))
        if _inside_frac(box, frame.gray.shape) < self.cfg.min_inside_frac:
            return TrackStep(None, "left_frame")
        if self.points is not None:
            # Persistent points survive while reliable and moving with the object; halving them
            # every frame (the median cut above) would empty the set within a few frames.
            # A point whose motion differs from the median by a good part of the object's own
            # motion is background (or a limb); the absolute floor tolerates LK noise and gait.
            dev = np.linalg.norm((new_pts - pts) - (dx, dy), axis=1)
            tol = max(self.cfg.point_dev_px, self.cfg.point_dev_frac * float(np.hypot(dx, dy)))
            alive = ok & (fb <= self.cfg.fb_max_px) & (dev <= tol)
            # Counting only trusted points ends a track whose object was occluded: otherwise the
            # top-up would hand it to whatever static texture covers the box (a sign, a pole).
            if (alive & (self.age >= _TRUSTED_AGE)).sum() < self.cfg.min_points // 2:
                return TrackStep(None, "lost_points")
            self.points = np.ascontiguousarray(new_pts[alive], np.float32)
            self.age = self.age[alive] + 1
            target = max(self.n_init, 2 * self.cfg.min_points)
            if len(self.points) < target:
                n_old = len(self.points)
                self.points = _refill(frame.gray, box, self.points, target)
                self.age = np.concatenate([self.age, np.zeros(len(self.points) - n_old, np.int32)])
        self.frame, self.box = frame, box
        if frame.index - self.start_index + 1 >= self.cfg.track_len_frames:
            return TrackStep(box, "length")
        return TrackStep(box)

    def update(self, frame: WorkFrame) -> TrackStep:
        if self.frame is None:
            raise RuntimeError("MedianFlowTracker.update() before init()")
        pts = self.propose()
        new_pts, fb = flow_fb(self.frame, frame, pts)
        return self.accept(frame, pts, new_pts, fb)


def _refill(gray: np.ndarray, box: WorkBox, points: np.ndarray, target: int) -> np.ndarray:
    """Top up ``points`` (N, 2) with corners from the central part of ``box``.

    The centre of a box around a moving object is mostly object; background corners that slip
    in are pruned by the deviation test within a frame or two.
    """
    x, y, w, h = box
    ih, iw = gray.shape
    x0, y0 = int(max(0, x + 0.2 * w)), int(max(0, y + 0.2 * h))
    x1, y1 = int(min(iw, x + 0.8 * w)), int(min(ih, y + 0.8 * h))
    if x1 - x0 < 3 or y1 - y0 < 3:
        return points
    # Detect on the crop: goodFeaturesToTrack scores the whole image even where the mask is 0.
    mask = np.full((y1 - y0, x1 - x0), 255, np.uint8)
    for px, py in (points - (x0, y0)).astype(int):
        cv2.circle(mask, (int(px), int(py)), 2, 0, -1)
    corners = cv2.goodFeaturesToTrack(
        gray[y0:y1, x0:x1], target - len(points), 0.005, 2, mask=mask, blockSize=3
    )
    if corners is None:
        return points
    return np.ascontiguousarray(np.concatenate([points, corners.reshape(-1, 2) + (x0, y0)]), np.float32)


@functools.lru_cache(maxsize=64)
def _pair_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    # Point counts repeat from frame to frame; rebuilding the index arrays was ~4% of tracking.
    i, j = np.triu_indices(n, k=1)
    i.flags.writeable = j.flags.writeable = False  # shared between calls
    return i, j


def _median_scale(p0: np.ndarray, p1: np.ndarray) -> float:
    i, j = _pair_indices(len(p0))
    d0 = np.linalg.norm(p0[i] - p0[j], axis=1)
    d1 = np.linalg.norm(p1[i] - p1[j], axis=1)
    valid = d0 > 1e-3
    return float(_median(d1[valid] / d0[valid])) if valid.any() else 1.0


def _median(x: np.ndarray) -> np.floating:
    """``np.median`` of a 1-D float array without NaNs, to the bit: ~3x less overhead per call,
    which was a fifth of tracking time (three medians per track per frame)."""
    k = len(x) // 2
    if len(x) % 2:
        return np.partition(x, k)[k]
    part = np.partition(x, (k - 1, k))
    return (part[k - 1] + part[k]) / 2


def _inside_frac(box: WorkBox, shape: tuple[int, ...]) -> float:
    x, y, w, h = box
    ih, iw = shape[:2]
    ix = max(0.0, min(x + w, iw) - max(x, 0.0))
    iy = max(0.0, min(y + h, ih) - max(y, 0.0))
    return ix * iy / max(w * h, 1e-6)


TRACKERS: dict[str, Callable[[TrackConfig], Tracker]] = {"medianflow": MedianFlowTracker}


def build_tracker(cfg: TrackConfig) -> Tracker:
    """Instantiate the tracker named by ``cfg.tracker`` from :data:`TRACKERS`."""
    try:
        return TRACKERS[cfg.tracker](cfg)
    except KeyError:
        raise ValueError(f"unknown tracker {cfg.tracker!r}; known: {sorted(TRACKERS)}") from None


def update_trackers(trackers: Sequence[Tracker], frame: WorkFrame) -> list[TrackStep]:
    """Update every tracker on ``frame``; median-flow trackers share one batched LK call pair.

    Trackers are grouped by their previous frame (all equal in a harvest pass); any tracker
    without ``propose``/``accept`` is updated on its own.
    """
    steps: list[TrackStep | None] = [None] * len(trackers)
    groups: dict[int, list[int]] = {}
    for k, trk in enumerate(trackers):
        if isinstance(trk, MedianFlowTracker) and trk.frame is not None:
            groups.setdefault(trk.frame.index, []).append(k)
        else:
            steps[k] = trk.update(frame)
    for members in groups.values():
        proposals = [trackers[k].propose() for k in members]  # type: ignore[attr-defined]
        prev = trackers[members[0]].frame  # type: ignore[attr-defined]
        new_pts, fb = flow_fb(prev, frame, np.concatenate(proposals))
        start = 0
        for k, pts in zip(members, proposals, strict=True):
            end = start + len(pts)
            steps[k] = trackers[k].accept(frame, pts, new_pts[start:end], fb[start:end])  # type: ignore[attr-defined]
            start = end
    if missing := [k for k, s in enumerate(steps) if s is None]:
        raise RuntimeError(f"trackers {missing} were neither batched nor updated on frame {frame.index}")
    return steps  # type: ignore[return-value]
