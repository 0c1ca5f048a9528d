"""Checks every command runs before any Prefect server starts or any file is written.

Each check is cheap (stat calls, one read-only LMDB open) and fails with one message that
names the input and says what to do, so a typo costs a second, not a temporary Prefect
server, a traceback and half-created output folders.
"""

from __future__ import annotations

import os
from pathlib import Path

from trackemb.cli.app import fail
from trackemb.embedding.rundir import CKPT_NAME
from trackemb.errors import TrackembError


def _harvest_hint(store: Path) -> str:
    return f"run `trackemb harvest VIDEO_DIR --store {store}` first"


def video_source(video_dir: Path, pattern: str = "**/*") -> None:
    """A folder holding at least one video file matching ``pattern``, or one video file."""
    if not video_dir.exists() and not video_dir.is_symlink():
        fail(
            f"{video_dir}: no such folder or file; pass a folder of videos (searched recursively) or one video"
        )
    if video_dir.is_dir():
        from trackemb.tracking.files import VIDEO_EXTENSIONS, find_videos

        if not find_videos(video_dir, pattern):
            fail(
                f"{video_dir}: no video files match {pattern!r}; expected extensions "
                f"{', '.join(sorted(VIDEO_EXTENSIONS))}"
            )


def _is_store(path: Path) -> bool:
    return (path / "data.mdb").is_file() or any((path / "shards").glob("*/data.mdb"))


def writable_store(store: Path) -> None:
    """A store that exists, or an empty/new directory where one can be created."""
    if store.exists() and not store.is_dir():
        fail(f"{store}: is a file, not a PatchStore directory; pass a new or existing store directory")
    if store.is_dir() and not _is_store(store) and any(store.iterdir()):
        fail(f"{store}: a non-empty folder that is not a PatchStore (no data.mdb); pass a new directory")
    parent = next((p for p in [store, *store.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        fail(f"{parent}: not writable; choose a --store under a folder you can write to")


def readable_store(store: Path) -> None:
    """An existing PatchStore (single or sharded)."""
    if not store.exists():
        fail(f"{store}: no such PatchStore; {_harvest_hint(store)}")
    if not store.is_dir() or not _is_store(store):
        fail(f"{store}: no PatchStore here (no data.mdb); {_harvest_hint(store)}")


def trainable_store(store: Path, windows: bool) -> None:
    """A store with at least two videos that have positive pairs (negatives come from other videos).

    With ``windows`` (``negative_window_s``) one video cut into time windows can be enough,
    so only an empty store is refused here and training checks the rest.
    """
    readable_store(store)
    from trackemb.storage.store import open_reader

    try:
        with open_reader(store) as reader:
            videos = reader.videos()
    except TrackembError as exc:
        fail(str(exc))
    usable = sum(v.status == "done" and v.n_pairs > 0 for v in videos)
    if usable < (1 if windows else 2):
        fail(
            f"{store}: {usable} of {len(videos)} stored video(s) have positive pairs; training needs at least "
            "two (negatives are patches of other videos): harvest more videos into this store"
        )


def new_run_dir(run_dir: Path, resume: bool) -> None:
    """A run directory training may write: new, or resumable with ``--resume``."""
    if run_dir.exists() and not run_dir.is_dir():
        fail(f"{run_dir}: is a file; pass a directory for the training run")
    if (run_dir / CKPT_NAME).exists() and not resume:
        fail(f"{run_dir / CKPT_NAME} exists; add --resume to continue that run, or pass a new --run-dir")


def trained_run(run_dir: Path) -> None:
    """A training run with a checkpoint."""
    if not (run_dir / CKPT_NAME).is_file():
        fail(f"{run_dir}: no {CKPT_NAME} here; run `trackemb train STORE --run-dir {run_dir}` first")


def export_dir(path: Path) -> None:
    """A directory written by ``trackemb export``."""
    if not (path / "model_card.json").is_file():
        fail(f"{path}: no model_card.json; run `trackemb export RUN_DIR --out {path}` first")


def embeddings(path: Path) -> None:
    """An export directory holding the output of ``trackemb embed``."""
    export_dir(path)
    if not (path / "embeddings.npy").is_file() or not (path / "patches.csv").is_file():
        fail(f"{path}: no embeddings.npy/patches.csv; run `trackemb embed {path} STORE` first")


def output_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        fail(f"{path}: is a file; pass a directory for the outputs")


def store_is_free(store: Path) -> None:
    """Refuse at once when another harvest holds the store's writer lock."""
    from trackemb.storage.lock import WriterLock

    probe = WriterLock(store)
    try:
        probe.acquire(timeout_s=0)
    except TrackembError as exc:
        fail(str(exc))
    probe.release()
