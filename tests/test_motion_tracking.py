"""Motion discovery and tracking against synthetic videos with known object boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic import GroundTruth, iou, write_pan_video, write_static_video, write_synthetic_video

from trackemb.config import DecodeConfig, HarvestConfig, MotionConfig, TrackConfig
from trackemb.tracking.harvest import harvest_video
from trackemb.tracking.motion import WorkFrame, find_moving_regions, make_work_frame
from trackemb.tracking.stream import iter_frames
from trackemb.tracking.tracker import TRACKERS, MedianFlowTracker, build_tracker, update_trackers


def _work_frames(path: Path) -> list[WorkFrame]:
    return [make_work_frame(i, bgr, 320) for i, bgr in iter_frames(path, DecodeConfig(backend="opencv"))]


def _best_object(gt: GroundTruth, frame: int, box: tuple[float, ...]) -> tuple[int, float]:
    scores = {obj: iou(boxes[frame], box) for obj, boxes in gt.boxes.items() if boxes[frame] is not None}
    obj = max(scores, key=scores.__getitem__)
    return obj, scores[obj]


@pytest.fixture(scope="module")
def two_objects(tmp_path_factory: pytest.TempPathFactory) -> tuple[GroundTruth, list[WorkFrame]]:
    gt = write_synthetic_video(tmp_path_factory.mktemp("mt") / "two.avi", n_objects=2, n_frames=40, seed=0)
    return gt, _work_frames(gt.path)


def test_moving_regions_cover_each_object(two_objects: tuple[GroundTruth, list[WorkFrame]]) -> None:
    gt, frames = two_objects
    res = find_moving_regions(frames[4], frames[5], MotionConfig())
    assert res.accepted, res.reason
    assert len(res.boxes) == 2
    matched = {_best_object(gt, 5, box) for box in res.boxes}
    assert {obj for obj, _ in matched} == {0, 1}
    assert all(score >= 0.5 for _, score in matched)


@pytest.mark.parametrize("kind", ["static", "pan"])
def test_no_regions_without_independent_motion(tmp_path: Path, kind: str) -> None:
    if kind == "static":
        gt = write_static_video(tmp_path / "s.avi", n_frames=12, seed=1)
    else:
        gt = write_pan_video(tmp_path / "p.avi", n_frames=12, seed=1, pan=(2.5, -1.0))
    frames = _work_frames(gt.path)
    for prev, cur in zip(frames, frames[1:], strict=False):
        res = find_moving_regions(prev, cur, MotionConfig())
        assert res.boxes == [], (cur.index, res.reason, res.moving_frac)


def test_pan_is_explained_not_rejected(tmp_path: Path) -> None:
    """The homography absorbs a camera pan: few points move, so frames are not 'camera_motion'."""
    gt = write_pan_video(tmp_path / "p.avi", n_frames=6, seed=2, pan=(3.0, 1.0))
    frames = _work_frames(gt.path)
    res = find_moving_regions(frames[2], frames[3], MotionConfig())
    assert res.reason != "camera_motion" and res.moving_frac < 0.05


@pytest.mark.parametrize("with_points", [False, True])
def test_median_flow_follows_object(
    two_objects: tuple[GroundTruth, list[WorkFrame]], with_points: bool
) -> None:
    gt, frames = two_objects
    cfg = TrackConfig(track_len_frames=30)
    start = gt.boxes[1][2]
    trk = MedianFlowTracker(cfg)
    x, y, w, h = start
    pts = np.stack(np.meshgrid(np.linspace(x + 2, x + w - 2, 6), np.linspace(y + 2, y + h - 2, 6)), -1)
    trk.init(frames[2], start, pts.reshape(-1, 2).astype(np.float32) if with_points else None)
    ious = []
    for f in frames[3:]:
        step = trk.update(f)
        assert step.box is not None, step.reason
        ious.append(iou(gt.boxes[1][f.index], step.box))
        if step.reason:
            break
    assert step.reason == "length" and f.index - 2 + 1 == 30
    assert np.mean(np.array(ious) >= 0.5) >= 0.8, ious


def test_batched_update_equals_single_updates(two_objects: tuple[GroundTruth, list[WorkFrame]]) -> None:
    gt, frames = two_objects
    cfg = TrackConfig()
    batch = [MedianFlowTracker(cfg) for _ in gt.boxes]
    single = [MedianFlowTracker(cfg) for _ in gt.boxes]
    for obj, (a, b) in enumerate(zip(batch, single, strict=True)):
        a.init(frames[0], gt.boxes[obj][0])
        b.init(frames[0], gt.boxes[obj][0])
    for f in frames[1:10]:
        assert update_trackers(batch, f) == [t.update(f) for t in single]


def test_tracker_leaving_frame_ends(tmp_path: Path) -> None:
    frames = _work_frames(write_pan_video(tmp_path / "p.avi", n_frames=30, seed=3, pan=(4.0, 0.0)).path)
    trk = MedianFlowTracker(TrackConfig(track_len_frames=100))
    trk.init(frames[0], (20.0, 100.0, 40.0, 40.0))  # a background patch near the left edge
    reasons = [trk.update(f).reason for f in frames[1:]]
    assert "left_frame" in reasons


def test_registry() -> None:
    assert "medianflow" in TRACKERS
    assert isinstance(build_tracker(TrackConfig()), MedianFlowTracker)
    with pytest.raises(ValueError, match="unknown tracker"):
        build_tracker(TrackConfig.model_construct(tracker="nope"))


@pytest.mark.parametrize(
    ("seed", "n_objects", "pan", "ext"),
    [
        (0, 1, (0.0, 0.0), ".mp4"),
        (1, 2, (0.0, 0.0), ".avi"),
        (2, 2, (1.5, -0.5), ".mp4"),
        (3, 2, (-1.0, 0.5), ".avi"),
    ],
)
def test_harvested_tracks_follow_true_object(
    tmp_path: Path, seed: int, n_objects: int, pan, ext: str
) -> None:
    gt = write_synthetic_video(
        tmp_path / f"v{ext}", n_objects=n_objects, seed=seed, camera_pan=pan, n_frames=60
    )
    harvest = harvest_video(gt.path, HarvestConfig())
    assert len(harvest.tracks) >= n_objects
    ious = []
    for trk in harvest.tracks:
        obj, _ = _best_object(gt, trk.frames[0], trk.boxes[0])
        ious += [iou(gt.boxes[obj][f], box) for f, box in zip(trk.frames, trk.boxes, strict=True)]
    assert np.mean(np.array(ious) >= 0.5) >= 0.8
