"""Crash safety: kill -9 a harvest or a training run at random points, re-run, and compare.

Harvest (library in a subprocess, no Prefect): after each kill the store opens and holds only
whole videos; the final re-run leaves every key and value of an uninterrupted run's store.
Training: kill -9, stale temp files, ``--resume``: the run ends at the target step with a
``weights_only`` checkpoint equal to a straight run's. ``TRACKEMB_CRASH_SEED`` fixes the kill points.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lmdb
import pytest
import torch

from trackemb.storage import schema
from trackemb.storage.records import VideoRecord
from trackemb.storage.store import open_reader

REPO = Path(__file__).resolve().parents[1]

# The per-video commit loop of flows/harvest.py, without Prefect: the fastest real harvest writer.
HARVEST_WORKER = r"""
import sys
from trackemb.config import HarvestConfig
from trackemb.ingest import find_videos, harvest_one
from trackemb.storage.store import PatchStore

video_dir, store = sys.argv[1], sys.argv[2]
cfg = HarvestConfig()
with PatchStore.open(store, harvest_config=cfg.model_dump(mode="json"), lock_timeout_s=30) as st:
    done = {v.sha for v in st.videos() if v.status == "done"}
    print("open", flush=True)
    for path in find_videos(video_dir):
        out = harvest_one(path, cfg, done)
        if out.status != "skipped":
            st.put_video(out.harvest) if out.status == "done" else st.put_failure(out.record)
        print("video", out.status, path.name, flush=True)
    st.build_triplets(per_pair=cfg.triplets_per_pair, seed=cfg.seed)
print("closed", flush=True)
"""


def crash_seed() -> int:
    return int(os.environ.get("TRACKEMB_CRASH_SEED", time.time_ns() % 1_000_000))


def worker_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def make_videos(folder: Path, n: int = 5, *, seed: int = 0) -> Path:
    """``n`` synthetic clips with moving objects (plus one text file named .mp4, to store a failure)."""
    from synthetic import write_synthetic_video

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_synthetic_video(folder / f"clip_{i:02d}.mp4", n_objects=2, seed=seed + i)
    (folder / "broken.mp4").write_text("not a video\n")
    return folder


def _start_worker(videos: Path, store: Path, stderr: int) -> tuple[subprocess.Popen[str], str]:
    """Start a harvest worker; returns it once it has opened the store, with that first line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HARVEST_WORKER, str(videos), str(store)],
        cwd=REPO, env=worker_env(), stdout=subprocess.PIPE, stderr=stderr, text=True,
    )  # fmt: skip
    first = proc.stdout.readline()
    if first.strip() != "open":
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"harvest worker did not open the store (rc {proc.returncode}): {first!r} {err}")
    return proc, first


def run_harvest(videos: Path, store: Path, timeout_s: float = 300) -> float:
    """Uninterrupted harvest in a subprocess; returns the seconds from 'store open' to exit."""
    proc, _ = _start_worker(videos, store, subprocess.PIPE)
    t0 = time.perf_counter()
    out, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0 and "closed" in out, f"harvest failed ({proc.returncode}):\n{err[-3000:]}"
    return time.perf_counter() - t0


def kill_harvest_at(videos: Path, store: Path, delay_s: float, timeout_s: float = 120) -> str:
    """Start a harvest and SIGKILL it ``delay_s`` after it opened the store; returns its stdout."""
    proc, first = _start_worker(videos, store, subprocess.DEVNULL)
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)  # cannot be caught: communicate() returns
    out, _ = proc.communicate(timeout=timeout_s)
    return first + out


def dump_store(path: Path) -> dict[str, dict[bytes, Any]]:
    """Every key and value of every sub-database, with wall-clock fields blanked.

    Opened with LMDB directly (read-only) so that nothing trackemb does on open or read can
    hide a difference.
    """
    env = lmdb.open(str(path), readonly=True, lock=True, max_dbs=schema.MAX_DBS, create=False)
    try:
        content: dict[str, dict[bytes, Any]] = {}
        with env.begin() as txn:
            for name in schema.ALL_DBS:
                db = env.open_db(name.encode(), txn=txn, create=False)
                content[name] = dict(txn.cursor(db=db))
        if b"created_at" in content[schema.META]:  # the only meta field that differs between runs
            content[schema.META][b"created_at"] = b"<wall clock>"
        for key, blob in content[schema.VIDEOS].items():
            rec = VideoRecord.from_bytes(blob)
            rec.seconds = 0.0
            content[schema.VIDEOS][key] = rec
        return content
    finally:
        env.close()


def half_written_videos(path: Path) -> list[str]:
    """Videos whose records are incomplete: per-video keys without a done marker, or counts that disagree.

    Returns:
        Readable problems; empty when every video is either whole or absent.
    """
    content = dump_store(path)
    problems = []
    done = {k.decode(): schema.unpack(v) for k, v in content[schema.DONE].items()}
    by_prefix = {sha[: schema.SHA16]: sha for sha in done}
    counts: dict[str, dict[str, int]] = {}
    for name in (schema.TRACKS, schema.PATCHES, schema.JPEGS, schema.PAIRS):
        for key in content[name]:
            sha16 = schema.sha16_of_key(key)
            if sha16 not in by_prefix:
                problems.append(f"{name} key {key!r} belongs to no finished video")
                continue
            per = counts.setdefault(by_prefix[sha16], {})
            per[name] = per.get(name, 0) + 1
    for sha, want in done.items():
        have = counts.get(sha, {})
        got = {"tracks": have.get(schema.TRACKS, 0), "patches": have.get(schema.PATCHES, 0),
               "pairs": have.get(schema.PAIRS, 0)}  # fmt: skip
        if got != {k: want[k] for k in got} or have.get(schema.JPEGS, 0) != got["patches"]:
            problems.append(f"video {sha[:12]}: done marker says {want}, store holds {have}")
        rec = content[schema.VIDEOS].get(schema.video_key(sha))
        if rec is None or rec.status != "done":
            problems.append(f"video {sha[:12]}: done marker without a done video record ({rec})")
    return problems


def check_after_kill(store: Path) -> list[str]:
    """Problems with a store right after a kill: it must open cleanly and hold only whole videos."""
    try:
        with open_reader(store) as reader:
            reader.videos(), reader.stats()
    except Exception as exc:  # noqa: BLE001 - a store that does not open is the finding
        return [f"store does not open: {type(exc).__name__}: {exc}"]
    return half_written_videos(store)


def diff_stores(a: dict[str, dict[bytes, Any]], b: dict[str, dict[bytes, Any]]) -> list[str]:
    out = []
    for name in schema.ALL_DBS:
        ka, kb = set(a[name]), set(b[name])
        if ka != kb:
            out.append(f"{name}: {len(ka - kb)} keys only in the first, {len(kb - ka)} only in the second")
        out += [f"{name}[{k!r}] differs" for k in sorted(ka & kb) if a[name][k] != b[name][k]][:5]
    return out


@pytest.fixture(scope="module")
def harvest_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Synthetic videos and the store of one uninterrupted harvest of them."""
    tmp = tmp_path_factory.mktemp("crash")
    videos = make_videos(tmp / "videos")
    ref = tmp / "reference"
    work_s = run_harvest(videos, ref)
    return {"videos": videos, "reference": ref, "work_s": work_s, "tmp": tmp}


@pytest.mark.slow
def test_harvest_killed_at_random_points_then_rerun_matches_uninterrupted(harvest_case) -> None:
    seed = crash_seed()
    rng = random.Random(seed)
    store = harvest_case["tmp"] / f"killed-{seed}"
    reference = dump_store(harvest_case["reference"])
    assert reference[schema.DONE] and reference[schema.PAIRS], "reference harvest stored no pairs"
    log = []
    for attempt in range(3):
        delay = rng.uniform(0.0, harvest_case["work_s"])
        out = kill_harvest_at(harvest_case["videos"], store, delay)
        log.append(f"kill {attempt} at +{delay:.2f}s after {out.count('video ')} videos")
        problems = check_after_kill(store)
        assert not problems, f"seed {seed}, {log}: half-written videos after kill -9: {problems}"
    run_harvest(harvest_case["videos"], store)
    differences = diff_stores(reference, dump_store(store))
    assert not differences, f"seed {seed}, {log}: store after kills + re-run differs: {differences}"
    stored = {v.path: v.status for v in open_reader(store).videos()}
    assert sorted(stored.values()).count("done") == 5 and "failed" in stored.values(), stored


# ---------------------------------------------------------------- training

TRAIN_STEPS = 30
TRAIN = {"arch": "smallcnn", "embed_dim": 16, "input_px": 32, "steps": TRAIN_STEPS, "batch_pairs": 8,
         "warmup_steps": 2, "ckpt_every_steps": 5, "val_every_steps": 15, "log_every_steps": 5,
         "num_workers": 0, "device": "cpu", "projector_max_patches": 0}  # fmt: skip
TRAIN_TOML = "[train]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in TRAIN.items())
TRAIN_TOML += "[train.mine]\nhard_from_step = 12\n"  # both mining stages before the end


def train_cmd(store: Path, run_dir: Path, config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trackemb.embedding.train", "--store", str(store), "--run-dir", str(run_dir),
            "--config", str(config), *extra]  # fmt: skip


def ckpt_step(path: Path) -> int | None:
    """Step of a checkpoint, loading it the only allowed way; None if there is none yet."""
    return int(torch.load(path, map_location="cpu", weights_only=True)["step"]) if path.exists() else None


@pytest.fixture
def train_case(tmp_path: Path):
    """A synthetic store, and an uninterrupted reference training on it running alongside the test."""
    from synth_store import build_synthetic_store

    store = build_synthetic_store(tmp_path / "store", n_videos=6)
    config = tmp_path / "train.toml"
    config.write_text(TRAIN_TOML)
    with open(tmp_path / "straight.log", "w") as log:
        cmd = train_cmd(store, tmp_path / "straight", config)
        straight = subprocess.Popen(cmd, env=worker_env(), cwd=REPO, stdout=log, stderr=log)
        try:
            yield {"tmp": tmp_path, "store": store, "config": config, "straight": straight}
        finally:
            if straight.poll() is None:
                straight.kill()
                straight.wait()


def kill_training_after(cmd: list[str], ckpt: Path, step: int, pause_s: float) -> int | None:
    """Start training, SIGKILL it ``pause_s`` after checkpoint ``step``; returns the step that survived."""
    child = subprocess.Popen(
        cmd, env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO
    )
    try:
        deadline = time.monotonic() + 300
        while (ckpt_step(ckpt) or 0) < step:
            assert child.poll() is None, f"training ended (rc {child.returncode}) before step {step}"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        time.sleep(pause_s)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return ckpt_step(ckpt)  # loads with weights_only=True: the latest checkpoint survived intact


@pytest.mark.slow
def test_training_killed_then_resumed_ends_like_a_straight_run(train_case) -> None:
    seed = crash_seed()
    rng = random.Random(seed)
    store, config = train_case["store"], train_case["config"]
    run = train_case["tmp"] / f"killed-{seed}"
    ckpt = run / "ckpt.pt"
    killed_at = kill_training_after(
        train_cmd(store, run, config), ckpt, rng.choice([5, 10, 15]), rng.random() / 2
    )
    assert killed_at is not None and killed_at < TRAIN_STEPS, f"seed {seed}: killed at checkpoint {killed_at}"

    # Leftovers of a kill during a checkpoint write must not confuse --resume.
    half = ckpt.read_bytes()[: ckpt.stat().st_size // 2]
    (run / "ckpt.pt.tmp").write_bytes(half)
    (run / "ckpt.pt.k1ll3d.tmp").write_bytes(half)
    proc = subprocess.run(train_cmd(store, run, config, "--resume"), env=worker_env(), capture_output=True,
                          text=True, timeout=600, cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, f"seed {seed}: resume failed:\n{proc.stderr[-3000:]}"
    assert f"at step {killed_at}" in proc.stderr, f"resume did not report continuing from step {killed_at}"

    final = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert final["step"] == TRAIN_STEPS
    tmp = train_case["tmp"]
    assert train_case["straight"].wait(timeout=600) == 0, (tmp / "straight.log").read_text()[-3000:]
    reference = torch.load(tmp / "straight" / "ckpt.pt", map_location="cpu", weights_only=True)
    differing = [k for k, v in reference["model"].items() if not torch.equal(v, final["model"][k])]
    assert not differing, (
        f"seed {seed}: resumed at {killed_at}, weights differ from a straight run: {differing}"
    )
