"""Harvest one video into a store outcome, turning bad input into a readable error record.

This is the plain-Python glue between ``tracking`` (video -> records) and ``storage``
(records -> LMDB) that both the CLI and the Prefect flows call. It never raises for bad
input: a broken file becomes a ``failed`` VideoRecord naming the file and the cause.
Only errors that may pass on a retry (flaky network mounts, busy files) are raised, as
``TransientIOError``, so an orchestrator can retry exactly those.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trackemb.config import HarvestConfig
from trackemb.errors import TrackembError, VideoDecodeError
from trackemb.storage.records import VideoHarvest, VideoRecord

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp"}
)
# errno values that a retry can fix (network file systems, files still being written).
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ESTALE, errno.EBUSY})


class TransientIOError(TrackembError):
    """An I/O error worth retrying (EIO, EAGAIN, ETIMEDOUT, ESTALE, EBUSY)."""


@dataclass
class HarvestOutcome:
    status: Literal["done", "failed", "skipped"]
    path: str
    sha: str
    harvest: VideoHarvest | None = None
    record: VideoRecord | None = None

    @property
    def pairs(self) -> int:
        return self.harvest.video.n_pairs if self.harvest else 0


def find_videos(root: str | Path, pattern: str = "**/*") -> list[Path]:
    """Video files under ``root`` (recursive glob), sorted; broken symlinks are kept so they get an error record.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    root = Path(root)
    if root.is_file() or root.is_symlink() and not root.is_dir():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such video folder")
    found = [
        p
        for p in root.glob(pattern)
        if p.suffix.lower() in VIDEO_EXTENSIONS and (p.is_symlink() or p.is_file())
    ]
    return sorted(found)


def unreadable_key(path: str | Path) -> str:
    """Key for a file whose content cannot be hashed: derived from its absolute path instead."""
    return "path-" + hashlib.sha256(str(Path(path).absolute()).encode()).hexdigest()[:40]


def failure_record(path: str | Path, sha: str, kind: str, cause: str, seconds: float = 0.0) -> VideoRecord:
    return VideoRecord(
        sha=sha, path=str(path), status="failed", error=f"{path}: {cause}", error_kind=kind, seconds=seconds
    )


def _os_error_kind(exc: OSError) -> tuple[str, str]:
    if isinstance(exc, PermissionError):
        return "permission_denied", "permission denied (check the file's read permission)"
    if isinstance(exc, FileNotFoundError):
        return "missing_file", "file does not exist (a broken symlink, or removed while running)"
    return "io_error", f"I/O error: {exc.strerror or exc}"


def harvest_one(path: str | Path, cfg: HarvestConfig, done: set[str] | None = None) -> HarvestOutcome:
    """Hash, skip if done, else harvest one video; bad input becomes a failed outcome.

    Args:
        path: the video file.
        cfg: harvest settings.
        done: content hashes already stored; a match is skipped without decoding.

    Raises:
        TransientIOError: a retryable I/O error (the caller may retry the call).
    """
    from trackemb.tracking.decode import video_sha
    from trackemb.tracking.harvest import harvest_video

    path = Path(path)
    start = time.perf_counter()
    try:
        sha = video_sha(path)
    except OSError as exc:
        if exc.errno in TRANSIENT_ERRNOS:
            raise TransientIOError(f"{path}: {exc}") from exc
        kind, cause = _os_error_kind(exc)
        return HarvestOutcome(
            "failed",
            str(path),
            unreadable_key(path),
            record=failure_record(path, unreadable_key(path), kind, cause),
        )
    if done is not None and sha in done:
        return HarvestOutcome("skipped", str(path), sha)
    try:
        harvest = harvest_video(path, cfg, sha=sha)
    except VideoDecodeError as exc:
        seconds = time.perf_counter() - start
        return HarvestOutcome(
            "failed", str(path), sha, record=failure_record(path, sha, exc.kind, exc.cause, seconds)
        )
    except OSError as exc:
        if exc.errno in TRANSIENT_ERRNOS:
            raise TransientIOError(f"{path}: {exc}") from exc
        kind, cause = _os_error_kind(exc)
        return HarvestOutcome("failed", str(path), sha, record=failure_record(path, sha, kind, cause))
    except MemoryError:
        return HarvestOutcome(
            "failed",
            str(path),
            sha,
            record=failure_record(path, sha, "out_of_memory", "ran out of memory while decoding"),
        )
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop a run; keep the cause for the user
        log.exception("unexpected error harvesting %s", path)
        return HarvestOutcome(
            "failed",
            str(path),
            sha,
            record=failure_record(path, sha, "internal_error", f"{type(exc).__name__}: {exc}"),
        )
    return HarvestOutcome("done", str(path), sha, harvest=harvest, record=harvest.video)


def file_age_s(path: str | Path) -> float:
    """Seconds since the file last changed (a file still being copied is young)."""
    try:
        return time.time() - os.lstat(path).st_mtime
    except OSError:
        return float("inf")
