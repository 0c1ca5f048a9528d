"""What a training run returns and what its checkpoints say about validation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trackemb.embedding.validate import BestTracker


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    metrics: dict[str, float]
    checkpoint: Path
    val_r1_before: float | None  # head R@1 on held-out tracks at step 0 (the untrained network)
    val_r1_after: float | None  # ... at the last validation
    best: dict[str, Any] | None = None  # best validation: step, layer, MAP@R, R@1, rank
    stopped: bool = False  # ended early by a stop request (Ctrl-C / SIGTERM), resumable

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (paths as strings), e.g. for a Prefect artifact."""
        return {
            "run_dir": str(self.run_dir), "step": self.step, "metrics": dict(self.metrics),
            "checkpoint": str(self.checkpoint), "val_r1_before": self.val_r1_before,
            "val_r1_after": self.val_r1_after, "best": self.best, "stopped": self.stopped,
        }  # fmt: skip


def ckpt_metrics(best: BestTracker, metrics: dict[str, float]) -> dict[str, Any]:
    """What the last checkpoint says about the run: this step's stats plus step-0 and best validation."""
    initial = best.initial or {}
    return {
        "val_r1_before": initial.get("head", {}).get("R@1"),
        "val_initial": initial,
        "val_best": best.best,
        **metrics,
    }


def train_result(
    run_dir: Path, step: int, metrics: dict[str, float], ckpt: Path, best: BestTracker, stopped: bool = False
) -> TrainResult:
    initial = (best.initial or {}).get("head", {}).get("R@1")
    last = best.history[-1].get("head/R@1") if best.history else None
    return TrainResult(run_dir, step, metrics, ckpt, initial, last, best.best, stopped)
