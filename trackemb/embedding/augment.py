"""Augmentations whose strength follows a curriculum: easy views first, harder later.

Strength ``s`` in [0, 1] scales every knob together (crop scale range, flips, colour
jitter, grayscale, erasing), so one number tells how hard a step's views were.
Randomness comes from an explicit seed per batch, never from ambient global state,
so a batch is the same whichever DataLoader worker builds it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.transforms import v2

from trackemb.config import TrainConfig


def aug_strength(step: int, cfg: TrainConfig) -> float:
    """Linear ramp from ``aug_min_strength`` to ``aug_max_strength`` over ``aug_ramp_frac`` of the steps."""
    ramp_steps = max(1.0, cfg.aug_ramp_frac * cfg.steps)
    t = min(1.0, max(0.0, step / ramp_steps))
    lo = min(cfg.aug_min_strength, cfg.aug_max_strength)
    return lo + t * (cfg.aug_max_strength - lo)


def make_transform(strength: float, out_px: int) -> v2.Compose:
    """Per-image transform at ``strength``: uint8 (3, H, W) -> float (3, out_px, out_px) in [0, 1]."""
    s = float(min(1.0, max(0.0, strength)))
    squeeze = 1.0 - 0.25 * s
    return v2.Compose(
        [
            v2.RandomResizedCrop(out_px, scale=(1.0 - 0.65 * s, 1.0), ratio=(squeeze, 1.0 / squeeze), antialias=True),
            v2.RandomHorizontalFlip(p=0.5 * s),
            v2.RandomApply([v2.ColorJitter(0.4 * s, 0.4 * s, 0.4 * s, 0.1 * s)], p=0.8),
            v2.RandomGrayscale(p=0.2 * s),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomErasing(p=0.5 * s, scale=(0.02, 0.02 + 0.18 * s), value=0.0),
        ]
    )


def augment_batch(images: Tensor | Sequence[Tensor], strength: float, out_px: int, seed: int) -> Tensor:
    """Augment each image independently.

    Args:
        images: (B, 3, H, W) uint8 RGB, or B (3, H_i, W_i) uint8 images of any size.
        strength: curriculum strength in [0, 1]; 0 only resizes.
        out_px: output side.
        seed: the batch's seed; equal seeds give equal outputs.

    Returns:
        (B, 3, out_px, out_px) float32 in [0, 1].
    """
    transform = make_transform(strength, out_px)
    # torchvision v2 draws from the global torch RNG; fork it so the caller's stream is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([transform(img) for img in images])


def to_input(images: Tensor, out_px: int) -> Tensor:
    """Deterministic eval view. Args: images: (B, 3, H, W) uint8. Returns: (B, 3, out_px, out_px) float in [0, 1]."""
    resized = v2.functional.resize(images, [out_px, out_px], antialias=True)
    return resized.to(torch.float32).div_(255.0)
