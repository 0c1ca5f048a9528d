"""Reading per-video tables across a store's parts (root and shards), each video from the part that owns it.

A video belongs to one part: the first that has it done, else the first that has a failure
record, so a video stored twice is read once (see shards.py).
"""

from __future__ import annotations

from typing import Any, TypeVar

from trackemb.storage import records, schema
from trackemb.storage.env import StorePart, scan
from trackemb.storage.records import VideoRecord
from trackemb.storage.schema import VIDEOS

R = TypeVar("R")


def owned_videos(parts: list[StorePart]) -> dict[str, tuple[int, VideoRecord]]:
    """``sha -> (part index, record)``: the part whose records of a video are the ones read."""
    owned: dict[str, tuple[int, VideoRecord]] = {}
    for i, part in enumerate(parts):
        with part.read() as txn:
            for _, blob in txn.cursor(db=part.dbs[VIDEOS]):
                rec = records.decode(VideoRecord, blob)
                have = owned.get(rec.sha)
                if have is None or (have[1].status != "done" and rec.status == "done"):
                    owned[rec.sha] = (i, rec)
    return owned


def _owned_entries(
    parts: list[StorePart], owned: dict[str, tuple[int, VideoRecord]], db: str, prefix: bytes, values: bool
) -> list[Any]:
    owner = {sha[: schema.SHA16]: i for sha, (i, _) in owned.items()}
    found: list[Any] = []
    for i, part in enumerate(parts):
        with part.read() as txn:
            for entry in scan(txn, part.dbs[db], prefix, values):
                key = entry[0] if values else entry
                if owner.get(schema.sha16_of_key(key)) == i:
                    found.append(entry)
    if len(parts) > 1:
        found.sort(key=(lambda kv: kv[0]) if values else None)
    return found


def read_records(
    parts: list[StorePart],
    owned: dict[str, tuple[int, VideoRecord]],
    db: str,
    cls: type[R],
    prefix: bytes = b"",
) -> list[R]:
    """Records of per-video table ``db`` from the part owning each video, in key order."""
    return [records.decode(cls, blob) for _, blob in _owned_entries(parts, owned, db, prefix, values=True)]


def read_keys(parts: list[StorePart], owned: dict[str, tuple[int, VideoRecord]], db: str) -> list[bytes]:
    """Keys only (no decoding) of per-video table ``db``, as :func:`read_records` would select them."""
    return _owned_entries(parts, owned, db, b"", values=False)
