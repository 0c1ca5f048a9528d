"""Look at a video's first frames before harvesting it: is the camera static, what does the
empty scene look like, and does anything visibly change at all?

``motion = "auto"`` uses the answer to pick the motion path per video: background
subtraction when the camera stays put (the estimated homography stays near identity) and
the scene is too plain for sparse corners, sparse flow with camera-motion compensation
otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from trackemb.config import HarvestConfig
from trackemb.tracking.decode import to_work_gray
from trackemb.tracking.motion import WorkFrame, camera_shift, flow_fb, spread_corners
from trackemb.tracking.stream import iter_frames

log = logging.getLogger(__name__)

_CAMERA_PAIRS = 12  # frame pairs whose camera motion is estimated
_MEDIAN_FRAMES = 30  # frames whose per-pixel median is the empty scene
_CHANGE_LEVEL = 25  # grey levels: a pixel that changes more than this between probe frames is visible motion


@dataclass
class Probe:
    """What the first ``motion.probe_frames`` frames show.

    Attributes:
        path: motion path to use, "flow" or "background".
        camera_px: median camera motion per frame (working px); NaN when nothing could be measured.
        background: (h, w) uint8 per-pixel median at background-path resolution (None for "flow").
        visible_motion: whether anything changed between probe frames beyond noise.
    """

    path: str
    camera_px: float
    background: np.ndarray | None = field(default=None, repr=False)
    visible_motion: bool = False


def _camera_px(prev: np.ndarray, cur: np.ndarray, max_corners: int) -> tuple[float, int]:
    """Camera motion between two working frames and the number of reliable corners: homography
    corner shift, or the phase-correlation shift on scenes too plain for 16 corners."""
    mask = np.full(prev.shape, 255, np.uint8)
    pts = spread_corners(prev, mask, max_corners)
    n_good = 0
    if len(pts) >= 16:
        p1, fb = flow_fb(WorkFrame(0, prev, 1.0), WorkFrame(1, cur, 1.0), pts)
        good = fb < 1.0
        n_good = int(good.sum())
        if n_good >= 16:
            hom, _ = cv2.findHomography(pts[good], p1[good], cv2.USAC_ACCURATE, 1.0)
            if hom is not None:
                return camera_shift(hom, prev.shape), n_good
    (dx, dy), _ = cv2.phaseCorrelate(prev.astype(np.float32), cur.astype(np.float32))
    return float(np.hypot(dx, dy)), n_good


def empty_scene(stack: np.ndarray) -> np.ndarray:
    """The scene without its movers from ``stack: (n, h, w) uint8`` frames of a fixed camera.

    The per-pixel median fails where an object covered a pixel in most frames (a short clip,
    an animal swimming along its own axis): a ghost of the object stays in the background.
    Such pixels have two modes over time; there the sample closest to the scene around them
    (a median filter much wider than the objects) is the background.
    """
    median = np.median(stack, axis=0).astype(np.uint8)
    far = np.abs(stack.astype(np.int16) - median) > _CHANGE_LEVEL  # (n, h, w)
    bimodal = far.any(axis=0)
    if not bimodal.any():
        return median
    k = 2 * (max(median.shape) // 48) + 1
    around = cv2.medianBlur(median, min(k, 255)).astype(np.int16)
    nearest = np.abs(stack.astype(np.int16) - around).argmin(axis=0)  # the sample most like its surroundings
    other = np.take_along_axis(stack, nearest[None], axis=0)[0]
    closer = np.abs(other.astype(np.int16) - around) < np.abs(median.astype(np.int16) - around)
    return np.where(bimodal & closer, other, median).astype(np.uint8)


def probe_video(path: str | Path, cfg: HarvestConfig) -> Probe:
    """Read the first frames of ``path`` and decide the motion path (see module doc)."""
    mcfg = cfg.motion
    n = mcfg.probe_frames if cfg.decode.max_frames is None else min(mcfg.probe_frames, cfg.decode.max_frames)
    work, big = [], []
    for _, bgr in iter_frames(path, cfg.decode.model_copy(update={"max_frames": n})):
        work.append(to_work_gray(bgr, cfg.decode.work_long_side_px)[0])
        big.append(to_work_gray(bgr, mcfg.background_long_side_px)[0])
    if len(work) < 2:
        return Probe("flow", float("nan"))
    step = max(1, (len(work) - 1) // _CAMERA_PAIRS)
    pairs = range(0, len(work) - 1, step)
    measured = np.array([_camera_px(work[i], work[i + 1], mcfg.max_corners) for i in pairs])
    camera, corners = float(np.median(measured[:, 0])), float(np.median(measured[:, 1]))
    gap = min(5, len(work) - 1)
    visible = any(
        int((cv2.medianBlur(cv2.absdiff(work[i], work[i + gap]), 3) > _CHANGE_LEVEL).sum()) >= 4
        for i in range(0, len(work) - gap, gap)
    )
    static = camera < mcfg.static_camera_px
    # Background subtraction only where sparse flow has nothing to follow: on textured real
    # scenes (the bundled clips) flow kept 2-4x more tracks, as blobs of people merge and split.
    plain = corners < mcfg.sparse_scene_corners
    chosen = mcfg.motion if mcfg.motion != "auto" else ("background" if static and plain else "flow")
    background = None
    if chosen == "background":
        pick = np.linspace(0, len(big) - 1, min(_MEDIAN_FRAMES, len(big))).round().astype(int)
        background = empty_scene(np.stack([big[i] for i in pick]))
    log.info(
        "%s: camera %.2f px/frame (%s), %d corners, motion path %s",
        path, camera, "static" if static else "moving", corners, chosen,
    )  # fmt: skip
    return Probe(chosen, round(camera, 3), background, visible)
