"""The path index: which video records were stored from one file path.

A fixed or replaced file is found under a new content hash; its old failure record must go
in the same transaction that stores the new one. Scanning every video record for the path
made each commit O(store size) (N^2 for a harvest of N videos); this index keeps it O(1).

Keys are the sha256 of the path's bytes (LMDB keys are limited to 511 bytes; paths are not),
values the msgpack list of shas last stored from that path. Entries are hints: a sha whose
record is gone or now names another path (the file was moved) is skipped and pruned.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import lmdb

from trackemb.storage import records, schema
from trackemb.storage.records import VideoRecord
from trackemb.storage.schema import PATHS, VIDEOS

log = logging.getLogger(__name__)


def path_key(path: str) -> bytes:
    # surrogateescape: a non-UTF-8 file name (decoded by os with surrogates) still hashes losslessly.
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest().encode()


def _shas_at(txn: lmdb.Transaction, dbs: dict[str, Any], path: str) -> list[str]:
    blob = txn.get(path_key(path), db=dbs[PATHS])
    return [] if blob is None else list(schema.unpack(blob))


def records_at(txn: lmdb.Transaction, dbs: dict[str, Any], path: str) -> list[VideoRecord]:
    """The video records of this environment whose path is ``path`` (O(records at the path))."""
    found = []
    for sha in _shas_at(txn, dbs, path):
        blob = txn.get(schema.video_key(sha), db=dbs[VIDEOS])
        if blob is not None:
            rec = records.decode(VideoRecord, blob)
            if rec.path == path:
                found.append(rec)
    return found


def store_path(txn: lmdb.Transaction, dbs: dict[str, Any], path: str, sha: str) -> None:
    """Record that ``sha`` was stored from ``path``, and delete stale failure records of the path.

    A failure record at the same path with another sha is a file that was fixed or replaced
    since: it is dropped (in the caller's transaction) so the store does not report it forever.
    """
    keep = [sha]
    for rec in records_at(txn, dbs, path):
        if rec.sha == sha:
            continue
        if rec.status == "failed":
            txn.delete(schema.video_key(rec.sha), db=dbs[VIDEOS])
            log.info("%s: dropped the failure record of its earlier content %s", path, rec.sha[:12])
        else:
            keep.append(rec.sha)
    txn.put(path_key(path), schema.pack(sorted(set(keep))), db=dbs[PATHS])


def backfill(txn: lmdb.Transaction, dbs: dict[str, Any]) -> int:
    """Build the index of a store written before it existed (one scan, once); returns paths indexed."""
    by_path: dict[bytes, set[str]] = {}
    for _, blob in txn.cursor(db=dbs[VIDEOS]):
        rec = records.decode(VideoRecord, blob)
        by_path.setdefault(path_key(rec.path), set()).add(rec.sha)
    for key, shas in by_path.items():
        txn.put(key, schema.pack(sorted(shas)), db=dbs[PATHS])
    return len(by_path)


def needs_backfill(txn: lmdb.Transaction, dbs: dict[str, Any]) -> bool:
    """Video records but no path index: a store from before the index (every put adds an entry)."""
    return txn.stat(dbs[VIDEOS])["entries"] > 0 and txn.stat(dbs[PATHS])["entries"] == 0
