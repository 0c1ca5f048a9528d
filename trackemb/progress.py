"""Progress reporting that crosses the Prefect boundary without becoming a flow parameter.

Library functions take an explicit ``progress`` callback. Flows cannot receive callables
as parameters (they are stored as JSON by the Prefect API), so the CLI installs a
reporter here and a flow's task passes ``reporter(stage)`` down to the library call.
With no reporter installed (deployments, workers) the callbacks are no-ops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Reporter = Callable[[str, int, int, dict[str, Any]], None]
_lock = threading.Lock()
_reporter: Reporter | None = None


def install(reporter: Reporter | None) -> None:
    """Set (or clear with None) the process-wide reporter, e.g. a rich progress bar."""
    global _reporter
    with _lock:
        _reporter = reporter


def reporter(stage: str) -> Callable[[int, int, dict[str, Any]], None] | None:
    """A ``(done, total, info)`` callback for ``stage``, or None when nothing listens."""
    current = _reporter
    if current is None:
        return None

    def report(done: int, total: int, info: dict[str, Any] | None = None) -> None:
        current(stage, done, total, info or {})

    return report
