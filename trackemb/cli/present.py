"""What the CLI shows: results and tables on stdout, logs and progress bars on stderr."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from trackemb.flows import progress as progress_hooks

# Results: `trackemb inspect STORE > report.txt` keeps them, in tables wide enough not to wrap names.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)
err = Console(stderr=True, soft_wrap=True)  # logs, progress bars, errors (one line each)

# Third-party loggers that report routine events at INFO (faiss: "Loading faiss with AVX512 support").
_QUIET = ("httpx", "urllib3", "PIL", "matplotlib", "faiss", "numexpr", "asyncio", "PML", "tensorboard")  # fmt: skip


class _RunFormatter(logging.Formatter):
    """Prefixes Prefect run records with the task run (or flow) they belong to; hides tracebacks unless verbose."""

    def __init__(self, verbose: bool, fmt: str = "%(message)s") -> None:
        super().__init__(fmt, datefmt="%H:%M:%S")
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        changes: dict[str, Any] = {}
        if not self.verbose and record.exc_info:  # the error line says what happened; -v shows where
            changes.update(exc_info=None, exc_text=None)
        run = getattr(record, "task_run_name", None) or getattr(record, "flow_name", None)
        if run:
            changes["msg"] = f"{run}: {record.getMessage()}"
            changes["args"] = None
        if changes:
            record = logging.makeLogRecord({**record.__dict__, **changes})
        return super().format(record)


def setup_logging(verbose: bool) -> None:
    """One stderr handler on the root logger; call again after importing Prefect, which installs its own."""
    handler: logging.Handler
    if err.is_terminal:
        handler = RichHandler(console=err, show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(_RunFormatter(verbose))
    else:  # a log file or a pipe: one unwrapped line per record
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_RunFormatter(verbose, "%(asctime)s %(levelname)-7s %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "trackemb")
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        # Prefect routes its run loggers to its own console handler; ours prints them once, named.
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler)]


class RichReporter:
    """Maps library progress callbacks onto one rich progress bar per stage (on stderr)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=err,
            disable=not err.is_terminal and os.environ.get("CI") == "true",
        )
        self.tasks: dict[str, Any] = {}
        self._hooks = ExitStack()

    def __call__(self, stage: str, done: int, total: int, info: dict[str, Any]) -> None:
        text = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, info=text)
        self.progress.update(self.tasks[stage], completed=done, total=total, info=text)

    def __enter__(self) -> RichReporter:
        self.progress.start()
        self._hooks.enter_context(progress_hooks.reporting(self))
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.close()
        self.progress.stop()


def print_harvest(summary: dict[str, Any]) -> None:
    """The harvest summary as a table: short names, error kind and cause, full paths as footnotes."""
    from trackemb.harvest.summary import COLUMNS, cell, totals_line

    table = Table(title=f"harvest of {summary['video_dir']} -> {summary['store']}", title_justify="left")
    for _, header, right in COLUMNS:
        table.add_column(header, justify="right" if right else "left", overflow="fold")
    for n, row in enumerate(summary["videos"], 1):
        style = {"failed": "red", "skipped": "dim"}.get(row["status"], "")
        cells = [cell(row, key) for key, _, _ in COLUMNS]
        cells[0] = f"{cells[0]} [{n}]"
        table.add_row(*(Text(c) for c in cells), style=style)  # file names are not markup
    out.print(table)
    out.print(totals_line(summary), highlight=False)
    for n, row in enumerate(summary["videos"], 1):
        out.print(f"  [{n}] {row['path']}", style="dim", markup=False, highlight=False)
    for warning in summary.get("warnings", []):
        err.print(Text.assemble(("warning:", "bold yellow"), " ", warning))


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, int | float):
            table.add_row(key, f"{value:.4g}")
    out.print(table)


def print_files(folder: Path, title: str) -> None:
    out.print(f"{title}:", highlight=False)
    for path in sorted(Path(folder).iterdir()):
        out.print(f"  {path}", markup=False, highlight=False)
