"""Exceptions that name the input and the cause, so a user can fix it without a traceback."""

from __future__ import annotations


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
