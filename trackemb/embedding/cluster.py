"""k-means over the exported embeddings, with montages, a summary and a TensorBoard projector.

Reads ``embeddings.npy`` + ``patches.csv`` written by :func:`embed_store` and writes the
``cluster`` column back, ``cluster_montages/cluster_XX.png`` (patches nearest each
centre), ``clusters.json`` and ``projector/`` into the same export directory.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trackemb.config import ExportConfig
from trackemb.embedding.embed import read_patches_csv, write_patches_csv
from trackemb.embedding.montage import write_cluster_montages
from trackemb.errors import ClusterError

log = logging.getLogger(__name__)


@dataclass
class ClusterResult:
    """Outcome of :func:`cluster_embeddings`; ``labels`` follow the rows of ``patches.csv``."""

    k: int
    labels: np.ndarray  # (N,) int64
    centroids: np.ndarray  # (k, D) float32
    sizes: list[int]
    silhouette: float | None
    backend: str  # "faiss" | "sklearn"
    silhouette_by_k: dict[int, float] = field(default_factory=dict)
    montages: list[Path] = field(default_factory=list)
    projector_dir: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no arrays), e.g. for a flow result."""
        return {
            "k": self.k,
            "sizes": self.sizes,
            "silhouette": self.silhouette,
            "backend": self.backend,
            "silhouette_by_k": {str(k): v for k, v in self.silhouette_by_k.items()},
            "montages": [str(p) for p in self.montages],
            "projector_dir": str(self.projector_dir) if self.projector_dir else None,
        }


def _file(row: dict[str, str]) -> str:
    """A patch's video as a file name (the sha only when the store had no path for it)."""
    return Path(row.get("video_path") or "").name or row["video"][:12]


_SEED_POINTS_PER_K = 256  # k-means++ seeds are drawn from at most this many points per cluster


def kmeans(
    emb: np.ndarray, k: int, *, seed: int, iters: int = 50, restarts: int = 3
) -> tuple[np.ndarray, np.ndarray, str]:
    """k-means with faiss, falling back to scikit-learn when faiss is not installed.

    Args:
        emb: (N, D) float embeddings.
        k: clusters, 1 <= k <= N.
        restarts: independent k-means++ seedings; the lowest objective wins.

    Returns:
        ``(labels (N,) int64, centroids (k, D) float32, backend name)``.
    """
    from sklearn.cluster import KMeans, kmeans_plusplus

    x = np.ascontiguousarray(emb, dtype=np.float32)
    try:
        import faiss
    except ImportError:
        km = KMeans(n_clusters=k, n_init=restarts, max_iter=iters, random_state=seed).fit(x)
        return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float32), "sklearn"
    best: tuple[float, Any] | None = None
    for r in range(restarts):
        # faiss seeds centroids uniformly at random, which often merges two true clusters;
        # k-means++ seeding (as scikit-learn does) avoids most of those local optima. Seeding
        # on a random sample of ~256 points per cluster finds the same spread of seeds: on all
        # 100k points it took 2 of 3.5 s per restart (bench/bench_cluster.py).
        pool = x
        if len(x) > _SEED_POINTS_PER_K * k:
            pick = np.random.default_rng([seed, r]).choice(len(x), _SEED_POINTS_PER_K * k, replace=False)
            pool = x[np.sort(pick)]
        init, _ = kmeans_plusplus(pool, k, random_state=seed + r)
        # min_points_per_centroid=1: small stores are normal here, and faiss would warn on stderr.
        km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed + r, min_points_per_centroid=1, verbose=False)
        obj = float(km.train(x, init_centroids=np.ascontiguousarray(init, dtype=np.float32)))
        if best is None or obj < best[0]:
            best = (obj, km)
    km = best[1]
    _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64), np.asarray(km.centroids, dtype=np.float32), "faiss"


def _silhouette(emb: np.ndarray, labels: np.ndarray, sample: int, seed: int) -> float | None:
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return None
    size = min(sample, len(labels))
    return float(
        silhouette_score(emb, labels, sample_size=size if size < len(labels) else None, random_state=seed)
    )


def choose_k(emb: np.ndarray, cfg: ExportConfig) -> tuple[int, dict[int, float]]:
    """Pick k in ``cfg.k_min..cfg.k_max`` with the best silhouette on a sample of ``emb``.

    Returns:
        ``(best_k, {k: silhouette})``.
    """
    n = len(emb)
    hi = min(cfg.k_max, n - 1)
    if hi < cfg.k_min:
        raise ClusterError(
            f"{n} embeddings are too few to choose k in {cfg.k_min}..{cfg.k_max}; pass k explicitly"
        )
    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(n, size=min(cfg.silhouette_sample, n), replace=False))
    scores: dict[int, float] = {}
    for k in range(cfg.k_min, hi + 1):
        labels, _, _ = kmeans(emb[sample], min(k, len(sample)), seed=cfg.seed, iters=cfg.kmeans_iters)
        score = _silhouette(emb[sample], labels, cfg.silhouette_sample, cfg.seed)
        if score is not None:
            scores[k] = score
    if not scores:
        raise ClusterError("no k gave two or more non-trivial clusters; pass k explicitly")
    best = max(scores, key=lambda k: (scores[k], -k))
    log.info("k=auto: silhouette %s -> k=%d", {k: round(v, 3) for k, v in scores.items()}, best)
    return best, scores


def _write_projector(
    out_dir: Path,
    reader: Any,
    rows: list[dict[str, str]],
    emb: np.ndarray,
    labels: np.ndarray,
    cfg: ExportConfig,
) -> Path:
    import torch

    from trackemb.embedding.embed import decode_patches
    from trackemb.embedding.projector import write_projector

    shutil.rmtree(out_dir, ignore_errors=True)  # a projector config lists every embedding ever added
    rng = np.random.default_rng(cfg.seed)
    idx = np.sort(rng.choice(len(emb), size=min(cfg.projector_max_points, len(emb)), replace=False))
    # TensorBoard's sprite is one image of at most 8192 px a side.
    thumb_px = int(max(8, min(48, 8192 // int(np.ceil(np.sqrt(len(idx)))))))
    thumbs = torch.cat(
        [
            decode_patches(
                reader.get_jpegs([rows[i]["patch_id"] for i in idx[s : s + 256]]),
                thumb_px,
                torch.device("cpu"),
            )
            for s in range(0, len(idx), 256)
        ]
    )
    meta = [[str(labels[i]), _file(rows[i]), rows[i]["track"], rows[i]["role"]] for i in idx]
    write_projector(out_dir, emb[idx], meta, ["cluster", "video", "track", "role"], thumbs, tag="patches")
    return out_dir


def cluster_embeddings(
    export_dir: str | Path, cfg: ExportConfig, *, store_path: str | Path | None = None
) -> ClusterResult:
    """Cluster the embeddings of an export directory and write the cluster outputs.

    Args:
        export_dir: holds ``embeddings.npy`` and ``patches.csv`` from :func:`embed_store`.
        cfg: ``k`` (int or ``"auto"``), the auto range, montage and projector settings.
        store_path: PatchStore for montage images; default is the store recorded in
            ``embed.json`` by :func:`embed_store`.

    Returns:
        The clustering, with paths of the montages and the projector directory.

    Raises:
        ClusterError: missing or inconsistent inputs, too few embeddings, or an invalid k.
    """
    from trackemb.storage.store import open_reader

    export_dir = Path(export_dir)
    emb_path, csv_path = export_dir / "embeddings.npy", export_dir / "patches.csv"
    if not emb_path.is_file() or not csv_path.is_file():
        raise ClusterError(f"{export_dir}: no embeddings.npy/patches.csv; run `trackemb embed` first")
    emb = np.load(emb_path, allow_pickle=False).astype(np.float32, copy=False)
    rows = read_patches_csv(csv_path)
    if emb.ndim != 2 or len(emb) != len(rows):
        raise ClusterError(
            f"{emb_path}: shape {emb.shape} does not match {len(rows)} rows of {csv_path}; re-run embed"
        )
    if len(emb) < 2:
        raise ClusterError(f"{emb_path}: {len(emb)} embeddings; at least 2 are needed to cluster")
    if store_path is None:
        info_path = export_dir / "embed.json"
        if not info_path.is_file():
            raise ClusterError(f"{export_dir}: no embed.json naming the store; pass store_path")
        store_path = json.loads(info_path.read_text())["store"]
    if cfg.k_min > cfg.k_max:
        raise ClusterError(f"k_min {cfg.k_min} > k_max {cfg.k_max}")

    scores: dict[int, float] = {}
    if cfg.k == "auto":
        k, scores = choose_k(emb, cfg)
    else:
        k = int(cfg.k)
        if not 1 <= k <= len(emb):
            raise ClusterError(f"k={k} must be between 1 and the number of embeddings ({len(emb)})")
    labels, centroids, backend = kmeans(emb, k, seed=cfg.seed, iters=cfg.kmeans_iters)
    silhouette = _silhouette(emb, labels, cfg.silhouette_sample, cfg.seed)
    sizes = np.bincount(labels, minlength=k).tolist()

    for row, label in zip(rows, labels, strict=True):
        row["cluster"] = int(label)
    write_patches_csv(csv_path, rows)

    keys, files = [r["patch_id"] for r in rows], [_file(r) for r in rows]
    with open_reader(store_path) as reader:
        montages = write_cluster_montages(
            export_dir / "cluster_montages", reader, keys, files, emb, labels, centroids, cfg
        )
        projector = _write_projector(export_dir / "projector", reader, rows, emb, labels, cfg)

    summary = {
        "k": k,
        "k_mode": "auto" if cfg.k == "auto" else "given",
        "backend": backend,
        "n": len(emb),
        "silhouette": silhouette,
        "silhouette_by_k": {str(kk): v for kk, v in scores.items()},
        "sizes": sizes,
        "video_files": {r["video"]: r.get("video_path", "") for r in rows},
        "clusters": [
            {
                "cluster": c,
                "size": sizes[c],
                "videos": dict(Counter(files[i] for i in np.flatnonzero(labels == c)).most_common()),
                "montage": f"cluster_montages/cluster_{c:02d}.png" if sizes[c] else None,
            }
            for c in range(k)
        ],
        "config": cfg.model_dump(mode="json"),
    }
    (export_dir / "clusters.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("clustered %d embeddings into k=%d (%s), silhouette %s", len(emb), k, backend, silhouette)
    return ClusterResult(k, labels, centroids, sizes, silhouette, backend, scores, montages, projector)
