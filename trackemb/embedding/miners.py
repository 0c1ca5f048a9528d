"""Miners: pure functions from a distance matrix and labels to PML index tuples.

A positive shares the anchor's track. A negative comes from another *video*, or from a
track of the anchor's own video that co-occurs with the anchor's track while staying apart
(``apart``; the rule is in ``trackemb.tracking.cooccur``). Any other track of the same video
may show the same object re-detected, so it is never a negative. Every miner's output is
checked by :func:`check_triplets` / :func:`check_pairs` (``trackemb.embedding.negatives``).

"Video" labels are negative *groups*: the video by default; with
``TrainConfig.negative_window_s`` training passes one label per time window of a video,
and the same checks then hold per window, with one more rule: a track of another window of
the same video that overlaps the anchor's track in time (``blocked``) is never a negative
unless the two are apart, since it may be the same object at the same moment.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trackemb.config import MineConfig
from trackemb.embedding.negatives import Pairs, check_pairs, check_triplets, negative_mask

Triplets = tuple[Tensor, Tensor, Tensor]
STRATEGIES = ("random", "wang_gupta", "batch_hard")


def mine_pairs(
    track_ids: Tensor, video_ids: Tensor, apart: Tensor | None = None, blocked: Tensor | None = None
) -> Pairs:
    """Every positive pair and every valid negative pair of the batch (for NT-Xent / InfoNCE).

    Returns:
        ``(a1, p, a2, n)`` long tensors, checked by :func:`check_pairs`.
    """
    a1, p = _positive_pairs(track_ids)
    a2, n = negative_mask(video_ids, apart, blocked).nonzero(as_tuple=True)
    out = (a1, p, a2, n)
    check_pairs(out, track_ids, video_ids, apart, blocked)
    return out


def _empty(device: torch.device) -> Triplets:
    e = torch.empty(0, dtype=torch.long, device=device)
    return e, e.clone(), e.clone()


def _positive_pairs(track_ids: Tensor) -> tuple[Tensor, Tensor]:
    """All ordered (anchor, positive) index pairs of distinct rows with the same track."""
    same = track_ids[:, None] == track_ids[None, :]
    same.fill_diagonal_(False)
    a, p = same.nonzero(as_tuple=True)
    return a, p


def _random_scores(shape: tuple[int, int], gen: torch.Generator, device: torch.device) -> Tensor:
    # Drawn on the generator's device so one seeded CPU generator works for CUDA batches too.
    return torch.rand(shape, generator=gen, device=gen.device).to(device)


def _pick_random(allowed: Tensor, count: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Pick up to ``count`` random allowed columns per row of ``allowed`` (R, N) without replacement.

    Returns:
        (row, col) index tensors of the picks.
    """
    if count <= 0 or allowed.numel() == 0:
        return _empty(allowed.device)[:2]
    scores = _random_scores(tuple(allowed.shape), gen, allowed.device)
    scores = scores.masked_fill(~allowed, -1.0)
    vals, cols = scores.topk(min(count, allowed.shape[1]), dim=1)
    keep = vals >= 0
    rows = torch.arange(allowed.shape[0], device=allowed.device)[:, None].expand_as(cols)
    return rows[keep], cols[keep]


def _mine_random(a: Tensor, p: Tensor, neg_ok: Tensor, k: int, gen: torch.Generator) -> Triplets:
    rows, n = _pick_random(neg_ok[a], k, gen)
    return a[rows], p[rows], n


def _mine_wang_gupta(
    dist: Tensor,
    a: Tensor,
    p: Tensor,
    neg_ok: Tensor,
    *,
    k: int,
    top_k: int,
    violators: int,
    margin: float,
    gen: torch.Generator,
) -> Triplets:
    """Per (anchor, positive): ``k`` random picks among the ``top_k`` hardest negatives plus
    ``violators`` random negatives that still violate the margin (outside that top set)."""
    allowed = neg_ok[a]  # (P, N)
    d_an = dist[a].masked_fill(~allowed, float("inf"))
    kk = min(top_k, dist.shape[1])
    hard_vals, hard_cols = d_an.topk(kk, dim=1, largest=False)
    rows_h, pick = _pick_random(torch.isfinite(hard_vals), k, gen)
    cols_h = hard_cols[rows_h, pick]

    in_top = torch.zeros_like(allowed)
    in_top.scatter_(1, hard_cols, torch.isfinite(hard_vals))
    d_ap = dist[a, p]
    violating = allowed & ~in_top & (d_an < (d_ap + margin)[:, None])
    rows_v, cols_v = _pick_random(violating, violators, gen)

    rows = torch.cat([rows_h, rows_v])
    return a[rows], p[rows], torch.cat([cols_h, cols_v])


def _mine_batch_hard(dist: Tensor, track_ids: Tensor, neg_ok: Tensor) -> Triplets:
    """Per anchor: its farthest same-track positive and its nearest other-video negative."""
    pos_ok = track_ids[:, None] == track_ids[None, :]
    pos_ok.fill_diagonal_(False)
    has_both = pos_ok.any(1) & neg_ok.any(1)
    p = dist.masked_fill(~pos_ok, float("-inf")).argmax(1)
    n = dist.masked_fill(~neg_ok, float("inf")).argmin(1)
    a = has_both.nonzero(as_tuple=True)[0]
    return a, p[a], n[a]


def mine_triplets(
    dist: Tensor,
    track_ids: Tensor,
    video_ids: Tensor,
    *,
    strategy: str,
    k: int,
    gen: torch.Generator,
    margin: float = 0.5,
    top_k: int = 4,
    random_violators: int = 2,
    harvested: Triplets | None = None,
    apart: Tensor | None = None,
    blocked: Tensor | None = None,
) -> Triplets:
    """Mine (anchor_idx, positive_idx, negative_idx) from one batch.

    Args:
        dist: (N, N) float distances, e.g. ``1 - cos``; only compared, never differentiated.
        track_ids: (N,) long; rows with equal ids are positives of each other.
        video_ids: (N,) long video (or negative group) labels; negatives always have
            ``video_ids[n] != video_ids[a]``.
        strategy: ``"random"``: ``k`` random other-video negatives per (anchor, positive);
            ``"wang_gupta"``: ``k`` random picks among the ``top_k`` hardest negatives plus
            ``random_violators`` other negatives with ``D(a,n) < D(a,p) + margin``;
            ``"batch_hard"``: hardest positive and hardest negative per anchor (``k`` unused).
        k: negatives per (anchor, positive) pair.
        gen: the only source of randomness, so a step's triplets are reproducible.
        margin: triplet margin, used to find violators.
        top_k: size of the hardest-negative pool per pair (``wang_gupta``).
        random_violators: extra violating negatives per pair (``wang_gupta``).
        harvested: precomputed triplets (the store's triplet table laid out in the batch);
            with ``strategy="random"`` they are returned as they are, after checking.
        apart: optional (N, N) bool, True where two rows are patches of co-occurring tracks of
            one video that stay apart: such rows are valid negatives of each other too.
        blocked: optional (N, N) bool, True where two rows of different groups (time windows of
            one video) overlap in time: never negatives of each other unless apart.

    Returns:
        Three (T,) long tensors; T may be 0 (e.g. one video in the batch).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mining strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if not (dist.ndim == 2 and dist.shape[0] == dist.shape[1] == len(track_ids) == len(video_ids)):
        raise ValueError(
            f"dist must be (N, N) with N labels, got {tuple(dist.shape)}, {len(track_ids)} and {len(video_ids)}"
        )
    dist = dist.detach()
    neg_ok = negative_mask(video_ids, apart, blocked)
    if len(track_ids) == 0:
        out = _empty(dist.device)
    elif strategy == "random" and harvested is not None:
        out = harvested
    elif strategy == "batch_hard":
        out = _mine_batch_hard(dist, track_ids, neg_ok)
    else:
        a, p = _positive_pairs(track_ids)
        if len(a) == 0:
            out = _empty(dist.device)
        elif strategy == "random":
            out = _mine_random(a, p, neg_ok, k, gen)
        else:
            out = _mine_wang_gupta(
                dist, a, p, neg_ok, k=k, top_k=top_k, violators=random_violators, margin=margin, gen=gen
            )
    check_triplets(*out, track_ids, video_ids, apart, blocked)
    return out


def strategy_at(step: int, cfg: MineConfig) -> str:
    """Mining curriculum: random negatives until ``hard_from_step``, then ``strategy_after``."""
    return "random" if step < cfg.hard_from_step else cfg.strategy_after


def mine_at_step(
    dist: Tensor,
    track_ids: Tensor,
    video_ids: Tensor,
    step: int,
    cfg: MineConfig,
    gen: torch.Generator,
    harvested: Triplets | None = None,
    apart: Tensor | None = None,
    blocked: Tensor | None = None,
) -> tuple[Triplets, str]:
    """:func:`mine_triplets` with the curriculum's strategy and the config's parameters.

    Returns:
        The triplets and the strategy name that produced them.
    """
    strategy = strategy_at(step, cfg)
    k = cfg.random_negatives if strategy == "random" else cfg.k_hard
    triplets = mine_triplets(
        dist,
        track_ids,
        video_ids,
        strategy=strategy,
        k=k,
        gen=gen,
        margin=cfg.margin,
        top_k=cfg.top_k,
        random_violators=cfg.random_violators,
        harvested=harvested,
        apart=apart,
        blocked=blocked,
    )
    return triplets, strategy
