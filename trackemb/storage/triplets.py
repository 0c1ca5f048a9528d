"""Harvested candidate triplets: each positive pair plus random negatives from *other* videos.

These are the examples the first, random stage of the mining curriculum trains on (DESIGN:
"negative candidates: patches of other videos, never the same video").
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trackemb.storage.records import PairRecord, TripletRecord

SHA16 = 16  # patch keys start with the first 16 hex digits of their video's sha (records.patch_key)


def sample_triplets(
    pairs: list[PairRecord],
    patch_keys: np.ndarray,
    per_pair: int,
    rng: np.random.Generator,
    video_shas: Iterable[str],
) -> list[TripletRecord]:
    """Draw ``per_pair`` negatives per pair, uniformly over the patches of the other videos.

    Args:
        pairs: positive pairs, in a stable order (the draws follow it).
        patch_keys: (P,) str, every candidate negative patch key, in any order.
        per_pair: negatives per pair.
        rng: the only source of randomness.
        video_shas: full shas of the videos the keys belong to (for ``negative_video``).

    Returns:
        Triplets in pair order; a pair whose video holds every patch gets none.
    """
    if per_pair <= 0 or not pairs or len(patch_keys) == 0:
        return []
    full_sha = {sha[:SHA16]: sha for sha in video_shas}
    patch_keys = np.sort(patch_keys)  # each video's keys become one contiguous block
    key_video = np.array([k[:SHA16] for k in patch_keys.tolist()])
    videos, first, count = np.unique(key_video, return_index=True, return_counts=True)
    block = {v: (f, c) for v, f, c in zip(videos.tolist(), first.tolist(), count.tolist(), strict=True)}
    anchor_video = np.array([p.video_sha[:SHA16] for p in pairs])
    start, own = (
        np.array([block.get(v, (0, 0)) for v in anchor_video.tolist()], dtype=np.int64).reshape(-1, 2).T
    )
    others = len(patch_keys) - own
    rows = np.flatnonzero(others > 0)
    # Uniform over the other videos' patches: draw in [0, others) and step over this video's block.
    draws = rng.integers(0, others[rows, None], size=(len(rows), per_pair))
    idx = np.where(draws < start[rows, None], draws, draws + own[rows, None])
    assert (key_video[idx] != anchor_video[rows, None]).all(), "negative from the anchor's own video"
    out = []
    for i, negatives in zip(rows.tolist(), idx.tolist(), strict=True):
        pair = pairs[i]
        for j in negatives:
            neg = str(patch_keys[j])
            out.append(TripletRecord(pair.anchor, pair.positive, neg, pair.video_sha, full_sha[neg[:SHA16]]))
    return out
