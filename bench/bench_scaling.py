"""Scaling: harvest wall time vs number of videos, one process vs two workers.

The inputs are 1, 2, 4, 8 copies of one short clip (the first frames of a sample clip,
re-encoded), each with a trailing ISO ``free`` box that names it: identical frames, so
every video costs the same work, but distinct content hashes, so the store harvests
each. A run is what the harvest flow does, minus Prefect: open a fresh store, harvest
each video with ``tracking.outcome.harvest_one``, commit it with ``PatchStore.put_video`` from the
calling thread, then ``build_triplets``. Workers are called directly (no Prefect, to keep
its start-up noise out): a ``ThreadPoolExecutor(2)`` (what the flow's
``ThreadPoolTaskRunner(max_workers=2)`` does) and a ``ProcessPoolExecutor(2)`` (fork).
The ``*_opencv`` modes repeat serial and threads with the OpenCV reader instead of decord.

Reported per mode: a least-squares line ``t = a + b * videos`` (b: seconds per video,
a: fixed cost), its R^2 (linearity), and the speed-up over one process at the most videos.
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import BenchResult, interleave, med, spread
from bench.inputs import cut_clip, distinct_copies, sample_clips
from trackemb.config import DecodeConfig, HarvestConfig
from trackemb.storage.store import PatchStore
from trackemb.tracking.outcome import harvest_one

SOURCE_CLIP = "vtest.mp4"


def _pool(mode: str) -> Executor | None:
    if mode == "threads_2":
        return ThreadPoolExecutor(max_workers=2)
    if mode == "processes_2":
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        return ProcessPoolExecutor(max_workers=2, mp_context=ctx)
    return None


def harvest_run(paths: list[Path], cfg: HarvestConfig, store_dir: Path, mode: str) -> tuple[float, int]:
    """Harvest ``paths`` into a fresh store with ``mode`` workers; returns (seconds, pairs stored)."""
    shutil.rmtree(store_dir, ignore_errors=True)
    t0 = time.perf_counter()
    pairs = 0
    with PatchStore.open(store_dir, harvest_config=cfg.model_dump(mode="json")) as store:
        pool = _pool(mode)
        try:
            outcomes = (
                (harvest_one(p, cfg) for p in paths)
                if pool is None
                else pool.map(harvest_one, paths, [cfg] * len(paths))
            )
            for outcome in outcomes:  # committed in submission order by this (the only writing) thread
                if outcome.status != "done" or outcome.harvest is None:
                    raise RuntimeError(f"harvest of {outcome.path} did not finish: {outcome.record}")
                store.put_video(outcome.harvest)
                pairs += len(outcome.harvest.pairs)
        finally:
            if pool is not None:
                pool.shutdown()
        store.build_triplets(per_pair=cfg.triplets_per_pair, seed=cfg.seed)
    seconds = time.perf_counter() - t0
    shutil.rmtree(store_dir, ignore_errors=True)
    return seconds, pairs


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y = a + b x``; returns (a, b, R^2)."""
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    total = float(((y - y.mean()) ** 2).sum())
    return float(a), float(b), 1.0 - float((resid**2).sum()) / total if total > 0 else 1.0


def run(quick: bool, work: Path) -> BenchResult:
    """Harvest time for 1..8 videos, serial vs 2 threads vs 2 processes (quick: 1-2 videos of 12 frames)."""
    res = BenchResult("scaling")
    frames, counts, rounds = (12, (1, 2), 1) if quick else (60, (1, 2, 4, 8), 2)
    src = next((c for c in sample_clips() if c.name == SOURCE_CLIP), sample_clips()[0])
    base = cut_clip(src, work / "scaling" / "base.mp4", frames)
    copies = distinct_copies(base, work / "scaling" / "copies", max(counts))
    cfg = HarvestConfig()
    cv_cfg = cfg.model_copy(update={"decode": DecodeConfig(backend="opencv")})
    modes = ("serial", "threads_2", "processes_2", "serial_opencv", "threads_2_opencv")
    pairs: dict[str, int] = {}

    def case(mode: str, n: int) -> Callable[[], float]:
        def go() -> float:
            mode_cfg = cv_cfg if mode.endswith("_opencv") else cfg
            store = work / "scaling" / f"store_{mode}_{n}"
            seconds, pairs[f"{mode}/{n}"] = harvest_run(
                copies[:n], mode_cfg, store, mode.removesuffix("_opencv")
            )
            return seconds

        return go

    harvest_run(copies[:1], cfg, work / "scaling" / "warmup", "serial")
    # Interleaved by count, then mode, so each size's modes run side by side.
    samples = interleave({f"{mode}/{n}": case(mode, n) for n in counts for mode in modes}, rounds)
    t = {key: med(v) for key, v in samples.items()}
    x = np.array(counts, float)
    fits = {}
    n_max = max(counts)
    for mode in modes:
        y = np.array([t[f"{mode}/{n}"] for n in counts])
        a, b, r2 = _line(x, y) if len(counts) > 1 else (0.0, float(y[0]), 1.0)
        fits[mode] = {"intercept_s": a, "per_video_s": b, "r2": r2}
        res.add(f"{mode}: seconds per video", b, "s", note=f"fixed {a:.2f} s, R^2 {r2:.3f}")
        res.add(f"{mode}: {n_max} videos", t[f"{mode}/{n_max}"], "s")
    for mode in modes[1:]:
        res.add(f"speed-up {mode} at {n_max} videos", t[f"serial/{n_max}"] / t[f"{mode}/{n_max}"], "x",
                note="vs serial, default config")  # fmt: skip
    res.add(
        "linearity (R^2, serial)", fits["serial"]["r2"], "R^2", note=f"{frames}-frame copies of {src.name}"
    )
    res.data = {
        "clip": src.name, "frames_per_video": frames, "counts": list(counts), "rounds": rounds,
        "seconds": samples, "median_seconds": t, "spread": {k: spread(v) for k, v in samples.items()},
        "fits": fits, "pairs": pairs, "workers": "ThreadPoolExecutor(2) / ProcessPoolExecutor(2, fork), no Prefect",
    }  # fmt: skip
    return res
