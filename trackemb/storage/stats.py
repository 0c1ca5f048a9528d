"""Counts of a store's records, per video and in total, plus errors and disk use (``StoreReader.stats``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trackemb.storage import schema
from trackemb.storage.env import StorePart, read_meta
from trackemb.storage.parts import owned_videos, read_keys
from trackemb.storage.schema import PAIRS, PATCHES, TRACKS, TRIPLETS


def collect_stats(path: Path, parts: list[StorePart]) -> dict[str, Any]:
    """Counts of a store's records, per video and in total, plus errors and disk use.

    Counts are of the records actually stored (keys only are scanned, nothing is decoded
    but the video records).
    """
    owned = owned_videos(parts)
    sha_of = {sha[: schema.SHA16]: sha for sha in owned}
    counts = {sha: {TRACKS: 0, PATCHES: 0, PAIRS: 0} for sha in owned}
    for table in (TRACKS, PATCHES, PAIRS):
        for key in read_keys(parts, owned, table):
            counts[sha_of[schema.sha16_of_key(key)]][table] += 1
    per_video = []
    for sha in sorted(owned, key=lambda s: owned[s][1].path):
        i, rec = owned[sha]
        per_video.append(
            {
                "sha": sha,
                "path": rec.path,
                "status": rec.status,
                "shard": parts[i].name,
                "backend": rec.backend,
                "seconds": rec.seconds,
                **rec.yield_columns(),
                **counts[sha],
                "error": rec.error,
                "error_kind": rec.error_kind,
            }
        )
    root = parts[0]
    triplets = 0
    if not root.name:
        with root.read() as txn:
            triplets = txn.stat(root.dbs[TRIPLETS])["entries"]
    disk = []
    for part in parts:
        info, page = part.env.info(), part.env.stat()["psize"]
        data = part.path / "data.mdb"
        disk.append(
            {
                "part": part.name or "(root)",
                "used_bytes": (info["last_pgno"] + 1) * page,
                "map_size_bytes": info["map_size"],
                "file_bytes": data.stat().st_size if data.exists() else 0,
            }
        )
    meta = read_meta(root)
    return {
        "path": str(path),
        "schema_version": meta.get("schema_version"),
        "created_at": meta.get("created_at"),
        "trackemb_version": meta.get("trackemb_version"),
        "config_fingerprint": meta.get("config_fingerprint", ""),
        "shards": [p.name for p in parts if p.name],
        "videos": len(per_video),
        "videos_done": sum(v["status"] == "done" for v in per_video),
        "videos_failed": sum(v["status"] == "failed" for v in per_video),
        "tracks": sum(v[TRACKS] for v in per_video),
        "patches": sum(v[PATCHES] for v in per_video),
        "pairs": sum(v[PAIRS] for v in per_video),
        "triplets": triplets,
        "per_video": per_video,
        "errors": [
            {k: v[k] for k in ("sha", "path", "error", "error_kind")}
            for v in per_video
            if v["status"] != "done"
        ],
        "map": disk,
        "used_bytes": sum(d["used_bytes"] for d in disk),
    }
