"""Quality-benchmark metrics on hand-made embeddings with known answers, and the labelled generator."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `bench` is a top-level package of the repository, not installed

from bench.labelled import plan_videos, render  # noqa: E402
from bench.quality_metrics import (  # noqa: E402
    exclude_near_frames,
    exclude_same_video,
    paired_delta,
    per_query,
    score,
)


def _circle(degrees: list[float]) -> np.ndarray:
    rad = np.deg2rad(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def test_positives_must_be_ten_frames_apart() -> None:
    # Track A at frames 0, 5, 20; track B at frames 0, 30. The frame-5 patch is a0's nearest
    # neighbour, but it is only 5 frames away: it leaves the ranking, and b0 comes first.
    emb = _circle([0, 5, 40, 20, 200])
    labels = np.array([0, 0, 0, 1, 1])
    frames = np.array([0, 5, 20, 0, 30])
    got = per_query(emb, labels, exclude_near_frames(labels, frames, 10))
    np.testing.assert_array_equal(got["R@1"], [0, 0, 0, 0, 0])
    # a2's positives a0 and a1 (20 and 15 frames away) rank 3rd and 2nd behind b0: AP@R = 1/2 * 1/2.
    np.testing.assert_allclose(got["MAP@R"], [0, 0, 0.25, 0, 0])
    plain = per_query(emb, labels)  # without the rule, near-duplicates make retrieval look easy
    assert plain["R@1"][0] == 1 and plain["R@1"][1] == 1


def test_a_track_without_distant_patches_gives_no_query() -> None:
    emb = _circle([0, 3, 90, 95])
    labels = np.array([0, 0, 1, 1])
    frames = np.array([0, 4, 0, 12])
    got = per_query(emb, labels, exclude_near_frames(labels, frames, 10))
    assert np.isnan(got["R@1"][:2]).all() and np.isnan(got["MAP@R"][:2]).all()
    np.testing.assert_array_equal(got["R@1"][2:], [1, 1])


def test_cross_video_r1_only_counts_other_videos() -> None:
    # Identity X: x1a, x1b in video 1 (near-identical), x2 in video 2. Identity Y: y1 (video 1), y2 (video 2).
    emb = _circle([0, 2, 50, 30, 120])
    labels = np.array([0, 0, 0, 1, 1])
    videos = np.array([1, 1, 2, 1, 2])
    plain = per_query(emb, labels)
    cross = per_query(emb, labels, exclude_same_video(labels, videos))
    np.testing.assert_array_equal(plain["R@1"], [1, 1, 0, 0, 0])
    # x1a: x1b is left out, y1 (30 deg) beats x2 (50 deg). x2: nearest is y1 (20 deg away), not x1b (48).
    # y1: x1b (28 deg) beats y2 (90 deg). y2: x2 (70 deg) beats y1 (90 deg).
    np.testing.assert_array_equal(cross["R@1"], [0, 0, 0, 0, 0])
    emb2 = _circle([0, 2, 10, 100, 108])  # now each identity's other-video patch is the nearest
    np.testing.assert_array_equal(
        per_query(emb2, labels, exclude_same_video(labels, videos))["R@1"], [1, 1, 1, 1, 1]
    )


def test_without_exclusions_matches_the_library_metrics() -> None:
    from trackemb.embedding.evaluate import retrieval_metrics

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(20), 4)
    emb = rng.normal(size=(80, 16)) + 1.5 * rng.normal(size=(20, 16))[labels]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    mine = per_query(emb, labels)
    lib = retrieval_metrics(emb.astype(np.float32), labels)
    assert np.nanmean(mine["R@1"]) == pytest.approx(lib["R@1"], abs=1e-6)
    assert np.nanmean(mine["MAP@R"]) == pytest.approx(lib["MAP@R"], abs=1e-6)


def test_bootstrap_intervals_contain_the_point_estimate() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(30), 3)
    emb = rng.normal(size=(90, 32)) + rng.normal(size=(30, 32))[labels]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    videos = np.tile([0, 1, 2], 30)  # each identity once in each of three videos
    frames = np.tile([0, 12, 30], 30)
    excl = {"": exclude_near_frames(labels, frames, 10), "cross-video ": exclude_same_video(labels, videos)}
    got = score(emb, labels, labels, excludes=excl, n_boot=300, n_boot_refit=20)
    assert set(got) == {"R@1", "MAP@R", "cross-video R@1", "cross-video MAP@R", "NMI", "effective rank"}
    for name, m in got.items():
        lo, hi = m["ci"]
        assert lo <= m["value"] <= hi, name
        assert hi > lo, name  # a real spread, not a degenerate interval
    assert 0.2 < got["R@1"]["value"] <= 1.0 and got["effective rank"]["value"] > 5


def test_paired_delta_is_narrower_than_separate_intervals_and_signs_a_real_gain() -> None:
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(40), 3)
    centres = rng.normal(size=(40, 32))
    noise = rng.normal(size=(120, 32))
    weak = centres[labels] * 0.5 + noise  # the same tracks, the same noise: only the signal differs
    strong = centres[labels] * 0.6 + noise
    weak /= np.linalg.norm(weak, axis=1, keepdims=True)
    strong /= np.linalg.norm(strong, axis=1, keepdims=True)
    excl: dict[str, np.ndarray | None] = {"": None}
    d = paired_delta(strong, weak, labels, labels, excludes=excl, n_boot=500)
    a = score(strong, labels, labels, excludes=excl, n_boot=500, n_boot_refit=2)
    b = score(weak, labels, labels, excludes=excl, n_boot=500, n_boot_refit=2)
    for m in ("R@1", "MAP@R"):
        assert d[m]["value"] == pytest.approx(a[m]["value"] - b[m]["value"])
        assert d[m]["ci"][0] > 0  # the stronger signal wins beyond resampling noise ...
        assert a[m]["ci"][0] < b[m]["ci"][1]  # ... although the separate intervals overlap
        width = d[m]["ci"][1] - d[m]["ci"][0]
        assert width < (a[m]["ci"][1] - a[m]["ci"][0]) + (b[m]["ci"][1] - b[m]["ci"][0])
    same = paired_delta(weak, weak, labels, labels, excludes=excl, n_boot=100)
    assert same["MAP@R"] == {"value": 0.0, "ci": [0.0, 0.0]}


def test_plan_shows_every_identity_in_several_videos() -> None:
    plan = plan_videos(16, 12, 4, np.random.default_rng(0))
    assert all(len(set(v)) == 4 for v in plan)
    counts = np.bincount(np.concatenate(plan), minlength=16)
    assert (counts == 3).all()
    with pytest.raises(ValueError):
        plan_videos(16, 4, 4, np.random.default_rng(0))  # each identity would appear once


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    import cv2

    noise = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    return cv2.resize(noise, (size, size), interpolation=cv2.INTER_NEAREST)


def test_boxes_are_where_the_objects_were_pasted() -> None:
    from bench.labelled import cut_objects

    rng = np.random.default_rng(3)
    objs = cut_objects([_texture(rng, 200) for _ in range(3)], rng)
    background = np.full((300, 400, 3), 90, np.uint8)  # flat: any change is an object
    occluder = np.full((300, 40, 3), 90, np.uint8)  # the same colour: occludes without drawing
    with_obj = render("v", objs, background, occluder, np.random.default_rng(7), n_frames=12)
    without = render(
        "v", objs, background, occluder, np.random.default_rng(7), n_frames=12, with_objects=False
    )
    assert with_obj.boxes == without.boxes
    for t, (a, b) in enumerate(zip(with_obj.frames, without.frames, strict=True)):
        changed = np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 10
        inside = np.zeros_like(changed)
        for ident, boxes in with_obj.boxes.items():
            x, y, w, h = boxes[t]
            assert changed[y : y + h, x : x + w].mean() > 0.1, (
                t,
                ident,
            )  # the object is in its box (or behind the occluder)
            inside[max(0, y - 6) : y + h + 6, max(0, x - 6) : x + w + 6] = True  # blur spreads a few px
        assert changed[~inside].sum() == 0, t  # and nowhere else


def test_random_baseline_is_the_untrained_twin_on_the_same_layer(tmp_path: Path) -> None:
    import torch
    from embed_fixtures import make_run_dir

    from bench.quality_sets import embedding_layer, encoders, read_card
    from trackemb.config import ExportConfig
    from trackemb.embedding.export import export_encoder

    x = torch.rand(5, 3, 32, 32)
    # Step-0 runs: their weights are exactly training's seeded init, so the twin must reproduce
    # the export's output, on the layer the export embeds with.
    for layer, dim in (("head", 16), ("backbone", 128)):
        run = make_run_dir(tmp_path / layer / "run", seed=3, embed_layer=layer)
        export = export_encoder(run, tmp_path / layer / "export", ExportConfig(onnx=False))
        card = read_card(export)
        assert embedding_layer(card) == layer and card["embedding_dim"] == dim
        encs = encoders(export, card)
        with torch.no_grad():
            trained = encs["trained"][0](x)
            twin = torch.nn.functional.normalize(encs["random_init"][0](x), dim=1)
        assert trained.shape == twin.shape == (5, dim)
        torch.testing.assert_close(twin, trained, atol=1e-5, rtol=0)
    assert encs["raw_pixels"][1] == 16 and encs["raw_pixels"][0](x).shape[1] == 3 * 32 * 32
    # trained at 32 px, so the same untrained twin is also scored at the default 64 px
    assert encs["random_init"][1] == 32
    assert encs["random_init_64px"] == (encs["random_init"][0], 64)
    default = make_run_dir(tmp_path / "default" / "run", input_px=64)
    export = export_encoder(default, tmp_path / "default" / "export", ExportConfig(onnx=False))
    assert "random_init_64px" not in encoders(export, read_card(export))


def _result(arch: str, layer: str, r1: float) -> dict:
    metric = {"value": r1, "ci": [r1 - 0.1, r1 + 0.1]}
    methods = {m: {"R@1": metric} for m in ("trained", "random_init", "raw_pixels", "pixels_pca128")}
    card = {"architecture": arch, "embedding_layer": layer, "embedding_dim": 8, "seed": 0}
    return {"card": card, "sets": {"held-out real scenes": {"methods": methods}}}


def test_ablation_resumes_by_config_hash_and_lists_each_untrained_twin(tmp_path: Path) -> None:
    import json

    from bench.quality_runs import ablate, ablation_table, config_hash

    store = tmp_path / "store.lmdb"  # never opened: both configs are already done
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text("[train]\nsteps = 10\n")
    b.write_text("[train]\nsteps = 20\n")
    assert config_hash(a, store) != config_hash(b, store)
    rows = [
        {"name": n, "config_hash": config_hash(c, store), "train_seconds": 60.0, "result": _result(*r)}
        for n, c, r in (("a", a, ("resnet18", "head", 0.5)), ("b", b, ("resnet18", "backbone", 0.7)))
    ]
    results = tmp_path / "quality.json"
    results.write_text(json.dumps({"rows": rows}))
    log: list[str] = []
    got = ablate(store, [a, b], ["a", "b"], runs=tmp_path / "runs", results=results, log=log.append)
    assert got == rows and all("skipped" in line for line in log)
    table = ablation_table(rows)
    assert (
        "random init (resnet18 head 8-d, 64 px, seed 0)" in table
        and "random init (resnet18 backbone" in table
    )
    assert "| a | 1.0 | 0.500 (0.40–0.60) |" in table


def test_ablation_table_lists_paired_differences_when_a_row_has_them() -> None:
    from bench.quality_runs import COLUMNS, ablation_table

    def row(name: str, with_delta: bool) -> dict:
        sets: dict = {}
        for set_name, metric in COLUMNS:
            s = sets.setdefault(set_name, {"methods": {}, "trained_minus": {}})
            for m in ("trained", "random_init", "raw_pixels", "pixels_pca128"):
                s["methods"].setdefault(m, {})[metric] = {"value": 0.5, "ci": [0.4, 0.6]}
            for base, d in (("random_init", 0.061), ("raw_pixels", -0.02)):
                s["trained_minus"].setdefault(base, {})[metric] = {"value": d, "ci": [d - 0.03, d + 0.03]}
        if not with_delta:
            for s in sets.values():
                del s["trained_minus"]
        card = {"architecture": "resnet18", "embedding_layer": "backbone", "embedding_dim": 512, "seed": 0}
        return {"name": name, "train_seconds": 60.0, "result": {"card": card, "sets": sets}}

    table = ablation_table([row("old", False), row("new", True)])
    assert "| new | random_init | +0.061 (+0.03 to +0.09) |" in table
    assert "| new | raw_pixels | -0.020 (-0.05 to +0.01) |" in table
    # an export trained at 96 px: its twin at 96 px and the same twin at the default 64 px
    big = row("big", True)
    big["result"]["card"]["input_px"] = 96
    for s in big["result"]["sets"].values():
        s["methods"]["random_init_64px"] = dict(s["methods"]["random_init"])
        s["trained_minus"]["random_init_64px"] = {
            m: {"value": 0.01, "ci": [-0.02, 0.04]} for m in s["methods"]["trained"]
        }
    table = ablation_table([big])
    assert "random init (resnet18 backbone 512-d, 96 px, seed 0)" in table
    assert "random init (resnet18 backbone 512-d, 64 px, seed 0)" in table
    assert "| big | random_init_64px | +0.010 (-0.02 to +0.04) |" in table
    assert "| old | random_init" not in table  # scored before paired intervals: no invented numbers
    assert ablation_table([row("old", False)]).count("paired") == 0


def test_dev_scaling_subsets_nest_and_draw_on_every_scene(tmp_path: Path) -> None:
    from bench.quality_dev import DEV_TRAIN_SCENES, dev_training_clips

    for scene, n in zip(DEV_TRAIN_SCENES, (4, 8), strict=True):
        (tmp_path / "train" / scene).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "train" / scene / f"clip{i}.mp4").write_bytes(b"")
    every = dev_training_clips(tmp_path)
    assert len(every) == 12
    four = dev_training_clips(tmp_path, 4)
    assert four == every[:4]
    assert {c.parent.name for c in four} == set(DEV_TRAIN_SCENES)
    with pytest.raises(SystemExit, match="between 1 and 12"):
        dev_training_clips(tmp_path, 13)
