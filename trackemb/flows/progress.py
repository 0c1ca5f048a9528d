"""Progress reporting that crosses the Prefect boundary without becoming a flow parameter.

Library functions take an explicit ``progress`` callback. Flows cannot receive callables
as parameters (they are stored as JSON by the Prefect API), so the CLI sets a reporter for
the duration of a call (:func:`reporting`) and a flow's task passes ``reporter(stage)``
down to the library call. The reporter lives in a context variable, not in module state:
Prefect copies the caller's context into the flow run and its task threads, and nothing
leaks past the ``with`` block. With no reporter set (deployments, workers) the callbacks
are None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

Reporter = Callable[[str, int, int, dict[str, Any]], None]
_current: ContextVar[Reporter | None] = ContextVar("trackemb_progress_reporter", default=None)


@contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Send every stage's progress to ``reporter`` (e.g. a rich progress bar) inside the block."""
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)


def reporter(stage: str) -> Callable[[int, int, dict[str, Any]], None] | None:
    """A ``(done, total, info)`` callback for ``stage``, or None when nothing listens."""
    current = _current.get()
    if current is None:
        return None

    def report(done: int, total: int, info: dict[str, Any] | None = None) -> None:
        current(stage, done, total, info or {})

    return report
