"""One video path -> a :class:`HarvestOutcome`: hashed, skipped if done, harvested, or a failure
record that names the file and the cause.

It never raises for bad input: a broken file becomes a ``failed`` VideoRecord. Only errors
that may pass on a retry are raised (``TransientIOError``), so an orchestrator can retry
exactly those.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from trackemb import fsnames
from trackemb.config import HarvestConfig
from trackemb.errors import TransientIOError, VideoDecodeError
from trackemb.tracking.files import (
    content_sha,
    mp4_truncation,
    os_error_kind,
    probe_file,
    retry_transient,
    unreadable_key,
)
from trackemb.tracking.harvest import harvest_video
from trackemb.tracking.results import VideoHarvest, VideoRecord

log = logging.getLogger(__name__)


@dataclass
class HarvestOutcome:
    """``duplicate``: same content as ``duplicate_of``, harvested once under that path (harvest/ledger.py)."""

    status: Literal["done", "failed", "skipped", "duplicate"]
    path: str
    sha: str
    harvest: VideoHarvest | None = None
    record: VideoRecord | None = None
    duplicate_of: str = ""


def failure_record(path: str | Path, sha: str, kind: str, cause: str, seconds: float = 0.0) -> VideoRecord:
    return VideoRecord(
        sha=sha,
        path=str(path),
        status="failed",
        error=f"{fsnames.display(path)}: {cause}",
        error_kind=kind,
        seconds=seconds,
    )


def harvest_one(path: str | Path, cfg: HarvestConfig, done: set[str] | None = None) -> HarvestOutcome:
    """Hash, skip if done, else harvest one video; bad input becomes a failed outcome.

    Args:
        path: the video file.
        cfg: harvest settings.
        done: content hashes already stored; a match is skipped without decoding.

    Raises:
        TransientIOError: a retryable I/O error (the caller may retry the call).
    """
    path = Path(path)
    start = time.perf_counter()

    def failed(sha: str, kind: str, cause: str) -> HarvestOutcome:
        rec = failure_record(path, sha, kind, cause, round(time.perf_counter() - start, 3))
        return HarvestOutcome("failed", str(path), sha, record=rec)

    problem = retry_transient(lambda: probe_file(path), path)
    if problem is not None:
        # No content to hash (and all empty files share one hash): key the error by path.
        return failed(unreadable_key(path), *problem)
    try:
        sha = retry_transient(lambda: content_sha(path), path)
    except OSError as exc:
        return failed(unreadable_key(path), *os_error_kind(exc))
    if done is not None and sha in done:
        return HarvestOutcome("skipped", str(path), sha)
    try:
        truncated = retry_transient(lambda: mp4_truncation(path), path)
        if truncated:
            return failed(sha, "truncated", truncated)
        # Native decoders crash on non-UTF-8 names: they read a UTF-8 alias of the file.
        with fsnames.decodable(path) as readable:
            harvest = retry_transient(lambda: harvest_video(readable, cfg, sha=sha), path)
        harvest.video = replace(harvest.video, path=str(path))
    except TransientIOError:
        raise  # still failing after the retries here: the orchestrator retries the whole task
    except VideoDecodeError as exc:
        return failed(sha, exc.kind, exc.cause)
    except OSError as exc:
        return failed(sha, *os_error_kind(exc))
    except MemoryError:
        return failed(sha, "out_of_memory", "ran out of memory while decoding")
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop a run; keep the cause for the user
        log.exception("unexpected error harvesting %s", fsnames.display(path))
        return failed(sha, "internal_error", f"{type(exc).__name__}: {exc}")
    return HarvestOutcome("done", str(path), sha, harvest=harvest, record=harvest.video)
