"""Workers: does the harvest scale with cores? Pinned 1 vs 2 worker processes, and CPU use of a default run.

1. Each ``HarvestPool`` worker pinned to one core (``sched_setaffinity``) with one OpenCV
   thread (decoding is one reader thread run one frame ahead of the analysis, on the same
   core): frames/s of 2 workers on cores {0, 1} / frames/s of 1 worker on core 0, over
   copies of a >= 300-frame clip (distinct hashes, identical frames), pool start-up
   included. Target >= 1.7. Each finished video is committed by this process (the single
   writer), as the harvest flow does.
2. CPU utilisation of a default (unpinned, one worker per core) harvest of the same
   folder: CPU seconds of this process and its workers / (wall seconds x cores). Target >= 85 %.

Only meaningful on a quiet machine: the load average at the start is reported with the
rows (other processes take cores from the workers, which lowers both figures).
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from pathlib import Path

from bench.common import BenchResult, interleave, load_avg, med, spread
from bench.inputs import cut_clip, distinct_copies, sample_clips
from trackemb.config import HarvestConfig
from trackemb.pool import HarvestPool, default_workers
from trackemb.storage.store import PatchStore

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
    res.data = {"seconds": samples, "spread": {k: spread(v) for k, v in samples.items()}, "frames": frames,
                "fps": fps, "default": {"workers": n, "wall_s": wall, "cpu_s": cpu, "utilisation": util},
                "load_avg_start": load_start, "clip": src.name, "frames_per_video": n_frames}  # fmt: skip
    return res
