"""The file names of a training run directory, torch-free so the CLI's preflight checks stay instant.

A run directory holds ``ckpt.pt`` (the last checkpoint, what ``--resume`` continues from),
``ckpt_best.pt`` (the best validation so far), ``split.json`` (embedding/split.py),
``config.json`` and TensorBoard events under ``tb/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

CKPT_NAME = "ckpt.pt"
BEST_CKPT_NAME = "ckpt_best.pt"  # best validation so far (step 0 included): what export ships by default


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    """``ckpt_best.pt`` for ``which="best"`` (``ckpt.pt`` for runs made before keep-best), else ``ckpt.pt``."""
    run_dir = Path(run_dir)
    best = run_dir / BEST_CKPT_NAME
    if which == "best" and best.is_file():
        return best
    if which == "best" and (run_dir / CKPT_NAME).is_file():
        log.info("%s has no %s (made before keep-best); using %s", run_dir, BEST_CKPT_NAME, CKPT_NAME)
    return run_dir / CKPT_NAME
