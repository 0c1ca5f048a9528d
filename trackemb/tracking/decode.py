"""Frame readers: OpenCV first, decord as a per-file (and mid-file) fallback (see stream.py).

Every reader yields ``(frame_index, bgr)`` with ``bgr: (H, W, 3) uint8`` at full source
resolution, reading sequentially (no per-frame random seeks), honouring ``frame_stride`` and
``max_frames`` from :class:`~trackemb.config.DecodeConfig`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from trackemb.config import DecodeConfig
from trackemb.errors import VideoDecodeError
from trackemb.tracking.files import check_file

log = logging.getLogger(__name__)

# Container signatures, to tell "a media file without video" from "not a media file at all"
# when a reader cannot open it (OpenCV gives no reason).
_MEDIA_MAGIC = (b"ftyp", b"RIFF", b"\x1a\x45\xdf\xa3", b"OggS", b"ID3", b"fLaC", b"\x00\x00\x01\xba")


@dataclass(frozen=True)
class VideoInfo:
    """What a reader knows about a video before decoding it: ``frames`` is what the container
    declares (OpenCV; 0 when unknown, and often wrong) or what decord's packet index counted."""

    path: str
    frames: int
    fps: float
    width: int
    height: int
    backend: str  # "decord" | "opencv"


class FrameReader(Protocol):
    """One open video. Iterating yields ``(frame_index, bgr: (H, W, 3) uint8)`` in order;
    once it ends, ``reached`` is the index after the last frame the decoder delivered."""

    info: VideoInfo
    reached: int

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]: ...

    def close(self) -> None: ...


def _wanted_indices(info: VideoInfo, cfg: DecodeConfig, start: int) -> range:
    stop = info.frames if cfg.max_frames is None else min(info.frames, cfg.max_frames)
    first = start + (-start) % cfg.frame_stride  # next index on the stride grid
    return range(first, stop, cfg.frame_stride)


def _open_failure(path: str, cause: str) -> VideoDecodeError:
    if "video stream" in cause:
        return VideoDecodeError(path, "no video stream; is this audio-only?", "no_video_stream")
    with open(path, "rb") as fh:
        head = fh.read(12)
    if any(m in head for m in _MEDIA_MAGIC):
        return VideoDecodeError(
            path, f"media container without a decodable video stream ({cause})", "no_video_stream"
        )
    return VideoDecodeError(path, f"not a video file ({cause})", "not_a_video")


class DecordReader:
    """Sequential decord reader; frames are fetched with ``get_batch`` on chunks of indices."""

    def __init__(self, path: str | Path, cfg: DecodeConfig, *, start: int = 0, chunk: int = 16) -> None:
        import decord  # optional dependency: only needed when this backend is used

        self.path, self.cfg, self.start, self.chunk = str(path), cfg, start, chunk
        check_file(self.path)
        try:
            # One decoding thread: decord's threaded decoder has deadlocked under multiprocessing
            # (dmlc/decord#220), and harvest parallelism comes from one process per video anyway.
            self._vr = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=1)
            n = len(self._vr)
            h, w = self._vr[0].shape[:2] if n else (0, 0)
            self._vr.seek(0)
        except Exception as exc:  # decord raises RuntimeError or DECORDError without a stable class
            raise _open_failure(self.path, str(exc).strip().splitlines()[-1][:200]) from exc
        self.info = VideoInfo(self.path, n, float(self._vr.get_avg_fps()), int(w), int(h), "decord")
        self.reached = 0
        if n == 0:
            raise VideoDecodeError(self.path, "video stream has zero frames", "zero_frames")

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        wanted = list(_wanted_indices(self.info, self.cfg, self.start))
        for i in range(0, len(wanted), self.chunk):
            idx = wanted[i : i + self.chunk]
            batch = self._vr.get_batch(idx).asnumpy()  # (N, H, W, 3) RGB
            for j, rgb in zip(idx, batch, strict=True):
                yield j, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        # decord indexes every packet on open, so its length is a count, not the container's claim.
        self.reached = len(range(self.info.frames)[: self.cfg.max_frames])

    def close(self) -> None:
        self._vr = None


class OpenCVReader:
    """Sequential ``cv2.VideoCapture`` reader; skipped frames are grabbed, not decoded to BGR."""

    def __init__(self, path: str | Path, cfg: DecodeConfig, *, start: int = 0) -> None:
        self.path, self.cfg, self.start = str(path), cfg, start
        check_file(self.path)
        self._cap = cv2.VideoCapture(self.path)
        if not self._cap.isOpened():
            raise _open_failure(self.path, "OpenCV could not open it")
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        w, h = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        if w <= 0:
            raise VideoDecodeError(self.path, "video stream has zero frames", "zero_frames")
        self.info = VideoInfo(self.path, max(n, 0), fps, w, h, "opencv")  # n: declared, maybe wrong
        self.reached = 0  # frames the decoder delivered (set when iteration ends)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        # Read until the decoder stops: the container's frame count is a claim, not a stop sign
        # (an MPEG program stream may declare 1 frame, a spliced one half of its frames).
        # Grabbing from 0 rather than seeking: CAP_PROP_POS_FRAMES is not frame-exact for every
        # codec, and a wrong resume index would duplicate or drop frames after a fallback.
        # Frames off the stride grid are grabbed, not converted, so counting them is cheap.
        pos, stop, stride = 0, self.cfg.max_frames, self.cfg.frame_stride
        while (stop is None or pos < stop) and self._cap.grab():
            if pos >= self.start and pos % stride == 0:
                ok, bgr = self._cap.retrieve()
                if not ok:
                    break
                yield pos, bgr
            pos += 1
        self.reached = pos

    def close(self) -> None:
        self._cap.release()


READERS = {"decord": DecordReader, "opencv": OpenCVReader}

# Why OpenCV first: an open decord reader keeps ~0.6-1 core busy in its own threads even
# between reads (whatever num_threads, get_batch or next(); measured by bench/bench_harvest.py),
# which starves motion and tracking on the same cores: the harvest ran at 75 frames/s with
# decord and 170 with OpenCV, with byte-identical frames on the sample clips.
AUTO_ORDER: tuple[str, ...] = ("opencv", "decord")


def _open_first(path: str, cfg: DecodeConfig, order: tuple[str, ...], start: int) -> FrameReader:
    errors: dict[str, VideoDecodeError] = {}
    for name in order:
        try:
            return READERS[name](path, cfg, start=start)
        except ImportError:
            log.info("%s not installed; skipping it for %s", name, path)
        except VideoDecodeError as exc:
            log.info("%s cannot open %s (%s)", name, path, exc.cause)
            errors[name] = exc
    if not errors:
        raise VideoDecodeError(path, f"no frame reader installed (tried {', '.join(order)})", "no_reader")
    # decord's diagnosis names the cause (no video stream, bad header); OpenCV's never does.
    raise errors.get("decord", next(iter(errors.values()))) from None


def open_video(
    path: str | Path, cfg: DecodeConfig, *, start: int = 0, order: tuple[str, ...] | None = None
) -> FrameReader:
    """Open ``path`` with ``cfg.backend``; ``auto`` tries the readers in ``order`` (default
    :data:`AUTO_ORDER`) and uses the first that opens this file.

    Raises:
        VideoDecodeError: the file is missing, unreadable, empty, not a video, or has no frames.
    """
    if cfg.backend != "auto":
        return READERS[cfg.backend](path, cfg, start=start)
    check_file(path)
    return _open_first(str(path), cfg, order or AUTO_ORDER, start)


def to_work_gray(bgr: np.ndarray, long_side_px: int) -> tuple[np.ndarray, float]:
    """Downscale to the working resolution used for motion and tracking.

    Args:
        bgr: (H, W, 3) uint8 full-resolution frame.
        long_side_px: target long side; frames already smaller are not upscaled.

    Returns:
        ``(gray, scale)``: gray (h, w) uint8 and ``scale = work_px / full_px`` (<= 1).
    """
    h, w = bgr.shape[:2]
    scale = min(1.0, long_side_px / max(h, w))
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if scale < 1.0:
        size = (round(w * scale), round(h * scale))
        # Halving with pyrDown first is ~2x cheaper than one INTER_AREA resize by a
        # non-integer factor, and still low-passes before decimating.
        while gray.shape[1] >= 2 * size[0]:
            gray = cv2.pyrDown(gray)
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return gray, scale
