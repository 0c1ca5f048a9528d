"""The held-out split: chosen once per run, saved in the run directory, read back everywhere.

Training picks held-out units (whole videos, or whole groups such as time windows) by
seed and writes them to ``RUN_DIR/split.json`` by *name* (video content hash, plus the
window). Resuming, validation, ``evaluate`` and the model card all read that file, so a
video harvested after training started is never scored as held-out, and the card counts
only what training used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trackemb.atomic import write_text
from trackemb.config import TrainConfig
from trackemb.errors import TrainingError

if TYPE_CHECKING:
    from trackemb.embedding.data import StoreIndex

SPLIT_NAME = "split.json"


def split_videos(
    n_videos: int, val_frac: float, seed: int, min_train: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``round(n_videos * val_frac)`` videos (leaving at least ``min_train``), chosen by ``seed``.

    Returns:
        (train_video_ids, val_video_ids), sorted int64 arrays.
    """
    return _split_units(n_videos, val_frac, seed, np.ones(n_videos, bool), min_train)


def _split_units(
    n_units: int, val_frac: float, seed: int, eligible: np.ndarray, min_train: int
) -> tuple[np.ndarray, np.ndarray]:
    n_val = min(int(round(n_units * val_frac)), max(0, n_units - min_train))
    perm = np.random.default_rng([seed, 7]).permutation(n_units)
    val = perm[eligible[perm]][:n_val]
    return np.sort(np.setdiff1d(perm, val)), np.sort(val)


def split_groups(
    index: StoreIndex, val_frac: float, seed: int, *, val_by: str = "video", min_tracks: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out split in negative groups; with one group per video and defaults it is :func:`split_videos`.

    Units are videos (``val_by="video"``: a held-out video takes all its groups) or groups
    (``val_by="group"``: e.g. one time window of a long video, disjoint from every
    training group). ``round(n_units * val_frac)`` units are held out, leaving two for
    training, chosen in a seeded order among units with at least ``min_tracks`` tracks:
    R@1 over a handful of tracks says little.

    Returns:
        (train_group_ids, val_group_ids), sorted int64 arrays.
    """
    unit_of_group = index.group_video if val_by == "video" else np.arange(len(index.group_video))
    n_units = len(index.video_shas) if val_by == "video" else len(index.group_video)
    unit_of_track = unit_of_group[index.track_group()]
    tracks_per_unit = np.bincount(unit_of_track, minlength=n_units)
    _, val_units = _split_units(n_units, val_frac, seed, tracks_per_unit >= min_tracks, 2)
    val = np.flatnonzero(np.isin(unit_of_group, val_units))
    return np.setdiff1d(np.arange(len(unit_of_group)), val), val


def held_out_split(index: StoreIndex, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train_group_ids, val_group_ids) of ``index`` for ``cfg``; evaluation recomputes it the same way."""
    return split_groups(index, cfg.val_frac, cfg.seed, val_by=cfg.val_by, min_tracks=cfg.val_min_tracks)


def _split_record(
    index: StoreIndex, train_g: np.ndarray, val_g: np.ndarray, cfg: TrainConfig
) -> dict[str, Any]:
    def videos(groups: np.ndarray) -> list[str]:
        return sorted({str(index.video_shas[v]) for v in index.group_video[groups]})

    return {
        "val_by": cfg.val_by,
        "val_frac": cfg.val_frac,
        "seed": cfg.seed,
        "negative_window_s": cfg.negative_window_s,
        "train_groups": sorted(str(k) for k in index.group_key[train_g]),
        "val_groups": sorted(str(k) for k in index.group_key[val_g]),
        "train_videos": videos(train_g),
        "val_videos": videos(val_g),
    }


def write_split(path: str | Path, record: dict[str, Any]) -> None:
    """Write the split atomically (a kill mid-write keeps the old file)."""
    write_text(path, json.dumps(record, indent=2) + "\n")


def read_split(run_dir: str | Path) -> dict[str, Any] | None:
    """The persisted split of a run, or None when the run has none (made before splits were saved).

    Raises:
        TrainingError: the file exists but is not a split record.
    """
    path = Path(run_dir) / SPLIT_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{path}: unreadable split file ({exc}); delete it to re-split") from exc
    if not isinstance(record, dict) or not {"train_groups", "val_groups"} <= set(record):
        raise TrainingError(f"{path}: not a trackemb split (needs train_groups and val_groups)")
    return record


def groups_of(index: StoreIndex, names: list[str]) -> np.ndarray:
    """Group ids of ``index`` whose names are in ``names`` (names missing from the store are dropped)."""
    return np.flatnonzero(np.isin(index.group_key, np.array(names, dtype=np.str_)))


def run_split(
    index: StoreIndex, cfg: TrainConfig, run_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train_group_ids, val_group_ids) of a run: read from ``run_dir/split.json`` or chosen and saved.

    With a saved split, groups the store gained since (new videos) are in neither set, so
    they are never trained on by a resumed run nor scored as held-out.
    """
    record = read_split(run_dir) if run_dir is not None else None
    if record is not None:
        return groups_of(index, record["train_groups"]), groups_of(index, record["val_groups"])
    train_g, val_g = held_out_split(index, cfg)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_split(Path(run_dir) / SPLIT_NAME, _split_record(index, train_g, val_g, cfg))
    return train_g, val_g


def split_summary(
    index: StoreIndex, train_g: np.ndarray, val_g: np.ndarray, train_pairs: int
) -> dict[str, int]:
    """What training uses (recorded in checkpoints and the model card)."""
    val_rows = np.isin(index.group, val_g)
    return {
        "videos": int(len(np.unique(index.group_video[train_g]))),
        "pairs": int(train_pairs),
        "held_out_videos": int(len(np.unique(index.group_video[val_g]))),
        "held_out_tracks": int(len(np.unique(index.track[val_rows]))),
        "held_out_patches": int(val_rows.sum()),
        "apart_track_pairs": int(len(index.apart) // 2),
    }
