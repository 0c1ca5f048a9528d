"""Triplet loss on cosine distance (stock PML) and the stats a human watches while it trains.

``TripletMarginLoss(distance=CosineSimilarity())`` computes ``relu(s(a,n) - s(a,p) + m)``
with ``s = cos``; since ``D = 1 - cos`` this is exactly Wang & Gupta's
``max(0, D(a,p) - D(a,n) + m)``.
"""

from __future__ import annotations

import math

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.reducers import AvgNonZeroReducer, MeanReducer
from torch import Tensor

from trackemb.config import MineConfig


def build_loss(cfg: MineConfig) -> TripletMarginLoss:
    """The configured loss; call it as ``loss_fn(emb, indices_tuple=(a, p, n))``."""
    reducer = MeanReducer() if cfg.reducer == "mean" else AvgNonZeroReducer()
    return TripletMarginLoss(margin=cfg.margin, distance=CosineSimilarity(), reducer=reducer)


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
