"""Workers: does the harvest scale with cores? Pinned 1 vs 2 worker processes, and CPU use of a default run.

1. Each ``HarvestPool`` worker pinned to one core (``sched_setaffinity``) with one OpenCV
   thread (decoding is one reader thread run one frame ahead of the analysis, on the same
   core): frames/s of 2 workers on cores {0, 1} / frames/s of 1 worker on core 0, over
   copies of a >= 300-frame clip (distinct hashes, identical frames), pool start-up
   included. Target >= 1.7. Each finished video is committed by this process (the single
   writer), as the harvest flow does.
2. CPU utilisation of a default (unpinned, one worker per core) harvest of the same
   folder: CPU seconds of this process and its workers / (wall seconds x cores). Target >= 85 %.

3. The mechanism, chosen by this measurement: the same videos through the library's pool,
   ``concurrent.futures.ProcessPoolExecutor`` (what Prefect's ``ProcessPoolTaskRunner`` runs
   on) and a Dask ``LocalCluster`` (what prefect-dask runs on), 2 processes each, start-up
   included; and what each does when one video crashes its worker (SIGSEGV, test hook).

Only meaningful on a quiet machine: the load average at the start is reported with the
rows (other processes take cores from the workers, which lowers both figures).
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, BenchResult, interleave, load_avg, med, spread
from bench.inputs import cut_clip, distinct_copies, sample_clips
from trackemb.config import HarvestConfig
from trackemb.harvest.pool import CRASH_HOOK_ENV, HarvestPool, default_workers
from trackemb.storage.store import PatchStore
from trackemb.tracking.outcome import harvest_one

SCALING_TARGET, UTIL_TARGET = 1.7, 0.85
SOURCE_CLIP = "vtest.mp4"


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def harvest_folder(
    paths: list[Path], store: Path, workers: int, cores: list[int] | None
) -> tuple[float, float, int]:
    """Harvest ``paths`` into a fresh store; returns (wall s, CPU s of this process and its workers, frames)."""
    shutil.rmtree(store, ignore_errors=True)
    cfg = HarvestConfig()
    frames = 0
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    with PatchStore.open(store, harvest_config=cfg.model_dump(mode="json")) as writer:
        with HarvestPool(workers, cfg, cores=cores, threads=1 if cores else None) as pool:
            for future in [pool.submit(str(p)) for p in paths]:
                outcome = future.result()
                if outcome.status != "done" or outcome.harvest is None:
                    raise RuntimeError(f"{outcome.path}: not harvested: {outcome.record}")
                writer.put_video(outcome.harvest)
                frames += outcome.harvest.video.frames
        writer.build_triplets(per_pair=cfg.triplets_per_pair, seed=cfg.seed)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0  # workers are reaped by close()
    shutil.rmtree(store, ignore_errors=True)
    return wall, cpu, frames


def _hooked(path: str) -> object:
    """harvest_one behind the same crash hook as the pool's workers (for the other mechanisms)."""
    crash_on = os.environ.get(CRASH_HOOK_ENV)
    if crash_on and crash_on in path:
        os.kill(os.getpid(), 11)
    return harvest_one(path, HarvestConfig())


def mechanism(name: str, paths: list[str]) -> tuple[float, str]:
    """(seconds, what came back) harvesting ``paths`` with 2 processes of mechanism ``name``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    results: list[str] = []
    if name == "pool":
        with HarvestPool(2, HarvestConfig(), threads=None) as pool:
            for f in [pool.submit(p) for p in paths]:
                out = f.result()
                results.append(out.status if out.status != "failed" else out.record.error_kind)
    elif name == "process_pool_executor":
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
            for f in [ex.submit(_hooked, p) for p in paths]:
                try:
                    results.append(f.result().status)
                except Exception as exc:  # noqa: BLE001 - what the mechanism does is the measurement
                    results.append(type(exc).__name__)
    else:
        from distributed import Client, LocalCluster

        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:
            with Client(cluster) as client:
                for f in [client.submit(_hooked, p, pure=False) for p in paths]:
                    try:
                        results.append(f.result().status)
                    except Exception as exc:  # noqa: BLE001
                        results.append(type(exc).__name__)
    summary = ", ".join(f"{results.count(r)} {r}" for r in sorted(set(results)))
    return time.perf_counter() - t0, summary


def _isolated(name: str, paths: list[str], timeout_s: float) -> tuple[float, str]:
    """:func:`mechanism` in a fresh process, so a mechanism that hangs on a crash cannot hang the bench."""
    code = "import json, sys; from bench.bench_workers import mechanism; print(json.dumps(mechanism(sys.argv[1], sys.argv[2:])))"
    try:
        out = subprocess.run([sys.executable, "-c", code, name, *paths], capture_output=True, text=True,
                             timeout=timeout_s, cwd=REPO, check=True)  # fmt: skip
    except subprocess.TimeoutExpired:
        return timeout_s, f"hung (killed after {timeout_s:.0f} s)"
    except subprocess.CalledProcessError as exc:
        return (
            math.nan,
            f"error: {exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else exc.returncode}",
        )
    seconds, summary = json.loads(out.stdout.strip().splitlines()[-1])
    return float(seconds), str(summary)


def _mechanism_rows(res: BenchResult, paths: list[Path], work: Path, quick: bool) -> dict[str, object]:
    crash = work / "videos" / "segv_me.mp4"
    shutil.copyfile(paths[0], crash)
    with open(crash, "ab") as fh:
        fh.write(b"\0" * 16)
    plain = [str(p) for p in paths]
    with_crash = [str(crash), *plain]
    out: dict[str, object] = {}
    os.environ[CRASH_HOOK_ENV] = "segv_me"  # inherited by the isolated runs and their workers
    try:
        # --quick (the smoke test) checks the plumbing with the library's pool only.
        for name in ("pool",) if quick else ("pool", "process_pool_executor", "dask_local_cluster"):
            seconds, _ = _isolated(name, plain, 600)
            _, crashed = _isolated(name, with_crash, 300)
            out[name] = {"seconds": seconds, "with_a_crash": crashed}
            res.add(f"mechanism {name}: {len(plain)} videos, 2 processes", seconds, "s",
                    note=f"one crashing file among {len(with_crash)}: {crashed}")  # fmt: skip
    finally:
        os.environ.pop(CRASH_HOOK_ENV, None)
    return out


def run(quick: bool, work: Path) -> BenchResult:
    res = BenchResult("workers")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2:
        res.skipped = "skipped: needs 2 cores that this process may pin workers to"
        return res
    n_frames, n_videos, rounds = (24, 2, 1) if quick else (300, 4, 2)
    src = next((c for c in sample_clips() if c.name == SOURCE_CLIP), sample_clips()[0])
    clip = cut_clip(src, work / "clip.mp4", n_frames)
    paths = distinct_copies(clip, work / "videos", n_videos)
    load_start = load_avg()
    stats: dict[str, tuple[float, float, int]] = {}

    def case(name: str, workers: int, pinned: list[int] | None):  # noqa: ANN202
        def go() -> float:
            stats[name] = harvest_folder(paths, work / f"store-{name}", workers, pinned)
            return stats[name][0]

        return go

    samples = interleave(
        {"pinned_1": case("pinned_1", 1, cores[:1]), "pinned_2": case("pinned_2", 2, cores[:2])}, rounds
    )
    frames = stats["pinned_1"][2]
    fps = {k: frames / med(v) for k, v in samples.items()}
    note = f"{n_videos} x {n_frames}-frame copies of {src.name}; load avg at start {load_start[0]:.2f}"
    res.add("pinned 1 worker (1 core): frames/s", fps["pinned_1"], "frames/s", note=note)
    res.add("pinned 2 workers (2 cores): frames/s", fps["pinned_2"], "frames/s")
    res.add("scaling 2 workers / 1 worker (pinned)", fps["pinned_2"] / fps["pinned_1"], "x", target=SCALING_TARGET,
            note="meaningful on a quiet machine only")  # fmt: skip
    n = default_workers()
    wall, cpu, _ = harvest_folder(paths, work / "store-default", n, None)
    util = cpu / (wall * len(cores))
    res.add(f"CPU utilisation, default harvest ({n} workers, unpinned)", util, "of all cores", target=UTIL_TARGET,
            note=f"{cpu:.1f} CPU s in {wall:.1f} s on {len(cores)} cores, pool start-up included")  # fmt: skip
    mechanisms = _mechanism_rows(res, paths, work, quick)
    res.data = {"mechanisms": mechanisms, "seconds": samples, "spread": {k: spread(v) for k, v in samples.items()}, "frames": frames,
                "fps": fps, "default": {"workers": n, "wall_s": wall, "cpu_s": cpu, "utilisation": util},
                "load_avg_start": load_start, "clip": src.name, "frames_per_video": n_frames}  # fmt: skip
    return res
