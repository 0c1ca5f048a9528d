"""Harvest vs decode: how close the full harvest gets to the speed of decoding alone.

Target: frames/s of the full harvest (hash, decode, motion, tracking, crops, JPEG, store
write: ``tracking.outcome.harvest_one`` + ``PatchStore.put_video``, what the harvest flow does per
video) >= 0.5 x frames/s of the fastest plain decoder (decord or OpenCV) on the same
frames of the sample clips. Variants of the harvest (OpenCV reader, frame stride 2, one
OpenCV thread) and of decoding (decord threads, decoding at working resolution) are
measured in the same interleaved rounds. Instrumented harvests (decord and OpenCV
readers) show where the time goes, and the CPU an open decord reader burns while the
harvest works between reads is measured too.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2

from bench.common import BenchResult, interleave, med, rate, spread
from bench.inputs import sample_clips
from trackemb.config import DecodeConfig, HarvestConfig
from trackemb.storage.store import PatchStore
from trackemb.tracking import harvest as harvest_mod
from trackemb.tracking.decode import to_work_gray
from trackemb.tracking.outcome import harvest_one
from trackemb.tracking.stream import iter_frames

TARGET = 0.5


def _decord(clip: Path, max_frames: int, threads: int, work_px: int | None = None) -> int:
    import decord

    size: dict[str, int] = {}
    if work_px is not None:
        # decord scales inside the decoder (swscale), so the full frame never reaches numpy.
        probe = cv2.VideoCapture(str(clip))
        w, h = probe.get(cv2.CAP_PROP_FRAME_WIDTH), probe.get(cv2.CAP_PROP_FRAME_HEIGHT)
        probe.release()
        s = min(1.0, work_px / max(w, h))
        size = {"width": round(w * s), "height": round(h * s)}
    vr = decord.VideoReader(str(clip), ctx=decord.cpu(0), num_threads=threads, **size)
    n = min(len(vr), max_frames)
    for i in range(0, n, 16):  # the library reads chunks of 16 with get_batch
        vr.get_batch(list(range(i, min(n, i + 16)))).asnumpy()
    return n


def _decord_idle_cores(clip: Path, seconds: float = 0.5) -> float:
    """CPU cores this process uses while an open decord reader waits mid-file (0 when idle)."""
    import decord

    vr = decord.VideoReader(str(clip), ctx=decord.cpu(0), num_threads=1)
    vr.get_batch(list(range(min(16, len(vr))))).asnumpy()
    c0, t0 = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    used = (time.process_time() - c0) / (time.perf_counter() - t0)
    del vr
    return used


def _opencv(clip: Path, max_frames: int) -> int:
    cap, n = cv2.VideoCapture(str(clip)), 0
    while n < max_frames and cap.read()[0]:
        n += 1
    cap.release()
    return n


def _reader(clip: Path, max_frames: int, work_px: int) -> int:
    """The library's reader as the harvest uses it, plus the working-resolution gray frame."""
    n = 0
    for _, bgr in iter_frames(clip, DecodeConfig(max_frames=max_frames)):
        to_work_gray(bgr, work_px)
        n += 1
    return n


def _harvest(
    clips: list[Path], cfg: HarvestConfig, work: Path, tag: str, frames_out: dict[str, int]
) -> float:
    """Harvest every clip into a fresh store (opened outside the timing); returns seconds."""
    store_dir = work / f"store_{tag}"
    shutil.rmtree(store_dir, ignore_errors=True)
    total = 0.0
    with PatchStore.open(store_dir, harvest_config=cfg.model_dump(mode="json")) as store:
        for clip in clips:
            t0 = time.perf_counter()
            outcome = harvest_one(clip, cfg)
            if outcome.status != "done" or outcome.harvest is None:
                raise RuntimeError(f"harvest of {clip} did not finish: {outcome.record}")
            store.put_video(outcome.harvest)
            total += time.perf_counter() - t0
            frames_out[clip.name] = outcome.harvest.video.frames
            frames_out[f"{clip.name}:patches"] = len(outcome.harvest.patches)
    shutil.rmtree(store_dir, ignore_errors=True)
    return total


@contextlib.contextmanager
def _cv2_threads(n: int | None) -> Iterator[None]:
    before = cv2.getNumThreads()
    cv2.setNumThreads(before if n is None else n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


# Names that trackemb.tracking.harvest imports and calls, timed per stage by stage_profile.
_STAGES = {
    "decode": ("iter_frames",),
    "work frame (gray, downscale)": ("make_work_frame",),
    "motion discovery": ("find_moving_regions", "object_points"),
    "tracking (LK, median flow)": ("update_trackers",),
    "crops, quality, JPEG": ("crop_patch", "blur_var", "pair_change", "encode_jpeg"),
}


def stage_profile(clips: list[Path], cfg: HarvestConfig) -> dict[str, float]:
    """Seconds per harvest stage, from light wrappers around the functions harvest.py calls.

    Wrapping costs ~1 us a call (cProfile would inflate the Python-heavy stages). A stage
    whose names harvest.py no longer imports stays at 0; ``other`` is the remainder.
    """
    spent: dict[str, float] = {stage: 0.0 for stage in _STAGES}
    saved: dict[str, Any] = {}

    def wrap(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - t0

        return timed_call

    for stage, names in _STAGES.items():
        for name in names:
            if hasattr(harvest_mod, name):
                saved[name] = fn = getattr(harvest_mod, name)
                timer = wrap(stage, fn) if name != "iter_frames" else _frames_timer(fn, spent)
                setattr(harvest_mod, name, timer)
    try:
        t0 = time.perf_counter()
        for clip in clips:
            harvest_mod.harvest_video(clip, cfg)
        total = time.perf_counter() - t0
    finally:
        for name, fn in saved.items():
            setattr(harvest_mod, name, fn)
    spent["other (bookkeeping, hashing)"] = max(0.0, total - sum(spent.values()))
    spent["total"] = total
    return spent


def _frames_timer(iter_frames: Callable[..., Any], spent: dict[str, float]) -> Callable[..., Any]:
    return lambda *args, **kwargs: _TimedFrames(iter_frames(*args, **kwargs), spent)


class _TimedFrames:
    """A frame stream whose ``next()`` time is charged to the decode stage."""

    def __init__(self, stream: Any, spent: dict[str, float]) -> None:
        self._stream, self._spent = stream, spent
        self.info = stream.info

    @property
    def backend(self) -> str:
        return self._stream.backend

    def __iter__(self) -> Iterator[Any]:
        it = iter(self._stream)
        while True:
            t0 = time.perf_counter()
            item = next(it, None)
            self._spent["decode"] += time.perf_counter() - t0
            if item is None:
                return
            yield item


def _profile_rows(
    res: BenchResult, clips: list[Path], cfg: HarvestConfig, cv_cfg: HarvestConfig
) -> dict[str, dict[str, float]]:
    """Stage shares of the default harvest, and what the decord reader costs the other stages.

    Profiles of both readers alternate (two rounds each, medians), like every other measurement.
    """
    runs: dict[str, list[dict[str, float]]] = {"decord": [], "opencv": []}
    for _ in range(2):
        runs["decord"].append(stage_profile(clips, cfg))
        runs["opencv"].append(stage_profile(clips, cv_cfg))
    prof = {name: {k: med([r[k] for r in rs]) for k in rs[0]} for name, rs in runs.items()}
    for stage, seconds in prof["decord"].items():
        if stage != "total":
            res.add(f"share of harvest: {stage}", seconds / prof["decord"]["total"], "share")
    # Same frames and same work: only the reader differs, so this is its cost to the other stages.
    analysis = [k for k in prof["decord"] if k not in ("decode", "total")]
    slow = sum(prof["decord"][k] for k in analysis) / max(sum(prof["opencv"][k] for k in analysis), 1e-9)
    res.add("non-decode stages, decord reader / OpenCV reader", slow, "x time", note="same frames, same work")
    return prof


def run(quick: bool, work: Path) -> BenchResult:
    """Measure harvest and decode rates on the sample clips (quick: one clip, 24 frames, one round)."""
    res = BenchResult("harvest")
    clips = sample_clips()[:1] if quick else sample_clips()
    max_frames, rounds = (24, 1) if quick else (150, 5)
    base = HarvestConfig(decode=DecodeConfig(max_frames=max_frames))
    variants = {
        "harvest": base,
        "harvest_opencv_reader": base.model_copy(
            update={"decode": DecodeConfig(backend="opencv", max_frames=max_frames)}
        ),
        "harvest_stride2": base.model_copy(
            update={"decode": DecodeConfig(frame_stride=2, max_frames=max_frames)}
        ),
    }
    work_px = base.decode.work_long_side_px
    frames: dict[str, dict[str, int]] = {}

    def decode_case(fn: Callable[[Path], int], name: str) -> Callable[[], float]:
        def case() -> float:
            t0 = time.perf_counter()
            frames[name] = {c.name: fn(c) for c in clips}
            return time.perf_counter() - t0

        return case

    def harvest_case(name: str, cfg: HarvestConfig, cv2_threads: int | None = None) -> Callable[[], float]:
        def case() -> float:
            frames[name] = {}
            with _cv2_threads(cv2_threads):
                return _harvest(clips, cfg, work, name, frames[name])

        return case

    decoders: dict[str, Callable[[Path], int]] = {
        "decode_decord_1thread": lambda c: _decord(c, max_frames, 1),
        "decode_decord_auto": lambda c: _decord(c, max_frames, 0),
        "decode_opencv": lambda c: _opencv(c, max_frames),
        "decode_decord_at_work_res": lambda c: _decord(c, max_frames, 1, work_px),
        "reader_plus_work_gray": lambda c: _reader(c, max_frames, work_px),
    }
    cases = {name: decode_case(fn, name) for name, fn in decoders.items()}
    for name, cfg in variants.items():
        cases[name] = harvest_case(name, cfg)
    cases["harvest_cv2_1thread"] = harvest_case("harvest_cv2_1thread", base, cv2_threads=1)
    # One untimed pass first: page cache, decoder libraries and lazy imports warm for every case.
    _harvest(clips[:1], base, work, "warmup", {})
    samples = interleave(cases, rounds)

    def n_frames(name: str) -> int:
        return sum(v for k, v in frames[name].items() if ":" not in k)

    fps = {name: rate(n_frames(name), s) for name, s in samples.items()}
    plain = ("decode_decord_1thread", "decode_decord_auto", "decode_opencv")
    best = max(plain, key=fps.get)
    limit = fps[best]
    res.add("decode limit (fastest decoder)", limit, "frames/s", note=f"{best}")
    for name in plain:
        res.add(name, fps[name], "frames/s")
    res.add("decode_decord_at_work_res", fps["decode_decord_at_work_res"], "frames/s",
            note=f"decord scales to {work_px}px long side while decoding")  # fmt: skip
    res.add(
        "reader_plus_work_gray",
        fps["reader_plus_work_gray"],
        "frames/s",
        note="library reader + to_work_gray",
    )
    res.add("harvest (default config)", fps["harvest"], "frames/s", note=f"backend auto, {len(clips)} clips")
    res.add("harvest / decode", fps["harvest"] / limit, "ratio", TARGET)
    for name in ("harvest_opencv_reader", "harvest_stride2", "harvest_cv2_1thread"):
        res.add(f"{name} / decode", fps[name] / limit, "ratio", note=f"{fps[name]:.0f} frames/s")
    profiles = {} if quick else _profile_rows(res, clips, base, variants["harvest_opencv_reader"])
    idle = _decord_idle_cores(clips[0])
    res.add("decord reader idle CPU", idle, "cores", note="busy while the harvest works between reads")
    res.data = {
        "clips": [c.name for c in clips],
        "max_frames": max_frames,
        "rounds": rounds,
        "frames": frames,
        "seconds": samples,
        "median_seconds": {k: med(v) for k, v in samples.items()},
        "spread": {k: spread(v) for k, v in samples.items()},
        "fps": fps,
        "decode_limit": {"backend": best, "fps": limit},
        "ratio": fps["harvest"] / limit,
        "stage_seconds": profiles,
        "decord_idle_cores": idle,
        "config": base.model_dump(mode="json"),
    }
    return res
