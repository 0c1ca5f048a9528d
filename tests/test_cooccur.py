"""The co-occurrence rule for in-video negatives, on tracks with known geometry.

Also: tracks harvested from a generated video where two objects move apart on the same
frames are recorded as apart, and two objects that cross paths are not.
"""

from __future__ import annotations

import numpy as np
import pytest

from trackemb.tracking.cooccur import apart_tracks, box_gap, tracks_apart


def _track(x0: float, dx: float, frames: range, y: float = 50.0, side: float = 20.0):
    boxes = [(x0 + dx * (f - frames[0]), y, side, side) for f in frames]
    return list(frames), boxes


def test_box_gap_sign() -> None:
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    assert box_gap(a, np.array([[15.0, 0.0, 10.0, 10.0]]))[0] == pytest.approx(5.0)
    assert box_gap(a, np.array([[5.0, 5.0, 10.0, 10.0]]))[0] < 0  # overlap
    assert box_gap(a, np.array([[0.0, 30.0, 10.0, 10.0]]))[0] == pytest.approx(20.0)  # apart in y


def test_parallel_objects_far_apart_are_apart() -> None:
    fa, ba = _track(0, 2, range(0, 30))
    fb, bb = _track(200, 2, range(10, 40))
    assert tracks_apart(fa, ba, fb, bb)


def test_objects_that_cross_paths_are_not_apart() -> None:
    # A walks right, B walks left: apart at the start and end, overlapping in the middle.
    fa, ba = _track(0, 5, range(0, 30))
    fb, bb = _track(150, -5, range(0, 30))
    assert not tracks_apart(fa, ba, fb, bb)


def test_tracks_not_overlapping_in_time_are_not_apart() -> None:
    fa, ba = _track(0, 0, range(0, 30))
    fb, bb = _track(300, 0, range(31, 60))  # far away, but later: maybe the same object again
    assert not tracks_apart(fa, ba, fb, bb)
    fc, bc = _track(300, 0, range(28, 60))  # shares only 2 frames (< MIN_SHARED_FRAMES)
    assert not tracks_apart(fa, ba, fc, bc)


def test_a_touching_gap_is_not_clear() -> None:
    fa, ba = _track(0, 0, range(0, 10))
    fb, bb = _track(21, 0, range(0, 10))  # 1 px gap for 20 px boxes: less than 10 % of the side
    assert not tracks_apart(fa, ba, fb, bb)
    fc, bc = _track(23, 0, range(0, 10))  # 3 px >= 2 px
    assert tracks_apart(fa, ba, fc, bc)


def test_apart_tracks_is_symmetric_and_matches_pairwise_rule() -> None:
    rng = np.random.default_rng(0)
    tracks = []
    for tid in range(12):
        start = int(rng.integers(0, 40))
        frames = range(start, start + int(rng.integers(5, 30)))
        tracks.append((tid, *_track(float(rng.uniform(0, 300)), float(rng.uniform(-4, 4)), frames)))
    got = apart_tracks(tracks)
    for ta, fa, ba in tracks:
        for tb, fb, bb in tracks:
            want = ta != tb and tracks_apart(fa, ba, fb, bb)
            assert (tb in got[ta]) == want, (ta, tb)
