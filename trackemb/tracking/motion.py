"""Moving-region discovery: camera-motion-compensated sparse flow between two working frames.

Corners are followed with pyramidal Lucas-Kanade (forward and backward), a RANSAC
homography explains the camera motion, and points whose residual flow exceeds the
threshold are "moving". Moving points are rasterised, dilated and split into connected
components; each coherent component becomes one seed box for the tracker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from trackemb.config import MotionConfig
from trackemb.tracking.decode import to_work_gray

log = logging.getLogger(__name__)

LK_WIN = (11, 11)
LK_LEVELS = 3
_LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)

# A working-resolution box (x, y, w, h), float.
WorkBox = tuple[float, float, float, float]


@dataclass
class WorkFrame:
    """One analysed frame at working resolution.

    Attributes:
        index: source frame index.
        gray: (h, w) uint8 working-resolution frame.
        scale: working px per full-resolution px (<= 1).
    """

    index: int
    gray: np.ndarray = field(repr=False)
    scale: float


def make_work_frame(index: int, bgr: np.ndarray, long_side_px: int) -> WorkFrame:
    """Gray working frame from ``bgr: (H, W, 3) uint8`` at full resolution."""
    gray, scale = to_work_gray(bgr, long_side_px)
    return WorkFrame(index, gray, scale)


def flow_fb(prev: WorkFrame, cur: WorkFrame, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Follow points forward and back with pyramidal LK.

    Args:
        pts: (N, 2) float32 points in ``prev``.

    Returns:
        ``(new_pts, fb_err)``: (N, 2) float32 positions in ``cur`` and (N,) forward-backward
        error in working px; ``inf`` where LK lost the point in either direction.
    """
    if len(pts) == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    # The Python binding of calcOpticalFlowPyrLK accepts only images, not the pyramids that
    # buildOpticalFlowPyramid returns, so pyramids cannot be shared between calls; callers batch
    # the points of all tracks into one call per direction instead (see tracker.update_trackers).
    p0 = np.ascontiguousarray(pts, np.float32).reshape(-1, 1, 2)
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(
        prev.gray, cur.gray, p0, None, winSize=LK_WIN, maxLevel=LK_LEVELS, criteria=_LK_CRITERIA
    )
    p0b, st0, _ = cv2.calcOpticalFlowPyrLK(
        cur.gray, prev.gray, p1, None, winSize=LK_WIN, maxLevel=LK_LEVELS, criteria=_LK_CRITERIA
    )
    fb = np.linalg.norm(p0b - p0, axis=2).ravel()
    fb[(st1.ravel() == 0) | (st0.ravel() == 0) | ~np.isfinite(fb)] = np.inf
    return p1.reshape(-1, 2), fb.astype(np.float32)


@dataclass
class MotionResult:
    """Outcome of one frame pair.

    Attributes:
        accepted: whether the frame passed the moving-fraction rule.
        reason: why it was rejected ("" when accepted).
        moving_frac: moving points / reliable points over the whole frame.
        boxes: seed boxes (working px), one per coherent moving region, largest first.
        points: (N, 2) reliable points in ``cur``; ``moving``: (N,) bool.
        homography: (3, 3) camera motion ``prev -> cur`` (None when not estimated).
        threshold: residual (working px) above which a point moves.
    """

    accepted: bool
    reason: str
    moving_frac: float
    boxes: list[WorkBox]
    points: np.ndarray
    moving: np.ndarray
    homography: np.ndarray | None = None
    threshold: float = 0.0


def _reject(
    reason: str, frac: float = 0.0, pts: np.ndarray | None = None, mov: np.ndarray | None = None
) -> MotionResult:
    pts = np.zeros((0, 2), np.float32) if pts is None else pts
    mov = np.zeros(len(pts), bool) if mov is None else mov
    return MotionResult(False, reason, frac, [], pts, mov)


def spread_corners(gray: np.ndarray, mask: np.ndarray, n: int, grid: tuple[int, int] = (8, 6)) -> np.ndarray:
    """Up to ``n`` corners, (N, 2) float32, at most ``n / cells`` per grid cell.

    The strongest corners of a frame often all lie on a few high-contrast objects; if they
    dominate the sample, RANSAC fits the homography to an object's motion instead of the
    camera's. Bucketing keeps the background represented wherever it has texture.
    """
    corners = cv2.goodFeaturesToTrack(gray, 4 * n, 0.01, 4, mask=mask, blockSize=5)
    if corners is None:
        return np.zeros((0, 2), np.float32)
    pts = corners.reshape(-1, 2)  # strongest first
    h, w = gray.shape
    cell = (pts[:, 1] * grid[1] // h).astype(int) * grid[0] + (pts[:, 0] * grid[0] // w).astype(int)
    order = np.argsort(cell, kind="stable")
    sorted_cells = cell[order]
    first = np.searchsorted(sorted_cells, sorted_cells, side="left")
    rank = np.empty(len(pts), int)
    rank[order] = np.arange(len(pts)) - first
    quota = max(1, -(-n // (grid[0] * grid[1])))
    return np.ascontiguousarray(pts[rank < quota][:n], np.float32)


def find_moving_regions(prev: WorkFrame, cur: WorkFrame, cfg: MotionConfig) -> MotionResult:
    """Camera-motion-compensated moving regions between two consecutive analysed frames."""
    h, w = prev.gray.shape
    margin = LK_WIN[0] // 2 + 2  # points at the border are where a pan uncovers new content
    mask = np.zeros_like(prev.gray)
    mask[margin : h - margin, margin : w - margin] = 255
    p0 = spread_corners(prev.gray, mask, cfg.max_corners)
    if len(p0) < 16:
        return _reject("few_points")
    p1, fb = flow_fb(prev, cur, p0)
    inside = (p1[:, 0] >= 0) & (p1[:, 0] < w) & (p1[:, 1] >= 0) & (p1[:, 1] < h)
    good = (fb < cfg.fb_max_px) & inside
    p0, p1 = p0[good], p1[good]
    if len(p0) < 16:
        return _reject("few_points")
    thr = max(cfg.residual_px * cur.scale, cfg.residual_min_work_px)
    # USAC_ACCURATE (graph-cut RANSAC with local optimisation) rather than plain RANSAC: with
    # a sub-pixel threshold plain RANSAC sometimes settles on a homography that is 0.5 px off
    # in one corner of the frame, which then shows up as a "moving" background region.
    homography, _ = cv2.findHomography(p0, p1, cv2.USAC_ACCURATE, max(thr, cfg.ransac_min_px))
    if homography is None:
        return _reject("no_homography", pts=p1)
    predicted = cv2.perspectiveTransform(p0.reshape(-1, 1, 2), homography).reshape(-1, 2)
    moving = np.linalg.norm(p1 - predicted, axis=1) > thr
    frac = float(moving.mean())
    # Why the 25-75 % rule is split (Wang & Gupta apply both bounds to the whole frame): with a
    # fixed camera and small objects (vtest.mp4: pedestrians cover a few % of the frame) the
    # whole-frame fraction is far below 25 % on every frame, yet the motion is real. The upper
    # bound keeps its meaning ("most points move: camera motion the homography did not
    # explain") on the whole frame; the lower bound ("too few: noise") is applied per region,
    # to the points inside each candidate box, so isolated LK noise never seeds a track.
    # ... and only while the camera moves: with a fixed camera over a plain background the movers
    # hold most of the corners, and those are the frames with the most to give.
    if frac > cfg.max_moving_frac and camera_shift(homography, (h, w)) >= cfg.static_camera_px:
        return _reject("camera_motion", frac, p1, moving)
    boxes = _regions(p1, moving, (h, w), cfg, cur.scale)
    if not boxes:
        return _reject("no_region", frac, p1, moving)
    return MotionResult(True, "", frac, boxes, p1, moving, homography, thr)


def object_points(
    prev: WorkFrame, cur: WorkFrame, box: WorkBox, motion: MotionResult, cfg: MotionConfig
) -> np.ndarray:
    """Dense corners in ``box`` of ``cur`` that move against the camera motion: (N, 2) float32.

    The frame-wide corner set is sparse (a few points per small object); trackers that follow
    persistent object points need more, so the box is re-sampled densely and each corner is
    followed back to ``prev`` and kept only if its residual to the homography is moving.
    """
    if motion.homography is None:
        return np.zeros((0, 2), np.float32)
    h, w = cur.gray.shape
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, int(np.ceil(box[0] + box[2])) + 1), min(h, int(np.ceil(box[1] + box[3])) + 1)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return np.zeros((0, 2), np.float32)
    corners = cv2.goodFeaturesToTrack(cur.gray[y0:y1, x0:x1], cfg.object_corners, 0.005, 2, blockSize=3)
    if corners is None:
        return np.zeros((0, 2), np.float32)
    pts = np.ascontiguousarray(corners.reshape(-1, 2) + (x0, y0), np.float32)
    back, fb = flow_fb(cur, prev, pts)
    expected = cv2.perspectiveTransform(pts.reshape(-1, 1, 2), np.linalg.inv(motion.homography)).reshape(
        -1, 2
    )
    residual = back - expected  # (N, 2): the point's own motion, camera motion removed
    keep = (fb < cfg.fb_max_px) & (np.linalg.norm(residual, axis=1) > motion.threshold)
    if keep.sum() >= 3:
        # An object moves coherently; corners of static texture next to it get erratic residuals
        # from the occluding edge inside their LK window and would pull the track onto them.
        med = np.median(residual[keep], axis=0)
        coherent = np.linalg.norm(residual - med, axis=1) <= max(1.0, 0.5 * float(np.hypot(*med)))
        keep &= coherent
    return np.ascontiguousarray(pts[keep], np.float32)


def camera_shift(homography: np.ndarray, shape: tuple[int, int]) -> float:
    """Largest displacement (px) that ``homography`` (3, 3) gives a corner of an (h, w) frame."""
    h, w = shape
    corners = np.float32([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]]).reshape(-1, 1, 2)
    moved = cv2.perspectiveTransform(corners, homography)
    return float(np.linalg.norm((moved - corners).reshape(-1, 2), axis=1).max())


def min_region_work_px(cfg: MotionConfig, scale: float) -> float:
    """Smallest seed box side in working px at ``scale`` (working px per full-resolution px)."""
    return max(cfg.min_region_px * scale, cfg.min_region_min_work_px)


def _regions(
    pts: np.ndarray, moving: np.ndarray, shape: tuple[int, int], cfg: MotionConfig, scale: float
) -> list[WorkBox]:
    h, w = shape
    mov_pts = pts[moving]
    if len(mov_pts) < cfg.min_region_points:
        return []
    radius = max(2, round(max(cfg.cluster_radius_px * scale, cfg.cluster_radius_min_work_px)))
    raster = np.zeros((h, w), np.uint8)
    for x, y in np.round(mov_pts).astype(int):
        cv2.circle(raster, (int(x), int(y)), radius, 255, -1)
    n, labels, _, _ = cv2.connectedComponentsWithStats(raster, connectivity=8)
    lab = labels[
        np.clip(np.round(mov_pts[:, 1]).astype(int), 0, h - 1),
        np.clip(np.round(mov_pts[:, 0]).astype(int), 0, w - 1),
    ]
    min_side = min_region_work_px(cfg, scale)
    boxes: list[WorkBox] = []
    for comp in range(1, n):
        members = mov_pts[lab == comp]
        if len(members) < cfg.min_region_points:
            continue
        x0, y0 = members.min(axis=0)
        x1, y1 = members.max(axis=0)
        # Corners sit on texture just inside the object's outline; one px of slack covers LK noise.
        x0, y0, x1, y1 = max(0, x0 - 1), max(0, y0 - 1), min(w - 1, x1 + 1), min(h - 1, y1 + 1)
        bw, bh = x1 - x0, y1 - y0
        if min(bw, bh) < min_side or bw * bh > cfg.max_region_frac * w * h:
            continue
        in_box = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
        local_frac = moving[in_box].mean()
        if local_frac < cfg.min_moving_frac:
            continue
        boxes.append((float(x0), float(y0), float(bw), float(bh)))
    boxes.sort(key=lambda b: (-b[2] * b[3], b[0], b[1]))
    return boxes
