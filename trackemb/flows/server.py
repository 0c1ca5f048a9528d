"""A local Prefect server for deployments and workers: ``prefect server start`` as a managed subprocess.

The Prefect API has no authentication, so it binds the loopback interface by default.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class LocalServer:
    """A ``prefect server start`` subprocess; ``env`` points Prefect clients at it."""

    api_url: str
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def prefect_env(api_url: str, home: str | Path) -> dict[str, str]:
    """This process's environment pointed at ``api_url``, with a private home and no telemetry."""
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_LOGGING_EXTRA_LOGGERS="trackemb",
    )
    return env


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Stop the server and the children it spawned (its own process group)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass


@contextmanager
def local_server(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    home: str | Path | None = None,
    ui: bool = True,
    timeout_s: float = 90.0,
) -> Iterator[LocalServer]:
    """Run ``prefect server start`` for the duration of the block; stopped on exit, even on error.

    The Prefect API has no authentication, so the default binds the loopback interface
    only; binding anything else logs a warning.

    Args:
        host: interface to bind.
        port: TCP port (default: a free one).
        home: PREFECT_HOME (database, profiles, ``server.log``); default: a new temp dir.
        ui: serve the web UI too (off makes start-up faster in tests).
        timeout_s: how long to wait for ``/api/health``.

    Yields:
        The running server; pass ``server.env`` to subprocesses (workers, ``prefect`` CLI).

    Raises:
        RuntimeError: the server exited or was not healthy in time; the message holds its log tail.
    """
    if host not in LOOPBACK_HOSTS:
        log.warning("Prefect API on %s: it has no authentication; whoever reaches it can run flows", host)
    port = port or free_port(host)
    home = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="trackemb-prefect-"))
    home.mkdir(parents=True, exist_ok=True)
    url_host = f"[{host}]" if ":" in host else host
    api_url = f"http://{url_host}:{port}/api"
    env = prefect_env(api_url, home)
    env["PREFECT_UI_ENABLED"] = "true" if ui else "false"
    log_path = home / "server.log"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    with open(log_path, "ab") as log_file:
        # A new session makes the server the leader of its own process group, so _stop
        # reaches whatever it spawned and nothing else.
        process = subprocess.Popen(
            cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(api_url):
            if process.poll() is not None or time.monotonic() > deadline:
                state = (
                    f"exited ({process.returncode})" if process.poll() is not None else "not healthy in time"
                )
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"prefect server on {api_url} {state}; log {log_path}:\n{tail}")
            time.sleep(0.25)
        log.info("Prefect server ready at %s (home %s)", api_url, home)
        yield LocalServer(api_url=api_url, home=home, env=env, process=process, log_path=log_path)
    finally:
        _stop(process)
