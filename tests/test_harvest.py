"""harvest_video end to end: records, pairs, determinism, filters, errors, and the sample clips."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from synthetic import GroundTruth, iou, write_pan_video, write_static_video, write_synthetic_video

from trackemb.config import DecodeConfig, HarvestConfig
from trackemb.errors import VideoDecodeError
from trackemb.storage import records
from trackemb.storage.records import patch_key
from trackemb.tracking.files import video_sha
from trackemb.tracking.harvest import harvest_video
from trackemb.tracking.prefetch import Prefetch


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> GroundTruth:
    return write_synthetic_video(tmp_path_factory.mktemp("hv") / "two.mp4", n_objects=2, n_frames=60, seed=5)


def _best_object(gt: GroundTruth, frame: int, box: tuple[float, ...]) -> int:
    return max(gt.boxes, key=lambda obj: iou(gt.boxes[obj][frame], box))


def test_records_are_consistent(clip: GroundTruth) -> None:
    cfg = HarvestConfig(inner_samples=2)
    h = harvest_video(clip.path, cfg)
    sha = video_sha(clip.path)
    v = h.video
    assert (v.sha, v.status, v.frames, v.width, v.height, v.backend) == (sha, "done", 60, 320, 240, "opencv")
    assert v.fps == pytest.approx(15.0) and v.seconds > 0
    assert (v.n_tracks, v.n_patches, v.n_pairs) == (len(h.tracks), len(h.patches), len(h.pairs))
    assert len(h.tracks) >= 2 and set(h.jpegs) == {p.key for p in h.patches}
    by_key = {p.key: p for p in h.patches}
    for p in h.patches:
        assert p.key == patch_key(sha, p.track_id, p.frame)
        img = cv2.imdecode(np.frombuffer(h.jpegs[p.key], np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (cfg.patch_px, cfg.patch_px, 3)
    for t in h.tracks:
        roles = sorted(p.role for p in h.patches if p.track_id == t.track_id)
        assert roles[:2] == ["first", "inner"] and roles[-1] == "last"
        assert t.end_frame - t.start_frame + 1 >= cfg.min_track_frac * cfg.track.track_len_frames
        assert len(t.frames) == len(t.boxes) and t.frames == sorted(t.frames)
    for pair in h.pairs:
        a, p = by_key[pair.anchor], by_key[pair.positive]
        assert a.role == "first" and p.role in {"last", "inner"}
        assert a.track_id == p.track_id == pair.track_id and pair.video_sha == sha


def test_pairs_come_from_one_object(clip: GroundTruth) -> None:
    h = harvest_video(clip.path, HarvestConfig(inner_samples=1))
    by_key = {p.key: p for p in h.patches}
    assert h.pairs
    for pair in h.pairs:
        a, p = by_key[pair.anchor], by_key[pair.positive]
        assert _best_object(clip, a.frame, a.box) == _best_object(clip, p.frame, p.box)
        assert iou(clip.boxes[_best_object(clip, a.frame, a.box)][a.frame], a.box) >= 0.5


def test_harvest_is_deterministic(clip: GroundTruth) -> None:
    one, two = harvest_video(clip.path, HarvestConfig()), harvest_video(clip.path, HarvestConfig())
    assert [records.encode(t) for t in one.tracks] == [records.encode(t) for t in two.tracks]
    assert [records.encode(p) for p in one.patches] == [records.encode(p) for p in two.patches]
    assert [records.encode(p) for p in one.pairs] == [records.encode(p) for p in two.pairs]
    assert one.jpegs == two.jpegs


def test_backends_give_same_harvest(clip: GroundTruth) -> None:
    """Each reader forced in turn (``auto`` would pick OpenCV both times): same tracks, same patches."""
    pytest.importorskip("decord")  # optional dependency, pinned in requirements.txt
    by_decord = harvest_video(clip.path, HarvestConfig(decode=DecodeConfig(backend="decord")))
    by_cv = harvest_video(clip.path, HarvestConfig(decode=DecodeConfig(backend="opencv")))
    assert (by_decord.video.backend, by_cv.video.backend) == ("decord", "opencv")
    assert by_decord.video.frames == by_cv.video.frames
    assert [p.key for p in by_cv.patches] == [p.key for p in by_decord.patches]
    assert len(by_cv.pairs) > 0


@pytest.mark.parametrize("kind", ["static", "pan", "pan_diagonal"])
def test_no_tracks_without_independent_motion(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.mp4"
    if kind == "static":
        write_static_video(path, n_frames=45, seed=7)
    else:
        write_pan_video(path, n_frames=45, seed=8, pan=(2.0, 0.0) if kind == "pan" else (-1.5, 1.0))
    h = harvest_video(path, HarvestConfig())
    assert (h.tracks, h.patches, h.pairs, h.jpegs) == ([], [], [], {})
    assert h.video.status == "done" and h.video.frames == 45


def test_quality_filters_drop_pairs(clip: GroundTruth) -> None:
    base = harvest_video(clip.path, HarvestConfig())
    assert base.pairs
    assert harvest_video(clip.path, HarvestConfig(min_blur_var=1e9)).pairs == []
    assert harvest_video(clip.path, HarvestConfig(min_pair_change=255.0)).pairs == []
    # Tracks must now span the whole clip, which none of them can.
    assert (
        harvest_video(clip.path, HarvestConfig(min_track_frac=1.0, track={"track_len_frames": 200})).tracks
        == []
    )


def test_progress_and_max_frames(clip: GroundTruth) -> None:
    calls: list[tuple[int, int]] = []
    h = harvest_video(
        clip.path,
        HarvestConfig(decode=DecodeConfig(max_frames=20)),
        progress=lambda d, t: calls.append((d, t)),
    )
    assert h.video.frames == 20 and calls[-1] == (20, 20)
    assert [d for d, _ in calls] == list(range(1, 21))
    assert all(t.end_frame < 20 for t in h.tracks)


def test_sha_argument_is_used(clip: GroundTruth) -> None:
    h = harvest_video(clip.path, HarvestConfig(), sha="ab" * 32)
    assert h.video.sha == "ab" * 32 and all(p.key.startswith("ab" * 8) for p in h.patches)


@pytest.mark.parametrize(
    ("content", "kind"), [(None, "missing_file"), (b"", "empty_file"), (b"not a video" * 50, "not_a_video")]
)
def test_undecodable_input_raises(tmp_path: Path, content: bytes | None, kind: str) -> None:
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoDecodeError) as err:
        harvest_video(path, HarvestConfig())
    assert err.value.kind == kind


@pytest.mark.slow
@pytest.mark.parametrize(("name", "min_pairs"), [("vtest.mp4", 100), ("box.mp4", 20), ("cup.mp4", 4)])
def test_sample_clips(sample_videos: Path, name: str, min_pairs: int) -> None:
    h = harvest_video(sample_videos / name, HarvestConfig())
    assert h.video.status == "done" and h.video.frames > 200
    assert len(h.pairs) >= min_pairs, (name, len(h.pairs), len(h.tracks))


def test_prefetch_keeps_order_raises_in_place_and_closes_early() -> None:
    closed: list[str] = []

    def source(n: int, fail_at: int | None = None):
        try:
            for i in range(n):
                if i == fail_at:
                    raise VideoDecodeError("x.mp4", f"broken at {i}", "decode_error")
                yield i
        finally:
            closed.append(threading.current_thread().name)

    assert list(Prefetch(source(50), lambda i: i * i, depth=3)) == [i * i for i in range(50)]
    got: list[int] = []
    with pytest.raises(VideoDecodeError, match="broken at 7"):
        for v in Prefetch(source(50, fail_at=7), lambda i: i):
            got.append(v)
    assert got == list(range(7))
    for v in Prefetch(source(10**9), lambda i: i, depth=2):
        if v == 3:
            break  # the thread stops and closes the source instead of reading on
    assert closed == ["trackemb-prefetch"] * 3


def test_two_objects_moving_apart_are_recorded_as_in_video_negatives(clip: GroundTruth) -> None:
    h = harvest_video(clip.path, HarvestConfig())
    by_id = {t.track_id: t for t in h.tracks}

    def gt_object(track) -> int:  # the ground-truth object a track follows (by its first box)
        return _best_object(clip, track.frames[0], track.boxes[0])

    pairs = {(t.track_id, o) for t in h.tracks for o in (t.apart or [])}
    assert pairs, "two objects in separate bands on the same frames give apart tracks"
    assert all((o, t) in pairs for t, o in pairs), "apart is symmetric"
    for t, o in pairs:
        assert gt_object(by_id[t]) != gt_object(by_id[o]), "an apart pair must be two different objects"
