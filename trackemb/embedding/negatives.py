"""The negative rule and the checks that enforce it on every mined batch.

A negative is never from the anchor's own track. It comes from another *group* (the video, or
a time window of it with ``TrainConfig.negative_window_s``), or from a track of the anchor's own
video that co-occurs with the anchor's track while staying apart (``apart``; the rule is in
``trackemb.tracking.cooccur``). A track of another window of the same video that overlaps the
anchor's track in time (``blocked``) is never a negative unless apart: it may be the same object
at the same moment. The checks raise :class:`~trackemb.errors.NegativeRuleError` (like PML's
``BaseMiner.output_assertion``, but a real exception that ``python -O`` cannot remove).
"""

from __future__ import annotations

import torch
from torch import Tensor

from trackemb.errors import NegativeRuleError

Pairs = tuple[Tensor, Tensor, Tensor, Tensor]


def negative_mask(video_ids: Tensor, apart: Tensor | None = None, blocked: Tensor | None = None) -> Tensor:
    """(N, N) bool: column j may be a negative of row i (another group and not blocked, or an apart track)."""
    ok = video_ids[:, None] != video_ids[None, :]
    if blocked is not None:
        ok = ok & ~blocked
    return ok if apart is None else ok | apart


def _check_negatives(
    a: Tensor,
    n: Tensor,
    track_ids: Tensor,
    video_ids: Tensor,
    apart: Tensor | None,
    blocked: Tensor | None = None,
) -> None:
    if bool((track_ids[a] == track_ids[n]).any()):
        raise NegativeRuleError("negative from the anchor's own track")
    same_group = video_ids[a] == video_ids[n]
    allowed = apart[a, n] if apart is not None else torch.zeros_like(same_group)
    if bool((same_group & ~allowed).any()):
        raise NegativeRuleError(
            "negative from the anchor's own video (group) that is not a co-occurring, apart track"
        )
    if blocked is not None and bool((blocked[a, n] & ~allowed).any()):
        raise NegativeRuleError(
            "negative from a track of the anchor's video that overlaps it in time (another window) and is not apart"
        )


def check_triplets(
    a: Tensor,
    p: Tensor,
    n: Tensor,
    track_ids: Tensor,
    video_ids: Tensor,
    apart: Tensor | None = None,
    blocked: Tensor | None = None,
) -> None:
    """Check (a, p, n): equal lengths, positives share the track, negatives follow the rule.

    Raises:
        NegativeRuleError: a broken triplet (the message says which rule).
    """
    if not (a.shape == p.shape == n.shape and a.ndim == 1):
        raise NegativeRuleError(f"triplet index shapes differ: {a.shape}, {p.shape}, {n.shape}")
    if len(a) == 0:
        return
    if bool((a == p).any()):
        raise NegativeRuleError("anchor used as its own positive")
    if bool((track_ids[a] != track_ids[p]).any()):
        raise NegativeRuleError("positive from another track")
    _check_negatives(a, n, track_ids, video_ids, apart, blocked)


def check_pairs(
    pairs: Pairs,
    track_ids: Tensor,
    video_ids: Tensor,
    apart: Tensor | None = None,
    blocked: Tensor | None = None,
) -> None:
    """Check PML pairs ``(a1, p, a2, n)`` like :func:`check_triplets`.

    Raises:
        NegativeRuleError: a broken pair.
    """
    a1, p, a2, n = pairs
    if bool((a1 == p).any()) or bool((track_ids[a1] != track_ids[p]).any()):
        raise NegativeRuleError("positive pair that is not two distinct patches of one track")
    if len(a2):
        _check_negatives(a2, n, track_ids, video_ids, apart, blocked)
