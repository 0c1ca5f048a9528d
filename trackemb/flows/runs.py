"""The pipeline's skip-if-done rules: which derived work (training, export) is already done.

Videos are skipped by content hash inside the harvest itself. A training run is identified
by its config and the store state it reads (which videos are harvested, with which harvest
config), so a pipeline re-run with the same inputs finds the finished run and skips it,
while new videos or a changed config start a new one; an export by its config and the
training run. Plain Python: ``flows/pipeline.py`` only sequences these calls.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trackemb.atomic import write_text
from trackemb.config import ExportConfig, StageConfig, TrainConfig
from trackemb.config.file import fingerprint

DONE_FILE = "done.json"


def store_state(store_path: str | Path) -> str:
    """Hash of the store's harvested videos and harvest config (cheap: index records only)."""
    from trackemb.storage.store import open_reader

    with open_reader(store_path) as reader:  # closed at once: a writer in this process may follow
        shas = sorted(v.sha for v in reader.videos() if v.status == "done")
        meta = reader.meta()
    return fingerprint({"videos": shas, "harvest": meta.get("config_fingerprint", "")})


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


def pipeline_layout(out_dir: str | Path) -> dict[str, Path]:
    """Where a pipeline run keeps its store, its training runs and its export."""
    out = Path(out_dir)
    return {"store": out / "patches.lmdb", "runs": out / "runs", "export": out / "export"}


@dataclass(frozen=True)
class Work:
    """One piece of derived work: its key, its directory, and its recorded result when already done."""

    key: str
    out_dir: Path
    done: dict[str, Any] | None


def training_work(layout: dict[str, Path], cfg: TrainConfig) -> Work:
    """The training run for the store as it is now and ``cfg`` (one directory per key)."""
    key = work_key(cfg, store_state(layout["store"]))
    run_dir = layout["runs"] / key
    return Work(key, run_dir, finished(run_dir, key))


def export_work(layout: dict[str, Path], cfg: ExportConfig, training: Work) -> Work:
    """The export of ``training`` with ``cfg`` (one directory, redone when either changes)."""
    key = work_key(cfg, training.key)
    return Work(key, layout["export"], finished(layout["export"], key))
