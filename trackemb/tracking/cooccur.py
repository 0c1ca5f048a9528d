"""Negatives from inside a video: tracks that co-occur while staying apart.

Two tracks of one video that are followed over the same frames while their boxes never
touch are two different objects (one object cannot be in two places at once), so their
patches are valid negatives for each other even though they share the scene. This is
the supervision that other-video negatives lack: those are told apart by the scene.

The rule (also in the README): tracks A and B are *apart* when
  1. they share at least ``min_shared_frames`` frames (both have a box on each), and
  2. on every shared frame the boxes are separated by a gap of at least
     ``gap_frac`` times the larger of the two boxes' longer sides, along x or y.
Objects that cross paths overlap (or come close) on some shared frame, so they are never
apart; tracks that do not overlap in time are never apart either (the same object may
have been tracked twice, one after the other).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[float, float, float, float]  # x, y, w, h

MIN_SHARED_FRAMES = 3
GAP_FRAC = 0.1


def box_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the separation of two (x, y, w, h) boxes: > 0 apart, <= 0 touching/overlapping.

    Args:
        a, b: (F, 4) float boxes.

    Returns:
        (F,) the larger of the x and y gaps (negative when the intervals overlap on both axes).
    """
    gap_x = np.maximum(b[:, 0] - (a[:, 0] + a[:, 2]), a[:, 0] - (b[:, 0] + b[:, 2]))
    gap_y = np.maximum(b[:, 1] - (a[:, 1] + a[:, 3]), a[:, 1] - (b[:, 1] + b[:, 3]))
    return np.maximum(gap_x, gap_y)


def tracks_apart(
    frames_a: Sequence[int],
    boxes_a: Sequence[Box],
    frames_b: Sequence[int],
    boxes_b: Sequence[Box],
    *,
    min_shared_frames: int = MIN_SHARED_FRAMES,
    gap_frac: float = GAP_FRAC,
) -> bool:
    """True when two tracks of one video satisfy the co-occurrence rule (module docstring)."""
    shared, ia, ib = np.intersect1d(
        np.asarray(frames_a, np.int64), np.asarray(frames_b, np.int64), return_indices=True
    )
    if len(shared) < min_shared_frames:
        return False
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)[ia]
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)[ib]
    scale = np.maximum(a[:, 2:].max(1), b[:, 2:].max(1))
    return bool((box_gap(a, b) >= gap_frac * scale).all())


def apart_tracks(
    tracks: Sequence[tuple[int, Sequence[int], Sequence[Box]]],
    *,
    min_shared_frames: int = MIN_SHARED_FRAMES,
    gap_frac: float = GAP_FRAC,
) -> dict[int, list[int]]:
    """For each track of one video, the sorted ids of the tracks it is apart from.

    Args:
        tracks: (track_id, frames, boxes) per track; frames ascending.

    Returns:
        ``{track_id: [other ids]}`` for every input track (empty list when none); symmetric.
    """
    out: dict[int, list[int]] = {tid: [] for tid, _, _ in tracks}
    spans = [(tid, frames[0], frames[-1], frames, boxes) for tid, frames, boxes in tracks if len(frames)]
    spans.sort(key=lambda s: s[1])
    for i, (ta, _start_a, end_a, fa, ba) in enumerate(spans):
        for tb, start_b, _, fb, bb in spans[i + 1 :]:
            if start_b > end_a:
                break  # sorted by start: no later track overlaps A in time
            if tracks_apart(fa, ba, fb, bb, min_shared_frames=min_shared_frames, gap_frac=gap_frac):
                out[ta].append(tb)
                out[tb].append(ta)
    return {tid: sorted(ids) for tid, ids in out.items()}
