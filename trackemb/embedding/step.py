"""One training step: embed the batch with the shared encoder, mine, compute the loss.

Kept apart from the loop in ``train.py`` so the loop reads top to bottom and a step can be
tested on its own. The batch layout is named (:class:`TrainBatch`) instead of being
inferred from counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from trackemb.config import TrainConfig
from trackemb.embedding.losses import build_loss, cosine_dist, regulariser, triplet_stats
from trackemb.embedding.miners import Triplets, mine_at_step, mine_pairs, mine_triplets
from trackemb.embedding.rank import effective_rank


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to ``cfg.lr * cfg.min_lr_frac`` at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    ratio = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))  # in [0, 1]
    min_lr = cfg.lr * cfg.min_lr_frac
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - min_lr)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The miner's generator for one step: a function of (seed, step, rank) only."""
    return torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, step, rank, 3]).generate_state(1)[0])
    )


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


class TrainView(nn.Module):
    """``forward`` returns (backbone features, head embedding): what DDP must wrap for training."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder.forward_both(x)


@dataclass
class TrainBatch:
    """One batch on the device.

    Attributes:
        images: (N, 3, px, px) float in [0, 1].
        track: (N,) global track labels. group: (N,) negative-group labels.
        apart: (N, N) bool, rows of co-occurring tracks of one video that stay apart, or None.
        blocked: (N, N) bool, rows of one video's tracks in different time windows that overlap
            in time (never negatives unless apart), or None.
        harvested: the store's triplets when the batch is laid out as (anchors, positives,
            negatives) blocks; None for pair batches.
        strength: augmentation strength of the batch.
    """

    images: Tensor
    track: Tensor
    group: Tensor
    apart: Tensor | None
    harvested: Triplets | None
    strength: float
    blocked: Tensor | None = None


def batch_apart(track: np.ndarray, apart_keys: np.ndarray, n_tracks: int) -> Tensor:
    """(N, N) bool of the batch's rows whose track pair is in ``apart_keys`` (sorted ``a * n_tracks + b``
    codes: :meth:`StoreIndex.apart_keys` or :meth:`StoreIndex.overlap_keys`)."""
    codes = track[:, None] * n_tracks + track[None, :]
    return torch.from_numpy(np.isin(codes, apart_keys))


def to_batch(raw: dict, track_group: Tensor, apart_keys: np.ndarray | None, n_tracks: int,
             device: torch.device, overlap_keys: np.ndarray | None = None) -> TrainBatch:  # fmt: skip
    """The DataLoader's dict as a :class:`TrainBatch` on ``device``."""
    track = raw["track"]
    harvested = None
    if raw["groups"] == 3:  # harvested triplets laid out as (anchors, positives, negatives)
        b = torch.arange(len(track) // 3, device=device)
        harvested = (b, b + len(b), b + 2 * len(b))
    apart = None
    if apart_keys is not None and len(apart_keys):
        apart = batch_apart(track.numpy(), apart_keys, n_tracks).to(device)
    blocked = None
    if overlap_keys is not None and len(overlap_keys):
        blocked = batch_apart(track.numpy(), overlap_keys, n_tracks).to(device)
    return TrainBatch(
        images=raw["images"].to(device, non_blocking=True), track=track.to(device),
        group=track_group[track].to(device), apart=apart, harvested=harvested,
        strength=float(raw["strength"]), blocked=blocked,
    )  # fmt: skip


def loss_and_stats(
    net: nn.Module,
    batch: TrainBatch,
    step: int,
    cfg: TrainConfig,
    gen: torch.Generator,
    amp_dtype: torch.dtype | None,
) -> tuple[Tensor, dict[str, float], Tensor, Triplets]:
    """Forward the batch through ``net`` (a :class:`TrainView`, maybe DDP-wrapped), mine and score it.

    Returns:
        (loss to backpropagate, stats, head embeddings (N, D), the triplets shown in TensorBoard).
    """
    device = batch.images.device
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        feats, emb = net(batch.images)
    feats, emb = feats.float(), emb.float()
    dist = cosine_dist(emb)
    if cfg.mine.loss == "ntxent":
        pairs = mine_pairs(batch.track, batch.group, batch.apart, batch.blocked)
        main = build_loss(cfg.mine)(emb, indices_tuple=pairs)
        # Shown and counted: each anchor's hardest positive and hardest valid negative.
        triplets = mine_triplets(dist, batch.track, batch.group, strategy="batch_hard", k=1, gen=gen,
                                 apart=batch.apart, blocked=batch.blocked)  # fmt: skip
        strategy = "all_pairs"
    else:
        triplets, strategy = mine_at_step(
            dist, batch.track, batch.group, step, cfg.mine, gen, batch.harvested, batch.apart, batch.blocked
        )
        main = build_loss(cfg.mine)(emb, indices_tuple=triplets)
    reg = regulariser(cfg.reg, feats, emb)
    loss = main + cfg.reg_weight * reg
    stats = triplet_stats(emb, triplets, cfg.mine.margin) | {
        "loss_main": float(main.detach()), "reg": float(reg.detach()),
        "hard_mining": float(strategy not in ("random", "all_pairs")),
        "batch_rank": effective_rank(emb.detach()),
    }  # fmt: skip
    return loss, stats, emb, triplets
