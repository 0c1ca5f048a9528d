"""Augmentations whose strength follows a curriculum: easy views first, harder later.

Strength ``s`` in [0, 1] scales every knob together (crop scale range, flips, colour
jitter, grayscale, erasing), so one number tells how hard a step's views were.
All randomness comes from one ``torch.Generator`` seeded per batch, never from global
state, so a batch is the same whichever DataLoader worker builds it.

Crops use ``torchvision.transforms.v2.functional`` per image (patches may differ in
size); the photometric part runs batched with per-image parameters, because torchvision's
per-image ColorJitter (hue especially) costs ~4 ms per small patch on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from trackemb.config import TrainConfig

# RGB -> YIQ; a hue shift is a rotation of the (I, Q) chroma plane.
_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
# The harvest adds 20 % of the box's long side as context on each edge (HarvestConfig.context_frac),
# so the box spans 1 / 1.4 of the patch side; the mask's edge is feathered over 6 % of the side.
BOX_SIDE_FRAC = 1.0 / 1.4
_FEATHER = 0.06


def aug_strength(step: int, cfg: TrainConfig) -> float:
    """Linear ramp from ``aug_min_strength`` to ``aug_max_strength`` over ``aug_ramp_frac`` of the steps."""
    ramp_steps = max(1.0, cfg.aug_ramp_frac * cfg.steps)
    t = min(1.0, max(0.0, step / ramp_steps))
    lo = min(cfg.aug_min_strength, cfg.aug_max_strength)
    return lo + t * (cfg.aug_max_strength - lo)


def _crop_box(h: int, w: int, s: float, gen: torch.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box: area in [1 - 0.65 s, 1] of the image, aspect within 1 +- 0.25 s."""
    log_squeeze = -math.log(1.0 - 0.25 * s)
    for _ in range(10):
        u = torch.rand(4, generator=gen).tolist()
        area = h * w * (1.0 - 0.65 * s * u[0])
        aspect = math.exp(log_squeeze * (2 * u[1] - 1))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(u[2] * (h - ch + 1)), int(u[3] * (w - cw + 1)), ch, cw
    return 0, 0, h, w


def _hue_matrices(angles: Tensor) -> Tensor:
    """(B,) radians -> (B, 3, 3) RGB-space matrices rotating hue by each angle."""
    cos, sin = torch.cos(angles.double()), torch.sin(angles.double())
    rot = torch.zeros(len(angles), 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    return (torch.linalg.inv(_YIQ) @ rot @ _YIQ).float()


def _erase_masks(b: int, px: int, s: float, gen: torch.Generator) -> Tensor:
    """(B, 1, px, px) bool: one random rectangle (2-20 % of the area at s = 1) in a share 0.5 s of images."""
    u = torch.rand(b, 5, generator=gen)
    area = 0.02 + 0.18 * s * u[:, 0]
    aspect = torch.exp(math.log(3.3) * (2 * u[:, 1] - 1))
    eh = (torch.sqrt(area * aspect) * px).clamp(1, px)
    ew = (torch.sqrt(area / aspect) * px).clamp(1, px)
    top, left = u[:, 2] * (px - eh), u[:, 3] * (px - ew)
    ys = torch.arange(px).view(1, px, 1)
    xs = torch.arange(px).view(1, 1, px)
    inside = (ys >= top.view(-1, 1, 1)) & (ys < (top + eh).view(-1, 1, 1))
    inside = inside & (xs >= left.view(-1, 1, 1)) & (xs < (left + ew).view(-1, 1, 1))
    return (inside & (u[:, 4] < 0.5 * s).view(-1, 1, 1)).unsqueeze(1)


def swap_backgrounds(x: Tensor, share: float, gen: torch.Generator, labels: Tensor | None = None) -> Tensor:
    """Paste the centre of a ``share`` of the images onto another image of the batch.

    The centre is where the harvest put the tracked box (``BOX_SIDE_FRAC`` of the patch side);
    the rest is context, which a track keeps and another video changes. Without this, matching
    the surroundings is enough to tell a track's patches from other videos' patches, and the
    encoder learns scenes instead of objects. The mask's edge is feathered so the seam is no cue.

    Args:
        x: (B, 3, px, px) float images. gen: the batch's generator.
        labels: (B,) track labels; when given, an image never takes the context of its own track.
    """
    b, _, px, _ = x.shape
    chosen = torch.rand(b, generator=gen) < share
    # Each image takes a random other image's context: the highest random score among the allowed.
    allowed = ~torch.eye(b, dtype=torch.bool)
    if labels is not None:
        allowed &= labels.view(-1, 1).cpu() != labels.view(1, -1).cpu()
    chosen &= allowed.any(1)
    if not bool(chosen.any()):
        return x
    donor = torch.rand(b, b, generator=gen).masked_fill(~allowed, -1.0).argmax(1).to(x.device)
    centred = (torch.arange(px, dtype=torch.float32, device=x.device) + 0.5) / px - 0.5  # [-0.5, 0.5]
    ramp = ((BOX_SIDE_FRAC / 2 - centred.abs()) / _FEATHER + 0.5).clamp(0.0, 1.0)
    mask = ramp[:, None] * ramp[None, :]
    swapped = mask * x + (1.0 - mask) * x[donor]
    return torch.where(chosen.to(x.device).view(b, 1, 1, 1), swapped, x)


def _rotate_blur(x: Tensor, share: float, gen: torch.Generator) -> Tensor:
    """Rotate a ``share`` of the images by up to 30 degrees and blur a ``share`` (sigma up to 1.5 px
    at 64 px): objects turn and go out of focus between two sightings far more than within a
    one-second track, and the exported encoder should not care."""
    b, _, px, _ = x.shape
    u = torch.rand(b, 3, generator=gen)
    angle = torch.where(u[:, 0] < share, (2 * u[:, 1] - 1) * math.radians(30.0), torch.zeros(b))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, torch.zeros(b)], 1), torch.stack([sin, cos, torch.zeros(b)], 1)], 1
    )
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    blur = u[:, 2] < share
    if bool(blur.any()):
        sigma = 0.3 + 1.2 * float(torch.rand(1, generator=gen)) * px / 64
        kernel = 2 * math.ceil(2 * sigma) + 1
        x = torch.where(blur.view(b, 1, 1, 1), TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma]), x)
    return x


def augment_batch(
    images: Tensor | Sequence[Tensor],
    strength: float,
    out_px: int,
    seed: int,
    color: float = 1.0,
    background: float = 0.0,
    geometry: float = 0.0,
) -> Tensor:
    """Augment each image independently.

    Args:
        images: (B, 3, H, W) uint8 RGB, or B (3, H_i, W_i) uint8 images of any size.
        strength: curriculum strength in [0, 1]; 0 only resizes.
        out_px: output side.
        seed: the batch's seed; equal seeds give equal outputs.
        color: scales the colour-changing part (saturation, hue, grayscale); 0 keeps colours.
        background: share of images (at strength 1) whose context is swapped for another's.
        geometry: share of images (at strength 1) rotated, and share blurred.

    Returns:
        (B, 3, out_px, out_px) float32 in [0, 1].
    """
    s = float(min(1.0, max(0.0, strength)))
    gen = torch.Generator().manual_seed(seed)
    crops = []
    for img in images:
        top, left, ch, cw = _crop_box(img.shape[-2], img.shape[-1], s, gen)
        crops.append(TF.resized_crop(img, top, left, ch, cw, [out_px, out_px], antialias=True))
    x = torch.stack(crops).to(torch.float32).div_(255.0)
    b = len(x)
    if s == 0.0 or b == 0:
        return x

    flip = torch.rand(b, generator=gen) < 0.5 * s
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    x = swap_backgrounds(x, background * s, gen)
    if geometry > 0:
        x = _rotate_blur(x, geometry * s, gen)
    jitter = torch.rand(b, generator=gen) < 0.8

    def factor(spread: float) -> Tensor:  # per image, (B, 1, 1, 1), identity when not jittered
        f = 1.0 + spread * (2 * torch.rand(b, generator=gen) - 1)
        return torch.where(jitter, f, torch.ones_like(f)).view(b, 1, 1, 1)

    x = x * factor(0.4 * s)  # brightness
    mean = (x * _LUMA).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (x - mean) * factor(0.4 * s) + mean  # contrast
    gray = (x * _LUMA).sum(1, keepdim=True)
    x = (x - gray) * factor(0.4 * s * color) + gray  # saturation
    angles = 2 * math.pi * 0.1 * s * color * (2 * torch.rand(b, generator=gen) - 1) * jitter
    x = torch.einsum("bij,bjhw->bihw", _hue_matrices(angles), x).clamp_(0.0, 1.0)
    to_gray = (torch.rand(b, generator=gen) < 0.2 * s * color).view(b, 1, 1, 1)
    x = torch.where(to_gray, (x * _LUMA).sum(1, keepdim=True).expand_as(x), x)
    return x.masked_fill(_erase_masks(b, out_px, s, gen), 0.0)


def to_input(images: Tensor, out_px: int) -> Tensor:
    """Deterministic eval view. Args: images: (B, 3, H, W) uint8. Returns: (B, 3, out_px, out_px) float in [0, 1]."""
    resized = TF.resize(images, [out_px, out_px], antialias=True)
    return resized.to(torch.float32).div_(255.0)
