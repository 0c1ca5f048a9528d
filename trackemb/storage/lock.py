"""The single-writer lock of a PatchStore: ``flock`` on ``<store>/writer.lock``.

LMDB serialises write transactions itself, but trackemb allows one *writer process* per
store (or per shard) so that map growth, triplet rebuilds and re-harvests never interleave.
``flock`` is released by the kernel when the holder dies, so a kill -9 never leaves a
stale lock; the holder's pid, host and start time are written into the file only so that
the error shown to a second writer can name who is holding it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trackemb.errors import StoreError, StoreLockedError

log = logging.getLogger(__name__)

LOCK_FILE = "writer.lock"
_POLL_S = 0.05


class WriterLock:
    """Exclusive, process-level writer lock on one store directory.

    Args:
        store_dir: the store (or shard) directory; the lock file lives inside it.
    """

    def __init__(self, store_dir: str | Path) -> None:
        self.path = Path(store_dir) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout_s: float = 0.0) -> None:
        """Take the lock, waiting up to ``timeout_s`` seconds for the current holder.

        Raises:
            StoreLockedError: still held by another writer after ``timeout_s``; names the holder.
        """
        if self._fd is not None:
            return
        # O_CLOEXEC: a subprocess we exec must not inherit (and silently keep) the lock.
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(
                f"{self.path}: cannot create the writer lock ({exc}); is the store writable?"
            ) from exc
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    os.close(fd)
                    raise StoreLockedError(self._locked_message(timeout_s)) from None
                time.sleep(min(_POLL_S, remaining))
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        log.debug("took writer lock %s", self.path)

    def release(self) -> None:
        """Give the lock back (idempotent); the holder record is cleared first."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def holder(self) -> dict[str, Any] | None:
        """The current holder's ``{"pid", "host", "since"}``, or None if unknown."""
        # The holder writes its record right after taking the lock; retry briefly if we race it.
        for _ in range(5):
            try:
                text = self.path.read_text()
            except OSError:
                return None
            if text.strip():
                try:
                    return json.loads(text)
                except ValueError:
                    pass
            time.sleep(0.02)
        return None

    def _locked_message(self, timeout_s: float) -> str:
        who = self.holder()
        if who is None:
            holder = "an unknown process"
        else:
            holder = f"pid {who.get('pid')} on {who.get('host')} (since {who.get('since')})"
        waited = f" after waiting {timeout_s:g} s" if timeout_s > 0 else ""
        return (
            f"{self.path.parent}: the store is locked by another writer, {holder}{waited}; wait for it to "
            "finish, pass a longer lock timeout (--lock-timeout-s), or give each worker its own shard"
        )
