"""Read a PatchStore that is one LMDB environment, or a root plus shards, as one store.

A sharded store is ``<store>/`` (the root environment: meta and triplets) plus
``<store>/shards/<name>/``, each a complete PatchStore written by one worker. Readers
list the root and every shard as *parts*; each video belongs to one part (the first
that has it done, else the first that has a failure record), so a video stored twice
is still read once.

:class:`StoreReader` is what training and export use: it holds only the path, is
picklable, and opens its LMDB handles lazily in each process, reopening after a fork,
because an ``lmdb.Environment`` cannot be pickled into DataLoader workers
(pytorch/vision#689) nor used across a fork.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from trackemb.errors import MissingKeyError, StoreError
from trackemb.storage import records, schema
from trackemb.storage.env import StorePart, open_part, read_meta
from trackemb.storage.parts import owned_videos, read_records
from trackemb.storage.records import PairRecord, PatchRecord, TrackRecord, TripletRecord, VideoRecord
from trackemb.storage.schema import DONE, JPEGS, PAIRS, PATCHES, TRACKS, TRIPLETS
from trackemb.storage.stats import collect_stats

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
_SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
R = TypeVar("R")


def shard_dir(root: str | Path, name: str) -> Path:
    """Directory of shard ``name`` under ``root``.

    Raises:
        StoreError: ``name`` is not a plain directory name.
    """
    if not _SHARD_NAME.match(name):
        raise StoreError(f"{root}: invalid shard name {name!r} (use letters, digits, '.', '_' and '-')")
    return Path(root) / SHARDS_DIR / name


def part_dirs(root: str | Path) -> list[tuple[str, Path]]:
    """``(name, dir)`` of the root environment (name ``""``) and of every shard, in a stable order."""
    root = Path(root)
    found = [("", root)] if (root / "data.mdb").exists() else []
    shards = root / SHARDS_DIR
    if shards.is_dir():
        # meta.json is written once a shard's tables and meta are committed: a shard still being
        # created (by a worker starting right now) has nothing to read yet and is left out.
        found += [(p.name, p) for p in sorted(shards.iterdir()) if (p / schema.META_JSON).exists()]
    return found


class StoreView:
    """Read methods over the parts of a store; subclasses say how parts are opened."""

    path: Path
    _route: dict[str, str]  # sha16 -> part name that served its last JPEG

    def _parts(self) -> AbstractContextManager[list[StorePart]]:
        raise NotImplementedError

    def is_done(self, video_sha: str) -> bool:
        """Whether any part (root or shard) holds the video's done marker."""
        with self._parts() as parts:
            for part in parts:
                with part.read() as txn:
                    if txn.get(schema.done_key(video_sha), db=part.dbs[DONE]) is not None:
                        return True
        return False

    def video(self, video_sha: str) -> VideoRecord | None:
        with self._parts() as parts:
            found = owned_videos(parts).get(video_sha)
        return None if found is None else found[1]

    def videos(self) -> list[VideoRecord]:
        """Every video record (done and failed), sorted by sha."""
        with self._parts() as parts:
            owned = owned_videos(parts)
        return [owned[sha][1] for sha in sorted(owned)]

    def tracks(self, video_sha: str | None = None) -> list[TrackRecord]:
        """Track records, of one video or of all, in key order."""
        return self._records(TRACKS, TrackRecord, video_sha)

    def patches(self) -> list[PatchRecord]:
        """Patch index records (no JPEG bytes) in key order."""
        return self._records(PATCHES, PatchRecord)

    def pairs(self) -> list[PairRecord]:
        """Positive pairs (two patches of one track) in key order."""
        return self._records(PAIRS, PairRecord)

    def triplets(self) -> list[TripletRecord]:
        """Harvested triplets; they live in the root (written by ``build_triplets``)."""
        with self._parts() as parts:
            root = parts[0]
            if root.name:
                return []
            with root.read() as txn:
                return [records.decode(TripletRecord, v) for _, v in txn.cursor(db=root.dbs[TRIPLETS])]

    def get_jpeg(self, key: str) -> bytes:
        """Raw JPEG bytes of one patch (:meth:`get_jpegs` reads a batch faster).

        Raises:
            MissingKeyError: no patch with this key (a StoreError and a KeyError).
        """
        sha16 = schema.sha16_of_key(key)
        with self._parts() as parts:
            for part in self._by_route(parts, sha16):
                with part.read() as txn:
                    blob = txn.get(schema.patch_db_key(key), db=part.dbs[JPEGS])
                if blob is not None:
                    self._route[sha16] = part.name
                    return blob
        raise MissingKeyError(f"{self.path}: no patch JPEG with key {key!r} in this store")

    def get_jpegs(self, keys: Sequence[str]) -> list[bytes]:
        """Raw JPEG bytes of ``keys``, in order, from one read transaction per part (~6x faster lookups).

        Raises:
            MissingKeyError: some key names no patch (a StoreError and a KeyError).
        """
        out: list[bytes] = []
        with self._parts() as parts, ExitStack() as stack:
            txn_of = {part.name: stack.enter_context(part.read()) for part in parts}
            for key in keys:
                sha16 = schema.sha16_of_key(key)
                for part in self._by_route(parts, sha16):
                    blob = txn_of[part.name].get(schema.patch_db_key(key), db=part.dbs[JPEGS])
                    if blob is not None:
                        self._route[sha16] = part.name
                        out.append(blob)
                        break
                else:
                    raise MissingKeyError(f"{self.path}: no patch JPEG with key {key!r} in this store")
        return out

    def _by_route(self, parts: list[StorePart], sha16: str) -> list[StorePart]:
        first = self._route.get(sha16)  # the part that served this video last is searched first
        return sorted(parts, key=lambda p: p.name != first) if first else parts

    def meta(self) -> dict[str, Any]:
        """The store's meta record plus ``shards`` (names, empty for a single store)."""
        with self._parts() as parts:
            meta = read_meta(parts[0])
            meta["shards"] = [p.name for p in parts if p.name]
        return meta

    def stats(self) -> dict[str, Any]:
        """Counts for humans and reports: see :func:`trackemb.storage.stats.collect_stats`."""
        with self._parts() as parts:
            return collect_stats(self.path, parts)

    def _records(self, db: str, cls: type[R], video_sha: str | None = None) -> list[R]:
        prefix = b"" if video_sha is None else schema.video_prefix(video_sha)
        with self._parts() as parts:
            return read_records(parts, owned_videos(parts), db, cls, prefix)


class StoreReader(StoreView):
    """Read-only view of a store or sharded store, safe to pickle into DataLoader workers.

    Holds only the path; LMDB handles are opened on first use in each process and
    reopened after a fork. Shards are listed when the handles open (``refresh()`` to
    pick up shards created later). Nothing big is cached.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pid: int | None = None
        self._open: list[StorePart] = []
        self._route = {}
        self._mutex = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"StoreReader({str(self.path)!r})"

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _parts(self) -> Iterator[list[StorePart]]:
        if self._pid != os.getpid():
            if self._pid is not None:
                # Forked: a lock held by a parent thread at fork time would never be released here.
                self._mutex = threading.Lock()
            with self._mutex:
                if self._pid != os.getpid():
                    self._reopen()
        yield self._open

    def _reopen(self) -> None:
        # After a fork the parts held are the parent's; env.open_part hands out this process's own.
        self.close()
        dirs = part_dirs(self.path)
        if not dirs:
            raise StoreError(f"{self.path}: no PatchStore here (no data.mdb in it or in {SHARDS_DIR}/*)")
        opened: list[StorePart] = []
        try:
            for name, path in dirs:
                opened.append(open_part(name, path))
        except BaseException:
            for part in opened:
                part.close()
            raise
        self._open, self._pid = opened, os.getpid()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down the modules
            pass

    def refresh(self) -> None:
        """Forget open handles; the next read reopens them and lists shards again."""
        self.close()

    def close(self) -> None:
        for part in self._open:
            part.close()
        self._open, self._pid, self._route = [], None, {}


def open_reader(path: str | Path) -> StoreReader:
    """A picklable read-only view of the store (single or sharded) at ``path``; opens lazily.

    Raises:
        StoreError: nothing that looks like a PatchStore at ``path``.
    """
    if not part_dirs(path):
        raise StoreError(f"{path}: no PatchStore here (no data.mdb in it or in {SHARDS_DIR}/*)")
    return StoreReader(path)
