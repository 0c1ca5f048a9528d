"""Effective rank of a set of embeddings: how many directions the encoder really uses.

RankMe (Garrido et al., ICML 2023): ``exp(H(p))`` with ``p`` the singular values of the
embedding matrix normalised to sum to one. It is 1 when every embedding lies on one
line and ``min(N, D)`` when the singular values are all equal. A trained encoder whose
rank falls far below the untrained network's has collapsed onto a few dimensions (e.g.
it only tells scenes apart), even when the overall spread looks healthy.
"""

from __future__ import annotations

import numpy as np
import torch

_EPS = 1e-12


def effective_rank(emb: np.ndarray | torch.Tensor, *, center: bool = False) -> float:
    """RankMe effective rank of ``emb``.

    Args:
        emb: (N, D) embeddings (any float dtype, on any device).
        center: subtract the mean first (measures the spread around the centroid only).

    Returns:
        ``exp(-sum p_i log p_i)`` over the normalised singular values, in ``[1, min(N, D)]``;
        NaN for fewer than two rows, non-finite values or an all-zero matrix.
    """
    x = torch.as_tensor(emb).detach().to("cpu", torch.float64)
    if x.ndim != 2 or x.shape[0] < 2 or not bool(torch.isfinite(x).all()):
        return float("nan")
    if center:
        x = x - x.mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    total = float(s.sum())
    if total <= _EPS:
        return float("nan")
    p = s / total
    return float(torch.exp(-(p * torch.log(p + _EPS)).sum()))
