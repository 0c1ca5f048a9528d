"""SIGTERM (and Ctrl-C's SIGINT) stop ``trackemb train`` at the next step boundary: a final
checkpoint, a one-line message naming the signal and ``--resume``, exit 128 + signal, and no
traceback or "Crash detected" from the Prefect engine. Runs the real CLI under the session's
Prefect API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from badcorpus import REPO, cli_env
from synth_store import build_synthetic_store

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

CONFIG = """
[train]
arch = "smallcnn"
embed_dim = 16
input_px = 32
steps = 100000
batch_pairs = 8
num_workers = 1
device = "cpu"
val_every_steps = 100000
ckpt_every_steps = 100000
projector_max_patches = 0
"""


@pytest.mark.parametrize(
    ("signum", "whole_group"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGINT, True)],
    ids=["SIGTERM", "SIGINT", "ctrl-c-to-the-group-with-a-temporary-server"],
)
def test_signal_stops_training_with_a_checkpoint_and_no_traceback(
    prefect_api, tmp_path: Path, signum: signal.Signals, whole_group: bool
) -> None:
    store = build_synthetic_store(tmp_path / "s.lmdb", n_videos=4, tracks_per_video=3)
    (tmp_path / "c.toml").write_text(CONFIG)
    run_dir, log = tmp_path / "run", tmp_path / "err.txt"
    args = ["train", str(store), "--run-dir", str(run_dir), "--config", str(tmp_path / "c.toml")]
    env = cli_env(tmp_path)
    if whole_group:
        # A terminal's Ctrl-C signals the whole foreground process group: the CLI, its DataLoader
        # workers and, without PREFECT_API_URL, Prefect's temporary server.
        env.pop("PREFECT_API_URL", None)
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trackemb.cli", *args], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 400
        while "train steps" not in log.read_text() and "step 0" not in log.read_text():
            assert proc.poll() is None, f"training ended early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"training did not start:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        time.sleep(2)
        if whole_group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        try:
            stdout, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"training did not stop after {signum.name}:\n{log.read_text()[-3000:]}")
    stderr = log.read_text()
    assert proc.returncode == 128 + signum, f"exit {proc.returncode}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr and "Crash detected" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-2:]
    assert any(f"error: training stopped by {signum.name}" in line and "--resume" in line for line in last), (
        last
    )
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    assert 1 <= ckpt["step"] < 100000
    assert f"(step {ckpt['step']})" in stdout, "the metrics table names the step the checkpoint holds"
