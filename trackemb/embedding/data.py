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
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from trackemb.embedding.split import held_out_split, split_groups, split_videos
from trackemb.embedding.track_pairs import apart_labels, cross_window_overlaps
from trackemb.storage.columns import owned_keys, patch_fields, split_pair_keys, triplet_columns
from trackemb.storage.schema import PAIRS, PATCHES, SHA16
from trackemb.storage.store import StoreReader, open_reader

__all__ = [
    "BatchSpec", "PairBatchDataset", "PairBatchSampler", "PatchDataset", "StoreIndex", "load_index",
    "held_out_split", "split_groups", "split_videos", "train_sampler",
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
        group: (P,) int64, negative group: the video label, or with a time window one label per
            (video, window of the track's start); a track never spans two groups.
        group_video: (G,) int64, the video label of each group.
        group_key: (G,) str, stable name of each group: the video's sha, plus ``#w<window>`` with a
            time window; a run's persisted split lists these.
        apart: (K, 2) int64 track labels of co-occurring tracks of one video that stay apart
            (valid in-video negatives), both orders listed.
        overlap: (L, 2) int64 track labels of one video's tracks in *different* time windows whose
            frame spans overlap (never negatives of each other unless apart), both orders listed;
            empty without a time window.
    """

    keys: np.ndarray
    track: np.ndarray
    video: np.ndarray
    video_shas: np.ndarray
    pairs: np.ndarray
    triplets: np.ndarray
    group: np.ndarray
    group_video: np.ndarray
    group_key: np.ndarray = field(default_factory=lambda: np.zeros(0, np.str_))
    apart: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    overlap: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))

    @property
    def n_tracks(self) -> int:
        return int(self.track.max(initial=-1)) + 1

    def apart_keys(self) -> np.ndarray:
        """Sorted ``a * n_tracks + b`` codes of :attr:`apart`, for fast batch lookups."""
        return np.sort(self.apart[:, 0] * self.n_tracks + self.apart[:, 1])

    def overlap_keys(self) -> np.ndarray:
        """Sorted ``a * n_tracks + b`` codes of :attr:`overlap`, for fast batch lookups."""
        return np.sort(self.overlap[:, 0] * self.n_tracks + self.overlap[:, 1])

    def track_group(self) -> np.ndarray:
        """(n_tracks,) int64: the group of each track label, to relabel batches by track."""
        out = np.zeros(int(self.track.max(initial=-1)) + 1, np.int64)
        out[self.track] = self.group
        return out


def load_index(store: str | Path | StoreReader, window_s: float | None = None) -> StoreIndex:
    """Read the store's index records once (main process) into numpy arrays.

    Only finished videos with at least one positive pair are included; video labels
    follow sorted content hashes, so they are stable across runs. A path is opened and
    closed here (LMDB allows one handle per process); a reader is used as it is.

    Args:
        store: PatchStore path or an open reader.
        window_s: None: one negative group per video. Else each video is cut into
            consecutive windows of ``window_s`` seconds by track start time, one group each.
    """
    if not isinstance(store, StoreReader):
        with open_reader(str(store)) as reader:
            return load_index(reader, window_s)
    reader = store
    # Columns of fixed-width keys, not record objects: 1M patches load in seconds and ~100 MB
    # (bench/bench_store_scale.py). Patch and pair keys carry video, track and frame.
    videos = {v.sha: v for v in reader.videos() if v.status == "done"}
    full_sha = {sha[:SHA16].encode(): sha for sha in videos}
    anchor, positive = split_pair_keys(owned_keys(reader, PAIRS))
    # Only videos with a positive pair can give anchors, and held-out ones need them for R@1.
    used = sorted(full_sha[s] for s in np.unique(anchor.astype(f"S{SHA16}")).tolist() if s in full_sha)
    used16 = np.array([sha[:SHA16].encode() for sha in used], dtype=f"S{SHA16}")
    keys = owned_keys(reader, PATCHES)
    sha16, track_id, frame = patch_fields(keys)
    keep = np.isin(sha16, used16)
    keys, sha16, track_id, frame = keys[keep], sha16[keep], track_id[keep], frame[keep]
    video = np.searchsorted(used16, sha16).astype(np.int64)
    # Keys sort by (video, track, frame): a track's patches are one run, its first has the lowest frame.
    first = np.flatnonzero(np.r_[True, (video[1:] != video[:-1]) | (track_id[1:] != track_id[:-1])])
    track = (np.cumsum(np.isin(np.arange(len(keys)), first)) - 1).astype(np.int64)
    track_video, start = video[first], frame[first]
    tracks = list(reader.tracks())  # read once: the window spans and the apart pairs both need them
    window = np.zeros(len(first), np.int64)
    overlap = np.zeros((0, 2), np.int64)
    if window_s is not None:
        end = frame[np.r_[first[1:], len(keys)] - 1].copy()  # last patch frame until the record says
        label = {
            (int(v), int(t)): i for i, (v, t) in enumerate(zip(track_video, track_id[first], strict=True))
        }
        row_of_video = {sha: i for i, sha in enumerate(used)}
        for t in tracks:
            i = label.get((row_of_video.get(t.video_sha, -1), t.track_id))
            if i is not None:
                start[i], end[i] = t.start_frame, t.end_frame
        fps = np.array([videos[sha].fps for sha in used], np.float64)[track_video]
        # Window by the track's *start*: a ~1 s track belongs to one window, so no track is split.
        with np.errstate(divide="ignore", invalid="ignore"):
            window = np.where(fps > 0, (start / fps) // window_s, 0).astype(np.int64)
        overlap = cross_window_overlaps(track_video, window, start, end)
    # Groups labelled in (video, window) order, so labels are stable and sorted like videos.
    groups, track_group = np.unique(
        np.stack([track_video, window], 1).reshape(-1, 2), axis=0, return_inverse=True
    )
    track_group = track_group.reshape(-1).astype(np.int64)

    def rows(*cols: np.ndarray) -> np.ndarray:
        """Patch rows of key columns; entries with any key not in ``keys`` are left out."""
        found = []
        for col in cols:
            at = np.minimum(np.searchsorted(keys, col), max(len(keys) - 1, 0))
            found.append((at, keys[at] == col if len(keys) else np.zeros(len(col), bool)))
        ok = np.logical_and.reduce([hit for _, hit in found])
        return np.stack([at[ok] for at, _ in found], 1).astype(np.int64).reshape(-1, len(cols))

    return StoreIndex(
        keys=keys.astype(np.bytes_),
        track=track,
        video=video,
        video_shas=np.array(used, dtype=np.str_),
        pairs=rows(anchor, positive),
        triplets=rows(*triplet_columns(reader)),
        group=track_group[track] if len(track) else np.zeros(0, np.int64),
        group_video=groups[:, 0].astype(np.int64),
        group_key=np.array(
            [used[v] if window_s is None else f"{used[v]}#w{w}" for v, w in groups.tolist()], dtype=np.str_
        ),
        apart=apart_labels(tracks, used, track_video, track_id[first]),
        overlap=overlap,
    )


class _LazyStore:
    """Holds a :class:`StoreReader`, which pickles as its path and opens LMDB lazily in each process.

    Datasets used in one process should share one reader: LMDB allows one handle per process.
    """

    def __init__(self, store: str | Path | StoreReader, keys: np.ndarray) -> None:
        self.reader = store if isinstance(store, StoreReader) else open_reader(str(store))
        self.keys = keys

    def _decode(self, row: int) -> Tensor:
        return self._decode_rows([row])[0]

    def _decode_rows(self, rows: Sequence[int] | np.ndarray) -> list[Tensor]:
        """Patches ``rows`` as (3, H, W) uint8 RGB tensors, in order.

        One read transaction for all the bytes and one ``decode_jpeg`` call for the list: per
        key transactions cost a quarter of the read+decode rate, and the list call 1.27x less
        than decoding one by one (bench/bench_store.py).
        """
        if len(rows) == 0:
            return []
        blobs = self.reader.get_jpegs([self.keys[int(r)].decode() for r in rows])
        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
        return decode_jpeg(data, mode=ImageReadMode.RGB)


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
        images = augment_batch(
            self._decode_rows(spec.rows),
            strength,
            self.cfg.input_px,
            seed,
            self.cfg.aug_color,
            self.cfg.aug_background,
            self.cfg.aug_geometry,
        )
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

    def __getitems__(self, rows: list[int]) -> list[tuple[Tensor, int]]:
        """A DataLoader batch at once (torch calls this instead of ``__getitem__`` per row)."""
        images = self._decode_rows(rows)
        if len({tuple(img.shape) for img in images}) == 1:
            return list(zip(to_input(torch.stack(images), self.input_px), rows, strict=True))
        return [(to_input(img[None], self.input_px)[0], row) for img, row in zip(images, rows, strict=True)]
