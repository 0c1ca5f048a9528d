"""Exceptions that name the input and the cause, so a user can fix it without a traceback."""

from __future__ import annotations

from enum import StrEnum


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
    UNREADABLE = "unreadable"
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
