"""Retrieval metrics of embeddings (one definition for validation during training and for
``trackemb evaluate``), and embedding a loader's patches to score them."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor


def recall_at_k(emb: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction of queries with at least one same-label neighbour among their k nearest.

    Every point is a query except labels with a single member (no positive to find);
    the query itself is never its own neighbour. Similarity is the dot product.

    Args:
        emb: (N, D) float, L2-normalised.
        labels: (N,) int.

    Returns:
        ``{k: recall}``, NaN when there is no query.
    """
    counts = dict(zip(*np.unique(labels, return_counts=True), strict=True))
    queries = np.array([i for i, lab in enumerate(labels) if counts[lab] > 1], dtype=np.int64)
    if len(queries) == 0:
        return {k: float("nan") for k in ks}
    kmax = min(max(ks), len(emb) - 1)
    hits = {k: 0 for k in ks}
    x = emb.astype(np.float32)
    for start in range(0, len(queries), 1024):  # chunks keep the similarity block small
        q = queries[start : start + 1024]
        sim = x[q] @ x.T
        sim[np.arange(len(q)), q] = -np.inf
        top = np.argsort(-sim, axis=1, kind="stable")[:, :kmax]
        match = labels[top] == labels[q][:, None]
        for k in ks:
            hits[k] += int(match[:, :k].any(axis=1).sum())
    return {k: hits[k] / len(queries) for k in ks}


def recall_at_1(emb: Tensor, labels: Tensor) -> float:
    """:func:`recall_at_k`'s R@1 for torch tensors (``emb``: (M, D) L2-normalised, ``labels``: (M,))."""
    return recall_at_k(emb.detach().float().cpu().numpy(), labels.detach().cpu().numpy(), (1,))[1]


def retrieval_metrics(
    emb: np.ndarray, labels: np.ndarray, *, seed: int = 0, nmi: bool = True
) -> dict[str, float]:
    """R@1, R@5 and MAP@R (leave-one-out retrieval) and NMI (k-means with one cluster per label).

    R@1, MAP@R and NMI come from pytorch-metric-learning's ``AccuracyCalculator``; R@5 from
    :func:`recall_at_k` (its R@1 equals PML's precision_at_1).

    Args:
        emb: (N, D) float, L2-normalised.
        labels: (N,) int; points sharing a label are each other's positives.
        seed: k-means seed for NMI.
        nmi: also compute NMI (k-means; skip it for quick validation during training).

    Returns:
        ``{"R@1", "R@5", "MAP@R", "NMI", "queries", "classes"}``.
    """
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import FaissKMeans

    emb = np.ascontiguousarray(emb, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if emb.ndim != 2 or len(emb) != len(labels) or len(emb) < 2:
        raise ValueError(
            f"need (N, D) embeddings and N labels with N >= 2, got {emb.shape} and {labels.shape}"
        )
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", *(("NMI",) if nmi else ())),
        k="max_bin_count",
        device=torch.device("cpu"),
        # min_points_per_centroid=1: few points per track is the normal case, not a warning.
        kmeans_func=FaissKMeans(niter=50, seed=seed, min_points_per_centroid=1, verbose=False),
    )
    x, y = torch.from_numpy(emb), torch.from_numpy(labels)
    acc = calc.get_accuracy(x, y, x, y, ref_includes_query=True)
    recall = recall_at_k(emb, labels, (1, 5))
    _, counts = np.unique(labels, return_counts=True)
    return {
        "R@1": float(acc["precision_at_1"]),
        "R@5": recall[5],
        "MAP@R": float(acc["mean_average_precision_at_r"]),
        "NMI": float(acc["NMI"]) if nmi else float("nan"),
        "queries": int(counts[counts > 1].sum()),
        "classes": len(counts),
    }


def thumbnails(images: Tensor, px: int = 32) -> Tensor:
    """Small copies for the projector sprite. Args: images: (N, 3, H, W) float. Returns: (N, 3, px, px)."""
    return torch.nn.functional.interpolate(images.float(), size=(px, px), mode="bilinear", antialias=True)


@torch.no_grad()
def embed_loader(
    model: torch.nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    keep_thumbnails: int = 0,
) -> tuple[Tensor, Tensor]:
    """Embed every patch a loader yields, in eval mode (restored afterwards).

    Returns:
        emb: (M, D) float32 on CPU, L2-normalised; thumbs: (min(M, keep_thumbnails), 3, 32, 32).
    """
    was_training = model.training
    model.eval()
    embs, thumbs, kept = [], [], 0
    for images, _ in loader:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            embs.append(model(images.to(device, non_blocking=True)).float().cpu())
        if kept < keep_thumbnails:
            thumbs.append(thumbnails(images[: keep_thumbnails - kept]))
            kept += len(thumbs[-1])
    model.train(was_training)
    emb = torch.cat(embs) if embs else torch.zeros(0, 0)
    return emb, torch.cat(thumbs) if thumbs else torch.zeros(0, 3, 32, 32)
