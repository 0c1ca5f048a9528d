"""Harvest worker processes: a native crash costs one video, is recorded with its signal, and is retried once."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from synthetic import write_synthetic_video

from trackemb.config import HarvestConfig
from trackemb.harvest.pool import CRASH_HOOK_ENV, HarvestPool, default_workers
from trackemb.storage.store import open_reader

pytestmark = pytest.mark.prefect


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pool-videos")
    write_synthetic_video(root / "a.mp4", n_objects=2, n_frames=40, seed=1)
    write_synthetic_video(root / "b.mp4", n_objects=1, n_frames=40, seed=2)
    shutil.copy(root / "a.mp4", root / "segv-me.mp4")
    with open(root / "segv-me.mp4", "ab") as fh:
        fh.write(b"\0" * 16)  # its own content hash
    return root


def test_a_crashing_worker_fails_its_video_only_and_is_retried_once(
    prefect_api, videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trackemb.flows.harvest import harvest_flow

    monkeypatch.setenv(CRASH_HOOK_ENV, "segv-me")  # inherited by the spawned workers
    store = tmp_path / "s"
    first = harvest_flow(str(videos), str(store), HarvestConfig(), workers=2)
    assert (first["done"], first["failed"]) == (2, 1)
    row = next(r for r in first["videos"] if r["status"] == "failed")
    assert row["path"].endswith("segv-me.mp4") and row["error_kind"] == "crashed"
    assert "SIGSEGV" in row["error"] and "tries it once more" in row["error"]
    second = harvest_flow(str(videos), str(store), HarvestConfig(), workers=2)  # the retry: crashes again
    assert (second["skipped"], second["failed"]) == (2, 1)
    assert "not retried again" in next(r for r in second["videos"] if r["status"] == "failed")["error"]
    monkeypatch.delenv(CRASH_HOOK_ENV)
    third = harvest_flow(str(videos), str(store), HarvestConfig(), workers=2)  # would now succeed: not tried
    assert (third["skipped"], third["failed"], third["done"]) == (2, 1, 0)
    with open_reader(store) as reader:
        crashed = [v for v in reader.videos() if v.status == "failed"]
    assert len(crashed) == 1 and crashed[0].crashes == 2 and crashed[0].error_kind == "crashed"


def test_pool_reports_the_signal_and_replaces_the_worker(
    videos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_HOOK_ENV, "segv-me")
    with HarvestPool(1, HarvestConfig()) as pool:
        crashed = pool.run(str(videos / "segv-me.mp4"))
        after = pool.run(str(videos / "b.mp4"))  # a fresh worker takes the next video
    assert crashed.status == "failed" and crashed.record.error_kind == "crashed"
    assert f"signal {int(signal.SIGSEGV)}" in crashed.record.error and len(crashed.sha) == 64
    assert after.status == "done" and after.harvest is not None and after.harvest.pairs
    assert default_workers() >= 1
    with pytest.raises(ValueError, match="at least 1"):
        HarvestPool(0, HarvestConfig())


def test_a_dask_killed_worker_is_recorded_as_crashed(videos: Path) -> None:
    from distributed.scheduler import KilledWorker

    from trackemb.harvest.folder import resolve

    class Gone:  # what a Dask future does after the scheduler gave up on a task
        def result(self) -> None:
            raise KilledWorker("harvest-task", SimpleNamespace(address="tcp://127.0.0.1:1"), 3)

    outcome = resolve(str(videos / "a.mp4"), Gone())
    assert outcome.status == "failed" and outcome.record.error_kind == "crashed"
    assert "Dask worker" in outcome.record.error and len(outcome.sha) == 64


_BUSY_PARENT = """
import sys, time
from trackemb.config import HarvestConfig
from trackemb.harvest.pool import HarvestPool
if __name__ == "__main__":
    pool = HarvestPool(1, HarvestConfig())
    pool.submit(sys.argv[1])
    print("submitted", flush=True)
    time.sleep(300)
"""


def test_workers_die_with_a_killed_harvest(tmp_path: Path, sample_videos: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    import psutil

    script = tmp_path / "parent.py"
    script.write_text(_BUSY_PARENT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, str(script), str(sample_videos / "vtest.mp4")], env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "submitted"
        deadline, busy = time.monotonic() + 60, []
        while not busy and time.monotonic() < deadline:  # wait until the worker is decoding
            busy = [k for k in psutil.Process(parent.pid).children() if k.cpu_percent(interval=0.3) > 5]
        assert busy, "the worker never started harvesting"
    finally:
        parent.kill()  # kill -9: no atexit, no pool.close()
        parent.wait()
    gone = psutil.wait_procs(busy, timeout=10)[1] == []
    assert gone, "a harvest worker kept running after its parent was killed"
