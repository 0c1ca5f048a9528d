"""Relations between track labels of a :class:`~trackemb.embedding.data.StoreIndex`.

Which pairs of one video's tracks are valid negatives of each other (*apart*, the co-occurrence
rule of ``trackemb.tracking.cooccur``) and which must never be, though time windows put them in
different negative groups (*overlapping* in time across a window boundary).
"""

from __future__ import annotations

import numpy as np

from trackemb.storage.records import TrackRecord
from trackemb.tracking.cooccur import apart_tracks


def cross_window_overlaps(
    track_video: np.ndarray, window: np.ndarray, start: np.ndarray, end: np.ndarray
) -> np.ndarray:
    """(L, 2) track labels, both orders: same video, different windows, frame spans that overlap.

    Windows go by the track's start, so a track starting just before a boundary runs on into
    the next window, beside tracks that may follow the same object at the same moment.
    """
    out = []
    bounds = np.flatnonzero(np.r_[True, track_video[1:] != track_video[:-1], True])  # labels run by video
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        t = np.arange(lo, hi)
        # Only a window's neighbour can overlap a ~1 s track, but spans decide, not windows.
        hit = (start[t][:, None] <= end[t][None, :]) & (start[t][None, :] <= end[t][:, None])
        hit &= window[t][:, None] != window[t][None, :]
        a, b = np.nonzero(hit)
        out.append(np.stack([t[a], t[b]], 1))
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), np.int64)


def apart_labels(
    tracks: list[TrackRecord], used: list[str], track_video: np.ndarray, track_ids: np.ndarray
) -> np.ndarray:
    """(K, 2) track labels of apart track pairs (both orders); schema-1 records (``apart`` None) are derived.

    Args:
        tracks: the store's track records. used: video shas by video label. track_video, track_ids: video label and per-video track id
            of each track label.
    """
    label = {(int(v), int(t)): i for i, (v, t) in enumerate(zip(track_video, track_ids, strict=True))}
    row_of_video = {sha: i for i, sha in enumerate(used)}
    by_video: dict[int, list[TrackRecord]] = {}
    for t in tracks:
        v = row_of_video.get(t.video_sha)
        if v is not None and (v, t.track_id) in label:
            by_video.setdefault(v, []).append(t)
    out: list[tuple[int, int]] = []
    for v, recs in by_video.items():
        if any(t.apart is None for t in recs):
            derived = apart_tracks([(t.track_id, t.frames, t.boxes) for t in recs])
        else:
            derived = {t.track_id: t.apart or [] for t in recs}
        for tid, others in derived.items():
            out += [(label[(v, tid)], label[(v, o)]) for o in others if (v, o) in label]
    return np.array(sorted(out), dtype=np.int64).reshape(-1, 2)
