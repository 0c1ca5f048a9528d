"""Training and evaluation data over the PatchStore.

The datasets hold only a :class:`StoreReader` (which pickles as its path and opens LMDB
lazily in each process) and numpy arrays of keys and labels: an LMDB environment cannot
be pickled into DataLoader workers (pytorch/vision#689), and Python-object lists grow
worker memory through refcount copy-on-write (pytorch/pytorch#13246).

A training batch is described by a :class:`BatchSpec` from :class:`PairBatchSampler`
(``sampler.py``; a pure function of seed, step and rank) and built whole by one worker,
with its augmentation seeded by the same triple, so batches are identical whatever
``num_workers`` is, and resuming at step ``s`` replays exactly what a straight run saw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from trackemb.config import TrainConfig
from trackemb.embedding.augment import aug_strength, augment_batch, to_input
from trackemb.embedding.sampler import BatchSpec, PairBatchSampler, train_sampler
from trackemb.storage.store import StoreReader, open_reader

__all__ = [
    "BatchSpec", "PairBatchDataset", "PairBatchSampler", "PatchDataset", "StoreIndex", "load_index",
    "split_videos", "train_sampler",
]  # fmt: skip

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


def load_index(store: str | Path | StoreReader) -> StoreIndex:
    """Read the store's index records once (main process) into numpy arrays.

    Only finished videos with at least one positive pair are included; video labels
    follow sorted content hashes, so they are stable across runs. A path is opened and
    closed here (LMDB allows one handle per process); a reader is used as it is.
    """
    if not isinstance(store, StoreReader):
        with open_reader(str(store)) as reader:
            return load_index(reader)
    reader = store
    done = {v.sha for v in reader.videos() if v.status == "done"}
    all_pairs = reader.pairs()
    # Only videos with a positive pair can give anchors, and held-out ones need them for R@1.
    used = sorted(done & {r.video_sha for r in all_pairs})
    video_of = {sha: i for i, sha in enumerate(used)}
    patches = sorted((p for p in reader.patches() if p.video_sha in video_of), key=lambda p: p.key)
    track_of: dict[tuple[str, int], int] = {}
    for p in patches:
        track_of.setdefault((p.video_sha, p.track_id), len(track_of))
    row_of = {p.key: i for i, p in enumerate(patches)}
    pairs = [
        (row_of[r.anchor], row_of[r.positive])
        for r in all_pairs
        if r.anchor in row_of and r.positive in row_of
    ]
    triplets = [
        (row_of[t.anchor], row_of[t.positive], row_of[t.negative])
        for t in reader.triplets()
        if t.anchor in row_of and t.positive in row_of and t.negative in row_of
    ]
    return StoreIndex(
        keys=np.array([p.key.encode() for p in patches], dtype=np.bytes_),
        track=np.array([track_of[(p.video_sha, p.track_id)] for p in patches], dtype=np.int64),
        video=np.array([video_of[p.video_sha] for p in patches], dtype=np.int64),
        video_shas=np.array(used, dtype=np.str_),
        pairs=np.array(pairs, dtype=np.int64).reshape(-1, 2),
        triplets=np.array(triplets, dtype=np.int64).reshape(-1, 3),
    )


def split_videos(
    n_videos: int, val_frac: float, seed: int, min_train: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``round(n_videos * val_frac)`` videos (leaving at least ``min_train``), chosen by ``seed``.

    Returns:
        (train_video_ids, val_video_ids), sorted int64 arrays.
    """
    n_val = min(int(round(n_videos * val_frac)), max(0, n_videos - min_train))
    perm = np.random.default_rng([seed, 7]).permutation(n_videos)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class _LazyStore:
    """Holds a :class:`StoreReader`, which pickles as its path and opens LMDB lazily in each process.

    Datasets used in one process should share one reader: LMDB allows one handle per process.
    """

    def __init__(self, store: str | Path | StoreReader, keys: np.ndarray) -> None:
        self.reader = store if isinstance(store, StoreReader) else open_reader(str(store))
        self.keys = keys

    def _decode(self, row: int) -> Tensor:
        blob = self.reader.get_jpeg(self.keys[row].decode())
        return decode_jpeg(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)


class PairBatchDataset(_LazyStore, Dataset[dict[str, Any]]):
    """Turns a :class:`BatchSpec` into an augmented batch.

    Returns dicts with ``images`` (N, 3, input_px, input_px) float in [0, 1], ``track`` and
    ``video`` (N,) long labels, ``step``, ``groups`` and ``strength``.
    """

    def __init__(self, store: str | Path | StoreReader, index: StoreIndex, cfg: TrainConfig) -> None:
        super().__init__(store, index.keys)
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

    def __init__(self, store: str | Path | StoreReader, keys: np.ndarray, input_px: int) -> None:
        super().__init__(store, keys)
        self.input_px = input_px

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, row: int) -> tuple[Tensor, int]:
        return to_input(self._decode(row)[None], self.input_px)[0], row
