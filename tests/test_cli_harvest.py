"""`trackemb harvest` under concurrency, and file names that must never become output paths.

Concurrency: while one harvest process holds a store, a second CLI harvest fails at once
(exit 2) naming the holder's pid, or waits with ``--lock-timeout-s``; ``trackemb inspect``
and training read the store while the holder keeps writing.

Path safety: videos named like path tricks (``..mp4``, backslashes, newlines, shell syntax)
are harvested, inspected, embedded and clustered; every file written lands inside the
output directories, and the names come back intact in ``patches.csv``.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from badcorpus import REPO, cli_env, run_cli
from synthetic import write_synthetic_video

from trackemb.storage.store import open_reader

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

# A harvest that holds the store and keeps writing until its stdin closes: it harvests its folder
# once, then rewrites those videos (real write transactions, little CPU) every 0.2 s.
HOLDER = r"""
import select, sys, time
from trackemb.config import HarvestConfig
from trackemb.tracking.files import find_videos
from trackemb.tracking.outcome import harvest_one
from trackemb.storage.store import PatchStore

video_dir, store = sys.argv[1], sys.argv[2]
cfg = HarvestConfig()
with PatchStore.open(store, harvest_config=cfg.model_dump(mode="json")) as st:
    print("locked", flush=True)
    harvests = [o.harvest for o in (harvest_one(p, cfg) for p in find_videos(video_dir)) if o.status == "done"]
    while True:
        for harvest in harvests:
            st.put_video(harvest)
        st.build_triplets(per_pair=cfg.triplets_per_pair, seed=cfg.seed)
        print("pass", flush=True)
        if select.select([sys.stdin], [], [], 0.2)[0]:  # stdin closed: release the store
            break
print("released", flush=True)
"""

TRAIN_TOML = """
[train]
arch = "smallcnn"
embed_dim = 16
input_px = 32
steps = 3
batch_pairs = 4
warmup_steps = 1
val_frac = 0.0
num_workers = 1
device = "cpu"
projector_max_patches = 0
"""


def _videos(folder: Path, names: list[str], seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_synthetic_video(folder / name, n_objects=2, n_frames=45, seed=seed + i)
    return folder


class Holder:
    """A harvest subprocess holding ``store``'s writer lock until :meth:`release`."""

    def __init__(self, videos: Path, store: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(videos), str(store)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip

    def wait_for(self, line: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if select.select([self.proc.stdout], [], [], 1.0)[0]:
                got = self.proc.stdout.readline()
                if got.strip() == line:
                    return
                assert got, f"holder exited (rc {self.proc.poll()}): {self.proc.stderr.read()[-3000:]}"
        raise AssertionError(f"holder did not print {line!r} within {timeout_s} s")

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
        self.proc.wait(timeout=120)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def held_store(tmp_path: Path):
    videos = _videos(tmp_path / "videos", ["a.mp4", "b.mp4", "c.mp4"])
    store = tmp_path / "store"
    holder = Holder(videos, store)
    try:
        holder.wait_for("locked")
        holder.wait_for("pass")  # one whole pass stored: readers have videos and pairs to read
        yield videos, store, holder
    finally:
        holder.stop()


def test_second_harvest_fails_at_once_naming_the_holder(held_store, prefect_api, tmp_path: Path) -> None:
    videos, store, holder = held_store
    t0 = time.monotonic()
    proc = run_cli(["harvest", str(videos), "--store", str(store)], cli_env(tmp_path))
    elapsed = time.monotonic() - t0
    assert holder.proc.poll() is None, "the holder ended: the test could not tell waiting from failing"
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    message = " ".join(proc.stderr.split())  # rich wraps long lines
    assert f"pid {holder.proc.pid}" in message, message[-2000:]
    assert "locked" in message and "--lock-timeout-s" in message, message[-2000:]
    print(f"second harvest refused after {elapsed:.1f} s (CLI start-up included)")


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux /proc)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd_dir / fd) == str(path) for fd in os.listdir(fd_dir))
    except OSError:  # an fd closed while listing, or the process is gone
        return False


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc to see the waiting process")
def test_second_harvest_waits_with_lock_timeout(held_store, prefect_api, tmp_path: Path) -> None:
    videos, store, holder = held_store
    out, log = tmp_path / "summary.json", tmp_path / "cli.log"
    args = ["harvest", str(videos), "--store", str(store), "--lock-timeout-s", "120", "--json", str(out)]
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "trackemb.cli", *args], cwd=REPO, env=cli_env(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        try:
            # Release the holder only once the second harvest is blocked on the lock file.
            deadline = time.monotonic() + 180
            while not _has_open(proc.pid, store / "writer.lock"):
                assert proc.poll() is None, (
                    f"exit {proc.returncode} instead of waiting:\n{log.read_text()[-3000:]}"
                )
                assert time.monotonic() < deadline, "the second harvest never reached the store lock"
                time.sleep(0.05)
            time.sleep(0.5)
            assert proc.poll() is None and holder.proc.poll() is None
            holder.release()
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{log.read_text()[-3000:]}"
    summary = json.loads(out.read_text())
    assert summary["skipped"] == 3 and summary["failed"] == 0, summary  # the holder stored them all


def test_inspect_and_training_read_while_a_harvest_writes(held_store, tmp_path: Path) -> None:
    videos, store, holder = held_store
    proc = run_cli(["inspect", str(store), "--json"], cli_env(tmp_path), timeout_s=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout)
    assert stats["pairs"] > 0, stats

    config = tmp_path / "train.toml"
    config.write_text(TRAIN_TOML)
    cmd = [sys.executable, "-m", "trackemb.embedding.train", "--store", str(store), "--run-dir",
           str(tmp_path / "run"), "--config", str(config)]  # fmt: skip
    train = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=cli_env(tmp_path))
    assert train.returncode == 0, train.stderr[-3000:]
    holder.wait_for("pass")  # the writer kept going all along
    assert holder.proc.poll() is None
    assert (tmp_path / "run" / "ckpt.pt").exists()


# ---------------------------------------------------------------- path safety

TRICKY_NAMES = [
    "..mp4",
    "..\\..\\evil.mp4",  # backslashes are plain characters on POSIX, path separators elsewhere
    "line\nbreak | pipe.mp4",
    "$(touch pwned) `id`.mp4",
]


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_video_names_never_become_paths_outside_the_output(prefect_api, tmp_path: Path) -> None:
    from embed_fixtures import make_run_dir

    from trackemb.config import ExportConfig
    from trackemb.embedding.cluster import cluster_embeddings
    from trackemb.embedding.embed import embed_store, read_patches_csv
    from trackemb.embedding.export import export_encoder

    videos = _videos(tmp_path / "in" / "videos", TRICKY_NAMES, seed=40)
    out, cwd = tmp_path / "out", tmp_path / "cwd"
    cwd.mkdir()
    before = _tree(tmp_path)

    store = out / "store"
    proc = run_cli(["harvest", str(videos), "--store", str(store)], cli_env(out / "prefect"), cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = {v.path: v for v in open_reader(store).videos()}
    assert set(recs) == {str(videos / n) for n in TRICKY_NAMES}, sorted(recs)
    assert all(r.status == "done" for r in recs.values()), recs
    assert sum(r.n_pairs for r in recs.values()) > 0

    proc = run_cli(
        ["inspect", str(store), "--montage", str(out / "pairs.png")], cli_env(out / "prefect"), cwd=cwd
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    run = make_run_dir(out / "run")
    export = export_encoder(run, out / "export", ExportConfig(onnx=False))
    embed_store(export, store, device="cpu")
    cluster_embeddings(export, ExportConfig(k=2, onnx=False), store_path=store)
    rows = read_patches_csv(Path(export) / "patches.csv")
    assert {r["video_path"] for r in rows} == {p for p, r in recs.items() if r.n_patches}, (
        "names mangled in CSV"
    )

    created = _tree(tmp_path) - before
    outside = sorted(str(p) for p in created if p != out and out not in p.parents)
    assert not outside, f"files written outside the output directory: {outside}"
    assert not any(cwd.iterdir()), f"files written into the working directory: {list(cwd.iterdir())}"
    assert not any("pwned" in p.name or "evil" in p.name for p in _tree(tmp_path) - _tree(videos)), (
        "a name leaked"
    )
    assert (out / "pairs.png").exists() and list(Path(export).rglob("cluster_*.png")), (
        "no montage was written"
    )
