"""The ``trackemb`` Typer app: global options, logging, and how errors reach the user.

Streams: results and tables go to stdout, logs, progress and errors to stderr, so
``trackemb inspect STORE > report.txt`` captures the report. A user error is one
``error:`` line on stderr (exit 2); the traceback only with ``-v``.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.text import Text

# Before Prefect is imported anywhere: the CLI's temporary server sends no telemetry
# (it logged "Failed to send telemetry" on every offline run). An explicit setting wins.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# The temporary server's 20 s default is too short on a busy machine; waiting longer beats failing.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from trackemb._version import __version__  # noqa: E402
from trackemb.cli.present import err, setup_logging  # noqa: E402
from trackemb.config import ConfigError, load_config  # noqa: E402
from trackemb.errors import TrackembError  # noqa: E402

# typer 0.29 labels every flag `<bool>` (--help included) and wraps required arguments in
# braces (`{VIDEO_DIR}`); neither reads like Unix help. Flags take no value, so show no type.
_display_type = typer.core.TyperOption.display_type_rich


def _option_type(self: Any, ctx: Any) -> str | None:
    return None if self.is_flag else _display_type(self, ctx)


def _argument_usage(self: Any) -> str:
    name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
    return name + ("..." if self.nargs != 1 else "")


typer.core.TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
typer.core.TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]

app = typer.Typer(
    name="trackemb",
    help="Self-supervised embeddings from unlabelled video: track moving objects, harvest positive pairs "
    "into LMDB, train a Siamese encoder (NT-Xent or triplet loss), export it with clustered embeddings.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="TOML",
        help="TOML file with \\[harvest], \\[train] and \\[export] tables; flags override it. "
        "Unknown tables or keys are errors.",
    ),
]

_state = {"verbose": False}


class UserError(Exception):
    """A mistake in the command's inputs: reported as one ``error:`` line, exit code ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> NoReturn:
    raise UserError(message, code)


def load(cls: type, config: Path | None, section: str, overrides: dict[str, Any]) -> Any:
    try:
        return load_config(cls, config, overrides, section=section)
    except ConfigError as exc:
        fail(str(exc))


def prefect_logging() -> None:
    """Get Prefect ready for a flow: the CLI's log handler re-attached, the API reachable.

    Prefect's import installs its own log handlers, so ours goes back on. Without
    PREFECT_API_URL, Prefect starts a temporary server as a child process in our process
    group, where a terminal's Ctrl-C killed it mid-run (then every state update failed with
    "connection refused"). Started here first, in its own session, the server outlives the
    Ctrl-C; Prefect's ephemeral client reuses this one instance and stops it at exit.
    """
    setup_logging(_state["verbose"])
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    from prefect.server.api import server as prefect_server

    popen = prefect_server.subprocess.Popen
    # Only the main thread runs here and nothing else spawns meanwhile: the patch is local in effect.
    prefect_server.subprocess.Popen = functools.partial(popen, start_new_session=True)  # type: ignore[misc]
    try:
        prefect_server.SubprocessASGIServer().start()
    finally:
        prefect_server.subprocess.Popen = popen  # type: ignore[misc]


def _version(value: bool) -> None:
    if value:
        print(f"trackemb {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging, and tracebacks with errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    _state["verbose"] = verbose
    if not verbose:
        # libav inside OpenCV prints decoder complaints ("A non-intra slice in an IDR NAL unit")
        # straight to stderr; harvest records real decode failures itself. 8 = AV_LOG_FATAL.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")
    setup_logging(verbose)


def _report(message: str, exc: BaseException | None = None) -> None:
    if exc is not None and _state["verbose"] and not isinstance(exc, UserError):
        err.print("".join(traceback.format_exception(exc)), markup=False, highlight=False)
    one_line = " ".join(message.split())  # causes quoted from libraries may span lines
    err.print(Text.assemble(("error:", "bold red"), " ", one_line), soft_wrap=True)


def main() -> None:
    """Console entry point: run the app and turn known failures into one ``error:`` line."""
    try:
        app()
    except UserError as exc:
        _report(str(exc), exc)
        sys.exit(exc.code)
    except TrackembError as exc:  # ConfigError included
        _report(str(exc), exc)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        _report("interrupted", exc)
        sys.exit(130)
    except OSError as exc:
        _report(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), exc)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line, the traceback with -v
        hint = "" if _state["verbose"] else " (run with -v for the traceback)"
        _report(f"unexpected {type(exc).__name__}: {exc}{hint}", exc)
        sys.exit(1)
