"""The file probe: everything about one video path before (and besides) decoding it.

One route for a path: :func:`probe_file` says why it cannot be read as a video file at all
(missing, broken or looping symlink, not a regular file, permission, empty), with one set of
error kinds (:class:`trackemb.errors.ErrorKind`); :func:`content_sha` keys it by content;
:func:`mp4_truncation` catches an MP4/MOV cut short before a decoder half-reads it. Errors a
retry may fix (flaky network mounts, busy files) are raised as ``TransientIOError``, so an
orchestrator can retry exactly those. The frame readers (decode.py) call :func:`check_file`,
which raises the same kinds as a :class:`VideoDecodeError`.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from trackemb import fsnames
from trackemb.errors import TransientIOError, VideoDecodeError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp"}
)
# errno values that a retry can fix (network file systems, files still being written).
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ESTALE, errno.EBUSY})
# Waits before each in-process retry of a transient read; the orchestrator then retries the task.
RETRY_DELAYS_S: tuple[float, ...] = (0.2, 1.0)
T = TypeVar("T")


def retry_transient(fn: Callable[[], T], path: str | Path) -> T:
    """``fn()``, retried after each of :data:`RETRY_DELAYS_S` while it fails with a transient I/O error.

    Raises:
        TransientIOError: still failing after the retries (an orchestrator may retry later).
        OSError: a non-transient I/O error, at once.
    """
    for delay in (*RETRY_DELAYS_S, None):
        try:
            return fn()
        except (OSError, TransientIOError) as exc:
            if isinstance(exc, OSError) and exc.errno not in TRANSIENT_ERRNOS:
                raise
            if delay is None:
                if isinstance(exc, TransientIOError):
                    raise
                raise TransientIOError(f"{fsnames.display(path)}: {exc}") from exc
            log.warning("%s: transient I/O error (%s); retrying in %.1f s", fsnames.display(path), exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def content_sha(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of the file's bytes (the video key); OSErrors propagate so transient ones can be retried."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


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


def os_error_kind(exc: OSError) -> tuple[str, str]:
    if isinstance(exc, PermissionError):
        return (
            "permission_denied",
            "permission denied: this user cannot read the file (check its mode and owner)",
        )
    if isinstance(exc, FileNotFoundError):
        return "missing_file", "file does not exist (removed while running?)"
    if exc.errno == errno.ELOOP:
        return "symlink_loop", "symbolic link loop (the link points back to itself)"
    if exc.errno == errno.EISDIR:
        return "not_a_file", "is a directory, not a video file"
    return "io_error", f"I/O error: {exc.strerror or exc}"


_FILE_TYPES = {
    stat.S_IFDIR: "directory",
    stat.S_IFIFO: "named pipe (FIFO)",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def probe_file(path: str | Path) -> tuple[str, str] | None:
    """Why ``path`` cannot be read as a video file at all, as ``(error_kind, cause)``; None if it can.

    Checks what no decoder should be asked about: missing files, broken or looping symlinks,
    things that are not regular files (never opened: a FIFO would block the reader forever),
    permission, and empty files.

    Raises:
        TransientIOError: a retryable I/O error (EIO, ESTALE, ...).
    """
    p = Path(path)
    try:
        st = os.stat(p)  # follows symlinks
    except FileNotFoundError:
        if p.is_symlink():
            return "broken_symlink", f"broken symlink: its target {os.readlink(p)!r} does not exist"
        return "missing_file", "file does not exist (removed while running?)"
    except OSError as exc:
        if exc.errno in TRANSIENT_ERRNOS:
            raise TransientIOError(f"{p}: {exc}") from exc
        return os_error_kind(exc)
    if not stat.S_ISREG(st.st_mode):
        what = _FILE_TYPES.get(stat.S_IFMT(st.st_mode), "special file")
        return "not_a_file", f"not a regular file but a {what}; only regular files are read"
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        if exc.errno in TRANSIENT_ERRNOS:
            raise TransientIOError(f"{p}: {exc}") from exc
        return os_error_kind(exc)
    if st.st_size == 0:
        return "empty_file", "file is empty (0 bytes)"
    return None


# ISO base media files (MP4, MOV, M4V, 3GP) start with an 'ftyp' box; their top-level boxes
# tile the file exactly, so a cut file shows up as a box running past the end or a missing index.
_ISO_MAX_BOXES = 10_000


def mp4_truncation(path: str | Path) -> str | None:
    """The cause if ``path`` is an ISO-BMFF (MP4/MOV) file cut short, else None (also for other formats).

    Call it on a regular file (see :func:`probe_file`). Only box headers are read, so this is
    cheap even for large files. Decoders often decode a truncated file's first frames without
    complaint; this makes the cut visible. Trailing bytes that are no box are tolerated.
    """
    size = os.path.getsize(path)
    seen: set[str] = set()
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8 or head[4:8] != b"ftyp":
            return None
        offset = 0
        for _ in range(_ISO_MAX_BOXES):
            if offset >= size:
                break
            fh.seek(offset)
            header = fh.read(16)
            box_type = header[4:8]
            if len(box_type) < 4 or not all(32 <= b < 127 for b in box_type):
                break  # trailing bytes that are no box (padding): the index check and the decoder decide
            box_size = int.from_bytes(header[:4], "big")
            if box_size == 1 and len(header) == 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:  # the last box runs to the end of the file
                box_size = size - offset
            if box_size < 8:
                break
            name = box_type.decode("ascii")
            seen.add(name)
            if offset + box_size > size:
                return (
                    f"truncated MP4: the '{name}' box at byte {offset} declares {box_size} bytes but the file "
                    f"ends {offset + box_size - size} bytes short (an interrupted copy, download or recording?)"
                )
            offset += box_size
    if "moov" not in seen:
        return "truncated MP4: no 'moov' index box (the file was cut before its end, or the recording never finished)"
    return None


def check_file(path: str | Path) -> None:
    """Raise for inputs no reader could open, with :func:`probe_file`'s kind and cause.

    Raises:
        VideoDecodeError: missing, a broken link, not a regular file, unreadable or empty.
        TransientIOError: a retryable I/O error.
    """
    problem = probe_file(path)
    if problem is not None:
        raise VideoDecodeError(str(path), problem[1], problem[0])


def video_sha(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """:func:`content_sha` for a readable video file.

    Raises:
        VideoDecodeError: the file is missing or unreadable (with :func:`probe_file`'s kind).
    """
    check_file(path)
    try:
        return content_sha(path, chunk_bytes)
    except OSError as exc:
        kind, cause = os_error_kind(exc)
        raise VideoDecodeError(str(path), cause, kind) from exc
