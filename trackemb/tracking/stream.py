"""A video's frame stream: reader fallback mid-file, and frames counted by decoding.

A container's declared frame count is a claim: MPEG program streams are often wrong about
it (OpenCV reports 1 frame for some, half the frames for a spliced one), and a file cut
short (an interrupted copy) still declares its full length. The stream therefore reads until
the decoder stops, and :func:`check_complete` compares the two counts afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from trackemb.config import DecodeConfig
from trackemb.errors import VideoDecodeError
from trackemb.tracking.decode import AUTO_ORDER, READERS, FrameReader, open_video

log = logging.getLogger(__name__)


class FrameStream:
    """A video's frames; with ``backend="auto"`` a reader that raises, or ends before its first
    frame, hands over to the next in ``order``, resuming at the first frame not yet yielded.
    ``backend`` names the reader(s) used, e.g. ``"decord+opencv"`` after a fallback.
    ``declared_frames`` is the first reader's claim; ``decoded_frames`` (set when the stream
    ends) counts every frame the decoders delivered, on the stride grid or not."""

    def __init__(self, path: str | Path, cfg: DecodeConfig, *, order: tuple[str, ...] | None = None) -> None:
        self.path, self.cfg = str(path), cfg
        self.order = order or AUTO_ORDER
        self.reader = open_video(path, cfg, order=self.order)
        self.info = self.reader.info
        self.backend = self.info.backend
        self.declared_frames, self.decoded_frames = self.info.frames, 0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        next_index, yielded = 0, False
        try:
            while True:
                try:
                    for idx, bgr in self.reader:
                        next_index, yielded = idx + 1, True
                        yield idx, bgr
                    failure: Exception | None = None
                except Exception as exc:
                    failure = exc
                if failure is None and yielded:
                    self.decoded_frames = max(self.reader.reached, next_index)
                    return
                reader = self._fallback(next_index, failure)
                if reader is None:
                    return  # the only reader ended before any frame: the caller sees zero frames
                self.reader.close()
                self.reader = reader
                self.backend = f"{self.backend}+{reader.info.backend}"
        finally:
            self.reader.close()

    def _fallback(self, next_index: int, failure: Exception | None) -> FrameReader | None:
        """The reader that continues at ``next_index``, or None; raises when nothing may take over."""
        current = self.reader.info.backend
        rest = [n for n in self.order if n not in self.backend.split("+")]
        if self.cfg.backend == "auto" and rest:
            why = "ended before its first frame" if failure is None else f"failed ({failure})"
            try:
                reader = READERS[rest[0]](self.path, self.cfg, start=next_index)
            except (ImportError, VideoDecodeError) as exc:
                log.info("%s cannot take over %s: %s", rest[0], self.path, exc)
            else:
                log.warning("%s %s on %s at frame %d; now %s", current, why, self.path, next_index, rest[0])
                return reader
        if failure is None:
            return None
        # A forced backend (or the last reader) reports the failure instead.
        cause = f"decoding failed at frame {next_index}: {str(failure).strip()[-200:]}"
        raise VideoDecodeError(self.path, cause, "decode_error") from failure


def iter_frames(path: str | Path, cfg: DecodeConfig, *, order: tuple[str, ...] | None = None) -> FrameStream:
    """Frames of ``path`` as ``(frame_index, bgr: (H, W, 3) uint8)``, with mid-file reader fallback.

    ``order`` overrides :data:`AUTO_ORDER` for ``backend="auto"`` (e.g. ``("decord", "opencv")``).
    """
    return FrameStream(path, cfg, order=order)


def check_complete(path: str | Path, declared: int, decoded: int, cfg: DecodeConfig) -> None:
    """Raise ``truncated`` when decoding ended far short of the declared frame count.

    Args:
        declared: frames the container declares (0: unknown, never a failure).
        decoded: frames the decoder delivered before it stopped.
        cfg: ``max_shortfall_frac`` is the tolerated shortfall; a ``max_frames`` cap that was
            reached means decoding stopped on purpose.
    """
    if declared <= 0 or (cfg.max_frames is not None and decoded >= cfg.max_frames):
        return
    missing = declared - decoded
    if missing > 1 and missing > cfg.max_shortfall_frac * declared:
        raise VideoDecodeError(
            str(path),
            f"decoding stopped after {decoded} of the {declared} frames the container declares "
            f"({100 * missing / declared:.0f} % missing): the file looks cut short (a copy still "
            f"running or interrupted?)",
            "truncated",
        )
