"""Harvested candidate triplets, built incrementally: each positive pair plus random negatives from *other* videos.

These are the examples the first, random stage of the mining curriculum trains on (DESIGN:
"negative candidates: patches of other videos, never the same video").

Triplets are stored per anchor video (keys ``<sha16>/<n>``) with a state record per video
in ``tripstate``. A build draws triplets only for videos that have none yet (or had no other
video to contrast with), drops those of videos no longer in the store, and writes nothing
when nothing changed (checked in O(1) from each environment's last transaction id). A
video's negatives are uniform over the patches of the other videos stored when it was
built, drawn with an RNG seeded by (seed, video sha): the same store content gives the
same triplets however it is sharded. Memory is O(videos) plus one video's pairs: no list
of every patch key is ever held.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import lmdb
import numpy as np

from trackemb.errors import StoreError
from trackemb.storage import records, schema
from trackemb.storage.env import StorePart, scan
from trackemb.storage.records import PairRecord, TripletRecord
from trackemb.storage.schema import DONE, PAIRS, PATCHES, TRIPLETS, TRIPSTATE

PARAMS_KEY = b"~params"  # sorts after every hex sha in ``tripstate``


@dataclass
class Plan:
    """What one build changes in the root: computed from read transactions, applied in one write."""

    params: dict[str, Any]
    txnids: dict[str, int]  # each environment's last transaction id when the plan was made
    drop_all: bool = False
    drop: list[str] = field(default_factory=list)
    # sha -> (triplets, patches of other videos, pairs of the video)
    add: dict[str, tuple[list[TripletRecord], int, int]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.drop_all or self.drop or self.add)


def _txnids(parts: list[StorePart]) -> dict[str, int]:
    return {p.name: int(p.env.info()["last_txnid"]) for p in parts}


def _done_videos(parts: list[StorePart]) -> tuple[list[str], np.ndarray, list[int]]:
    """Done videos sorted by sha, their patch counts and the index of the part that owns each."""
    owner: dict[str, tuple[int, int]] = {}
    for i, part in enumerate(parts):
        with part.read() as txn:
            for key, blob in txn.cursor(db=part.dbs[DONE]):
                sha = key.decode()
                if sha not in owner:  # the first part with it done owns it (shards.owned_videos)
                    owner[sha] = (i, int(schema.unpack(blob).get("patches", 0)))
    shas = sorted(owner)
    return shas, np.array([owner[s][1] for s in shas], np.int64), [owner[s][0] for s in shas]


def _rng(seed: int, sha: str) -> np.random.Generator:
    return np.random.default_rng([abs(seed), int(hashlib.sha256(sha.encode()).hexdigest()[:16], 16)])


def plan(parts: list[StorePart], per_pair: int, seed: int) -> Plan | None:
    """The changes a build makes (None: nothing changed since the last build, not even a shard)."""
    root = parts[0]
    with root.read() as txn:
        blob = txn.get(PARAMS_KEY, db=root.dbs[TRIPSTATE])
        old = schema.unpack(blob) if blob is not None else None
        params, txnids = {"per_pair": per_pair, "seed": seed}, _txnids(parts)
        if old is not None and {k: old.get(k) for k in params} == params and old.get("txnids") == txnids:
            return None  # O(1): no environment was written since the last build
        state = {
            k.decode(): schema.unpack(v) for k, v in txn.cursor(db=root.dbs[TRIPSTATE]) if k != PARAMS_KEY
        }
    out = Plan(params, txnids)
    if old is None or {k: old.get(k) for k in params} != params:
        out.drop_all, state = True, {}  # new parameters, or a store from before incremental triplets
    shas, counts, owners = _done_videos(parts)
    row = {sha: i for i, sha in enumerate(shas)}
    out.drop = sorted(s for s in state if s not in row)
    if per_pair <= 0:
        return out
    ends = np.cumsum(counts)
    starts = ends - counts
    total = int(ends[-1]) if len(ends) else 0
    keys_of: dict[int, list[bytes]] = {}

    def patch_keys(i: int) -> list[bytes]:
        if i not in keys_of:
            with parts[owners[i]].read() as txn:
                keys_of[i] = list(
                    scan(txn, parts[owners[i]].dbs[PATCHES], schema.video_prefix(shas[i]), False)
                )
            if len(keys_of[i]) != counts[i]:
                raise StoreError(
                    f"video {shas[i]}: done marker counts {counts[i]} patches, found {len(keys_of[i])}"
                )
        return keys_of[i]

    for i, sha in enumerate(shas):
        others = total - int(counts[i])
        have = state.get(sha)
        if have is not None and (have["n"] > 0 or have.get("pairs") == 0 or others == have["others"]):
            continue  # built; or nothing to build from; or still no other video to contrast with
        with parts[owners[i]].read() as txn:
            blobs = [v for _, v in scan(txn, parts[owners[i]].dbs[PAIRS], schema.video_prefix(sha))]
        pairs = [records.decode(PairRecord, b) for b in blobs]
        if others <= 0 or not pairs:
            out.add[sha] = ([], others, len(pairs))
            continue
        # Uniform over the other videos' patches: draw in [0, others) and step over this video's block.
        draws = _rng(seed, sha).integers(0, others, size=(len(pairs), per_pair))
        idx = np.where(draws < starts[i], draws, draws + counts[i])
        video = np.searchsorted(ends, idx, side="right")
        offset = idx - starts[video]
        triplets = []
        for pair, vids, offs in zip(pairs, video.tolist(), offset.tolist(), strict=True):
            for v, o in zip(vids, offs, strict=True):
                neg = patch_keys(v)[o].decode()
                triplets.append(TripletRecord(pair.anchor, pair.positive, neg, pair.video_sha, shas[v]))
        out.add[sha] = (triplets, others, len(pairs))
    return out


def apply(txn: lmdb.Transaction, dbs: dict[str, Any], plan: Plan) -> int:
    """Write ``plan`` into the root in the caller's write transaction; returns the triplets now stored.

    The root's transaction id recorded is this transaction's own, so the next build sees
    "nothing changed" until someone writes again.
    """
    trips, state = dbs[TRIPLETS], dbs[TRIPSTATE]
    if plan.drop_all:
        txn.drop(trips, delete=False)
        txn.drop(state, delete=False)
    for sha in [*plan.drop, *plan.add]:
        for key in list(scan(txn, trips, schema.video_prefix(sha), values=False)):
            txn.delete(key, db=trips)
        txn.delete(sha.encode(), db=state)
    for sha, (triplets, others, pairs) in plan.add.items():
        for n, triplet in enumerate(triplets):
            txn.put(schema.triplet_key(sha, n), records.encode(triplet), db=trips)
        txn.put(sha.encode(), schema.pack({"n": len(triplets), "others": others, "pairs": pairs}), db=state)
    txnids = {**plan.txnids, "": txn.id()}
    txn.put(PARAMS_KEY, schema.pack({**plan.params, "txnids": txnids}), db=state)
    return int(txn.stat(trips)["entries"])
