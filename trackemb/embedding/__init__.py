"""trackemb.embedding: encoder, mining, loss and training.

Names are re-exported lazily so ``import trackemb.embedding`` stays cheap (no torch
import until a name is used).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Encoder": "model",
    "build_encoder": "model",
    "encoder_from_args": "model",
    "list_encoders": "model",
    "register_encoder": "model",
    "check_triplets": "miners",
    "mine_triplets": "miners",
    "strategy_at": "miners",
    "build_loss": "losses",
    "triplet_stats": "losses",
    "ListWriter": "monitor",
    "MetricsWriter": "monitor",
    "TensorBoardWriter": "monitor",
    "recall_at_1": "metrics",
    "load_checkpoint": "checkpoint",
    "TrainResult": "train",
    "lr_at": "train",
    "train": "train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
