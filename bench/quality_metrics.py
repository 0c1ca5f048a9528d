"""Retrieval metrics with exclusion rules, and bootstrap confidence intervals over tracks.

Every point is a query whose label has at least one *valid* positive. A pair (query, j) can
be excluded from the ranking altogether (neither positive nor distractor): same-track patches
closer than ``min_gap`` frames (near-duplicates that say nothing about invariance), or the
same identity in the query's own video (cross-video retrieval). Without exclusions R@1 and
MAP@R equal :func:`trackemb.embedding.evaluate.retrieval_metrics` (tests check this).

Confidence intervals resample *groups* (tracks or identities) with replacement: patches of
one track are not independent, and small held-out sets are noisy. R@1 and MAP@R re-weight
the per-query scores (percentile interval); NMI and effective rank are recomputed on the
resampled rows, whose duplicates bias them low, so their interval is bias-shifted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from threadpoolctl import threadpool_limits

from trackemb.embedding.rank import effective_rank

PER_QUERY = ("R@1", "MAP@R")


def exclude_near_frames(labels: np.ndarray, frames: np.ndarray, min_gap: int) -> np.ndarray:
    """(N, N) bool: same label and fewer than ``min_gap`` frames apart (the diagonal included)."""
    same = labels[:, None] == labels[None, :]
    return same & (np.abs(frames[:, None] - frames[None, :]) < min_gap)


def exclude_same_video(labels: np.ndarray, videos: np.ndarray) -> np.ndarray:
    """(N, N) bool: same label in the same video (the diagonal included)."""
    return (labels[:, None] == labels[None, :]) & (videos[:, None] == videos[None, :])


def per_query(
    emb: np.ndarray, labels: np.ndarray, exclude: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """R@1 and MAP@R of every point as a query (NaN where it has no valid positive).

    Args:
        emb: (N, D) L2-normalised.
        labels: (N,) int.
        exclude: (N, N) bool, pairs left out of the ranking; the diagonal is always left out.

    Returns:
        ``{"R@1": (N,), "MAP@R": (N,)}`` float64.
    """
    x = np.asarray(emb, dtype=np.float64)
    n = len(x)
    sim = x @ x.T
    skip = np.eye(n, dtype=bool) if exclude is None else (exclude | np.eye(n, dtype=bool))
    sim[skip] = -np.inf
    pos = (labels[:, None] == labels[None, :]) & ~skip
    order = np.argsort(-sim, axis=1, kind="stable")
    rel = np.take_along_axis(pos, order, axis=1)
    r = pos.sum(1)
    r1 = np.where(r > 0, rel[:, 0], np.nan).astype(np.float64)
    # MAP@R: mean over the first R ranks of precision@k at each relevant rank k (Musgrave et al. 2020).
    ranks = np.arange(1, n + 1)
    in_r = ranks[None, :] <= r[:, None]
    prec = np.cumsum(rel, axis=1) / ranks[None, :]
    mapr = np.where(r > 0, (prec * rel * in_r).sum(1) / np.maximum(r, 1), np.nan)
    return {"R@1": r1, "MAP@R": mapr}


def paired_delta(
    emb_a: np.ndarray,
    emb_b: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    excludes: dict[str, np.ndarray | None],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, float | list[float]]]:
    """``a - b`` for R@1 and MAP@R on the same queries, with a paired bootstrap 95 % interval.

    Both encoders are scored on every resample of the same groups, so what the two share (a hard
    track, an easy one) cancels: the interval of the difference is far narrower than the two
    separate intervals suggest. An interval above 0 says ``a`` is better beyond resampling noise.

    Returns:
        ``{metric: {"value": float, "ci": [lo, hi]}}`` for each prefix in ``excludes``.
    """
    boots = bootstrap_groups(groups, n_boot, np.random.default_rng(seed))
    out: dict[str, dict[str, float | list[float]]] = {}
    for prefix, excl in excludes.items():
        qa, qb = per_query(emb_a, labels, excl), per_query(emb_b, labels, excl)
        for name in PER_QUERY:
            diff = qa[name] - qb[name]  # NaN exactly where a query has no valid positive (same for both)
            stats = [np.nanmean(diff[b]) for b in boots if np.isfinite(diff[b]).any()]
            out[prefix + name] = {"value": float(np.nanmean(diff)), "ci": _ci(stats)}
    return out


def nmi(emb: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """NMI of k-means (one cluster per distinct label) against the labels, as PML computes it."""
    from pytorch_metric_learning.utils.inference import FaissKMeans
    from sklearn.metrics import normalized_mutual_info_score

    k = len(np.unique(labels))
    if k < 2 or len(emb) <= k:
        return float("nan")
    kmeans = FaissKMeans(niter=50, seed=seed, min_points_per_centroid=1, verbose=False)
    import torch

    pred = kmeans(torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32)), k)
    return float(normalized_mutual_info_score(labels, np.asarray(pred).ravel()))


def _ci(samples: list[float] | np.ndarray) -> list[float]:
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    return [float(np.percentile(s, 2.5)), float(np.percentile(s, 97.5))] if len(s) else [np.nan, np.nan]


def bootstrap_groups(groups: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` resamples of row indices: whole groups drawn with replacement (duplicates kept)."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    return [np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))]) for _ in range(n)]


def score(
    emb: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    excludes: dict[str, np.ndarray | None],
    n_boot: int = 1000,
    n_boot_refit: int = 100,
    seed: int = 0,
) -> dict[str, dict[str, float | list[float]]]:
    """Every metric with a bootstrap 95 % interval over ``groups``.

    Args:
        emb: (N, D) L2-normalised embeddings; labels: (N,) retrieval labels.
        groups: (N,) resampling unit of each row (track or identity).
        excludes: metric prefix -> exclusion matrix; ``{"": None}`` gives plain ``R@1``/``MAP@R``,
            ``{"cross-video ": m}`` adds ``cross-video R@1``/``cross-video MAP@R``.
        n_boot: resamples for the per-query metrics (cheap: queries are re-weighted, not re-ranked).
        n_boot_refit: resamples for NMI and effective rank (recomputed on the resampled rows).

    Returns:
        ``{metric: {"value": float, "ci": [lo, hi]}}``.
    """
    with threadpool_limits(1), _torch_threads(1):  # many small SVDs/k-means: threads only contend
        return _score(emb, labels, groups, excludes, n_boot, n_boot_refit, seed)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _score(
    emb: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    excludes: dict[str, np.ndarray | None],
    n_boot: int,
    n_boot_refit: int,
    seed: int,
) -> dict[str, dict[str, float | list[float]]]:
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float | list[float]]] = {}
    boots = bootstrap_groups(groups, n_boot, rng)
    for prefix, excl in excludes.items():
        for name, vals in per_query(emb, labels, excl).items():
            ok = np.isfinite(vals)
            stats = [np.nanmean(vals[b]) if ok[b].any() else np.nan for b in boots]
            out[prefix + name] = {
                "value": float(np.nanmean(vals)) if ok.any() else float("nan"),
                "ci": _ci(stats),
            }
            out[prefix + name]["queries"] = int(ok.sum())
    refit: dict[str, Callable[[np.ndarray], float]] = {
        "NMI": lambda rows: nmi(emb[rows], labels[rows], seed),
        "effective rank": lambda rows: effective_rank(emb[rows]),
    }
    for name, fn in refit.items():
        value = fn(np.arange(len(emb)))
        stats = np.array([fn(b) for b in boots[:n_boot_refit]])
        # Duplicated rows lower both statistics (less spread), so the resamples sit below the point
        # estimate: shift the percentile interval by the bootstrap's estimate of that bias.
        bias = float(np.nanmean(stats)) - value if np.isfinite(stats).any() else 0.0
        out[name] = {"value": value, "ci": [c - bias for c in _ci(stats)], "bias": bias}
    return out
