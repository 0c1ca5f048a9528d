"""A cooperative stop request for long loops: a signal sets it, the loop checks it once per step.

``Ctrl-C`` or ``SIGTERM`` during training should end the run at the next step boundary
with a checkpoint, not with a traceback from wherever the signal landed. A second signal
falls back to the default handling (an immediate stop) for a run that does not react.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

_event = threading.Event()
_signum: int | None = None


def request(signum: int | None = None) -> None:
    """Ask running loops to stop after their current step (``signum`` is remembered for the exit code)."""
    global _signum
    _signum = signum if _signum is None else _signum
    _event.set()


def requested() -> bool:
    """Whether a stop was requested; loops call this once per step."""
    return _event.is_set()


def stop_signal() -> int | None:
    """The signal that asked for the stop, if one did."""
    return _signum if _event.is_set() else None


def clear() -> None:
    global _signum
    _signum = None
    _event.clear()


def ignore_interrupts(worker_id: int | None = None) -> None:
    """``worker_init_fn`` for child processes: leave Ctrl-C to the parent, which stops cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _handler(signum: int, frame: FrameType | None) -> None:
    if _event.is_set():  # second signal: stop now, the default way
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    request(signum)
    log.warning(
        "%s received: stopping after the current step and saving a checkpoint (send it again to stop at once)",
        signal.Signals(signum).name,
    )


@contextmanager
def on_signals(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Turn ``signals`` into a stop request while the block runs (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # DataLoader workers come from multiprocessing's forkserver. Started while SIGINT is ignored,
    # the forkserver and every worker it forks ignore a terminal's Ctrl-C from birth (a worker
    # hit while still importing printed a KeyboardInterrupt traceback); the parent stops them.
    if "forkserver" in multiprocessing.get_all_start_methods():
        ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, ignored)
    previous = {s: signal.signal(s, _handler) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
