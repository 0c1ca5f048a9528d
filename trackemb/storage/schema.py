"""The PatchStore's on-disk schema: sub-database names, key layout, value codec and meta record.

Everything that decides how bytes are laid out in LMDB lives here, so a schema change is a
change to this one module plus ``SCHEMA_VERSION``. Values are msgpack (records) or raw JPEG
bytes, never pickle.

Sub-databases and their keys (all keys ASCII, so byte order is string order):

===========  ==================================  =====================================
name         key                                 value
===========  ==================================  =====================================
meta         field name (``schema_version``...)  msgpack scalar / JSON text
videos       ``<sha>`` (full content hash)       VideoRecord
tracks       ``<sha16>/<track:06d>``             TrackRecord
patches      ``<sha16>/<track:06d>/<frame:06d>`` PatchRecord (index only)
jpegs        same key as ``patches``             raw JPEG bytes
pairs        ``<anchor key>|<positive key>``     PairRecord
triplets     ``<anchor sha16>/<index:07d>``      TripletRecord
done         ``<sha>``                           msgpack ``{"tracks", "patches", "pairs"}``
paths        sha256 of the path (hex)            msgpack list of the shas stored at it
tripstate    ``<sha>`` (anchor video)            msgpack ``{"n", "others", "pairs"}``
===========  ==================================  =====================================

``paths`` and ``tripstate`` are indexes a writer creates (and back-fills) on open; readers
never need them, so stores written before them stay readable by this code and vice versa.

Every per-video key in tracks/patches/jpegs/pairs starts with ``<sha16>/``, so one prefix
scan finds (and a re-harvest replaces) all of a video's records.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack

from trackemb._version import __version__
from trackemb.atomic import write_text
from trackemb.config.file import fingerprint
from trackemb.errors import StoreError
from trackemb.storage.records import PairRecord, TrackRecord
from trackemb.tracking.results import SHA16  # the patch keys' video prefix, which every per-video key shares

SCHEMA_VERSION = 2
# Versions this code reads. 1 -> 2 added ``TrackRecord.apart`` (co-occurring tracks that stay
# apart: in-video negatives); a schema-1 store is read as it is and readers derive ``apart``
# from the track boxes with the same rule (trackemb.tracking.cooccur), so no rewrite is needed.
READABLE_SCHEMA_VERSIONS = (1, 2)

META, VIDEOS, TRACKS, PATCHES, JPEGS, PAIRS, TRIPLETS, DONE = (
    "meta",
    "videos",
    "tracks",
    "patches",
    "jpegs",
    "pairs",
    "triplets",
    "done",
)
ALL_DBS = (META, VIDEOS, TRACKS, PATCHES, JPEGS, PAIRS, TRIPLETS, DONE)
# Writer-side indexes (see the module docstring); opened by writers only.
PATHS, TRIPSTATE = "paths", "tripstate"
INDEX_DBS = (PATHS, TRIPSTATE)
MAX_DBS = 16
# Reader slots live in lock.mdb and are sized by whoever creates it; DDP ranks x DataLoader
# workers can exceed LMDB's default of 126.
MAX_READERS = 1024
# Human-readable mirror of the meta record, so a shard writer can check the root's config
# without opening the root's LMDB environment (which its own process may hold as writer).
META_JSON = "meta.json"


def video_key(sha: str) -> bytes:
    return sha.encode()


def done_key(sha: str) -> bytes:
    return sha.encode()


def video_prefix(sha: str) -> bytes:
    """Prefix shared by every tracks/patches/jpegs/pairs key of one video."""
    return f"{sha[:SHA16]}/".encode()


def track_key(track: TrackRecord) -> bytes:
    return f"{track.video_sha[:SHA16]}/{track.track_id:06d}".encode()


def patch_db_key(key: str) -> bytes:
    """DB key of a patch (index record and JPEG): the records' ``patch_key`` string."""
    return key.encode()


def pair_key(pair: PairRecord) -> bytes:
    return f"{pair.anchor}|{pair.positive}".encode()


def triplet_key(anchor_sha: str, index: int) -> bytes:
    """Triplets are keyed by their anchor's video, so a video's triplets are one prefix scan."""
    return f"{anchor_sha[:SHA16]}/{index:07d}".encode()


def sha16_of_key(key: bytes | str) -> str:
    """The video part of any per-video key (tracks, patches, jpegs, pairs)."""
    text = key.decode() if isinstance(key, bytes) else key
    return text[:SHA16]


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False)


def config_fingerprint(harvest_config: dict[str, Any] | None) -> str:
    """Short stable hash of a harvest config dict; equals ``HarvestConfig.fingerprint()`` of its dump."""
    return "" if harvest_config is None else fingerprint(harvest_config)


def new_meta(harvest_config: dict[str, Any] | None) -> dict[str, Any]:
    """The meta record written when a store is created."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "trackemb_version": __version__,
        "harvest_config": harvest_config,
        "config_fingerprint": config_fingerprint(harvest_config),
    }


def encode_meta(meta: dict[str, Any]) -> dict[bytes, bytes]:
    """One LMDB entry per meta field; the config is JSON text so humans can read it with any tool."""
    out = {}
    for name, value in meta.items():
        if name == "harvest_config":
            value = None if value is None else json.dumps(value, sort_keys=True)
        out[name.encode()] = pack(value)
    return out


def decode_meta(items: dict[bytes, bytes]) -> dict[str, Any]:
    meta = {k.decode(): unpack(v) for k, v in items.items()}
    if isinstance(meta.get("harvest_config"), str):
        meta["harvest_config"] = json.loads(meta["harvest_config"])
    return meta


def write_meta_json(store_dir: Path, meta: dict[str, Any]) -> None:
    """Write ``<store>/meta.json`` atomically (tmp file + rename)."""
    write_text(Path(store_dir) / META_JSON, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_meta_json(store_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(store_dir) / META_JSON).read_text())
    except (OSError, ValueError):
        return None


def check_schema(meta: dict[str, Any], where: str) -> None:
    """Refuse a store this code cannot read, saying what to do about it.

    Raises:
        StoreError: no schema version (not a trackemb store) or a version other than ours.
    """
    version = meta.get("schema_version")
    if version is None:
        raise StoreError(
            f"{where}: not a trackemb PatchStore (its meta has no schema_version); "
            "point --store at a PatchStore directory or at a new, empty directory"
        )
    if version not in READABLE_SCHEMA_VERSIONS:
        made_by = meta.get("trackemb_version", "unknown")
        raise StoreError(
            f"{where}: store schema version {version} (written by trackemb {made_by}) but this trackemb "
            f"{__version__} reads schema versions {READABLE_SCHEMA_VERSIONS}; use the trackemb version that wrote it "
            "(or upgrade), or re-harvest into a new --store"
        )


def config_differences(old: dict[str, Any] | None, new: dict[str, Any] | None, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two (nested) config dicts."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else [prefix.rstrip(".") or "<whole config>"]
    diffs: list[str] = []
    for name in sorted(set(old) | set(new)):
        if isinstance(old.get(name), dict) or isinstance(new.get(name), dict):
            diffs += config_differences(old.get(name), new.get(name), f"{prefix}{name}.")
        elif old.get(name) != new.get(name):
            diffs.append(f"{prefix}{name}: {old.get(name)!r} -> {new.get(name)!r}")
    return diffs


def check_config(meta: dict[str, Any], harvest_config: dict[str, Any], where: str) -> None:
    """Refuse to mix patches harvested with different configs in one store.

    Raises:
        StoreError: the store was created with another harvest config; names the differing fields.
    """
    stored = meta.get("config_fingerprint", "")
    wanted = config_fingerprint(harvest_config)
    if stored == wanted:
        return
    diffs = config_differences(meta.get("harvest_config"), harvest_config)
    shown = "; ".join(diffs[:8]) + (f"; ... ({len(diffs)} in all)" if len(diffs) > 8 else "")
    raise StoreError(
        f"{where}: store was created with harvest config {stored or '<none>'} but this run uses {wanted} "
        f"({shown}); use a new --store for the new config, or rerun with the config the store was made "
        "with (it is in the store's meta.json)"
    )
