"""Which paths hold a stored video, and dropping a video whose file now holds other content.

Both run inside a PatchStore write transaction (``PatchStore.add_path`` / ``drop_video``).
A video is keyed by its content hash; identical content at several paths is stored once,
under its first path, with the others in ``VideoRecord.also_at``. When the file at a path
changes (a copy that was still growing, a re-encode), the old version's records go, so the
same footage is never kept twice as two "other videos".
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import lmdb

from trackemb import fsnames
from trackemb.storage import records, schema
from trackemb.storage.env import scan
from trackemb.storage.records import TripletRecord, VideoRecord
from trackemb.storage.schema import DONE, JPEGS, PAIRS, PATCHES, TRACKS, TRIPLETS, TRIPSTATE, VIDEOS

log = logging.getLogger(__name__)


def add_path(txn: lmdb.Transaction, dbs: dict[str, Any], sha: str, path: str) -> bool:
    """Note that ``path`` also holds video ``sha``; False when the video is not in this environment."""
    blob = txn.get(schema.video_key(sha), db=dbs[VIDEOS])
    if blob is None:
        return False
    rec = records.decode(VideoRecord, blob)
    shown = fsnames.display(path)
    if shown != rec.path and shown not in rec.also_at:
        rec = replace(rec, also_at=sorted([*rec.also_at, shown]))
        txn.put(schema.video_key(sha), records.encode(rec), db=dbs[VIDEOS])
    return True


def drop_video(txn: lmdb.Transaction, dbs: dict[str, Any], sha: str) -> bool:
    """Delete every record of video ``sha`` (record, done marker, tracks, patches, JPEGs, pairs).

    Returns whether this environment held it. Triplets that use its patches as negatives go
    with the whole triplet set of their anchor video, whose state is reset so that the next
    ``build_triplets`` draws it afresh (storage/triplets.py); its own triplets go there too.
    """
    held = txn.delete(schema.video_key(sha), db=dbs[VIDEOS])
    txn.delete(schema.done_key(sha), db=dbs[DONE])
    prefix = schema.video_prefix(sha)
    for name in (TRACKS, PATCHES, JPEGS, PAIRS):
        for key in list(scan(txn, dbs[name], prefix, values=False)):
            txn.delete(key, db=dbs[name])
    triplets = (records.decode(TripletRecord, v) for _, v in scan(txn, dbs[TRIPLETS]))
    stale = {t.anchor_video for t in triplets if sha in (t.anchor_video, t.negative_video)}
    for anchor in stale:
        for key in list(scan(txn, dbs[TRIPLETS], schema.video_prefix(anchor), values=False)):
            txn.delete(key, db=dbs[TRIPLETS])
        txn.delete(anchor.encode(), db=dbs[TRIPSTATE])
    return held
