"""Whole tables as numpy columns of fixed-width keys, for indexes over millions of patches.

Patch keys are ``<sha16>/<track:06d>/<frame:06d>`` and pair keys ``<anchor>|<positive>``,
so the training index needs no record decoding for them: reading keys only into one
``S``-dtype array costs ~30 bytes per patch, where a list of ``PatchRecord`` objects costs
~1 KB and a microsecond-scale decode each (measured by ``bench/bench_store_scale.py``).
"""

from __future__ import annotations

import msgpack
import numpy as np

from trackemb.storage.parts import owned_videos
from trackemb.storage.schema import SHA16, TRIPLETS
from trackemb.storage.shards import StoreView

PATCH_KEY_LEN = 30  # len("<sha16>/<track:06d>/<frame:06d>")


def owned_keys(view: StoreView, db: str) -> np.ndarray:
    """Sorted keys of per-video table ``db``, each video's from the part that owns it (``shards.read_keys``)."""
    chunks = []
    with view._parts() as parts:  # noqa: SLF001 - same package
        owned = owned_videos(parts)
        for i, part in enumerate(parts):
            mine = np.array(sorted(sha[:SHA16] for sha, (o, _) in owned.items() if o == i), dtype=f"S{SHA16}")
            with part.read() as txn:
                keys = np.array(
                    list(txn.cursor(db=part.dbs[db]).iternext(keys=True, values=False)), dtype=np.bytes_
                )
            if len(keys):
                chunks.append(keys[np.isin(keys.astype(f"S{SHA16}"), mine)])
    out = np.concatenate(chunks) if chunks else np.zeros(0, dtype="S1")
    if len(parts) > 1:
        out.sort(kind="stable")
    return out


def patch_fields(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sha16 S16, track int64, frame int64)`` of patch keys, parsed without a Python loop."""
    if keys.dtype.itemsize != PATCH_KEY_LEN:  # a frame or track index past 999999 (or no keys)
        parts = [k.split(b"/") for k in keys.tolist()]
        track = np.array([int(p[1]) for p in parts], np.int64)
        return keys.astype(f"S{SHA16}"), track, np.array([int(p[2]) for p in parts], np.int64)
    raw = np.frombuffer(keys.astype(f"S{PATCH_KEY_LEN}").tobytes(), np.uint8).reshape(-1, PATCH_KEY_LEN)

    def number(lo: int) -> np.ndarray:
        out = np.zeros(len(raw), np.int64)
        for i in range(6):  # six ASCII digits, one column at a time (no (P, 30) int64 copy)
            out = out * 10 + (raw[:, lo + i] - ord("0"))
        return out

    track, frame = number(SHA16 + 1), number(SHA16 + 8)
    return keys.astype(f"S{SHA16}"), track, frame


def split_pair_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(anchor, positive) patch keys of pair keys ``<anchor>|<positive>``."""
    if keys.dtype.itemsize != 2 * PATCH_KEY_LEN + 1:
        halves = [k.split(b"|") for k in keys.tolist()]
        return np.array([h[0] for h in halves], np.bytes_), np.array([h[1] for h in halves], np.bytes_)
    width = PATCH_KEY_LEN
    raw = np.frombuffer(keys.astype(f"S{2 * width + 1}").tobytes(), np.uint8).reshape(-1, 2 * width + 1)
    anchor = np.ascontiguousarray(raw[:, :width]).view(f"S{width}")[:, 0]
    positive = np.ascontiguousarray(raw[:, width + 1 :]).view(f"S{width}")[:, 0]
    return anchor, positive


def triplet_columns(view: StoreView) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anchor, positive, negative) patch keys of the root's triplets table, in table order."""
    with view._parts() as parts:  # noqa: SLF001
        root = parts[0]
        if root.name:
            rows: list[tuple[bytes, bytes, bytes]] = []
        else:
            with root.read() as txn:
                rows = []
                for blob in txn.cursor(db=root.dbs[TRIPLETS]).iternext(keys=False, values=True):
                    t = msgpack.unpackb(blob, raw=True)
                    rows.append((t[b"anchor"], t[b"positive"], t[b"negative"]))
    cols = np.array(rows, dtype=np.bytes_).reshape(-1, 3)
    return cols[:, 0], cols[:, 1], cols[:, 2]
