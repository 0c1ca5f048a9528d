"""trackemb: self-supervised video tracking-to-embedding pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trackemb._version import __version__

__all__ = ["__version__", "load_encoder"]

if TYPE_CHECKING:
    from torch import nn


def load_encoder(path: str) -> nn.Module:
    """Rebuild a trainable encoder from an export directory (safetensors + model_card.json)."""
    from trackemb.embedding.export import load_encoder as _load

    return _load(path)
