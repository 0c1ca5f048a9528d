"""The PatchStore: one LMDB environment per store (or shard), one process writing it.

Each harvested video is written in **one** transaction together with its ``done`` marker,
so a crash (even kill -9) leaves the video either fully stored or absent, and a re-run
that skips videos with a marker produces the same keys. Layout and codec: ``schema.py``;
reading a root plus shards as one store: ``shards.py``; the writer lock: ``lock.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from trackemb.errors import StoreError
from trackemb.storage import paths, records, schema, triplets
from trackemb.storage.env import StorePart, open_part, open_writer_part, read_meta, scan, write_error
from trackemb.storage.lock import WriterLock
from trackemb.storage.records import VideoHarvest, VideoRecord
from trackemb.storage.schema import DONE, JPEGS, META, PAIRS, PATCHES, TRACKS, TRIPLETS, VIDEOS
from trackemb.storage.shards import StoreReader, StoreView, open_reader, part_dirs, shard_dir

__all__ = ["PatchStore", "StoreReader", "open_reader"]

log = logging.getLogger(__name__)

_MAX_GROWTHS = 40
T = TypeVar("T")


class PatchStore(StoreView):
    """Writer (or read-only handle) of one store directory; use :meth:`open` or :meth:`open_shard`.

    Reads see the store's shards too (``<path>/shards/*``), opened only for the duration of
    each call, so a root writer can skip and build triplets over work done by any shard.
    One instance may be shared by threads: writes are serialised.
    """

    def __init__(self, path: Path, own: StorePart, lock: WriterLock | None) -> None:
        self.path = path
        self._own = own
        self._lock = lock
        self._route = {}
        self._write_mutex = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        readonly: bool = False,
        harvest_config: dict[str, Any] | None = None,
        map_size_bytes: int = 64 << 30,
        lock_timeout_s: float = 0.0,
    ) -> PatchStore:
        """Open (creating if needed) the store at ``path``.

        Args:
            path: store directory.
            readonly: read without the writer lock (works while another process writes).
            harvest_config: ``HarvestConfig.model_dump(mode="json")``; recorded on create and
                compared (by fingerprint) on every later writer open. None: not checked.
            map_size_bytes: initial LMDB map size; only address space (the file stays sparse)
                and doubled automatically when a write needs more.
            lock_timeout_s: how long a writer waits for another writer to release the store.

        Raises:
            StoreLockedError: another writer holds the store (names its pid, host, start time).
            StoreError: not a PatchStore, unknown schema version, or a different harvest config.
        """
        path = Path(path)
        if readonly:
            if not (path / "data.mdb").exists():
                raise StoreError(f"{path}: no PatchStore here (no data.mdb)")
            return cls(path, open_part("", path), None)
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path}: exists and is not a directory; --store must be a directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the store directory: {exc}") from exc
        lock = WriterLock(path)
        lock.acquire(lock_timeout_s)
        try:
            own = open_writer_part(path, map_size_bytes)
        except BaseException:
            lock.release()
            raise
        store = cls(path, own, lock)
        try:
            store._init_meta(harvest_config)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_shard(
        cls,
        root: str | Path,
        name: str,
        *,
        harvest_config: dict[str, Any] | None = None,
        map_size_bytes: int = 64 << 30,
        lock_timeout_s: float = 0.0,
    ) -> PatchStore:
        """Open the writer of shard ``name`` of the sharded store at ``root``.

        Creates the root if it does not exist yet. The root's LMDB environment is not opened
        when it exists (its writer may be this very process); the harvest config is checked
        against the root's ``meta.json`` instead.

        Raises:
            StoreError: invalid shard name, or a harvest config other than the root's.
        """
        root = Path(root)
        root_meta = schema.read_meta_json(root)
        if not (root / "data.mdb").exists():
            cls.open(root, harvest_config=harvest_config, lock_timeout_s=max(lock_timeout_s, 5.0)).close()
        elif harvest_config is not None and root_meta is not None:
            schema.check_config(root_meta, harvest_config, str(root))
        return cls.open(
            shard_dir(root, name),
            harvest_config=harvest_config,
            map_size_bytes=map_size_bytes,
            lock_timeout_s=lock_timeout_s,
        )

    def close(self) -> None:
        """Let go of the environment and give the writer lock back (idempotent)."""
        if not self._closed:
            self._closed = True
            self._own.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> PatchStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PatchStore({str(self.path)!r}, {'writer' if self._lock else 'readonly'})"

    @contextmanager
    def _parts(self) -> Iterator[list[StorePart]]:
        if self._closed:
            raise StoreError(f"{self.path}: this PatchStore is closed")
        shards: list[StorePart] = []
        try:
            shards += [open_part(n, p) for n, p in part_dirs(self.path) if n]
            yield [self._own, *shards]
        finally:
            for part in shards:
                part.close()

    def put_video(self, harvest: VideoHarvest) -> None:
        """Store everything harvested from one video in one transaction, with its done marker.

        Replaces any earlier records of the video (a failure record, or an earlier harvest),
        so putting the same harvest twice leaves the store unchanged.

        Raises:
            StoreError: inconsistent harvest, full disk, or read-only store.
        """
        problems = harvest.problems()
        if problems:
            sha, where = harvest.video.sha, harvest.video.path
            raise StoreError(f"refusing to store video {sha} ({where}): " + "; ".join(problems[:5]))
        video = replace(
            harvest.video,
            status="done",
            error="",
            error_kind="",
            n_tracks=len(harvest.tracks),
            n_patches=len(harvest.patches),
            n_pairs=len(harvest.pairs),
        )
        self._write(lambda txn: self._write_video(txn, harvest, video), f"video {video.sha} ({video.path})")
        log.info("stored %s: %d tracks, %d pairs", video.path, video.n_tracks, video.n_pairs)

    def _write_video(self, txn: lmdb.Transaction, harvest: VideoHarvest, video: VideoRecord) -> None:
        db = self._own.dbs
        prefix = schema.video_prefix(video.sha)
        for name in (TRACKS, PATCHES, JPEGS, PAIRS):
            for key in list(scan(txn, db[name], prefix, values=False)):
                txn.delete(key, db=db[name])
        txn.put(schema.video_key(video.sha), records.encode(video), db=db[VIDEOS])
        for track in harvest.tracks:
            txn.put(schema.track_key(track), records.encode(track), db=db[TRACKS])
        for patch in harvest.patches:
            key = schema.patch_db_key(patch.key)
            txn.put(key, records.encode(patch), db=db[PATCHES])
            txn.put(key, harvest.jpegs[patch.key], db=db[JPEGS])
        for pair in harvest.pairs:
            txn.put(schema.pair_key(pair), records.encode(pair), db=db[PAIRS])
        counts = {"tracks": video.n_tracks, "patches": video.n_patches, "pairs": video.n_pairs}
        txn.put(schema.done_key(video.sha), schema.pack(counts), db=db[DONE])
        paths.store_path(txn, db, video.path, video.sha)  # also drops the path's stale failure records

    def put_failure(self, record: VideoRecord) -> None:
        """Record why a video could not be harvested; a video already done is left as it is."""

        def write(txn: lmdb.Transaction) -> None:
            if txn.get(schema.done_key(record.sha), db=self._own.dbs[DONE]) is not None:
                log.info("not recording failure of %s: it is already done", record.path)
                return
            failed = replace(record, status="failed")
            paths.store_path(txn, self._own.dbs, record.path, record.sha)
            txn.put(schema.video_key(record.sha), records.encode(failed), db=self._own.dbs[VIDEOS])

        self._write(write, f"failure record of {record.sha} ({record.path})")

    def apply(self, fn: Callable[[lmdb.Transaction, dict[str, Any]], T], what: str) -> T:
        """``fn(txn, dbs)`` in one write transaction of this environment (e.g. ``versions.drop_video``)."""
        return self._write(lambda txn: fn(txn, self._own.dbs), what)

    def build_triplets(self, per_pair: int = 1, seed: int = 0) -> int:
        """Bring the triplets table up to date: ``per_pair`` random other-video negatives per pair.

        Incremental (``triplets.py``): only videos without triplets get them, and nothing is
        written when nothing changed; new ``per_pair`` or ``seed`` rebuild it all. Considers the
        patches and pairs of every shard too; deterministic for a seed and the order in which
        content arrived, however the store is sharded.

        Returns:
            Number of triplets in the table.
        """
        with self._parts() as parts:
            plan = triplets.plan(parts, per_pair, seed)
        if plan is None:
            with self._own.read() as txn:
                return int(txn.stat(self._own.dbs[TRIPLETS])["entries"])
        count = 0

        def write(txn: lmdb.Transaction) -> None:
            nonlocal count
            count = triplets.apply(txn, self._own.dbs, plan)

        self._write(write, "triplets table")
        log.info(
            "triplets: %d videos added, %d dropped; %d in the store", len(plan.add), len(plan.drop), count
        )
        return count

    def _init_meta(self, harvest_config: dict[str, Any] | None) -> None:
        own = self._own
        meta = read_meta(own)
        with own.read() as txn:
            has_videos = txn.stat(own.dbs[VIDEOS])["entries"] > 0
        if not meta and has_videos:
            raise StoreError(
                f"{self.path}: has video records but no meta; not a PatchStore this trackemb wrote"
            )
        if meta:
            schema.check_schema(meta, str(self.path))
        changed = schema.config_fingerprint(harvest_config) != meta.get("config_fingerprint")
        if not meta or (changed and harvest_config is not None and not has_videos):
            # A new store, or one still empty whose harvest config may be chosen freely.
            meta = schema.new_meta(harvest_config)
            encoded = schema.encode_meta(meta).items()
            self._write(lambda txn: txn.cursor(db=own.dbs[META]).putmulti(encoded), "meta record")
        elif harvest_config is not None:
            schema.check_config(meta, harvest_config, str(self.path))
        with own.read() as txn:
            backfill = paths.needs_backfill(txn, own.dbs)
        if backfill:  # a store from before the path index: index it once
            self._write(lambda txn: log.info("indexed %d paths", paths.backfill(txn, own.dbs)), "path index")
        schema.write_meta_json(self.path, meta)
        own.env.reader_check()  # free reader slots of readers that died without closing

    def _write(self, fn: Callable[[lmdb.Transaction], T], what: str) -> T:
        """Run ``fn`` in one write transaction (returning its result), growing the map and retrying it whole when full."""
        if self._lock is None or self._closed:
            raise StoreError(f"{self.path}: opened read-only or closed; cannot write the {what}")
        env = self._own.env
        with self._write_mutex:
            for _ in range(_MAX_GROWTHS):
                try:
                    with env.begin(write=True) as txn:
                        return fn(txn)  # commits on leaving the block
                except lmdb.MapFullError:
                    size = env.info()["map_size"] * 2
                    log.info("%s: LMDB map full, growing it to %.1f GiB", self.path, size / 2**30)
                    env.set_mapsize(size)
                except (lmdb.Error, OSError) as exc:
                    raise write_error(self.path, what, exc) from exc
        raise StoreError(
            f"{self.path}: could not fit the {what} even after growing the map {_MAX_GROWTHS} times"
        )
