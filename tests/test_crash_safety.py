"""Crash safety: kill -9 the real ``trackemb harvest`` / ``trackemb train`` at random points, re-run, compare.

Harvest: the CLI (Prefect flow, worker processes, the flow as single writer) is SIGKILLed at
random moments after it took the store's writer lock; after each kill the store opens and
holds only whole videos, and a final re-run leaves every key and value of an uninterrupted
run's store. Training: ``trackemb train`` killed after a random checkpoint, ``trackemb train
--resume`` killed again, a last ``--resume`` ends at the target step with weights equal to a
straight run's. The kill points come from a seed, printed by each test (and in its failure
messages) and set with ``TRACKEMB_CRASH_SEED``.
"""

from __future__ import annotations

import fcntl
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
from badcorpus import cli_env

from trackemb.storage import records, schema
from trackemb.storage.lock import LOCK_FILE
from trackemb.storage.records import VideoRecord
from trackemb.storage.store import open_reader

REPO = Path(__file__).resolve().parents[1]


def crash_seed() -> int:
    """``TRACKEMB_CRASH_SEED``, else a fresh random seed; printed so a failing run can be replayed."""
    seed = int(os.environ.get("TRACKEMB_CRASH_SEED", time.time_ns() % 1_000_000))
    print(f"kill points from TRACKEMB_CRASH_SEED={seed}", flush=True)
    return seed


def worker_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def make_videos(folder: Path, n: int = 4, *, seed: int = 0) -> Path:
    """``n`` synthetic clips with moving objects (plus one text file named .mp4, to store a failure)."""
    from synthetic import write_synthetic_video

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_synthetic_video(folder / f"clip_{i:02d}.mp4", n_objects=2, seed=seed + i)
    (folder / "broken.mp4").write_text("not a video\n")
    return folder


def _lock_held(store: Path) -> bool:
    """Whether some process holds the store's writer lock (a non-blocking flock attempt fails)."""
    try:
        fd = os.open(store / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases a lock taken just now
    return False


def _start_cli(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m trackemb.cli ARGS`` in its own process group, output to ``log``."""
    env = {**cli_env(log.parent), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "trackemb.cli", *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the CLI process, then whatever it left in its process group (worker processes)."""
    for kill in (lambda: proc.send_signal(signal.SIGKILL), lambda: os.killpg(proc.pid, signal.SIGKILL)):
        try:
            kill()
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)


def _harvest_cli(videos: Path, store: Path, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``trackemb harvest``; returns it once it holds the store's writer lock (or has ended)."""
    args = ["harvest", str(videos), "--store", str(store), "--workers", "2", "--lock-timeout-s", "60"]
    proc = _start_cli(args, log)
    deadline = time.monotonic() + 240
    while not _lock_held(store) and proc.poll() is None:
        assert time.monotonic() < deadline, (
            f"trackemb harvest did not open the store:\n{log.read_text()[-3000:]}"
        )
        time.sleep(0.02)
    return proc, time.perf_counter()


def run_harvest(videos: Path, store: Path, timeout_s: float = 300) -> float:
    """Uninterrupted ``trackemb harvest``; returns the seconds from taking the store's lock to exit."""
    log = store.parent / f"{store.name}.log"
    proc, t0 = _harvest_cli(videos, store, log)
    try:
        rc = proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            _kill(proc)
    assert rc == 0, f"trackemb harvest failed ({rc}):\n{log.read_text()[-3000:]}"
    return time.perf_counter() - t0


def kill_harvest_at(videos: Path, store: Path, delay_s: float) -> str:
    """Start ``trackemb harvest`` and SIGKILL it ``delay_s`` after it took the store's lock; returns its output."""
    log = store.parent / f"{store.name}.kill.log"
    log.unlink(missing_ok=True)
    proc, _ = _harvest_cli(videos, store, log)
    time.sleep(delay_s)
    _kill(proc)
    return log.read_text(errors="replace")


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
            rec = records.decode(VideoRecord, blob)
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
def harvest_case(prefect_api, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Synthetic videos and the store of one uninterrupted ``trackemb harvest`` of them."""
    tmp = tmp_path_factory.mktemp("crash")
    videos = make_videos(tmp / "videos")
    ref = tmp / "reference"
    work_s = run_harvest(videos, ref)
    return {"videos": videos, "reference": ref, "work_s": work_s, "tmp": tmp}


@pytest.mark.slow
@pytest.mark.prefect
def test_harvest_cli_killed_at_random_points_then_rerun_matches_uninterrupted(harvest_case) -> None:
    seed = crash_seed()
    rng = random.Random(seed)
    store = harvest_case["tmp"] / f"killed-{seed}"
    reference = dump_store(harvest_case["reference"])
    assert reference[schema.DONE] and reference[schema.PAIRS], "reference harvest stored no pairs"
    log = []
    for attempt in range(3):
        delay = rng.uniform(0.0, harvest_case["work_s"])
        kill_harvest_at(harvest_case["videos"], store, delay)
        done = len(dump_store(store)[schema.DONE]) if (store / "data.mdb").exists() else 0
        log.append(f"kill {attempt} at +{delay:.2f}s, {done} videos done")
        problems = check_after_kill(store) if (store / "data.mdb").exists() else []
        assert not problems, (
            f"TRACKEMB_CRASH_SEED={seed}, {log}: half-written videos after kill -9: {problems}"
        )
    run_harvest(harvest_case["videos"], store)
    differences = diff_stores(reference, dump_store(store))
    assert not differences, (
        f"TRACKEMB_CRASH_SEED={seed}, {log}: store after kills + re-run differs: {differences}"
    )
    stored = {v.path: v.status for v in open_reader(store).videos()}
    assert sorted(stored.values()).count("done") == 4 and "failed" in stored.values(), stored


# ---------------------------------------------------------------- training

TRAIN_STEPS = 30
TRAIN = {"arch": "smallcnn", "embed_dim": 16, "input_px": 32, "steps": TRAIN_STEPS, "batch_pairs": 8,
         "warmup_steps": 2, "ckpt_every_steps": 5, "val_every_steps": 15, "log_every_steps": 5,
         "num_workers": 0, "device": "cpu", "projector_max_patches": 0}  # fmt: skip
TRAIN_TOML = "[train]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in TRAIN.items())
TRAIN_TOML += "[train.mine]\nhard_from_step = 12\n"  # both mining stages before the end


def train_cmd(store: Path, run_dir: Path, config: Path, *extra: str) -> list[str]:
    """The library entry point, for the uninterrupted reference run."""
    return [sys.executable, "-m", "trackemb.embedding.train", "--store", str(store), "--run-dir", str(run_dir),
            "--config", str(config), *extra]  # fmt: skip


def train_cli_args(store: Path, run_dir: Path, config: Path, *extra: str) -> list[str]:
    """``trackemb train`` (the Prefect flow), as a user runs it."""
    return ["train", str(store), "--run-dir", str(run_dir), "--config", str(config), *extra]


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


def kill_training_after(args: list[str], ckpt: Path, step: int, pause_s: float, log: Path) -> int | None:
    """Start ``trackemb ARGS``, SIGKILL it ``pause_s`` after checkpoint ``step``; returns the step that survived."""
    child = _start_cli(args, log)
    try:
        deadline = time.monotonic() + 300
        while (ckpt_step(ckpt) or 0) < step:
            assert child.poll() is None, (
                f"training ended (rc {child.returncode}) before step {step}:\n" + (log.read_text()[-3000:])
            )
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        time.sleep(pause_s)
    finally:
        _kill(child)
    return ckpt_step(ckpt)  # loads with weights_only=True: the latest checkpoint survived intact


@pytest.mark.slow
@pytest.mark.prefect
def test_train_cli_killed_then_resumed_ends_like_a_straight_run(prefect_api, train_case) -> None:
    seed = crash_seed()
    rng = random.Random(seed)
    store, config, tmp = train_case["store"], train_case["config"], train_case["tmp"]
    run = tmp / f"killed-{seed}"
    ckpt, log = run / "ckpt.pt", tmp / "cli.log"
    first = rng.choice([5, 10, 15])
    killed_at = kill_training_after(train_cli_args(store, run, config), ckpt, first, rng.random() / 10, log)
    where = f"TRACKEMB_CRASH_SEED={seed}: killed at checkpoint {killed_at}"
    assert killed_at is not None and killed_at < TRAIN_STEPS, where

    # `--resume` killed too, after a later checkpoint (when the first run got far enough, none is left).
    resume = train_cli_args(store, run, config, "--resume")
    later = list(range(killed_at + 5, TRAIN_STEPS, 5))
    resumed_at = killed_at
    if later:
        resumed_at = kill_training_after(resume, ckpt, rng.choice(later), rng.random() / 10, log)
        where += f", then at {resumed_at} while resuming"
        # Steps are fast: the resume may even finish before the kill lands (then the last
        # --resume resumes a finished run, which must change nothing).
        assert resumed_at is not None and killed_at < resumed_at <= TRAIN_STEPS, where

    # Leftovers of a kill during a checkpoint write must not confuse --resume.
    half = ckpt.read_bytes()[: ckpt.stat().st_size // 2]
    (run / "ckpt.pt.tmp").write_bytes(half)
    (run / "ckpt.pt.k1ll3d.tmp").write_bytes(half)
    log.unlink()
    proc = _start_cli(resume, log)
    assert proc.wait(timeout=600) == 0, f"{where}: last resume failed:\n{log.read_text()[-3000:]}"
    out = log.read_text()
    assert f"at step {resumed_at}" in out, f"{where}: resume did not report continuing from {resumed_at}"

    final = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert final["step"] == TRAIN_STEPS
    assert train_case["straight"].wait(timeout=600) == 0, (tmp / "straight.log").read_text()[-3000:]
    reference = torch.load(tmp / "straight" / "ckpt.pt", map_location="cpu", weights_only=True)
    differing = [k for k, v in reference["model"].items() if not torch.equal(v, final["model"][k])]
    assert not differing, f"{where}: weights differ from a straight run: {differing}"
