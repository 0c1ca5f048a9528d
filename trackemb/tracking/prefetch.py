"""Run an iterator (and a per-item function) ahead of its consumer in a background thread.

Why: decoding a frame (FFmpeg inside OpenCV) and the grayscale downscale release the GIL,
so a reader thread overlaps them with motion discovery and tracking on another core; the
harvest then runs at the speed of its slower half instead of the sum of both. Items arrive
in order and unchanged, so the harvest's output does not depend on the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")

_DONE = object()


class Prefetch(Generic[T, U]):
    """Iterate ``fn(item)`` for each item of ``source``, computed up to ``depth`` items ahead.

    An exception raised by ``source`` or ``fn`` is re-raised in the consumer at the position
    where it happened. Leaving the loop early (break, exception) stops the thread and closes
    ``source`` from that thread, at the latest when the consumer's iterator is closed.
    """

    def __init__(self, source: Iterable[T], fn: Callable[[T], U], depth: int = 4) -> None:
        self._source, self._fn = source, fn
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trackemb-prefetch", daemon=True)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        it = iter(self._source)
        try:
            for item in it:
                if not self._put((self._fn(item), None)):
                    return
            self._put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((_DONE, exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # a generator's finally blocks (reader.close()) run in its own thread

    def __iter__(self) -> Iterator[U]:
        self._thread.start()
        try:
            while True:
                value, exc = self._queue.get()  # type: ignore[misc]
                if exc is not None:
                    raise exc
                if value is _DONE:
                    return
                yield value  # type: ignore[misc]
        finally:
            self._stop.set()
            self._thread.join()
