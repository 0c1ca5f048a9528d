"""Retrieval metrics against hand-made cases and a brute-force reference; held-out evaluation end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from embed_fixtures import make_run_dir, make_store

from trackemb.config import TrainConfig
from trackemb.embedding.data import held_out_split, load_index
from trackemb.embedding.evaluate import evaluate_run
from trackemb.embedding.metrics import recall_at_k, retrieval_metrics
from trackemb.embedding.sampler import train_sampler


def on_arc(degrees: list[float]) -> np.ndarray:
    """Unit vectors at the given angles: cosine similarity falls with angular distance."""
    th = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(th), np.sin(th)], axis=1).astype(np.float32)


def brute_force(emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """R@1, R@5 and MAP@R by the textbook definitions, one query at a time."""
    r1, r5, ap = [], [], []
    for q in range(len(emb)):
        positives = int((labels == labels[q]).sum()) - 1
        if positives == 0:
            continue
        others = [i for i in range(len(emb)) if i != q]
        ranked = sorted(others, key=lambda i: -float(emb[q] @ emb[i]))
        rel = [labels[i] == labels[q] for i in ranked]
        r1.append(rel[0])
        r5.append(any(rel[:5]))
        hits, total = 0, 0.0
        for i in range(positives):  # MAP@R: precision at each relevant rank within the first R
            if rel[i]:
                hits += 1
                total += hits / (i + 1)
        ap.append(total / positives)
    return {"R@1": np.mean(r1), "R@5": np.mean(r5), "MAP@R": np.mean(ap)}


def test_perfect_clusters_score_one():
    emb = on_arc([0, 1, 2, 40, 41, 42, 80, 81])
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    m = retrieval_metrics(emb, labels)
    assert m["R@1"] == m["R@5"] == m["MAP@R"] == pytest.approx(1.0)
    assert m["NMI"] == pytest.approx(1.0)
    assert (m["queries"], m["classes"]) == (8, 3)


def test_exactly_half_correct():
    # Labels 0 and 3 sit alone in tight pairs (4 queries right); labels 1 and 2 alternate along
    # the arc, so each of their 4 queries has the other label nearest (4 wrong). R = 1 for all.
    emb = on_arc([0, 2, 20, 22, 25, 27, 60, 62])
    labels = np.array([0, 0, 1, 2, 1, 2, 3, 3])
    m = retrieval_metrics(emb, labels)
    assert m["R@1"] == pytest.approx(0.5)
    assert m["MAP@R"] == pytest.approx(0.5)
    assert m["R@5"] == pytest.approx(1.0)  # every positive is within the 5 nearest


def test_map_at_r_partial_credit():
    # Label 0 at 0, 1 and 6 deg, a label-1 distractor at 3 deg, label 2 far away (R = 2 for label 0).
    # Query 0: ranks 1(+), 3(-) -> AP 1/2. Query 1: 0(+), 3(-) -> 1/2. Query 6: 3(-), 1(+) -> (1/2)/2.
    # Label 2 scores 1 twice; the lone label 1 is no query. MAP@R = (0.5 + 0.5 + 0.25 + 1 + 1) / 5.
    emb = on_arc([0, 1, 3, 6, 60, 61])
    labels = np.array([0, 0, 1, 0, 2, 2])
    m = retrieval_metrics(emb, labels)
    assert m["MAP@R"] == pytest.approx(0.65)
    assert m["R@1"] == pytest.approx(4 / 5)
    assert brute_force(emb, labels)["MAP@R"] == pytest.approx(0.65)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 12, size=60)
    labels[0] = 99  # a singleton: no positive, so not a query, but still a distractor
    centres = rng.normal(size=(100, 8))
    emb = centres[labels] + 0.9 * rng.normal(size=(60, 8))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    ref = brute_force(emb, labels)
    got = retrieval_metrics(emb, labels)
    for name in ("R@1", "R@5", "MAP@R"):
        assert got[name] == pytest.approx(ref[name], abs=1e-6), name
    _, counts = np.unique(labels, return_counts=True)
    assert got["queries"] == counts[counts > 1].sum() < 60
    assert recall_at_k(emb, labels, (1,))[1] == pytest.approx(got["R@1"])


def test_retrieval_metrics_rejects_mismatched_input():
    with pytest.raises(ValueError, match="N labels"):
        retrieval_metrics(np.zeros((4, 2), np.float32), np.zeros(3, np.int64))


def test_evaluate_run_on_held_out_videos(tmp_path):
    # Five videos, val_frac 0.2: training holds one out. Every track has its own colour/stripes,
    # so raw pixels retrieve perfectly; the untrained checkpoint equals the random-init baseline.
    store = make_store(tmp_path / "store", n_videos=5, tracks_per_video=3, patches_per_track=3)
    run = make_run_dir(tmp_path / "run", embed_dim=16, input_px=32, val_frac=0.2, seed=0)
    report = evaluate_run(run, store, device="cpu", batch_size=4)

    # Independent of the split function: the held-out video is the one whose patches the real
    # training sampler never puts in a batch over a whole epoch (and exactly round(5 * 0.2) = 1).
    index = load_index(store)
    cfg = TrainConfig(arch="smallcnn", embed_dim=16, input_px=32, val_frac=0.2, seed=0, batch_pairs=4)
    sampler = train_sampler(index, held_out_split(index, cfg)[0], cfg)
    trained = {int(index.video[r]) for step in range(20) for r in sampler.batch_at(step).rows}
    unseen = sorted(set(range(len(index.video_shas))) - trained)
    assert len(unseen) == 1 and len(trained) == 4
    assert report["split"]["videos"] == [str(index.video_shas[unseen[0]])]
    assert report["split"]["mode"] == "held-out videos"
    assert (report["queries"], report["tracks"], report["videos"]) == (9, 3, 1)
    assert set(report["methods"]) == {"trained", "random_init", "raw_pixels"}
    assert report["methods"]["raw_pixels"]["R@1"] == pytest.approx(1.0)
    assert report["methods"]["trained"] == report["methods"]["random_init"]
    assert report["chance_R@1"] == pytest.approx(2 / 8)

    saved = json.loads((run / "evaluation.json").read_text())
    assert report["markdown"] == (run / "evaluation.md").read_text()
    assert saved["methods"] == report["methods"]
    md = (run / "evaluation.md").read_text()
    assert "| raw_pixels |" in md and "| random_init |" in md and "MAP@R" in md
    # Read without the README: a verdict, one line per metric, the held-out files by name.
    # Every track has its own colour: all three retrieve perfectly, a tie with both baselines.
    assert "**Verdict: the trained encoder is no better than random_init and raw_pixels (R@1 1.000 vs " in md
    assert "9 query patches, 3 tracks, 1 video." in md
    assert f"Held-out set: `v{unseen[0]}.mp4`." in md
    for metric in ("R@1", "R@5", "MAP@R", "NMI", "ctx_MAP@R"):
        assert f"- **{metric}**: " in md
    # Each track is one flat colour, box and context alike: with the context swapped for
    # another track's, raw pixels still find the own track (the centre keeps its colour) but
    # no longer perfectly, since most of the patch now shows another track.
    ctx = report["methods"]["raw_pixels"]["ctx_MAP@R"]
    assert 0.0 < ctx < report["methods"]["raw_pixels"]["MAP@R"]


def test_evaluate_run_without_held_out_videos_says_so(tmp_path):
    store = make_store(tmp_path / "store", n_videos=2, tracks_per_video=2, patches_per_track=2)
    run = make_run_dir(tmp_path / "run", embed_dim=16, input_px=32, val_frac=0.0)
    report = evaluate_run(run, store, out_dir=tmp_path / "report", device="cpu")
    assert report["split"]["mode"] == "training videos (none held out)"
    assert report["queries"] == 8
    assert "training videos (none held out)" in (tmp_path / "report" / "evaluation.md").read_text()
