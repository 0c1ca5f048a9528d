"""Atomic, versioned checkpoints that load with ``torch.load(weights_only=True)``.

Everything inside is a tensor or a builtin (RNG states are converted), so loading never
unpickles code. The file is written to a temporary name and moved into place with
``os.replace``, so a kill mid-write leaves the previous ``ckpt.pt`` intact.
"""

from __future__ import annotations

import logging
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trackemb.atomic import atomic_path
from trackemb.errors import TrainingError

log = logging.getLogger(__name__)

SCHEMA = 1


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
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save({"schema": SCHEMA, **state}, f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise TrainingError(f"{path}: cannot write checkpoint: {exc}") from exc
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


# Config keys that change how a run is logged or run, not what it computes: free on resume.
OPERATIONAL_KEYS = frozenset(
    {"num_workers", "device", "log_every_steps", "val_every_steps", "ckpt_every_steps",
     "projector_max_patches", "collapse_window_steps"}
)  # fmt: skip


def restore_training(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    sampler: Any,
    model_args: dict[str, Any],
    config: dict[str, Any],
    allow_changes: bool = False,
) -> dict[str, Any]:
    """Load ``path`` into the training objects (in place) and return the checkpoint dict.

    A resumed run replays the uninterrupted one exactly, so anything that would make it
    compute something else is refused: another architecture always; other ``steps``, LR
    schedule, mining, data or seed settings, or another number of processes unless
    ``allow_changes`` (then the run is a continuation, not a replay, and says so).

    Raises:
        TrainingError: naming the file, what differs (checkpoint vs this run) and how to proceed.
    """
    ckpt = load_checkpoint(path)
    if ckpt["model_args"] != model_args:
        raise TrainingError(
            f"{path}: checkpoint model_args {ckpt['model_args']} differ from this run's {model_args}; "
            "resume with the original arch/embed_dim/input_px or start a new run dir"
        )
    problems = _config_changes(ckpt["config"], config)
    theirs, ours = int(ckpt["sampler"].get("world_size", 1)), int(sampler.world_size)
    if theirs != ours:
        problems.append(
            f"it was trained by {theirs} process(es), this run has {ours}: batches are dealt by global "
            f"index (step x processes + rank), so the data order would change (torchrun --nproc-per-node {theirs})"
        )
    if problems and not allow_changes:
        raise TrainingError(
            f"{path}: refusing to resume: "
            + "; ".join(problems)
            + ". Resume with the checkpoint's settings, start a new run dir, or pass --allow-changes "
            "to continue anyway (not an exact replay of an uninterrupted run)."
        )
    if problems:
        log.warning("resuming %s with changes (--allow-changes): %s", path, "; ".join(problems))
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    try:
        sampler.load_state_dict(ckpt["sampler"], allow_world_size_change=allow_changes)
    except ValueError as exc:
        raise TrainingError(f"{path}: the store changed since this checkpoint: {exc}") from exc
    set_rng_state(ckpt["rng"])
    return ckpt


def _config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every changed key that is not operational (nested tables flattened)."""
    changed = []
    for key in sorted(set(old) | set(new)):
        if key in OPERATIONAL_KEYS or old.get(key) == new.get(key):
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [
                f"{key}.{k} {a.get(k)!r} -> {b.get(k)!r}"
                for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)
            ]
        else:
            changed.append(f"{key} {a!r} -> {b!r}")
    return [f"config changed ({', '.join(changed)})"] if changed else []


def resumed_metrics(
    ckpt: dict[str, Any] | None, r1_before: float | None
) -> tuple[dict[str, float], float | None]:
    """The metrics and final validation R@1 a run reports before (or without) any new step.

    A resumed run that is already finished trains no step: it reports its checkpoint's last
    metrics and R@1, not empty metrics with R@1 after = before.
    """
    if ckpt is None:
        return {}, r1_before
    metrics = {
        k: float(v)
        for k, v in ckpt["metrics"].items()
        if k != "val_r1_before" and isinstance(v, int | float) and not isinstance(v, bool)
    }
    r1 = metrics.get("val_r1")
    return metrics, (r1_before if r1 is None or math.isnan(r1) else r1)
