"""Batch sampler, video split, curriculum augmentation and the store-backed datasets."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from trackemb.config import TrainConfig
from trackemb.embedding.augment import BOX_SIDE_FRAC, aug_strength, augment_batch, swap_backgrounds, to_input
from trackemb.embedding.data import (
    PairBatchDataset,
    PairBatchSampler,
    PatchDataset,
    load_index,
    split_groups,
    split_videos,
    train_sampler,
)
from trackemb.storage.columns import patch_fields


def _pairs(sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    video = np.repeat(np.arange(len(sizes)), sizes)
    pairs = np.stack([np.arange(len(video)) * 2, np.arange(len(video)) * 2 + 1], 1)
    return pairs, video


def _sampler(sizes: list[int], **kw) -> PairBatchSampler:
    pairs, video = _pairs(sizes)
    return PairBatchSampler(pairs, video, **({"batch_pairs": 8, "min_videos": 2, "seed": 0} | kw))


def _pair_ids(spec) -> list[int]:
    b = len(spec.rows) // spec.groups
    return (spec.rows[:b] // 2).tolist()


def test_sampler_epoch_covers_every_pair_once_and_mixes_videos():
    sampler = _sampler([8] * 6)
    seen: list[int] = []
    for step in range(6):  # 48 pairs / 8 per batch
        spec = sampler.batch_at(step)
        assert spec.groups == 2 and len(spec.rows) == 16
        assert np.array_equal(spec.rows[:8] + 1, spec.rows[8:])  # (anchors, positives) blocks
        seen += _pair_ids(spec)
        assert len(np.unique(np.repeat(np.arange(6), 8)[_pair_ids(spec)])) >= 4
    assert sorted(seen) == list(range(48))
    assert _pair_ids(sampler.batch_at(6)) != _pair_ids(sampler.batch_at(0))  # next epoch reshuffles


@pytest.mark.parametrize(
    ("sizes", "batch_pairs", "min_videos"), [([200, 3, 2], 4, 3), ([60, 50, 1, 1, 1], 4, 4)]
)
def test_sampler_enforces_min_videos_with_dominant_videos(sizes, batch_pairs, min_videos):
    _, video = _pairs(sizes)
    sampler = _sampler(sizes, batch_pairs=batch_pairs, min_videos=min_videos)
    for step in range(60):
        assert len(np.unique(video[_pair_ids(sampler.batch_at(step))])) >= min_videos


def test_sampler_is_deterministic_and_resumes_exactly():
    a, b = _sampler([5, 7, 9], seed=3), _sampler([5, 7, 9], seed=3)
    straight = [s.rows for _, s in zip(range(12), iter(a), strict=False)]
    state = a.state_dict(7)
    b.load_state_dict(state)
    resumed = [s.rows for _, s in zip(range(5), iter(b), strict=False)]
    assert all(np.array_equal(x, y) for x, y in zip(straight[7:], resumed, strict=True))
    assert not np.array_equal(_sampler([5, 7, 9], seed=4).batch_at(0).rows, straight[0])
    with pytest.raises(ValueError, match="batch_pairs"):
        _sampler([5, 7, 9], seed=3, batch_pairs=4).load_state_dict(state)


def test_sampler_shards_by_rank_without_overlap():
    ranks = [_sampler([8] * 6, rank=r, world_size=2) for r in (0, 1)]
    seen = [p for step in range(3) for s in ranks for p in _pair_ids(s.batch_at(step))]
    assert sorted(seen) == list(range(48))


def test_sampler_uses_harvested_triplets_before_the_switch():
    pairs, video = _pairs([6, 6])
    triplets = np.array([[0, 1, 20], [2, 3, 22], [14, 15, 4]])
    sampler = PairBatchSampler(
        pairs, video, batch_pairs=3, min_videos=2, seed=0, triplets=triplets, triplets_until_step=2
    )
    spec = sampler.batch_at(1)
    assert spec.groups == 3
    assert {tuple(t) for t in spec.rows.reshape(3, 3).T.tolist()} == {tuple(t) for t in triplets.tolist()}
    assert sampler.batch_at(2).groups == 2


def test_split_videos_is_deterministic_disjoint_and_keeps_two_for_training():
    train, val = split_videos(10, 0.2, seed=1)
    assert len(val) == 2 and len(train) == 8 and not set(train) & set(val)
    assert np.array_equal(split_videos(10, 0.2, seed=1)[1], val)
    assert len(split_videos(3, 0.9, seed=0)[0]) == 2
    assert len(split_videos(2, 0.2, seed=0)[1]) == 0


def test_augmentation_strength_follows_the_curriculum():
    cfg = TrainConfig(steps=100, aug_min_strength=0.1, aug_max_strength=0.9, aug_ramp_frac=0.5)
    values = [aug_strength(s, cfg) for s in (0, 25, 50, 99)]
    assert values[0] == pytest.approx(0.1) and values[2] == values[3] == pytest.approx(0.9)
    assert values[0] < values[1] < values[2]

    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(16, 3, 40, 40, generator=gen) * 255).to(torch.uint8)
    plain = to_input(images, 32)
    assert torch.allclose(augment_batch(images, 0.0, 32, seed=1), plain, atol=1e-6)
    weak, strong = augment_batch(images, 0.2, 32, seed=1), augment_batch(images, 1.0, 32, seed=1)
    assert strong.shape == (16, 3, 32, 32) and 0.0 <= float(strong.min()) and float(strong.max()) <= 1.0
    assert torch.equal(strong, augment_batch(images, 1.0, 32, seed=1))
    assert not torch.equal(strong, augment_batch(images, 1.0, 32, seed=2))
    assert float((strong - plain).abs().mean()) > float((weak - plain).abs().mean())


def test_background_swap_keeps_the_box_and_takes_another_patch_s_context():
    # Every image one flat colour: after the swap, the centre (the tracked box) keeps its own
    # colour and the border shows another image's colour, never its own.
    b, px = 8, 64
    colours = torch.linspace(0.05, 0.95, b)
    x = colours.view(b, 1, 1, 1).expand(b, 3, px, px).clone()
    out = swap_backgrounds(x, 1.0, torch.Generator().manual_seed(0))
    inner = int(px * BOX_SIDE_FRAC / 2) - 4  # half-side of the box, less the feathered edge
    centre = out[:, :, px // 2 - inner : px // 2 + inner, px // 2 - inner : px // 2 + inner]
    assert torch.allclose(centre, x[:, :, : 2 * inner, : 2 * inner])
    corner = out[:, 0, 0, 0]
    assert not torch.isclose(corner, colours).any()
    assert all(bool(torch.isclose(c, colours).any()) for c in corner)  # some other image's colour
    assert torch.equal(swap_backgrounds(x, 0.0, torch.Generator().manual_seed(0)), x)


def test_background_and_geometry_augmentations_are_seeded_and_off_by_default():
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(16, 3, 40, 40, generator=gen) * 255).to(torch.uint8)
    plain = augment_batch(images, 1.0, 32, seed=3)
    assert torch.equal(plain, augment_batch(images, 1.0, 32, seed=3, background=0.0, geometry=0.0))
    both = augment_batch(images, 1.0, 32, seed=3, background=1.0, geometry=1.0)
    assert torch.equal(both, augment_batch(images, 1.0, 32, seed=3, background=1.0, geometry=1.0))
    assert both.shape == plain.shape and not torch.equal(both, plain)
    assert 0.0 <= float(both.min()) and float(both.max()) <= 1.0
    # Strength 0 still only resizes, whatever the shares.
    assert torch.equal(augment_batch(images, 0.0, 32, seed=3, background=1.0, geometry=1.0),
                       to_input(images, 32))  # fmt: skip


# ---------------------------------------------------------------- store-backed


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from synth_store import build_synthetic_store

    return build_synthetic_store(tmp_path_factory.mktemp("store") / "patches", n_videos=4, tracks_per_video=3)


def test_index_labels_pairs_by_track_and_video(store):
    index = load_index(store)
    assert len(index.video_shas) == 4 and len(index.keys) == 4 * 3 * 4
    assert len(np.unique(index.track)) == 12 and index.keys.dtype.kind == "S"
    assert (index.track[index.pairs[:, 0]] == index.track[index.pairs[:, 1]]).all()
    assert len(index.pairs) == 12 * 3 and len(index.triplets) == len(index.pairs)
    a, n = index.video[index.triplets[:, 0]], index.video[index.triplets[:, 2]]
    assert (a != n).all()


def test_batches_are_identical_with_and_without_workers(store):
    index = load_index(store)
    cfg = TrainConfig(input_px=32, batch_pairs=4, steps=10)
    sampler = PairBatchSampler(
        index.pairs, index.video[index.pairs[:, 0]], batch_pairs=4, min_videos=2, seed=0
    )
    dataset = PairBatchDataset(store, index, cfg)
    pickle.dumps(dataset)  # workers receive it by pickling; no open LMDB handle inside
    serial = [
        b for _, b in zip(range(3), DataLoader(dataset, sampler=sampler, batch_size=None), strict=False)
    ]
    loader = DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=2)
    parallel = [b for _, b in zip(range(3), loader, strict=False)]
    for x, y in zip(serial, parallel, strict=True):
        assert (
            x["step"] == y["step"]
            and torch.equal(x["images"], y["images"])
            and torch.equal(x["track"], y["track"])
        )
    first = serial[0]
    assert first["images"].shape == (8, 3, 32, 32) and first["images"].dtype == torch.float32
    assert torch.equal(first["track"][:4], first["track"][4:])
    assert len(first["video"].unique()) >= 2


def test_patch_dataset_gives_unaugmented_inputs(store):
    index = load_index(store)
    ds = PatchDataset(store, index.keys[:3], input_px=32)
    image, row = ds[2]
    assert row == 2 and image.shape == (3, 32, 32) and torch.equal(image, ds[2][0])
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0


def test_patch_dataset_batches_match_single_items(store):
    """DataLoader batches go through ``__getitems__`` (one read txn, one decode call): same tensors."""
    index = load_index(store)
    ds = PatchDataset(store, index.keys, input_px=32)
    rows = [7, 0, 31, 7]
    batch = ds.__getitems__(rows)
    assert [r for _, r in batch] == rows
    for (image, _), row in zip(batch, rows, strict=True):
        assert torch.equal(image, ds[row][0])
    images, got_rows = next(iter(DataLoader(ds, batch_size=10)))
    assert images.shape == (10, 3, 32, 32) and got_rows.tolist() == list(range(10))
    assert torch.equal(images, torch.stack([ds[i][0] for i in range(10)]))
    assert ds.__getitems__([]) == []


def test_time_windows_split_videos_into_negative_groups(store):
    # Synthetic track t starts at frame 3t (10 fps): 0.0, 0.3, 0.6 s; 0.5 s windows -> 2 groups a video.
    plain = load_index(store)
    assert np.array_equal(plain.group, plain.video) and np.array_equal(plain.group_video, np.arange(4))
    index = load_index(store, window_s=0.5)
    assert np.array_equal(index.group_video, np.repeat(np.arange(4), 2))
    assert np.array_equal(index.group_video[index.group], index.video)  # a group never spans videos
    for t in np.unique(index.track):
        assert len(np.unique(index.group[index.track == t])) == 1  # a track never spans groups
    tracks_per_group = np.bincount(index.track_group())
    assert tracks_per_group.tolist() == [2, 1] * 4


def test_time_windows_record_tracks_that_overlap_across_a_boundary(store):
    from trackemb.storage.store import open_reader

    with open_reader(str(store)) as reader:
        span = {(t.video_sha, t.track_id): (t.start_frame, t.end_frame) for t in reader.tracks()}
    index = load_index(store, window_s=0.5)
    assert len(load_index(store).overlap) == 0  # no windows: same-video tracks are never negatives anyway
    # Expected from the track records: same video, other window, frame spans that share a frame.
    labels = {}
    for row in range(len(index.keys)):
        sha16, track_id, _ = (np.asarray(c)[0] for c in patch_fields(index.keys[row : row + 1]))
        sha = next(s for s in index.video_shas if s.encode().startswith(sha16))
        labels[int(index.track[row])] = span[(sha, int(track_id))], int(index.video[row])
    group = index.track_group()
    want = {
        (a, b)
        for a, ((sa, ea), va) in labels.items()
        for b, ((sb, eb), vb) in labels.items()
        if va == vb and group[a] != group[b] and sa <= eb and sb <= ea
    }
    got = {tuple(p) for p in index.overlap.tolist()}
    assert got == want and len(got) > 0  # the synthetic tracks (frames 0/3/6 on) cross the 0.5 s line
    assert got == {(b, a) for a, b in got}
    codes = index.overlap_keys()
    assert np.all(np.diff(codes) > 0) and len(codes) == len(got)


def test_split_groups_holds_out_whole_groups_with_enough_tracks(store):
    plain = load_index(store)
    for seed in range(3):  # one group per video: exactly the video split
        train_v, val_v = split_videos(4, 0.25, seed)
        train_g, val_g = split_groups(plain, 0.25, seed)
        assert np.array_equal(train_v, train_g) and np.array_equal(val_v, val_g)
    index = load_index(store, window_s=0.5)
    by_video = split_groups(index, 0.25, 0, val_by="video")
    assert len(np.unique(index.group_video[by_video[1]])) == 1 and len(by_video[1]) == 2
    for seed in range(5):
        train_g, val_g = split_groups(index, 0.25, seed, val_by="group", min_tracks=2)
        assert len(val_g) == 2 and not np.intersect1d(train_g, val_g).size
        assert np.array_equal(np.union1d(train_g, val_g), np.arange(8))
        assert (np.bincount(index.track_group())[val_g] >= 2).all()  # 1-track windows never held out


def test_training_sampler_mixes_groups_and_skips_held_out_ones(store):
    index = load_index(store, window_s=0.5)
    cfg = TrainConfig(batch_pairs=4, min_videos_per_batch=3, negative_window_s=0.5)
    train_g, val_g = split_groups(index, 0.25, 0, val_by="group")
    sampler = train_sampler(index, train_g, cfg)
    for step in range(20):
        groups = index.group[sampler.batch_at(step).rows]
        assert len(np.unique(groups)) >= 3 and np.isin(groups, train_g).all()
