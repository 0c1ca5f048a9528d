"""Export settings: which checkpoint, the encoder files, embedding and clustering."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trackemb.config.base import StageConfig


class ExportConfig(StageConfig):
    which: Literal["best", "last"] = Field(
        "best",
        description="Checkpoint to export: best (highest held-out MAP@R, step 0 included, so never worse "
        "than the untrained network on validation) or last.",
    )
    onnx: bool = Field(True, description="Also write encoder.onnx when onnx is installed.")
    batch_size: int = Field(256, ge=1, description="Batch size when embedding patches.")
    k: int | Literal["auto"] = Field("auto", description="Number of clusters, or auto (silhouette).")
    k_min: int = Field(2, ge=2)
    k_max: int = Field(12, ge=2)
    montage_per_cluster: int = Field(
        36, ge=1, description="Patches nearest each cluster centre in its montage."
    )
    montage_tile_px: int = Field(64, ge=16, description="Side of one patch tile in a cluster montage PNG.")
    kmeans_iters: int = Field(50, ge=1, description="k-means iterations (faiss or scikit-learn).")
    silhouette_sample: int = Field(
        2000, ge=10, description="Embeddings sampled to score each k when k is auto (silhouette is O(n^2))."
    )
    projector_max_points: int = Field(
        2000, ge=1, description="Embeddings (with thumbnails) sampled into the TensorBoard projector."
    )
    seed: int = 0
