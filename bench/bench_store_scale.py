"""Store scale: per-video commit time and triplet builds as the store grows; the training index at 1M patches.

1. Commit time per video (``put_video`` of a new video, ``put_failure``, and a fixed file
   replacing its failure record) in stores of 100, 10,000 and 100,000 video records.
   Target: at 100,000 within 1.5x of at 100 (reported as t(100) / t(100k) >= 0.67).
   The full scan the stale-failure check used to do is timed beside it for contrast.
2. ``build_triplets`` at each size: the first (full) build, a poll that found nothing new,
   and the build after one new video.
3. ``trackemb.embedding.data.load_index`` of a 1M-patch store (10,000 videos x 50 tracks x 2
   patches, 500k pairs and triplets) in a fresh process: wall time (target < 30 s) and peak
   anonymous memory (heap and arrays, sampled from /proc every 2 ms) above the start (target < 1 GB).
   The peak RSS including the store's memory-mapped pages is reported beside it: those are
   page cache, shared with other readers and given back under memory pressure.

Stores are synthetic (one tiny JPEG shared by every patch) but written through the real
``PatchStore``: the bulk through its own per-video write in transactions of 1,000 videos
(one fsync per video would make a 100k-video fill take many minutes), the measured
commits through ``put_video`` / ``put_failure``, one transaction each.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from bench.common import REPO, BenchResult, med
from bench.synthetic_store import video_harvest
from trackemb.storage import records
from trackemb.storage.records import VideoHarvest, VideoRecord
from trackemb.storage.store import PatchStore
from trackemb.tracking.cooccur import apart_tracks

COMMIT_TARGET = 1 / 1.5
INDEX_SECONDS, INDEX_BYTES = 30.0, 1 << 30
_JPEG = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes()


def harvest(i: int, tracks: int, tag: str = "v") -> VideoHarvest:
    """Video ``i``: ``tracks`` tracks of 2 patches (first, last) and one pair each.

    Apart track pairs are recorded as the harvest records them (schema 2); without them every
    ``load_index`` would derive them again, the path kept only for schema-1 stores.
    """
    sha = hashlib.sha256(f"{tag}-{i}".encode()).hexdigest()
    patches = [[(f, (0.0, 0.0, 16.0, 16.0), _JPEG) for f in (2 * t, 2 * t + 24)] for t in range(tracks)]
    h = video_harvest(sha, f"/bench/{tag}/{i}.mp4", patches, frames=100, fps=25.0)
    apart = _apart(tuple((t.track_id, tuple(t.frames), tuple(map(tuple, t.boxes))) for t in h.tracks))
    return replace(h, tracks=[replace(t, apart=apart.get(t.track_id, [])) for t in h.tracks])


@functools.lru_cache(maxsize=8)
def _apart(tracks: tuple) -> dict[int, list[int]]:  # every bench video has the same track layout
    return apart_tracks(tracks)


def fill(store: PatchStore, start: int, stop: int, tracks: int, tag: str = "v") -> None:
    """Bulk-write videos ``start..stop`` with the store's own per-video write, 1,000 per transaction."""
    for lo in range(start, stop, 1000):
        batch = [harvest(i, tracks, tag) for i in range(lo, min(stop, lo + 1000))]

        def write(txn, batch=batch):  # noqa: ANN001, ANN202
            for h in batch:
                video = replace(
                    h.video, n_tracks=len(h.tracks), n_patches=len(h.patches), n_pairs=len(h.pairs)
                )
                store._write_video(txn, h, video)  # noqa: SLF001 - the library's own record layout

        store._write(write, "bench fill")  # noqa: SLF001


def _commit_times(store: PatchStore, n: int, k: int) -> dict[str, float]:
    """Median seconds of ``k`` commits of each kind into a store of ``n`` videos."""
    new, fail, fixed = [], [], []
    for j in range(k):
        h = harvest(n + j, 2)
        t0 = time.perf_counter()
        store.put_video(h)
        new.append(time.perf_counter() - t0)
        bad = VideoRecord(
            sha=f"{j:064x}", path=f"/bench/bad/{j}.mp4", status="failed", error_kind="not_a_video"
        )
        t0 = time.perf_counter()
        store.put_failure(bad)
        fail.append(time.perf_counter() - t0)
        h = harvest(j, 2, tag="fixed")
        h.video.path = bad.path
        t0 = time.perf_counter()
        store.put_video(h)  # the fixed file: drops the failure record at its path
        fixed.append(time.perf_counter() - t0)
    with store._own.read() as txn:  # noqa: SLF001 - what the old per-commit stale-failure scan decoded
        t0 = time.perf_counter()
        for _, blob in txn.cursor(db=store._own.dbs["videos"]):  # noqa: SLF001
            records.decode(VideoRecord, blob)
        scan = time.perf_counter() - t0
    return {"put_video": med(new), "put_failure": med(fail), "fixed_file": med(fixed), "old_full_scan": scan}


def _triplet_times(store: PatchStore, n: int) -> dict[str, float]:
    out = {}
    for case in ("first_build", "nothing_new"):
        t0 = time.perf_counter()
        store.build_triplets(per_pair=1, seed=0)
        out[case] = time.perf_counter() - t0
    store.put_video(harvest(10 * n + 99, 2, tag="late"))
    t0 = time.perf_counter()
    store.build_triplets(per_pair=1, seed=0)
    out["one_new_video"] = time.perf_counter() - t0
    return out


_INDEX_CHILD = """
import json, sys, threading, time
from trackemb.embedding.data import load_index
def mem():
    with open("/proc/self/status") as fh:
        kb = {l.split(":")[0]: int(l.split()[1]) for l in fh if l.startswith(("RssAnon", "VmRSS"))}
    return kb["RssAnon"] * 1024, kb["VmRSS"] * 1024
base, peak, stop = mem(), list(mem()), threading.Event()
def watch():
    while not stop.is_set():
        now = mem()
        peak[0], peak[1] = max(peak[0], now[0]), max(peak[1], now[1])
        time.sleep(0.002)
watcher = threading.Thread(target=watch, daemon=True)
watcher.start()
t0 = time.perf_counter()
index = load_index(sys.argv[1])
seconds = time.perf_counter() - t0
stop.set()
watcher.join()
print(json.dumps({"seconds": seconds, "peak_anon": peak[0] - base[0], "peak_rss_with_mapped_store": peak[1] - base[1],
                  "patches": len(index.keys), "pairs": len(index.pairs), "triplets": len(index.triplets)}))
"""


def index_load(path: Path) -> dict[str, float]:
    """load_index in a fresh process (its peak RSS is then the index's alone)."""
    env_python = [sys.executable, "-c", _INDEX_CHILD, str(path)]
    out = subprocess.run(env_python, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool, work: Path) -> BenchResult:
    res = BenchResult("store_scale")
    sizes, k, index_videos = ((100, 1000), 5, 200) if quick else ((100, 10_000, 100_000), 20, 10_000)
    commits, triplets = {}, {}
    path = work / "scale.lmdb"
    with PatchStore.open(path) as store:
        have = 0
        for n in sizes:
            fill(store, have, n, tracks=1)
            have = n
            commits[n] = _commit_times(store, n, k)
            have += k
            triplets[n] = _triplet_times(store, n)
    shutil.rmtree(path, ignore_errors=True)
    small, big = sizes[0], sizes[-1]
    for n in sizes:
        c, t = commits[n], triplets[n]
        res.add(f"commit per video at {n:,} videos", c["put_video"] * 1e3, "ms",
                note=f"failure {c['put_failure'] * 1e3:.1f} ms, fixed file {c['fixed_file'] * 1e3:.1f} ms; "
                f"old per-commit scan would add {c['old_full_scan'] * 1e3:.0f} ms")  # fmt: skip
        res.add(f"build_triplets at {n:,} videos", t["first_build"], "s",
                note=f"poll with nothing new {t['nothing_new'] * 1e3:.1f} ms, "
                f"after one new video {t['one_new_video'] * 1e3:.0f} ms")  # fmt: skip
    for kind in ("put_video", "put_failure", "fixed_file"):
        res.add(f"{kind}: t({small:,}) / t({big:,})", commits[small][kind] / commits[big][kind], "x",
                target=COMMIT_TARGET, note="per-video commit flat in store size (>= 1/1.5)")  # fmt: skip
    index_path = work / "index.lmdb"
    with PatchStore.open(index_path) as store:
        fill(store, 0, index_videos, tracks=50, tag="ix")
        store.build_triplets(per_pair=1, seed=0)
    idx = index_load(index_path)
    shutil.rmtree(index_path, ignore_errors=True)
    res.add(f"load_index of {idx['patches']:,} patches", idx["seconds"], "s",
            note=f"{idx['pairs']:,} pairs, {idx['triplets']:,} triplets; target < {INDEX_SECONDS:.0f} s")  # fmt: skip
    res.add("load_index peak memory", idx["peak_anon"] / 2**20, "MiB",
            note=f"anonymous (heap + arrays) above the start; RSS with the store's mapped pages "
            f"{idx['peak_rss_with_mapped_store'] / 2**20:,.0f} MiB (page cache, shared and reclaimable)")  # fmt: skip
    res.add("load_index: 30 s / time", INDEX_SECONDS / idx["seconds"], "x", target=1.0)
    res.add("load_index: 1 GiB / peak memory", INDEX_BYTES / max(idx["peak_anon"], 1), "x", target=1.0)
    res.data = {"commit_seconds": commits, "triplet_seconds": triplets, "index": idx, "sizes": list(sizes)}
    return res
