"""Synthetic PatchStore content for tests and benchmarks: the one builder of a video's records.

Tests (``tests/synth_store.py``, ``tests/embed_fixtures.py``) and benchmarks
(``bench/inputs.py``, ``bench/bench_store_scale.py``) each draw their own patches; this
module turns them into a :class:`~trackemb.storage.records.VideoHarvest` the way a
harvest lays them out (keys from ``patch_key``, roles first/inner/last, counts), so the
store they write is laid out by the library itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trackemb.storage.records import (
    Box,
    PairRecord,
    PatchRecord,
    TrackRecord,
    VideoHarvest,
    VideoRecord,
    patch_key,
)

# One patch of a track: (frame, box, JPEG bytes).
Patch = tuple[int, Box, bytes]


def video_harvest(
    sha: str, path: str, tracks: Sequence[Sequence[Patch]], *, chain: bool = False, **video: Any
) -> VideoHarvest:
    """One video's records from its tracks' patches (in frame order; track ids by position).

    Args:
        chain: pairs are (first, last) plus consecutive ones among the earlier patches
            (``(0, 1), (1, 2), ...`` up to the one before last); else (first, last) only.
        video: more :class:`VideoRecord` fields (frames, fps, ...).
    """
    harvest = VideoHarvest(video=VideoRecord(sha=sha, path=path, status="done", **video))
    for t, patches in enumerate(tracks):
        frames, boxes = [f for f, _, _ in patches], [b for _, b, _ in patches]
        harvest.tracks.append(TrackRecord(sha, t, frames[0], frames[-1], frames, boxes, "length"))
        keys = []
        for i, (frame, box, jpeg) in enumerate(patches):
            key = patch_key(sha, t, frame)
            role = "first" if i == 0 else "last" if i == len(patches) - 1 else "inner"
            harvest.patches.append(PatchRecord(key, sha, t, frame, box, role))
            harvest.jpegs[key] = jpeg
            keys.append(key)
        pairs = [(keys[0], keys[-1])] + (list(zip(keys[:-2], keys[1:-1], strict=True)) if chain else [])
        harvest.pairs += [PairRecord(a, p, sha, t) for a, p in pairs]
    harvest.video.n_tracks = len(harvest.tracks)
    harvest.video.n_patches, harvest.video.n_pairs = len(harvest.patches), len(harvest.pairs)
    return harvest
