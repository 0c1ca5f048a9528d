"""The hardest triplets of a batch as TensorBoard shows them: a labelled picture (anchor |
positive | negative columns, d(a,p) and d(a,n) under each row), the same captions as text,
and histograms of both distances."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from trackemb.embedding.monitor import MetricsWriter

TILE_MIN_PX = 64


def log_triplet_views(
    writer: MetricsWriter,
    images: Tensor,
    emb: Tensor,
    triplets: tuple[Tensor, Tensor, Tensor],
    margin: float,
    step: int,
    n_show: int = 8,
) -> None:
    """Distance histograms of the mined triplets and a grid of the hardest ones (rows: a, p, n).

    Args:
        images: (N, 3, H, W) float in [0, 1], the batch as the encoder saw it.
        emb: (N, D) L2-normalised embeddings of ``images``.
    """
    a, p, n = triplets
    e = emb.detach().float()
    d_ap, d_an = 1.0 - (e[a] * e[p]).sum(1), 1.0 - (e[a] * e[n]).sum(1)
    writer.histogram("train/pos_dist_hist", d_ap, step)
    writer.histogram("train/neg_dist_hist", d_an, step)
    worst = (d_ap - d_an + margin).argsort(descending=True)[:n_show]
    if len(worst) == 0:
        return
    sheet, captions = triplet_sheet(images, (a[worst], p[worst], n[worst]), d_ap[worst], d_an[worst])
    writer.images("train/hardest_triplets", sheet[None], step, nrow=1)
    writer.text("train/hardest_triplets", "\n".join(f"{i + 1}. {c}" for i, c in enumerate(captions)), step)


def triplet_sheet(
    images: Tensor, rows: tuple[Tensor, Tensor, Tensor], d_ap: Tensor, d_an: Tensor
) -> tuple[Tensor, list[str]]:
    """One labelled picture of triplets: columns anchor | positive | negative, distances under each row.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        rows: anchor, positive and negative indices into ``images``, (K,) each.
        d_ap, d_an: (K,) cosine distances of each row's pairs.

    Returns:
        ``(sheet (3, H', W') float in [0, 1], the K captions)``.
    """
    from trackemb.pictures import labelled_grid

    shown = images.detach().float().clamp(0, 1)
    if shown.shape[-1] < TILE_MIN_PX:  # small inputs are blown up so captions fit and patches are visible
        shown = torch.nn.functional.interpolate(shown, size=(TILE_MIN_PX, TILE_MIN_PX), mode="nearest")
    tiles = [(shown[idx] * 255).byte().permute(0, 2, 3, 1).cpu().numpy() for idx in rows]
    captions = [
        f"d(a,p) {dp:.3f}   d(a,n) {dn:.3f}" for dp, dn in zip(d_ap.tolist(), d_an.tolist(), strict=True)
    ]
    grid = labelled_grid(list(zip(*tiles, strict=True)), ["anchor", "positive", "negative"], captions)
    return torch.from_numpy(grid).permute(2, 0, 1).float() / 255.0, captions
