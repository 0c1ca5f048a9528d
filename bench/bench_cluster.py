"""Clustering and embedding: k-means with faiss vs scikit-learn, and the time to embed 10k patches.

k-means runs on 100k x 128 L2-normalised embeddings drawn around 64 centres, k = 64, a
fixed number of Lloyd iterations from the same initial centroids for both libraries
(so the ratio compares iteration cost, not seeding luck). The library's own
``trackemb.embedding.cluster.kmeans`` (k-means++ seeding, restarts, faiss) is timed beside
them. Embedding uses ``trackemb.embedding.embed.embed_keys`` with the default encoder
(resnet18 at the default input size) over a real PatchStore, on CPU (or CUDA when present).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from bench.common import BenchResult, interleave, med, spread, timed
from bench.inputs import build_patch_store
from trackemb.config import ExportConfig, TrainConfig
from trackemb.embedding.cluster import kmeans
from trackemb.embedding.distributed import resolve_device
from trackemb.embedding.embed import decode_patches, embed_keys
from trackemb.embedding.model import build_encoder
from trackemb.storage.store import open_reader


def blobs(n: int, dim: int, centres: int, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 unit vectors scattered around ``centres`` random directions."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _faiss(x: np.ndarray, init: np.ndarray, iters: int) -> float:
    import faiss

    # faiss subsamples to 256 points per centroid by default; use them all, as scikit-learn does.
    km = faiss.Kmeans(
        x.shape[1], len(init), niter=iters, seed=0, min_points_per_centroid=1, max_points_per_centroid=len(x),
        verbose=False,
    )  # fmt: skip
    km.train(x, init_centroids=init)
    _, assign = km.index.search(x, 1)
    return float(np.bincount(assign[:, 0], minlength=len(init)).max())


def _sklearn(x: np.ndarray, init: np.ndarray, iters: int) -> float:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=len(init), init=init, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd").fit(x)
    return float(np.bincount(km.labels_).max())


def _kmeans_rows(res: BenchResult, quick: bool, rounds: int) -> None:
    n, dim, k, iters = (4000, 128, 8, 5) if quick else (100_000, 128, 64, 10)
    x = blobs(n, dim, k)
    init = np.ascontiguousarray(x[np.random.default_rng(1).choice(n, k, replace=False)])
    cases = {
        "faiss": timed(lambda: _faiss(x, init, iters)),
        "sklearn": timed(lambda: _sklearn(x, init, iters)),
        "trackemb_kmeans": timed(lambda: kmeans(x, k, seed=0, iters=iters, restarts=1)),
    }
    _faiss(x[:2000], init, 2), _sklearn(x[:2000], init, 2)  # imports and thread pools warm
    samples = interleave(cases, rounds)
    t = {name: med(s) for name, s in samples.items()}
    shape = f"{n:,} x {dim}, k={k}, {iters} iterations"
    res.add("k-means faiss", t["faiss"], "s", note=shape)
    res.add("k-means scikit-learn", t["sklearn"], "s", note="same initial centroids")
    res.add("scikit-learn / faiss time", t["sklearn"] / t["faiss"], "x", note="faiss speed-up")
    res.add("trackemb kmeans() (1 restart)", t["trackemb_kmeans"], "s", note="k-means++ seeding + faiss")
    res.data["kmeans"] = {
        "n": n, "dim": dim, "k": k, "iters": iters, "rounds": rounds, "seconds": samples, "median_seconds": t,
        "spread": {name: spread(s) for name, s in samples.items()},
        "library_restarts_default": 3, "export_kmeans_iters_default": ExportConfig().kmeans_iters,
    }  # fmt: skip


def _embed_rows(res: BenchResult, work: Path, quick: bool, rounds: int) -> None:
    """One timed pass over all patches (the absolute figure), then variants side by side on a subset."""
    n, subset = (256, 128) if quick else (10_000, 512)
    cfg = TrainConfig(arch="smallcnn") if quick else TrainConfig()
    device = resolve_device("auto")
    store = build_patch_store(work / "embed_store", n)
    reader = open_reader(store)
    keys = sorted(p.key for p in reader.patches())[:n]
    torch.manual_seed(0)
    model = build_encoder(cfg.arch, cfg.embed_dim, cfg.input_px).eval().to(device)
    batch = ExportConfig().batch_size

    def embed(some: list[str]) -> None:
        embed_keys(model, reader, some, input_px=cfg.input_px, batch_size=batch, device=device)

    def decode_only(some: list[str]) -> None:
        for s in range(0, len(some), batch):
            decode_patches([reader.get_jpeg(k) for k in some[s : s + batch]], cfg.input_px, device)

    def embed_channels_last(some: list[str]) -> None:
        m = model.to(memory_format=torch.channels_last)
        try:
            embed_keys(
                lambda x: m(x.contiguous(memory_format=torch.channels_last)), reader, some,
                input_px=cfg.input_px, batch_size=batch, device=device,
            )  # fmt: skip
        finally:
            model.to(memory_format=torch.contiguous_format)

    embed(keys[:batch])  # warm-up
    full = timed(lambda: embed(keys))()
    part = keys[:subset]
    cases = {
        "embed": timed(lambda: embed(part)),
        "decode_only": timed(lambda: decode_only(part)),
        "embed_channels_last": timed(lambda: embed_channels_last(part)),
    }
    samples = interleave(cases, rounds)
    reader.close()
    t = {name: med(s) for name, s in samples.items()}
    what = f"{cfg.arch} at {cfg.input_px}px, batch {batch}, {device.type}, torch threads {torch.get_num_threads()}"
    res.add(f"embed {n:,} patches", full, "s", note=what + " (one pass)")
    res.add("embed rate", n / full, "patches/s")
    res.add(
        "embed: JPEG decode + resize share", t["decode_only"] / t["embed"], "share", note=f"{subset} patches"
    )
    res.add(
        "channels_last speed-up", t["embed"] / t["embed_channels_last"], "x", note="opportunity in embed_keys"
    )
    res.data["embed"] = {
        "patches": n, "arch": cfg.arch, "input_px": cfg.input_px, "batch_size": batch, "device": str(device),
        "full_pass_s": full, "patches_per_s": n / full, "subset": subset, "subset_seconds": samples,
        "subset_median_seconds": t,
    }  # fmt: skip


def run(quick: bool, work: Path) -> BenchResult:
    """k-means faiss vs scikit-learn and embedding time (quick: 4k x 128, k=8; 256 patches, smallcnn)."""
    res = BenchResult("cluster")
    rounds = 1 if quick else 3
    t0 = time.perf_counter()
    _kmeans_rows(res, quick, rounds)
    _embed_rows(res, work, quick, rounds)
    res.data["wall_s"] = time.perf_counter() - t0
    return res
