"""Deterministic batches of positive pairs from many videos, sharded by rank, resumable.

A batch is a pure function of (seed, step, rank), so resuming at step ``s`` replays
exactly what a straight run would have drawn, whatever the DataLoader prefetched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from torch.utils.data import Sampler

from trackemb.config import TrainConfig

if TYPE_CHECKING:
    from trackemb.embedding.data import StoreIndex


class BatchSpec(NamedTuple):
    """What one training batch is: the dataset turns it into images and labels.

    ``rows`` are patch rows laid out in ``groups`` equal blocks: (anchors, positives) or,
    for harvested triplets, (anchors, positives, negatives).
    """

    step: int
    rank: int
    rows: np.ndarray
    groups: int


class PairBatchSampler(Sampler[BatchSpec]):
    """Infinite, deterministic batches of positive pairs drawn from many videos.

    Each epoch shuffles every video's pairs and interleaves the videos evenly (each
    video's pairs get evenly spaced sort keys with a random offset), so consecutive
    batches mix videos; a batch with fewer than ``min_videos`` videos gets pairs of
    missing videos swapped in. Global batch ``step * world_size + rank`` goes to ``rank``,
    so ranks see disjoint batches of the same epoch order.

    Args:
        pairs: (Q, 2) patch rows. pair_video: (Q,) video (or negative group) label of each pair.
        triplets: (T, 3) patch rows of harvested triplets, used for steps < ``triplets_until_step``.
    """

    def __init__(
        self,
        pairs: np.ndarray,
        pair_video: np.ndarray,
        *,
        batch_pairs: int,
        min_videos: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        triplets: np.ndarray | None = None,
        triplets_until_step: int = 0,
    ) -> None:
        if len(pairs) == 0:
            raise ValueError("no positive pairs to sample from")
        self.pairs, self.pair_video = pairs, pair_video
        self.batch_pairs, self.seed, self.rank, self.world_size = batch_pairs, seed, rank, world_size
        self.videos = np.unique(pair_video)
        self.min_videos = min(min_videos, len(self.videos), batch_pairs)
        self.triplets = triplets if triplets is not None else np.empty((0, 3), np.int64)
        self.triplets_until_step = triplets_until_step if len(self.triplets) else 0
        self.start_step = 0
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def _epoch_order(self, kind: str, epoch: int) -> np.ndarray:
        if (kind, epoch) not in self._cache:
            rng = np.random.default_rng([self.seed, epoch, 0 if kind == "pairs" else 1])
            if kind == "triplets":
                order = rng.permutation(len(self.triplets))
            else:
                sort_key = np.empty(len(self.pairs))
                for v in self.videos:
                    idx = rng.permutation(np.flatnonzero(self.pair_video == v))
                    sort_key[idx] = (np.arange(len(idx)) + rng.random()) / len(idx)
                order = np.argsort(sort_key, kind="stable")
            self._cache = {(kind, epoch): order}  # only the current epoch is ever needed again
        return self._cache[(kind, epoch)]

    def _select(self, kind: str, n_items: int, step: int) -> tuple[np.ndarray, int, int]:
        g = step * self.world_size + self.rank
        per_epoch = max(1, n_items // self.batch_pairs)
        epoch, j = divmod(g, per_epoch)
        order = self._epoch_order(kind, epoch)
        return np.resize(np.roll(order, -j * self.batch_pairs), self.batch_pairs), epoch, j

    def batch_at(self, step: int) -> BatchSpec:
        """The batch of global step ``step`` for this rank (pure function of seed, step, rank)."""
        if step < self.triplets_until_step:
            sel, _, _ = self._select("triplets", len(self.triplets), step)
            return BatchSpec(step, self.rank, self.triplets[sel].T.reshape(-1).copy(), 3)
        sel, epoch, j = self._select("pairs", len(self.pairs), step)
        present = np.unique(self.pair_video[sel])
        if len(present) < self.min_videos:
            rng = np.random.default_rng([self.seed, epoch, j, 2])
            for v in rng.permutation(np.setdiff1d(self.videos, present))[: self.min_videos - len(present)]:
                # Replace a pair of a video that has others in the batch, so no video drops out.
                vids, counts = np.unique(self.pair_video[sel], return_counts=True)
                slot = rng.choice(np.flatnonzero(np.isin(self.pair_video[sel], vids[counts > 1])))
                sel[slot] = rng.choice(np.flatnonzero(self.pair_video == v))
        return BatchSpec(step, self.rank, self.pairs[sel].T.reshape(-1).copy(), 2)

    def __iter__(self) -> Iterator[BatchSpec]:
        step = self.start_step
        while True:
            yield self.batch_at(step)
            step += 1

    def state_dict(self, step: int) -> dict[str, int]:
        """State after ``step`` consumed batches (the loop's count, not the prefetching iterator's)."""
        return {
            "step": step,
            "seed": self.seed,
            "n_pairs": len(self.pairs),
            "batch_pairs": self.batch_pairs,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, int], *, allow_world_size_change: bool = False) -> None:
        """Continue from ``state["step"]``; refuses a state from different data, batch size or
        number of processes (global batch ``step * world_size + rank`` would deal other batches)."""
        mine = self.state_dict(int(state["step"]))
        keys = ("seed", "n_pairs", "batch_pairs") + (() if allow_world_size_change else ("world_size",))
        for key in keys:
            if int(state.get(key, 1)) != mine[key]:
                raise ValueError(f"sampler state has {key}={state.get(key, 1)}, this run has {mine[key]}")
        self.start_step = int(state["step"])


def train_sampler(
    index: StoreIndex, train_groups: np.ndarray, cfg: TrainConfig, rank: int = 0, world_size: int = 1
) -> PairBatchSampler:
    """The training sampler over the pairs (and harvested triplets) of ``train_groups`` only.

    Batches are mixed by negative group (``index.group``: the video, or a time window of
    it with ``cfg.negative_window_s``), since in-batch negatives come from other groups.
    Harvested triplets are kept when all three patches are in training groups.
    """
    pair_group = index.group[index.pairs[:, 0]]
    keep = np.isin(pair_group, train_groups)
    trip_ok = np.isin(index.group[index.triplets], train_groups).all(axis=1)
    return PairBatchSampler(
        index.pairs[keep], pair_group[keep], batch_pairs=cfg.batch_pairs, min_videos=cfg.min_videos_per_batch,
        seed=cfg.seed, rank=rank, world_size=world_size, triplets=index.triplets[trip_ok],
        triplets_until_step=cfg.mine.hard_from_step if cfg.mine.use_harvested_triplets else 0,
    )  # fmt: skip
