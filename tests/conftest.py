"""Shared fixtures. Prefect runs offline against a throw-away home and one ephemeral API per session."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path

import pytest

# Must be set before prefect is imported anywhere: no analytics, no writes to ~/.prefect.
_PREFECT_HOME = tempfile.mkdtemp(prefix="trackemb-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/synthetic.py and friends importable as modules
sys.path.insert(1, str(REPO))  # and `bench` (its synthetic store builder is shared with the tests)
SAMPLE_VIDEOS = REPO / "examples" / "videos"


@pytest.fixture(scope="session")
def sample_videos() -> Path:
    assert (SAMPLE_VIDEOS / "vtest.mp4").exists(), "examples/videos is missing the sample clips"
    return SAMPLE_VIDEOS


@pytest.fixture(scope="session")
def prefect_api():
    """One real (ephemeral, local) Prefect API for the whole session; it cannot be entered twice."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@functools.cache
def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run when CUDA is present and skip cleanly (with the reason) otherwise.

    ``@pytest.mark.gpu(devices=2)`` asks for that many CUDA devices.
    """
    for item in items:
        marker = item.get_closest_marker("gpu")
        if marker is None:
            continue
        need = int(marker.kwargs.get("devices", 1))
        have = _cuda_devices()
        if have < need:
            item.add_marker(pytest.mark.skip(reason=f"needs {need} CUDA device(s), found {have}"))
