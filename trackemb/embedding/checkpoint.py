"""Atomic, versioned checkpoints that load with ``torch.load(weights_only=True)``.

Everything inside is a tensor or a builtin (RNG states are converted), so loading never
unpickles code. The file is written to a temporary name and moved into place with
``os.replace``, so a kill mid-write leaves the previous ``ckpt.pt`` intact.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trackemb.errors import TrainingError

log = logging.getLogger(__name__)

SCHEMA = 1
CKPT_NAME = "ckpt.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and/or ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), numpy and Python global RNG states as tensors and lists."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss_next": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npz = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npz["keys"].numpy().astype(np.uint32),
            npz["pos"],
            npz["has_gauss"],
            npz["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus ``schema``) to ``path`` atomically.

    Raises:
        TrainingError: the directory is not writable or the disk is full. On any failure
            ``path`` keeps its previous content and the temporary file is removed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"schema": SCHEMA, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise TrainingError(f"{path}: cannot write checkpoint: {exc}") from exc
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without unpickling code.

    Raises:
        TrainingError: unreadable file or unknown schema, naming the file.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise TrainingError(f"{path}: cannot load checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("schema") != SCHEMA:
        found = state.get("schema") if isinstance(state, dict) else type(state).__name__
        raise TrainingError(f"{path}: checkpoint schema {found!r}, this trackemb reads schema {SCHEMA}")
    return state


def restore_training(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    sampler: Any,
    model_args: dict[str, Any],
    config: dict[str, Any],
) -> dict[str, Any]:
    """Load ``path`` into the training objects (in place) and return the checkpoint dict.

    Raises:
        TrainingError: other ``model_args`` (architecture) than this run's, or a sampler
            state from other data; config changes that keep the architecture only warn.
    """
    ckpt = load_checkpoint(path)
    if ckpt["model_args"] != model_args:
        raise TrainingError(
            f"{path}: checkpoint model_args {ckpt['model_args']} differ from this run's {model_args}; "
            "resume with the original arch/embed_dim/input_px or start a new run dir"
        )
    changed = sorted(k for k, v in config.items() if ckpt["config"].get(k) != v)
    if changed:
        log.warning("resuming %s with changed config keys: %s", path, ", ".join(changed))
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    try:
        sampler.load_state_dict(ckpt["sampler"])
    except ValueError as exc:
        raise TrainingError(f"{path}: the store changed since this checkpoint: {exc}") from exc
    set_rng_state(ckpt["rng"])
    return ckpt
