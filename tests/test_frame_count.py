"""Frames are counted by decoding: a container's wrong frame count neither stops the reader
nor passes a cut file as done (issue 13 item 1, issue 14 item 1)."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from synthetic import write_mpeg1_ps, write_synthetic_video

from trackemb.config import DecodeConfig, HarvestConfig
from trackemb.errors import VideoDecodeError
from trackemb.tracking.harvest import harvest_video
from trackemb.tracking.stream import check_complete, iter_frames


@pytest.fixture(scope="module")
def mpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mpeg")
    src = root / "src.avi"
    write_synthetic_video(src, n_frames=60, n_objects=2, seed=11, fps=25.0)
    return write_mpeg1_ps(src, root / "spliced.mpeg", split_frame=36)


def test_mpeg_program_stream_declares_fewer_frames_than_it_holds(mpeg: Path) -> None:
    cap = cv2.VideoCapture(str(mpeg))
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 60 and declared < 40  # the fixture reproduces the container's wrong claim


@pytest.mark.parametrize("backend", ["auto", "opencv", "decord"])
def test_reader_reads_until_the_decoder_stops(mpeg: Path, backend: str) -> None:
    if backend == "decord":
        pytest.importorskip("decord")
    stream = iter_frames(mpeg, DecodeConfig(backend=backend))
    assert [i for i, _ in stream] == list(range(60))
    assert stream.decoded_frames == 60


def test_stride_still_counts_every_frame(mpeg: Path) -> None:
    stream = iter_frames(mpeg, DecodeConfig(backend="opencv", frame_stride=7))
    assert [i for i, _ in stream] == list(range(0, 60, 7))
    assert stream.decoded_frames == 60


def test_harvest_records_declared_and_decoded(mpeg: Path) -> None:
    h = harvest_video(mpeg, HarvestConfig())
    assert h.video.status == "done" and h.video.frames == 60
    assert 0 < h.video.declared_frames < 40
    assert h.tracks and max(t.end_frame for t in h.tracks) >= 40  # tracks past the declared end


@pytest.fixture(scope="module")
def cut_avi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MJPEG AVI cut to its first third (a half-copied file): the header still declares 60 frames."""
    root = tmp_path_factory.mktemp("cut")
    src = root / "full.avi"
    write_synthetic_video(src, n_frames=60, n_objects=2, seed=12)
    data = src.read_bytes()
    dst = root / "third.avi"
    dst.write_bytes(data[: len(data) // 3])
    return dst


def test_truncated_avi_is_not_done(cut_avi: Path) -> None:
    cap = cv2.VideoCapture(str(cut_avi))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 60
    with pytest.raises(VideoDecodeError) as err:
        harvest_video(cut_avi, HarvestConfig())
    assert err.value.kind == "truncated"
    assert "of the 60 frames" in err.value.cause and "third.avi" in str(err.value)


def test_max_frames_cap_is_not_a_shortfall(cut_avi: Path) -> None:
    h = harvest_video(cut_avi, HarvestConfig(decode=DecodeConfig(max_frames=10)))
    assert h.video.frames == 10 and h.video.declared_frames == 60


@pytest.mark.parametrize(
    ("declared", "decoded", "fails"),
    [(60, 20, True), (60, 55, False), (60, 53, True), (0, 5, False), (2, 1, False), (39, 79, False)],
)
def test_check_complete_tolerance(declared: int, decoded: int, fails: bool) -> None:
    cfg = DecodeConfig(max_shortfall_frac=0.1)
    if fails:
        with pytest.raises(VideoDecodeError):
            check_complete("x.avi", declared, decoded, cfg)
    else:
        check_complete("x.avi", declared, decoded, cfg)
    check_complete("x.avi", declared, decoded, DecodeConfig(max_shortfall_frac=1.0))  # 1: never
