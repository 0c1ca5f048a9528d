"""Frame readers on real files: synthetic clips, a truncated clip, and inputs that are not videos."""

from __future__ import annotations

import hashlib
import os
import wave
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_synthetic_video

from trackemb.config import DecodeConfig
from trackemb.errors import VideoDecodeError
from trackemb.tracking.decode import (
    DecordReader,
    OpenCVReader,
    open_video,
    to_work_gray,
)
from trackemb.tracking.files import video_sha
from trackemb.tracking.stream import iter_frames

decord = pytest.importorskip("decord")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decode")
    out = {}
    for ext in (".mp4", ".avi"):
        out[ext] = root / f"clip{ext}"
        write_synthetic_video(out[ext], n_frames=24, n_objects=1, seed=3)
    return out


@pytest.fixture(scope="module")
def truncated(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MJPG AVI cut inside frame 18's JPEG: decord fails on a later chunk, OpenCV reads up to it."""
    data = clips[".avi"].read_bytes()
    soi = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    path = tmp_path_factory.mktemp("trunc") / "truncated.avi"
    path.write_bytes(data[: soi[18] + 64])
    return path


def _frames(path: Path, backend: str, **kw: int) -> list[tuple[int, np.ndarray]]:
    return list(iter_frames(path, DecodeConfig(backend=backend, **kw)))


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_backends_agree(clips: dict[str, Path], ext: str) -> None:
    by_decord, by_cv = _frames(clips[ext], "decord"), _frames(clips[ext], "opencv")
    assert [i for i, _ in by_decord] == [i for i, _ in by_cv] == list(range(24))
    for (_, a), (_, b) in zip(by_decord, by_cv, strict=True):
        assert a.shape == b.shape == (240, 320, 3) and a.dtype == np.uint8
        # Same ffmpeg decoder underneath; a channel-order bug would show as a large difference.
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0


@pytest.mark.parametrize("backend", ["decord", "opencv"])
def test_stride_and_max_frames(clips: dict[str, Path], backend: str) -> None:
    got = [i for i, _ in _frames(clips[".mp4"], backend, frame_stride=5, max_frames=17)]
    assert got == [0, 5, 10, 15]


def test_auto_prefers_opencv(clips: dict[str, Path]) -> None:
    reader = open_video(clips[".mp4"], DecodeConfig())
    assert isinstance(reader, OpenCVReader)
    assert (reader.info.frames, reader.info.width, reader.info.height) == (24, 320, 240)
    assert reader.info.fps == pytest.approx(15.0)


def test_auto_order_decord_first(clips: dict[str, Path]) -> None:
    reader = open_video(clips[".mp4"], DecodeConfig(), order=("decord", "opencv"))
    assert isinstance(reader, DecordReader)
    assert (reader.info.frames, reader.info.width, reader.info.height) == (24, 320, 240)


def test_mid_file_fallback_continues_without_duplicates(truncated: Path) -> None:
    cv_frames = _frames(truncated, "opencv")
    stream = iter_frames(truncated, DecodeConfig(backend="auto"), order=("decord", "opencv"))
    auto_frames = list(stream)
    assert stream.backend == "decord+opencv"
    assert [i for i, _ in auto_frames] == [i for i, _ in cv_frames] == list(range(len(cv_frames)))
    assert 16 <= len(cv_frames) <= 18
    for (_, a), (_, b) in zip(auto_frames, cv_frames, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0
    # OpenCV first (the default) reads the same frames itself, without switching.
    default = iter_frames(truncated, DecodeConfig())
    assert [i for i, _ in default] == [i for i, _ in cv_frames] and default.backend == "opencv"


def test_forced_decord_reports_mid_file_failure(truncated: Path) -> None:
    with pytest.raises(VideoDecodeError) as err:
        _frames(truncated, "decord")
    assert err.value.kind == "decode_error" and "truncated.avi" in str(err.value)


def test_opencv_reader_resumes_at_index(clips: dict[str, Path]) -> None:
    full = _frames(clips[".avi"], "opencv")
    resumed = list(OpenCVReader(clips[".avi"], DecodeConfig(), start=10))
    assert [i for i, _ in resumed] == list(range(10, 24))
    assert np.array_equal(resumed[0][1], full[10][1])


def _wav(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.sin(np.arange(8000) * 0.1) * 1000).astype(np.int16).tobytes())


@pytest.mark.parametrize("backend", ["auto", "decord", "opencv"])
@pytest.mark.parametrize(
    ("name", "make", "kind"),
    [
        ("missing.mp4", None, "missing_file"),
        ("empty.mp4", lambda p: p.write_bytes(b""), "empty_file"),
        ("notes.mp4", lambda p: p.write_text("this is a text file, not a video\n" * 20), "not_a_video"),
        ("audio.wav", _wav, "no_video_stream"),
        ("folder.mp4", lambda p: p.mkdir(), "not_a_file"),
    ],
)
def test_decode_errors_name_the_cause(tmp_path: Path, backend: str, name: str, make, kind: str) -> None:
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(VideoDecodeError) as err:
        _frames(path, backend)
    assert err.value.kind == kind
    assert err.value.path == str(path) and err.value.cause


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without read permission")
def test_unreadable_file(clips: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "locked.mp4"
    path.write_bytes(clips[".mp4"].read_bytes())
    path.chmod(0)
    with pytest.raises(VideoDecodeError) as err:
        open_video(path, DecodeConfig())
    assert err.value.kind == "permission_denied"


def test_to_work_gray_scales_long_side() -> None:
    bgr = np.random.default_rng(0).integers(0, 256, (576, 768, 3), dtype=np.uint8)
    gray, scale = to_work_gray(bgr, 320)
    assert gray.shape == (240, 320) and gray.dtype == np.uint8
    assert scale == pytest.approx(320 / 768)
    small, s1 = to_work_gray(bgr[:100, :120], 320)
    assert small.shape == (100, 120) and s1 == 1.0


def test_video_sha_streams_whole_file(clips: dict[str, Path]) -> None:
    data = clips[".mp4"].read_bytes()
    assert video_sha(clips[".mp4"], chunk_bytes=1000) == hashlib.sha256(data).hexdigest()
    with pytest.raises(VideoDecodeError) as err:
        video_sha(clips[".mp4"].with_name("nope.mp4"))
    assert err.value.kind == "missing_file"
