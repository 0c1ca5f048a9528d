"""Embedding every store patch and clustering the embeddings: structure recovered, files per the contract."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from embed_fixtures import make_run_dir, make_store
from sklearn.metrics import normalized_mutual_info_score

from trackemb.config import ExportConfig
from trackemb.embedding.cluster import ClusterError, choose_k, cluster_embeddings, kmeans
from trackemb.embedding.embed import CSV_COLUMNS, embed_store, read_patches_csv
from trackemb.embedding.export import export_encoder
from trackemb.pictures import png_text
from trackemb.storage.store import open_reader

N_VIDEOS, TRACKS, PER_TRACK = 4, 3, 3


def blobs(n_clusters: int, per_cluster: int, dim: int = 32, noise: float = 0.15, seed: int = 0):
    """Unit vectors around ``n_clusters`` random centres; returns (emb (N, dim), true labels (N,))."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    emb = centres[labels] + noise * rng.normal(size=(len(labels), dim)) / np.sqrt(dim)
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32), labels


def test_kmeans_recovers_known_structure():
    emb, truth = blobs(5, 40)
    labels, centroids, backend = kmeans(emb, 5, seed=0)
    assert backend == "faiss" and centroids.shape == (5, 32)
    assert normalized_mutual_info_score(truth, labels) > 0.9


def test_sklearn_fallback_without_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    emb, truth = blobs(4, 30, seed=1)
    labels, _, backend = kmeans(emb, 4, seed=0)
    assert backend == "sklearn"
    assert normalized_mutual_info_score(truth, labels) > 0.9


@pytest.mark.parametrize("true_k", [3, 6])
def test_auto_k_finds_the_number_of_clusters(true_k):
    emb, _ = blobs(true_k, 30, seed=true_k)
    k, scores = choose_k(emb, ExportConfig(k_min=2, k_max=9))
    assert k == true_k
    assert set(scores) == set(range(2, 10))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    root = tmp_path_factory.mktemp("cluster")
    # Identity depends on the track index only, so each identity appears in every video.
    store = make_store(
        root / "store",
        n_videos=N_VIDEOS,
        tracks_per_video=TRACKS,
        patches_per_track=PER_TRACK,
        identity_of=lambda video, track: track,
    )
    run = make_run_dir(root / "run", embed_dim=16, input_px=32)
    export = export_encoder(run, root / "export", ExportConfig(onnx=False))
    emb, rows = embed_store(export, store, batch_size=7, device="cpu")
    return export, store, emb


def test_patches_csv_matches_the_store(embedded):
    export, store, emb = embedded
    with open_reader(store) as reader:
        patches = {p.key: p for p in reader.patches()}
        videos = {v.sha: v.path for v in reader.videos()}
    rows = read_patches_csv(export / "patches.csv")
    assert len(rows) == len(patches) == N_VIDEOS * TRACKS * PER_TRACK == len(emb)
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["patch_id"] for r in rows] == sorted(patches)
    for row in rows:
        p = patches[row["patch_id"]]
        assert (row["video"], int(row["track"]), int(row["frame"]), row["role"]) == (
            p.video_sha,
            p.track_id,
            p.frame,
            p.role,
        )
        assert row["video_path"] == videos[p.video_sha]
        assert [float(row[c]) for c in "xywh"] == pytest.approx(list(p.box), abs=0.01)
    saved = np.load(export / "embeddings.npy")
    assert saved.dtype == np.float32 and saved.shape == (len(rows), 16)
    np.testing.assert_array_equal(saved, emb)
    np.testing.assert_allclose(np.linalg.norm(saved, axis=1), 1.0, atol=1e-5)


def test_cluster_outputs_follow_the_contract(embedded):
    export, _, _ = embedded
    cfg = ExportConfig(k="auto", k_min=2, k_max=6, montage_per_cluster=4, projector_max_points=20)
    result = cluster_embeddings(export, cfg)  # the store comes from embed.json
    rows = read_patches_csv(export / "patches.csv")
    labels = np.array([int(r["cluster"]) for r in rows])
    np.testing.assert_array_equal(labels, result.labels)
    # A random CNN still separates the three colour identities (shared by every video).
    identity = np.array([int(r["track"]) for r in rows])
    assert result.k == TRACKS
    assert normalized_mutual_info_score(identity, labels) > 0.9

    assert len(result.montages) == result.k
    for c, path in enumerate(sorted(result.montages)):
        assert path == export / "cluster_montages" / f"cluster_{c:02d}.png"
        img = cv2.imread(str(path))
        assert img is not None and img.shape[0] >= cfg.montage_tile_px
    summary = json.loads((export / "clusters.json").read_text())
    assert summary["k"] == result.k and sum(summary["sizes"]) == len(rows)
    assert summary["k_mode"] == "auto" and summary["silhouette"] == pytest.approx(result.silhouette)
    assert (export / "projector" / "projector_config.pbtxt").is_file()
    assert list((export / "projector").rglob("sprite.png"))


def test_cluster_pictures_and_summary_name_files_not_hashes(embedded):
    export, store, _ = embedded
    result = cluster_embeddings(export, ExportConfig(k=3, montage_per_cluster=4, projector_max_points=20))
    rows = read_patches_csv(export / "patches.csv")
    files = {Path(r["video_path"]).name for r in rows}
    summary = json.loads((export / "clusters.json").read_text())
    for c, entry in enumerate(summary["clusters"]):
        assert set(entry["videos"]) <= files and sum(entry["videos"].values()) == entry["size"]
        text = png_text(export / entry["montage"])
        assert text["Title"].startswith(f"cluster {c}: {entry['size']} patches"), text
        top, share = next(iter(entry["videos"].items()))
        assert text["Description"].startswith(f"{top} {100 * share / entry['size']:.0f}%"), text
        img = cv2.imread(str(export / entry["montage"]))
        assert (img[:20] > 200).any(), "no title drawn above the montage"
    assert set(summary["video_files"]) == {r["video"] for r in rows}
    # The projector has columns to colour by, names files, and is no TensorBoard run (no event file).
    meta = (export / "projector" / "patches" / "metadata.tsv").read_text().splitlines()
    assert meta[0].split("\t") == ["cluster", "video", "track", "role"]
    assert all(line.split("\t")[1] in files for line in meta[1:])
    assert not list((export / "projector").rglob("events.out.tfevents*")), (
        "an empty run in TensorBoard's list"
    )
    assert result.projector_dir == export / "projector"


def test_given_k_and_bad_inputs(embedded, tmp_path):
    export, store, _ = embedded
    result = cluster_embeddings(export, ExportConfig(k=2, montage_per_cluster=3), store_path=store)
    assert result.k == 2 and len(result.montages) == 2
    assert len(list((export / "cluster_montages").glob("*.png"))) == 2  # no stale sheets from k=3
    with pytest.raises(ClusterError, match="k=1000"):
        cluster_embeddings(export, ExportConfig(k=1000), store_path=store)
    with pytest.raises(ClusterError, match="run `trackemb embed` first"):
        cluster_embeddings(tmp_path, ExportConfig(), store_path=store)
