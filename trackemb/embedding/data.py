"""Training and evaluation data over the PatchStore.

The datasets hold only the store path and numpy arrays (keys, labels): an LMDB
environment cannot be pickled into DataLoader workers (pytorch/vision#689), and
Python-object lists grow worker memory through refcount copy-on-write
(pytorch/pytorch#13246). Each worker opens its own reader on first use.

A training batch is described by a :class:`BatchSpec` from :class:`PairBatchSampler`
(a pure function of seed, step and rank) and built whole by one worker, so batches and
their augmentations are identical whatever ``num_workers`` is, and resuming at step
``s`` replays exactly the batches a straight run would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from torchvision.io import ImageReadMode, decode_jpeg

from trackemb.config import TrainConfig
from trackemb.embedding.augment import aug_strength, augment_batch, to_input

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreIndex:
    """Numpy view of a store. Patch rows index ``keys``; pairs and triplets hold patch rows.

    Attributes:
        keys: (P,) bytes, patch keys.
        track: (P,) int64, global track label (unique over videos).
        video: (P,) int64, video label (index into ``video_shas``).
        video_shas: (V,) str.
        pairs: (Q, 2) int64 patch rows (anchor, positive).
        triplets: (T, 3) int64 patch rows (anchor, positive, negative).
    """

    keys: np.ndarray
    track: np.ndarray
    video: np.ndarray
    video_shas: np.ndarray
    pairs: np.ndarray
    triplets: np.ndarray


def load_index(store_path: str | Path) -> StoreIndex:
    """Read the store's index records once (main process) into numpy arrays."""
    from trackemb.storage.store import open_reader

    reader = open_reader(str(store_path))
    done = sorted(v.sha for v in reader.videos() if v.status == "done")
    video_of = {sha: i for i, sha in enumerate(done)}
    patches = sorted((p for p in reader.patches() if p.video_sha in video_of), key=lambda p: p.key)
    track_of: dict[tuple[str, int], int] = {}
    for p in patches:
        track_of.setdefault((p.video_sha, p.track_id), len(track_of))
    row_of = {p.key: i for i, p in enumerate(patches)}
    pairs = [(row_of[r.anchor], row_of[r.positive]) for r in reader.pairs() if r.anchor in row_of and r.positive in row_of]
    triplets = [
        (row_of[t.anchor], row_of[t.positive], row_of[t.negative])
        for t in reader.triplets()
        if t.anchor in row_of and t.positive in row_of and t.negative in row_of
    ]
    return StoreIndex(
        keys=np.array([p.key.encode() for p in patches], dtype=np.bytes_),
        track=np.array([track_of[(p.video_sha, p.track_id)] for p in patches], dtype=np.int64),
        video=np.array([video_of[p.video_sha] for p in patches], dtype=np.int64),
        video_shas=np.array(done, dtype=np.str_),
        pairs=np.array(pairs, dtype=np.int64).reshape(-1, 2),
        triplets=np.array(triplets, dtype=np.int64).reshape(-1, 3),
    )


def split_videos(n_videos: int, val_frac: float, seed: int, min_train: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``round(n_videos * val_frac)`` videos (leaving at least ``min_train``), chosen by ``seed``.

    Returns:
        (train_video_ids, val_video_ids), sorted int64 arrays.
    """
    n_val = min(int(round(n_videos * val_frac)), max(0, n_videos - min_train))
    perm = np.random.default_rng([seed, 7]).permutation(n_videos)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


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
        pairs: (Q, 2) patch rows. pair_video: (Q,) video label of each pair.
        triplets: (T, 3) patch rows of harvested triplets, used for steps < ``triplets_until_step``.
    """

    def __init__(
        self, pairs: np.ndarray, pair_video: np.ndarray, *, batch_pairs: int, min_videos: int, seed: int,
        rank: int = 0, world_size: int = 1, triplets: np.ndarray | None = None, triplets_until_step: int = 0,
    ) -> None:
        if len(pairs) == 0:
            raise ValueError("no positive pairs to sample from")
        self.pairs, self.pair_video = pairs, pair_video
        self.batch_pairs, self.seed, self.rank, self.world_size = batch_pairs, seed, rank, world_size
        self.videos = np.unique(pair_video)
        self.min_videos = min(min_videos, len(self.videos))
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
            missing = rng.permutation(np.setdiff1d(self.videos, present))[: self.min_videos - len(present)]
            for slot, v in zip(rng.permutation(len(sel))[: len(missing)], missing, strict=False):
                sel[slot] = rng.choice(np.flatnonzero(self.pair_video == v))
        return BatchSpec(step, self.rank, self.pairs[sel].T.reshape(-1).copy(), 2)

    def __iter__(self) -> Iterator[BatchSpec]:
        step = self.start_step
        while True:
            yield self.batch_at(step)
            step += 1

    def state_dict(self, step: int) -> dict[str, int]:
        """State after ``step`` consumed batches (the loop's count, not the prefetching iterator's)."""
        return {"step": step, "seed": self.seed, "n_pairs": len(self.pairs), "batch_pairs": self.batch_pairs,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state["step"]``; refuses a state from different data or batch size."""
        mine = self.state_dict(int(state["step"]))
        for key in ("seed", "n_pairs", "batch_pairs"):
            if int(state[key]) != mine[key]:
                raise ValueError(f"sampler state has {key}={state[key]}, this run has {mine[key]}")
        self.start_step = int(state["step"])


class _LazyStore:
    """Holds the store path; opens a reader on first use in whichever process uses it."""

    def __init__(self, store_path: str | Path, keys: np.ndarray) -> None:
        self.store_path = str(store_path)
        self.keys = keys
        self._reader: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reader": None}

    def _decode(self, row: int) -> Tensor:
        if self._reader is None:
            from trackemb.storage.store import open_reader

            self._reader = open_reader(self.store_path)
        blob = self._reader.get_jpeg(self.keys[row].decode())
        return decode_jpeg(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)


class PairBatchDataset(_LazyStore, Dataset[dict[str, Any]]):
    """Turns a :class:`BatchSpec` into an augmented batch.

    Returns dicts with ``images`` (N, 3, input_px, input_px) float in [0, 1], ``track`` and
    ``video`` (N,) long labels, ``step``, ``groups`` and ``strength``.
    """

    def __init__(self, store_path: str | Path, index: StoreIndex, cfg: TrainConfig) -> None:
        super().__init__(store_path, index.keys)
        self.track, self.video, self.cfg = index.track, index.video, cfg

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, spec: BatchSpec) -> dict[str, Any]:
        strength = aug_strength(spec.step, self.cfg)
        seed = int(np.random.SeedSequence([self.cfg.seed, spec.step, spec.rank]).generate_state(1)[0])
        images = augment_batch([self._decode(int(r)) for r in spec.rows], strength, self.cfg.input_px, seed)
        return {
            "images": images,
            "track": torch.from_numpy(self.track[spec.rows]),
            "video": torch.from_numpy(self.video[spec.rows]),
            "step": spec.step,
            "groups": spec.groups,
            "strength": strength,
        }


class PatchDataset(_LazyStore, Dataset[tuple[Tensor, int]]):
    """Single patches, un-augmented, for evaluation and embedding. Item: ((3, px, px) float, row)."""

    def __init__(self, store_path: str | Path, keys: np.ndarray, input_px: int) -> None:
        super().__init__(store_path, keys)
        self.input_px = input_px

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, row: int) -> tuple[Tensor, int]:
        return to_input(self._decode(row)[None], self.input_px)[0], row
