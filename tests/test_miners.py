"""Miners and the loss against brute-force loops on tiny inputs (PML's test pattern)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from trackemb.config import MineConfig
from trackemb.embedding.losses import build_loss, cosine_dist, triplet_stats
from trackemb.embedding.miners import mine_at_step, mine_pairs, mine_triplets, strategy_at
from trackemb.embedding.negatives import check_triplets
from trackemb.errors import NegativeRuleError

DTYPES = [torch.float32, torch.float64]


def _batch(seed: int, dtype: torch.dtype, n_videos: int = 3, tracks_per_video: int = 2, per_track: int = 2):
    """Random embeddings with labels: video v holds tracks, each with ``per_track`` patches."""
    gen = torch.Generator().manual_seed(seed)
    track = torch.arange(n_videos * tracks_per_video).repeat_interleave(per_track)
    video = track // tracks_per_video
    emb = F.normalize(torch.randn(len(track), 8, generator=gen, dtype=dtype), dim=1)
    return emb, cosine_dist(emb).to(dtype), track, video


def _valid(track: torch.Tensor, video: torch.Tensor) -> set[tuple[int, int, int]]:
    n = len(track)
    return {
        (a, p, q)
        for a, p, q in itertools.product(range(n), repeat=3)
        if a != p and track[a] == track[p] and video[a] != video[q]
    }


def _as_set(triplets) -> set[tuple[int, int, int]]:
    return set(zip(*(t.tolist() for t in triplets), strict=True))


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_with_large_k_returns_every_valid_triplet(dtype):
    _, dist, track, video = _batch(0, dtype)
    out = mine_triplets(dist, track, video, strategy="random", k=100, gen=torch.Generator().manual_seed(0))
    assert len(out[0]) == len(_as_set(out))  # no duplicates
    assert _as_set(out) == _valid(track, video)


def test_random_with_small_k_draws_k_distinct_valid_negatives_per_pair():
    _, dist, track, video = _batch(1, torch.float32)
    out = mine_triplets(dist, track, video, strategy="random", k=3, gen=torch.Generator().manual_seed(0))
    assert _as_set(out) <= _valid(track, video)
    per_pair: dict[tuple[int, int], set[int]] = {}
    for a, p, n in _as_set(out):
        per_pair.setdefault((a, p), set()).add(n)
    assert len(per_pair) == 12 and all(len(v) == 3 for v in per_pair.values())
    again = mine_triplets(dist, track, video, strategy="random", k=3, gen=torch.Generator().manual_seed(0))
    assert _as_set(again) == _as_set(out)  # the generator is the only randomness


@pytest.mark.parametrize("dtype", DTYPES)
def test_wang_gupta_top_k_matches_brute_force(dtype):
    _, dist, track, video = _batch(2, dtype)
    top_k = 3
    out = mine_triplets(
        dist,
        track,
        video,
        strategy="wang_gupta",
        k=top_k,
        top_k=top_k,
        random_violators=0,
        gen=torch.Generator().manual_seed(0),
    )
    expected = set()
    for a, p, _ in _valid(track, video):
        negs = sorted((q for q in range(len(track)) if video[q] != video[a]), key=lambda q: float(dist[a, q]))
        expected |= {(a, p, q) for q in negs[:top_k]}
    assert _as_set(out) == expected


def test_wang_gupta_violators_are_outside_top_k_and_violate_margin():
    _, dist, track, video = _batch(3, torch.float64, n_videos=4)
    margin, top_k, k, rv = 1.0, 2, 1, 2
    out = mine_triplets(
        dist,
        track,
        video,
        strategy="wang_gupta",
        k=k,
        top_k=top_k,
        random_violators=rv,
        margin=margin,
        gen=torch.Generator().manual_seed(5),
    )
    got: dict[tuple[int, int], set[int]] = {}
    for a, p, n in _as_set(out):
        got.setdefault((a, p), set()).add(n)
    for (a, p), negs in got.items():
        ranked = sorted(
            (q for q in range(len(track)) if video[q] != video[a]), key=lambda q: float(dist[a, q])
        )
        hard = set(ranked[:top_k])
        pool = {q for q in ranked[top_k:] if dist[a, q] < dist[a, p] + margin}
        assert len(negs & hard) == k
        assert negs - hard <= pool and len(negs - hard) == min(rv, len(pool))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_hard_matches_brute_force(dtype):
    _, dist, track, video = _batch(4, dtype, per_track=3)
    out = mine_triplets(dist, track, video, strategy="batch_hard", k=1, gen=torch.Generator())
    expected = set()
    for a in range(len(track)):
        pos = [j for j in range(len(track)) if j != a and track[j] == track[a]]
        neg = [j for j in range(len(track)) if video[j] != video[a]]
        expected.add(
            (a, max(pos, key=lambda j: float(dist[a, j])), min(neg, key=lambda j: float(dist[a, j])))
        )
    assert _as_set(out) == expected


@pytest.mark.parametrize("strategy", ["random", "wang_gupta", "batch_hard"])
@pytest.mark.parametrize("case", ["one_video", "one_track", "no_positives", "empty"])
def test_degenerate_batches_give_zero_triplets(strategy, case):
    _, dist, track, video = _batch(5, torch.float32, n_videos=3)
    if case == "one_video":
        video = torch.zeros_like(video)
    elif case == "one_track":
        track, video = torch.zeros_like(track), torch.zeros_like(video)
    elif case == "no_positives":
        track = torch.arange(len(track))
    else:
        dist, track, video = dist[:0, :0], track[:0], video[:0]
    a, p, n = mine_triplets(dist, track, video, strategy=strategy, k=2, gen=torch.Generator())
    assert len(a) == len(p) == len(n) == 0 and a.dtype == torch.long


def test_negatives_never_come_from_the_anchor_video():
    for seed in range(5):
        _, dist, track, video = _batch(seed, torch.float32, n_videos=2, tracks_per_video=3)
        for strategy in ("random", "wang_gupta", "batch_hard"):
            a, _, n = mine_triplets(
                dist, track, video, strategy=strategy, k=4, gen=torch.Generator().manual_seed(seed)
            )
            assert len(a) > 0 and bool((video[a] != video[n]).all())


def test_check_triplets_rejects_same_video_negative_and_foreign_positive():
    track, video = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 0, 0, 1])
    one = torch.tensor
    check_triplets(one([0]), one([1]), one([3]), track, video)
    with pytest.raises(NegativeRuleError, match="own video"):
        check_triplets(one([0]), one([1]), one([2]), track, video)
    with pytest.raises(NegativeRuleError, match="another track"):
        check_triplets(one([0]), one([2]), one([3]), track, video)
    with pytest.raises(NegativeRuleError):
        mine_triplets(
            torch.zeros(4, 4),
            track,
            video,
            strategy="random",
            k=1,
            gen=torch.Generator(),
            harvested=(one([0]), one([1]), one([2])),
        )


def test_harvested_triplets_pass_through_in_random_stage_only():
    _, dist, track, video = _batch(6, torch.float32)
    harvested = (torch.tensor([0]), torch.tensor([1]), torch.tensor([5]))
    out = mine_triplets(
        dist, track, video, strategy="random", k=2, gen=torch.Generator(), harvested=harvested
    )
    assert _as_set(out) == {(0, 1, 5)}
    hard = mine_triplets(
        dist, track, video, strategy="batch_hard", k=2, gen=torch.Generator(), harvested=harvested
    )
    assert len(hard[0]) == len(track)


def test_curriculum_switches_strategy_at_hard_from_step():
    cfg = MineConfig(hard_from_step=10, strategy_after="batch_hard")
    assert [strategy_at(s, cfg) for s in (0, 9, 10, 99)] == ["random", "random", "batch_hard", "batch_hard"]
    _, dist, track, video = _batch(7, torch.float32)
    _, name = mine_at_step(dist, track, video, 10, cfg, torch.Generator())
    assert name == "batch_hard"


@pytest.mark.parametrize("reducer", ["mean", "avg_nonzero"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_equals_brute_force_hinge_on_cosine_distance(reducer, dtype):
    emb, dist, track, video = _batch(8, dtype)
    emb = emb.clone().requires_grad_(True)
    margin = 0.3
    triplets = mine_triplets(dist, track, video, strategy="random", k=100, gen=torch.Generator())
    loss = build_loss(MineConfig(loss="triplet", margin=margin, reducer=reducer))(emb, indices_tuple=triplets)
    terms = []
    e = emb.detach()
    for a, p, n in _as_set(triplets):
        d_ap = 1 - float(e[a] @ e[p]) / (float(e[a].norm()) * float(e[p].norm()))
        d_an = 1 - float(e[a] @ e[n]) / (float(e[a].norm()) * float(e[n].norm()))
        terms.append(max(0.0, d_ap - d_an + margin))
    active = [t for t in terms if t > 0]
    expected = sum(terms) / len(terms) if reducer == "mean" else sum(active) / len(active)
    assert 0 < len(active) < len(terms)  # the case distinguishes the reducers
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()


def test_loss_on_zero_triplets_is_zero_and_differentiable():
    emb = F.normalize(torch.randn(4, 8), dim=1).requires_grad_(True)
    e = torch.empty(0, dtype=torch.long)
    loss = build_loss(MineConfig(loss="triplet"))(emb, indices_tuple=(e, e, e))
    loss.backward()
    assert float(loss.detach()) == 0.0 and emb.grad is not None


def test_triplet_stats_match_brute_force():
    emb, dist, track, video = _batch(9, torch.float64)
    margin = 0.5
    triplets = mine_triplets(dist, track, video, strategy="random", k=100, gen=torch.Generator())
    stats = triplet_stats(emb, triplets, margin)
    d_ap = [float(dist[a, p]) for a, p, _ in zip(*triplets, strict=True)]
    d_an = [float(dist[a, n]) for a, _, n in zip(*triplets, strict=True)]
    assert stats["num_triplets"] == len(d_ap)
    assert stats["pos_dist"] == pytest.approx(sum(d_ap) / len(d_ap), rel=1e-5)
    assert stats["neg_dist"] == pytest.approx(sum(d_an) / len(d_an), rel=1e-5)
    active = sum(1 for x, y in zip(d_ap, d_an, strict=True) if x - y + margin > 0)
    assert stats["frac_active"] == pytest.approx(active / len(d_ap))
    collapsed = triplet_stats(F.normalize(torch.ones(len(track), 8), dim=1), triplets, margin)
    assert collapsed["emb_std"] == 0.0 and stats["emb_std"] > 0.5
    empty = triplet_stats(emb, (torch.empty(0, dtype=torch.long),) * 3, margin)
    assert empty["num_triplets"] == 0 and math.isnan(empty["pos_dist"])


@pytest.mark.parametrize("strategy", ["random", "wang_gupta", "batch_hard"])
def test_window_groups_allow_same_video_negatives_only_from_other_windows(strategy):
    # Two videos; tracks 0-3 in video 0 (windows: tracks 0,1 -> group 0; tracks 2,3 -> group 1),
    # tracks 4,5 in video 1 (group 2). Training mines on group ids when negative_window_s is set.
    _, dist, track, video = _batch(0, torch.float32, n_videos=3, tracks_per_video=2)
    video = torch.where(track < 4, 0, 1)
    group = track // 2
    gen = torch.Generator().manual_seed(0)
    a, _, n = mine_triplets(dist, track, group, strategy=strategy, k=8, gen=gen)
    assert len(a) > 0 and bool((group[a] != group[n]).all())  # never from the anchor's own window
    same_video = video[a] == video[n]
    if strategy == "random":  # k covers every allowed negative: other windows of the same video occur
        assert bool(same_video.any())
    # The option off (groups = videos): never a same-video negative.
    a, _, n = mine_triplets(dist, track, video, strategy=strategy, k=8, gen=gen)
    assert len(a) > 0 and not bool((video[a] == video[n]).any())
    with pytest.raises(NegativeRuleError, match="own video"):
        same_window = (group == group[0]).nonzero()[-1]
        check_triplets(torch.tensor([0]), torch.tensor([1]), same_window, track, group)


@pytest.mark.parametrize("strategy", ["random", "wang_gupta", "batch_hard"])
def test_a_track_overlapping_in_time_from_another_window_is_never_a_negative(strategy):
    # Video 0: tracks 0, 1 (window 0) and 2, 3 (window 1); track 1 runs on into window 1 beside
    # track 2 (blocked: maybe the same object at the same moment). Video 1: tracks 4, 5.
    _, dist, track, _ = _batch(1, torch.float32, n_videos=3, tracks_per_video=2)
    group = track // 2
    pair_blocked = ((track[:, None] == 1) & (track[None, :] == 2)) | (
        (track[:, None] == 2) & (track[None, :] == 1)
    )
    gen = torch.Generator().manual_seed(0)
    a, _, n = mine_triplets(dist, track, group, strategy=strategy, k=8, gen=gen, blocked=pair_blocked)
    assert len(a) > 0 and not bool(pair_blocked[a, n].any())
    if strategy == "random":  # k covers every allowed negative: the other unblocked window pairs still occur
        assert bool(((track[a] == 0) & (track[n] == 2)).any())
    a1, _, a2, n2 = mine_pairs(track, group, blocked=pair_blocked)
    assert len(a2) > 0 and not bool(pair_blocked[a2, n2].any())
    two, one = (track == 2).nonzero()[:1, 0], (track == 1).nonzero()[:2, 0]
    with pytest.raises(NegativeRuleError, match="overlaps it in time"):
        check_triplets(one[:1], one[1:], two, track, group, blocked=pair_blocked)
    # Apart (the co-occurrence rule: boxes clear of each other) still makes them valid negatives.
    check_triplets(one[:1], one[1:], two, track, group, apart=pair_blocked, blocked=pair_blocked)


def _in_video_batch():
    """Video 0 holds tracks 0 and 1 (apart), and track 2 (not apart from either); video 1 holds track 3."""
    track = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    video = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    tracks_apart = {(0, 1), (1, 0)}
    apart = torch.tensor([[(int(a), int(b)) in tracks_apart for b in track] for a in track])
    return track, video, apart


@pytest.mark.parametrize("strategy", ["random", "wang_gupta", "batch_hard"])
def test_in_video_negatives_only_from_apart_tracks(strategy):
    from trackemb.embedding.negatives import negative_mask

    track, video, apart = _in_video_batch()
    emb = F.normalize(torch.randn(len(track), 8, generator=torch.Generator().manual_seed(0)), dim=1)
    seen_same_video = False
    for seed in range(20):
        a, _, n = mine_triplets(
            cosine_dist(emb), track, video, strategy=strategy, k=8, gen=torch.Generator().manual_seed(seed),
            apart=apart,
        )  # fmt: skip
        assert bool(negative_mask(video, apart)[a, n].all())
        same = video[a] == video[n]
        assert bool(apart[a[same], n[same]].all()), "same-video negative that is not an apart track"
        assert not bool((track[a] == track[n]).any())
        seen_same_video |= bool(same.any())
    assert seen_same_video or strategy == "batch_hard"  # in-video negatives are really used


def test_check_raises_on_overlapping_same_video_track_and_own_track():
    track, video, apart = _in_video_batch()
    one = torch.tensor
    check_triplets(one([0]), one([1]), one([2]), track, video, apart)  # track 0 vs apart track 1: fine
    with pytest.raises(NegativeRuleError, match="co-occurring"):
        check_triplets(one([0]), one([1]), one([4]), track, video, apart)  # track 2 is not apart
    with pytest.raises(NegativeRuleError, match="own track"):
        check_triplets(one([0]), one([1]), one([1]), track, video, apart)


def test_pairs_for_ntxent_cover_every_valid_negative_and_are_checked():
    from trackemb.embedding.miners import mine_pairs
    from trackemb.embedding.negatives import check_pairs

    track, video, apart = _in_video_batch()
    a1, p, a2, n = mine_pairs(track, video, apart)
    assert set(zip(a1.tolist(), p.tolist(), strict=True)) == {
        (i, j) for i in range(8) for j in range(8) if i != j and track[i] == track[j]
    }
    want = {
        (i, j) for i in range(8) for j in range(8)
        if video[i] != video[j] or (int(track[i]), int(track[j])) in {(0, 1), (1, 0)}
    }  # fmt: skip
    assert set(zip(a2.tolist(), n.tolist(), strict=True)) == want
    with pytest.raises(NegativeRuleError):
        check_pairs((a1, p, torch.tensor([0]), torch.tensor([4])), track, video, apart)
    loss = build_loss(MineConfig(loss="ntxent"))(
        F.normalize(torch.randn(8, 4), dim=1).requires_grad_(), indices_tuple=(a1, p, a2, n)
    )
    assert torch.isfinite(loss) and loss.requires_grad
