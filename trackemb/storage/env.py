"""LMDB handles of one store environment (a plain store, a sharded store's root, or a shard).

Every environment is opened here, with the same ``max_dbs``/``max_readers`` and without
cached read transactions, so writers and readers of one store agree on its lock table.

LMDB allows one handle per environment *per process* (its fcntl locks belong to the
process, and py-lmdb refuses a second open). So handles are shared: every reader, and
the writer, of one environment in one process use the same ``lmdb.Environment``, counted
and closed when the last user lets go. The table is reset in a forked child, whose
inherited handles belong to the parent.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb

from trackemb.errors import StoreError
from trackemb.storage import schema
from trackemb.storage.schema import META

_LOW_DISK = 64 << 20  # below this much free space a failed write is reported as a full disk
_SHORT_READ_S = 1.0  # how long a writer waits for this process's read handles on its store to close


def env_error(path: Path, exc: lmdb.Error) -> StoreError:
    """A readable StoreError for an LMDB failure to open ``path``."""
    if "already open in this process" in str(exc):
        return StoreError(
            f"{path}: this store is already open in this process outside trackemb.storage (a raw "
            "lmdb.open?); LMDB allows one handle per process, so close that one first"
        )
    return StoreError(f"{path}: cannot open the PatchStore: {exc}")


@dataclass
class StorePart:
    """One open LMDB environment of a store (the root or a shard) and its sub-database handles."""

    name: str
    path: Path
    env: lmdb.Environment
    dbs: dict[str, Any]

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A short read transaction (one consistent snapshot of this part)."""
        try:
            txn = self.env.begin()
        except lmdb.MapResizedError:
            # The writer grew the map since we opened; size 0 adopts the new size (mdb_env_set_mapsize).
            self.env.set_mapsize(0)
            txn = self.env.begin()
        try:
            yield txn
        finally:
            txn.abort()

    def close(self) -> None:
        """Let go of the shared handle; the environment closes when no one else in this process uses it."""
        _release(self.env)


@dataclass
class _Entry:
    env: lmdb.Environment
    dbs: dict[str, Any]
    writable: bool
    users: int = 0


@dataclass
class _Handles:
    """The process's open environments by resolved path."""

    pid: int = field(default_factory=os.getpid)
    open: dict[str, _Entry] = field(default_factory=dict)
    mutex: threading.Lock = field(default_factory=threading.Lock)


_HANDLES = _Handles()


def _handles() -> _Handles:
    global _HANDLES
    if _HANDLES.pid != os.getpid():
        # Forked child: closing our copies of read-only handles is safe (LMDB frees only the
        # reader slots of this pid) and lets this process open them again. A writable one is
        # left alone: closing it could wait forever for a parent thread's write transaction.
        for entry in _HANDLES.open.values():
            if not entry.writable:
                entry.env.close()
        _HANDLES = _Handles()
    return _HANDLES


def _release(env: lmdb.Environment) -> None:
    handles = _handles()
    with handles.mutex:
        for key, entry in list(handles.open.items()):
            if entry.env is env:
                entry.users -= 1
                if entry.users <= 0:
                    del handles.open[key]
                    env.close()
                return


def open_part(name: str, path: Path) -> StorePart:
    """A read handle on one environment (shared with this process's other users of it).

    Raises:
        StoreError: not a PatchStore or an unknown schema version.
    """
    handles = _handles()
    key = os.path.realpath(path)
    with handles.mutex:
        entry = handles.open.get(key)
        if entry is None:
            part = _open_readonly(name, Path(path))
            entry = handles.open[key] = _Entry(part.env, part.dbs, writable=False)
        entry.users += 1
    return StorePart(name, Path(path), entry.env, entry.dbs)


def _open_readonly(name: str, path: Path) -> StorePart:
    """Open one environment read-only and check its schema version.

    Readers take LMDB's reader-table lock (``lock=True``) whenever the lock file is writable:
    with ``lock=False`` the writer cannot see readers and may recycle pages a reader is
    still scanning (the py-lmdb docs forbid readers during writes without it). On read-only
    media, where no writer can exist, ``lock=False`` is used.

    Raises:
        StoreError: not a PatchStore, unknown schema version, or already open in this process.
    """
    lock_file = path / "lock.mdb"
    lock = os.access(lock_file, os.W_OK) if lock_file.exists() else os.access(path, os.W_OK)
    try:
        env = lmdb.open(
            str(path),
            readonly=True,
            lock=lock,
            # 0 adopts the size the writer recorded, so a reader rarely has to remap (which is only
            # safe while no other thread of this process is inside a transaction of this env).
            map_size=0,
            readahead=False,
            max_dbs=schema.MAX_DBS,
            max_readers=schema.MAX_READERS,
            max_spare_txns=0,  # a cached txn keeps a reader slot that a forked child would free
            create=False,
        )
    except lmdb.Error as exc:
        raise env_error(path, exc) from exc
    try:
        dbs = {db: env.open_db(db.encode(), create=False) for db in schema.ALL_DBS}
        part = StorePart(name, path, env, dbs)
        schema.check_schema(read_meta(part), str(path))
    except lmdb.NotFoundError as exc:
        env.close()
        raise StoreError(f"{path}: not a trackemb PatchStore (missing sub-database): {exc}") from exc
    except BaseException:
        env.close()
        raise
    return part


def scan(txn: lmdb.Transaction, db: Any, prefix: bytes = b"", values: bool = True) -> Iterator[Any]:
    """Entries of ``db`` whose key starts with ``prefix``, in key order (``(key, value)`` or keys)."""
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix):
        return
    for key in cursor.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            return
        yield (key, cursor.value()) if values else key


def open_writer_part(path: Path, map_size_bytes: int) -> StorePart:
    """Open (creating) an environment for writing, with all sub-databases. The caller holds the writer lock.

    Readers in this process opened afterwards share this handle.

    Raises:
        StoreError: not a PatchStore, or this process already reads the store through a read-only handle.
    """
    handles = _handles()
    key = os.path.realpath(path)
    deadline = time.monotonic() + _SHORT_READ_S
    while True:
        with handles.mutex:
            entry = handles.open.get(key)
            if entry is None:
                part = _open_writable(path, map_size_bytes)
                handles.open[key] = _Entry(part.env, part.dbs, writable=True, users=1)
                return part
            if entry.writable:
                # Readers kept this process's earlier writer handle alive; it can write again.
                entry.users += 1
                return StorePart("", path, entry.env, entry.dbs)
        if time.monotonic() > deadline:
            raise StoreError(
                f"{path}: this process has the store open for reading; close those readers "
                "(StoreReader.close(), PatchStore.close()) before opening its writer"
            )
        # Reads through a sharded root hold a shard's handle for one call only; let it finish.
        time.sleep(0.005)


def _open_writable(path: Path, map_size_bytes: int) -> StorePart:
    try:
        env = lmdb.open(
            str(path),
            map_size=map_size_bytes,
            max_dbs=schema.MAX_DBS,
            max_readers=schema.MAX_READERS,
            readahead=False,
            max_spare_txns=0,
        )
    except lmdb.Error as exc:
        raise env_error(path, exc) from exc
    try:
        with env.begin(write=True) as txn:
            names = schema.ALL_DBS + schema.INDEX_DBS
            dbs = {db: env.open_db(db.encode(), txn=txn, create=True) for db in names}
    except lmdb.Error as exc:
        env.close()
        raise StoreError(f"{path}: an LMDB environment that is not a trackemb PatchStore: {exc}") from exc
    return StorePart("", path, env, dbs)


def read_meta(part: StorePart) -> dict[str, Any]:
    """The decoded meta record of one environment (empty for a store being created)."""
    with part.read() as txn:
        return schema.decode_meta(dict(txn.cursor(db=part.dbs[META])))


def write_error(path: Path, what: str, exc: BaseException) -> StoreError:
    """A readable StoreError for a failed write transaction (nothing of it was committed)."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        free = -1
    # LMDB reports a short write on a full disk as EIO, so look at the free space as well.
    full = (
        isinstance(exc, lmdb.DiskError)
        or getattr(exc, "errno", None) == errno.ENOSPC
        or 0 <= free < _LOW_DISK
    )
    if full:
        return StoreError(
            f"{path}: disk full ({free / 2**20:.0f} MiB free) while writing the {what}: {exc}; it was not "
            "stored and everything committed before stays readable. Free space (or move --store) and rerun: "
            "finished videos are skipped"
        )
    return StoreError(
        f"{path}: could not write the {what}: {exc}; everything committed before stays readable"
    )
