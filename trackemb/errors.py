"""Exceptions that name the input and the cause, so a user can fix it without a traceback."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorKind(StrEnum):
    """The stable ``error_kind`` labels of failed video records (the README lists the same set)."""

    EMPTY_FILE = "empty_file"
    TRUNCATED = "truncated"
    NOT_A_VIDEO = "not_a_video"
    NO_VIDEO_STREAM = "no_video_stream"
    ZERO_FRAMES = "zero_frames"
    DECODE_ERROR = "decode_error"
    NO_READER = "no_reader"
    PERMISSION_DENIED = "permission_denied"
    BROKEN_SYMLINK = "broken_symlink"
    SYMLINK_LOOP = "symlink_loop"
    NOT_A_FILE = "not_a_file"
    MISSING_FILE = "missing_file"
    IO_ERROR = "io_error"
    TRANSIENT_IO = "transient_io"
    OUT_OF_MEMORY = "out_of_memory"
    INTERNAL_ERROR = "internal_error"
    CRASHED = "crashed"


class TrackembError(Exception):
    """Base class for errors trackemb reports to users."""


class VideoDecodeError(TrackembError):
    """A video could not be decoded. ``kind`` is a short stable label stored in the error record."""

    def __init__(self, path: str, cause: str, kind: str = "decode_error") -> None:
        self.path = str(path)
        self.cause = cause
        self.kind = kind
        super().__init__(f"{self.path}: {cause}")


class StoreError(TrackembError):
    """The PatchStore is unusable as asked (wrong schema, wrong config, full disk, ...)."""


class StoreLockedError(StoreError):
    """Another process holds the store's single writer lock."""


class TrainingError(TrackembError):
    """Training cannot start or continue (empty store, mismatched checkpoint, non-finite loss)."""


class NegativeRuleError(TrainingError):
    """A mined negative breaks the rule: from the anchor's own track, or from its own video
    (group) without being a co-occurring track that stays apart from it."""


class ConfigError(TrackembError, ValueError):
    """A config file or override is invalid; the message names the source, the table and the key.

    Also a ValueError, as it was before it joined the TrackembError family."""


class TransientIOError(TrackembError):
    """An I/O error worth retrying (EIO, EAGAIN, ETIMEDOUT, ESTALE, EBUSY)."""


class MissingKeyError(StoreError, KeyError):
    """A record asked for by key is not in the store (a StoreError that is also a KeyError)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class HarvestFailedError(TrackembError, RuntimeError):
    """Raised at the end of a ``strict`` harvest in which some videos failed; carries the run summary."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}


class ModelCardError(TrackembError):
    """An export directory's model card (or a file it lists) is missing, invalid or tampered with."""


class ExportError(TrackembError):
    """A run cannot be exported, or an exported file does not reproduce the model."""


class ClusterError(TrackembError):
    """Embeddings cannot be clustered as asked (missing files, too few points, bad k)."""
