"""Losses (stock PML), spreading regularisers and the stats a human watches while it trains.

``TripletMarginLoss(distance=CosineSimilarity())`` computes ``relu(s(a,n) - s(a,p) + m)``
with ``s = cos``; since ``D = 1 - cos`` this is exactly Wang & Gupta's
``max(0, D(a,p) - D(a,n) + m)``. ``NTXentLoss`` (InfoNCE) takes mined *pairs* instead:
every same-track positive against every valid negative of the batch at once.

The regularisers keep the embedding from collapsing onto a few dimensions (which a few
thousand near-duplicate positives invite): VICReg's variance and covariance terms
(Bardes et al., ICLR 2022) and KoLeo's nearest-neighbour entropy (Sablayrolles et al.,
ICLR 2019, used by DINOv2).
"""

from __future__ import annotations

import math

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import BaseMetricLossFunction, NTXentLoss, TripletMarginLoss
from pytorch_metric_learning.reducers import AvgNonZeroReducer, MeanReducer
from torch import Tensor

from trackemb.config import MineConfig


def build_loss(cfg: MineConfig) -> BaseMetricLossFunction:
    """The configured loss; call it as ``loss_fn(emb, indices_tuple=...)`` with the miner's output.

    ``triplet`` takes ``(a, p, n)``; ``ntxent`` takes pairs ``(a1, p, a2, n)``.
    """
    if cfg.loss == "ntxent":
        return NTXentLoss(temperature=cfg.temperature)
    reducer = MeanReducer() if cfg.reducer == "mean" else AvgNonZeroReducer()
    return TripletMarginLoss(margin=cfg.margin, distance=CosineSimilarity(), reducer=reducer)


VICREG_VARIANCE_COEFF = 25.0  # VICReg's mu (variance) with nu = 1 (covariance)


def vicreg_terms(feats: Tensor) -> Tensor:
    """VICReg variance + covariance terms of a batch of features (no invariance term).

    ``25 * mean(relu(1 - std_d)) + sum_{i != j} cov_ij^2 / F``: every feature keeps a
    standard deviation of at least 1 over the batch and features decorrelate, so the
    encoder cannot spend all its width on a few directions. Args: feats: (B, F), B >= 2.
    """
    x = feats.float()
    x = x - x.mean(0, keepdim=True)
    std = torch.sqrt(x.var(0) + 1e-4)
    cov = (x.T @ x) / (x.shape[0] - 1)
    off_diag = cov.pow(2).sum() - cov.diagonal().pow(2).sum()
    return VICREG_VARIANCE_COEFF * torch.relu(1.0 - std).mean() + off_diag / x.shape[1]


def koleo_term(emb: Tensor, eps: float = 1e-8) -> Tensor:
    """KoLeo: ``-mean log(distance to the nearest other embedding)``; spreads points uniformly.

    Args: emb: (B, D) L2-normalised, B >= 2.
    """
    e = emb.float()
    sim = e @ e.T
    sim.fill_diagonal_(-2.0)
    nearest = sim.max(1).values
    dist = torch.sqrt(torch.clamp(2.0 - 2.0 * nearest, min=0.0) + eps)
    return -torch.log(dist + eps).mean()


def regulariser(kind: str, feats: Tensor, emb: Tensor) -> Tensor:
    """The configured spreading term (``TrainConfig.reg``); zero for ``"none"`` or a batch of one."""
    if kind == "none" or feats.shape[0] < 2:
        return emb.new_zeros(())
    if kind == "vicreg":
        return vicreg_terms(feats)
    if kind == "koleo":
        return koleo_term(emb)
    raise ValueError(f"unknown regulariser {kind!r}; known: none, vicreg, koleo")


def cosine_dist(emb: Tensor) -> Tensor:
    """Args: emb: (N, D) L2-normalised. Returns: (N, N) float ``1 - cos``, detached, in [0, 2]."""
    emb = emb.detach().float()
    return (1.0 - emb @ emb.T).clamp_(0.0, 2.0)


def embedding_spread(emb: Tensor) -> float:
    """Mean per-dimension std of the batch, times sqrt(D).

    About 1 for embeddings spread evenly over the sphere, 0 when every input maps to
    the same point (collapse).
    """
    emb = emb.detach().float()
    if emb.shape[0] < 2:
        return 0.0
    return float(emb.std(dim=0).mean() * math.sqrt(emb.shape[1]))


def triplet_stats(emb: Tensor, triplets: tuple[Tensor, Tensor, Tensor], margin: float) -> dict[str, float]:
    """Recordable stats of one batch.

    Args:
        emb: (N, D) float, L2-normalised.
        triplets: (anchor_idx, positive_idx, negative_idx), each (T,) long.
        margin: the loss margin, to count active triplets.

    Returns:
        ``num_triplets``, ``frac_active`` (share with non-zero loss), ``pos_dist`` and
        ``neg_dist`` (mean ``1 - cos``; NaN when T = 0) and ``emb_std`` (see :func:`embedding_spread`).
    """
    a, p, n = triplets
    stats = {"num_triplets": float(len(a)), "emb_std": embedding_spread(emb)}
    if len(a) == 0:
        return stats | {"frac_active": 0.0, "pos_dist": math.nan, "neg_dist": math.nan}
    with torch.no_grad():
        e = emb.detach().float()
        d_ap = 1.0 - (e[a] * e[p]).sum(1)
        d_an = 1.0 - (e[a] * e[n]).sum(1)
        active = (d_ap - d_an + margin) > 0
    return stats | {
        "frac_active": float(active.float().mean()),
        "pos_dist": float(d_ap.mean()),
        "neg_dist": float(d_an.mean()),
    }
