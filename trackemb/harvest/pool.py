"""Harvest videos in worker processes: every core, and a native crash costs one video, not the run.

Why our own pool (measured and argued in the README's Performance section): the motion
discovery and tracking hold the GIL, so threads do not scale; ``concurrent.futures``'
process pool breaks as a whole (``BrokenProcessPool``) when one worker dies, losing every
video in flight; Dask is kept for clusters (``--dask-address``). Here each worker process
(spawned, so no inherited locks or LMDB handles) harvests one video at a time and sends
the outcome back; the caller stays the single store writer. When a worker dies of a
signal (a decoder's segfault, the OOM killer) its video, and only it, gets a ``crashed``
failure record naming the signal, and a fresh worker takes the next video.

Workers may be pinned to cores and limited to ``threads`` OpenCV threads; decoding is
already one thread per reader (``tracking/decode.py``), run one frame ahead of the analysis.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections.abc import Collection, Sequence
from concurrent.futures import Future
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from trackemb.config import HarvestConfig
from trackemb.tracking.files import unreadable_key
from trackemb.tracking.outcome import HarvestOutcome, failure_record, harvest_one

log = logging.getLogger(__name__)

# Test-only hook: a worker given a path containing this variable's value kills itself with
# SIGSEGV before harvesting it, standing in for a decoder that crashes on a malformed file.
CRASH_HOOK_ENV = "TRACKEMB_TEST_SEGFAULT_ON"
CRASH_RETRIES = 1  # a crashed video is tried again on the next run, once


def default_workers() -> int:
    """All the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _limit_threads(core: int | None, threads: int | None) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    if threads is not None:
        import cv2

        cv2.setNumThreads(threads)


def _die_with_parent(parent: int) -> None:
    """A harvest killed with -9 must not leave workers decoding for nobody (Linux: PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            return
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(1)


def _worker(
    conn: Connection, cfg: HarvestConfig, skip: set[str], core: int | None, threads: int | None, parent: int
) -> None:
    _die_with_parent(parent)
    _limit_threads(core, threads)
    crash_on = os.environ.get(CRASH_HOOK_ENV)
    while True:
        try:
            path = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if path is None:
            return
        if crash_on and crash_on in path:
            os.kill(os.getpid(), signal.SIGSEGV)
        try:
            reply: tuple[str, Any] = ("ok", harvest_one(path, cfg, skip))
        except BaseException as exc:  # noqa: BLE001 - sent to the caller, which decides
            reply = ("raise", exc)
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - an exception that does not pickle
            conn.send(("raise", RuntimeError(f"{type(exc).__name__}: {exc}")))


def _exit_cause(exitcode: int | None) -> str:
    if exitcode is None or exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    return f"killed by {name} (signal {-exitcode})" + (
        "; out of memory?" if -exitcode == signal.SIGKILL else ""
    )


def crash_outcome(path: str, exitcode: int | None, how: str = "") -> HarvestOutcome:
    """The failed outcome of a video whose worker process died (keyed by content hash when readable).

    Args:
        path: the video file.
        exitcode: the worker's ``Process.exitcode`` (negative: the signal that killed it).
        how: what happened, when the exit code is not known (e.g. Dask gave up on the task).
    """
    from trackemb.tracking.files import video_sha

    try:
        sha = video_sha(path)
    except Exception:  # noqa: BLE001 - whatever made it crash may make it unreadable too
        sha = unreadable_key(path)
    cause = f"the harvest worker process crashed on this file ({how or _exit_cause(exitcode)}): a decoder bug or a malformed file"
    rec = failure_record(path, sha, "crashed", cause)
    return HarvestOutcome("failed", path, sha, record=rec)


def count_crash(outcome: HarvestOutcome, crashes_before: int) -> HarvestOutcome:
    """Add this crash to the video's count; say whether the next run retries it."""
    rec = outcome.record
    if rec is None or rec.error_kind != "crashed":
        return outcome
    n = crashes_before + 1
    more = (
        "the next run tries it once more" if n <= CRASH_RETRIES else f"crashed {n} times: not retried again"
    )
    outcome.record = replace(rec, crashes=n, error=f"{rec.error}; {more}")
    return outcome


class HarvestPool:
    """``workers`` spawned processes harvesting one video each at a time; submit from any thread.

    Args:
        workers: number of worker processes.
        cfg: harvest settings.
        skip: content hashes to skip without decoding (already done, or crashed too often).
        cores: pin worker ``i`` to core ``cores[i % len(cores)]`` (benchmarks); None: unpinned.
        threads: OpenCV threads per worker; None: OpenCV's default.
    """

    def __init__(
        self,
        workers: int,
        cfg: HarvestConfig,
        skip: Collection[str] = (),
        *,
        cores: Sequence[int] | None = None,
        threads: int | None = 1,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._ctx = multiprocessing.get_context("spawn")
        self._args = (cfg, set(skip))
        self._cores, self._threads = cores, threads
        self._tasks: queue.SimpleQueue[tuple[str, Future[HarvestOutcome]] | None] = queue.SimpleQueue()
        self._slots = [threading.Thread(target=self._serve, args=(i,), daemon=True) for i in range(workers)]
        for slot in self._slots:
            slot.start()

    def submit(self, path: str) -> Future[HarvestOutcome]:
        future: Future[HarvestOutcome] = Future()
        self._tasks.put((str(path), future))
        return future

    def run(self, path: str) -> HarvestOutcome:
        """Harvest one video in a worker (blocks). Raises what ``harvest_one`` raises (TransientIOError)."""
        return self.submit(path).result()

    def _start(self, slot: int) -> tuple[Any, Connection]:
        core = None if not self._cores else self._cores[slot % len(self._cores)]
        mine, theirs = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker,
            args=(theirs, *self._args, core, self._threads, os.getpid()),
            name=f"trackemb-harvest-{slot}",
            daemon=True,
        )
        proc.start()
        theirs.close()
        return proc, mine

    def _serve(self, slot: int) -> None:
        worker: tuple[Any, Connection] | None = None
        while (item := self._tasks.get()) is not None:
            path, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                worker = worker or self._start(slot)
                proc, conn = worker
                try:
                    conn.send(path)
                    kind, value = conn.recv()
                except (EOFError, OSError):
                    proc.join()
                    log.warning("harvest worker %d died on %s (exit code %s)", proc.pid, path, proc.exitcode)
                    conn.close()
                    worker = None
                    future.set_result(crash_outcome(path, proc.exitcode))
                    continue
            except BaseException as exc:  # noqa: BLE001 - e.g. a worker that cannot start: never leave a future hanging
                future.set_exception(exc)
                continue
            if kind == "ok":
                future.set_result(value)
            else:
                future.set_exception(value)
        if worker is not None:
            proc, conn = worker
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
            conn.close()

    def close(self) -> None:
        """Let each worker finish its video, then stop them all (idempotent)."""
        for _ in self._slots:
            self._tasks.put(None)
        for slot in self._slots:
            slot.join()
        self._slots = []

    def __enter__(self) -> HarvestPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
