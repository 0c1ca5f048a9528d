"""Keys that say whether derived work (training, export) is already done for given inputs.

A training run is identified by its config and the store state it reads (which videos
are harvested, with which harvest config), so a pipeline re-run with the same inputs
finds the finished run and skips it, while new videos or a changed config start a new one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from trackemb.atomic import write_text
from trackemb.config import StageConfig

DONE_FILE = "done.json"


def store_state(store_path: str | Path) -> str:
    """Hash of the store's harvested videos and harvest config (cheap: index records only)."""
    from trackemb.storage.store import open_reader

    with open_reader(store_path) as reader:  # closed at once: a writer in this process may follow
        shas = sorted(v.sha for v in reader.videos() if v.status == "done")
        meta = reader.meta()
    blob = json.dumps({"videos": shas, "harvest": meta.get("config_fingerprint", "")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def work_key(cfg: StageConfig, *inputs: str) -> str:
    blob = json.dumps({"cfg": cfg.fingerprint(), "inputs": list(inputs)})
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def finished(out_dir: str | Path, key: str) -> dict[str, Any] | None:
    """The recorded result if ``out_dir`` finished the work identified by ``key``, else None."""
    path = Path(out_dir) / DONE_FILE
    try:
        done = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return done if done.get("key") == key else None


def mark_finished(out_dir: str | Path, key: str, result: dict[str, Any]) -> None:
    """Record completion atomically (a crash leaves either the old marker or the new one)."""
    write_text(Path(out_dir) / DONE_FILE, json.dumps({"key": key, **result}, indent=2, default=str))
