"""One frozen pydantic model per pipeline stage, loadable from TOML plus overrides.

Defaults are the small CPU demo on the bundled sample clips; field names carry their
units (``_px``, ``_frames``, ``_frac``). Unknown tables, unknown keys and wrong
types are errors (see :mod:`trackemb.configfile`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from trackemb.configfile import check_config_file as check_tables
from trackemb.configfile import fingerprint, load_stage, write_config_json
from trackemb.errors import ConfigError

__all__ = [
    "STAGE_TABLES", "ConfigError", "DecodeConfig", "ExportConfig", "HarvestConfig", "MineConfig",
    "MotionConfig", "StageConfig", "TrackConfig", "TrainConfig", "check_config_file", "load_config",
    "write_config_json",
]  # fmt: skip


class StageConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def fingerprint(self) -> str:
        """Stable short hash of the config, used to key derived work (harvest, training)."""
        return fingerprint(self.model_dump(mode="json"))


class DecodeConfig(StageConfig):
    backend: Literal["auto", "decord", "opencv"] = Field(
        "auto", description="Frame reader: auto tries OpenCV first and falls back to decord per file."
    )
    frame_stride: int = Field(1, ge=1, description="Analyse every Nth decoded frame.")
    work_long_side_px: int = Field(
        320, ge=64, description="Long side of the grayscale frames used for motion and tracking."
    )
    max_frames: int | None = Field(None, ge=1, description="Stop after this many source frames (None: all).")
    max_shortfall_frac: float = Field(
        0.1,
        ge=0,
        le=1,
        description="A video whose decoding ends more than this fraction short of the frames its container "
        "declares is a failure of kind 'truncated' (1: never).",
    )


class MotionConfig(StageConfig):
    # Full-resolution lengths have a floor in working px (frames scaled to decode.work_long_side_px):
    # above 800 px the floors rule (they equal the full-resolution values at 768 px), so the same
    # scene gives the same tracks at 1080p and 4K. Without them the residual threshold shrank to
    # 0.08 working px at 1080p, below LK noise, and the 75 % rule rejected nearly every frame of a
    # 4x upscaled clip. Background-path sizes are in its own working px (background_long_side_px).
    motion: Literal["auto", "flow", "background"] = Field(
        "auto",
        description="How moving objects are found: sparse flow with camera-motion compensation, background "
        "subtraction (fixed camera only), or auto: background for a static camera over a plain scene, else flow.",
    )
    probe_frames: int = Field(
        60, ge=2, description="Frames read first to judge camera motion and build the background image."
    )
    static_camera_px: float = Field(
        0.5,
        gt=0,
        description="Camera motion below this (working px per frame, median over the probe) is static.",
    )
    sparse_scene_corners: int = Field(
        100,
        ge=0,
        description="auto takes the background path when the camera is static and the probe finds fewer "
        "trackable corners than this per frame (a plain scene: sparse flow has nothing to follow).",
    )
    max_corners: int = Field(600, ge=16, description="Feature points detected per frame.")
    residual_px: float = Field(
        0.5, gt=0, description="Residual flow (full-resolution px) above which a point counts as moving..."
    )
    residual_min_work_px: float = Field(
        0.2,
        gt=0,
        description="... but never below this many working px (LK noise), whatever the resolution.",
    )
    min_moving_frac: float = Field(0.25, ge=0, le=1, description="Frames with fewer moving points are noise.")
    max_moving_frac: float = Field(
        0.75,
        ge=0,
        le=1,
        description="Frames with more moving points have unexplained camera motion (unless the camera is static).",
    )
    min_region_px: int = Field(24, ge=4, description="Smallest seed box side (full-resolution px)...")
    min_region_min_work_px: float = Field(10.0, ge=1, description="... but at least this many working px.")
    seed_every_frames: int = Field(
        15, ge=1, description="Look for new moving regions every N analysed frames."
    )
    fb_max_px: float = Field(
        1.0, gt=0, description="Forward-backward LK error (working px) above which a point is unreliable."
    )
    ransac_min_px: float = Field(
        0.5,
        gt=0,
        description="Smallest RANSAC reprojection threshold (working px) for the camera homography.",
    )
    cluster_radius_px: float = Field(
        10.0, gt=0, description="Moving points closer than ~2x this (full-resolution px) join one region..."
    )
    cluster_radius_min_work_px: float = Field(4.0, gt=0, description="... and at least this many working px.")
    min_region_points: int = Field(5, ge=1, description="Fewest moving points that make a seed region.")
    object_corners: int = Field(
        80, ge=8, description="Corners sampled inside a seed box to find the object points a track follows."
    )
    max_region_frac: float = Field(
        0.5, gt=0, le=1, description="Regions covering more of the frame area are not one object."
    )
    background_long_side_px: int = Field(
        960, ge=64, description="Long side of the frames the background path works on."
    )
    bg_var_threshold: float = Field(
        16.0, gt=0, description="MOG2 squared Mahalanobis distance above which a pixel is foreground."
    )
    bg_learning_rate: float = Field(
        0.01, ge=0, le=1, description="How fast the background model follows slow scene changes (per frame)."
    )
    bg_min_area_work_px: float = Field(
        12.0, gt=0, description="Smallest foreground blob (background-path px^2) that is an object."
    )
    bg_max_miss_frames: int = Field(
        2, ge=0, description="Frames a blob track may go undetected before it ends."
    )


class TrackConfig(StageConfig):
    tracker: Literal["medianflow"] = Field("medianflow", description="Tracker implementation.")
    track_len_frames: int = Field(30, ge=2, description="Frames followed per track (about one second).")
    fb_max_px: float = Field(
        2.0, gt=0, description="Median forward-backward error (working px) that ends a track."
    )
    max_scale_change: float = Field(0.25, gt=0, description="Largest per-frame relative box scale change.")
    min_points: int = Field(8, ge=3, description="Fewest reliable points to keep following a box.")
    grid_points: int = Field(10, ge=3, description="Median flow follows a grid of N x N points in the box.")
    point_dev_px: float = Field(
        1.5, gt=0, description="Object points may deviate this much (working px) from the median motion."
    )
    point_dev_frac: float = Field(
        0.75, gt=0, description="Or this fraction of the object's own per-frame motion, whichever is larger."
    )
    min_inside_frac: float = Field(
        0.6, gt=0, le=1, description="A track ends when less of its box area than this is inside the frame."
    )


class HarvestConfig(StageConfig):
    decode: DecodeConfig = DecodeConfig()
    motion: MotionConfig = MotionConfig()
    track: TrackConfig = TrackConfig()
    patch_px: int = Field(96, ge=16, description="Side of the stored square patch (JPEG).")
    context_frac: float = Field(0.2, ge=0, description="Context added around the box on each side.")
    jpeg_quality: int = Field(90, ge=30, le=100)
    inner_samples: int = Field(1, ge=0, description="Extra inner patches per track (besides first and last).")
    min_blur_var: float = Field(
        15.0, ge=0, description="Patches whose Laplacian variance is lower are too blurry."
    )
    min_pair_change: float = Field(
        2.0, ge=0, description="Mean abs pixel change below which a positive pair is a near-duplicate."
    )
    max_tracks_per_video: int = Field(400, ge=1)
    min_track_frac: float = Field(
        0.5, ge=0, le=1, description="Tracks shorter than this fraction of track_len_frames are dropped."
    )
    triplets_per_pair: int = Field(1, ge=0, description="Random other-video negatives harvested per pair.")
    seed: int = 0


class MineConfig(StageConfig):
    margin: float = Field(0.5, gt=0, description="Triplet margin on cosine distance 1 - cos.")
    hard_from_step: int = Field(200, ge=0, description="Switch from random to hard mining at this step.")
    strategy_after: Literal["wang_gupta", "batch_hard"] = "wang_gupta"
    top_k: int = Field(4, ge=1, description="Hardest other-video negatives considered per anchor.")
    k_hard: int = Field(2, ge=1, description="Negatives drawn from the top-k hardest per anchor.")
    random_violators: int = Field(2, ge=0, description="Random margin violators added per anchor.")
    random_negatives: int = Field(
        4, ge=1, description="Random other-video negatives per positive pair in the random (early) stage."
    )
    use_harvested_triplets: bool = Field(
        False,
        description="In the random stage, train on the store's harvested triplets table instead of in-batch negatives.",
    )
    reducer: Literal["mean", "avg_nonzero"] = Field(
        "mean",
        description="Average the triplet loss over all mined triplets, or only over the active (non-zero) ones.",
    )
    loss: Literal["triplet", "ntxent"] = Field(
        "triplet",
        description="triplet: Wang & Gupta's margin loss on mined triplets. ntxent: InfoNCE over every "
        "same-track positive against every valid negative in the batch (more negatives per anchor).",
    )
    temperature: float = Field(0.1, gt=0, description="Softmax temperature of the ntxent loss.")
    in_video_negatives: bool = Field(
        True,
        description="Also take negatives from tracks of the anchor's own video that co-occur with it "
        "while staying apart (see README, 'In-video negatives'); other-video negatives are always used.",
    )


class TrainConfig(StageConfig):
    arch: str = Field(
        "resnet18", description="Encoder backbone (see trackemb.embedding.model.list_encoders)."
    )
    embed_dim: int = Field(128, ge=8, description="Output width of the projection head.")
    embed_layer: Literal["auto", "backbone", "head"] = Field(
        "auto",
        description="Which layer the exported encoder outputs: the pooled backbone features (before the "
        "projection head, as SimCLR recommends), the head, or auto: the one with the better validation MAP@R.",
    )
    reg: Literal["none", "vicreg", "koleo"] = Field(
        "none",
        description="Spreading regulariser against dimensional collapse: vicreg (variance + covariance "
        "terms on the backbone features) or koleo (nearest-neighbour entropy of the head's embeddings).",
    )
    reg_weight: float = Field(1.0, ge=0, description="Weight of the regulariser relative to the loss.")
    input_px: int = Field(64, ge=32, description="Side of the encoder input (patches are resized/cropped).")
    init_weights: str | None = Field(
        None, description="Optional local .pth/.safetensors backbone to start from."
    )
    steps: int = Field(300, ge=1)
    batch_pairs: int = Field(32, ge=2, description="Positive pairs per batch.")
    min_videos_per_batch: int = Field(2, ge=2)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    # 1e-3 (the old default) took held-out validation MAP@R from 0.83 to 0.33 within 25 steps on the
    # 12-video corpus; at 1e-4 it stays near the start (README, Quality).
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(20, ge=0)
    min_lr_frac: float = Field(0.05, ge=0, le=1)
    grad_clip: float = Field(5.0, gt=0)
    aug_max_strength: float = Field(1.0, ge=0, le=1, description="Augmentation strength reached at the end.")
    aug_min_strength: float = Field(
        0.1, ge=0, le=1, description="Augmentation strength at step 0 (curriculum start)."
    )
    aug_color: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of the colour augmentations (saturation, hue, grayscale) kept at a given strength; "
        "colour is the main cue for matching one object, so removing it can hurt retrieval.",
    )
    aug_ramp_frac: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Fraction of the steps over which augmentation strength ramps up linearly.",
    )
    val_frac: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Fraction of split units (videos, or groups with val_by='group') held out.",
    )
    negative_window_s: float | None = Field(
        None,
        gt=0,
        description="Opt-in: cut each video into windows of this many seconds (by track start) and treat "
        "each window as its own 'video' for negatives, batch mixing and the split (None: whole videos).",
    )
    val_by: Literal["video", "group"] = Field(
        "video",
        description="Hold out whole videos, or whole groups (time windows when negative_window_s is set).",
    )
    val_min_tracks: int = Field(
        0, ge=0, description="Only split units with at least this many tracks may be held out for validation."
    )
    val_every_steps: int = Field(50, ge=1, description="Validate (and keep the best checkpoint) every N steps.")
    ckpt_every_steps: int = Field(50, ge=1)
    log_every_steps: int = Field(10, ge=1, description="Write training scalars every N steps.")
    collapse_window_steps: int = Field(
        30,
        ge=1,
        description="Steps of loss pinned at the margin with near-zero spread before warning of collapse.",
    )
    projector_max_patches: int = Field(
        400, ge=0, description="Held-out patches written to the TensorBoard projector at the end (0: none)."
    )
    num_workers: int = Field(2, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="Mixed precision when on CUDA.")
    seed: int = 0
    mine: MineConfig = MineConfig()


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


C = TypeVar("C", bound=StageConfig)

# The tables a config file may hold; every one present is checked, whichever stage loads the file.
STAGE_TABLES: dict[str, type[BaseModel]] = {
    "harvest": HarvestConfig,
    "train": TrainConfig,
    "export": ExportConfig,
}


def load_config(
    cls: type[C],
    toml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    section: str | None = None,
    allow_top_level: bool = False,
) -> C:
    """Build ``cls`` from an optional TOML file plus dotted-key overrides (None values are ignored).

    Args:
        cls: the stage model, e.g. ``HarvestConfig``.
        toml_path: a TOML file; if ``section`` is given, only that table is used (``[harvest]``),
            but every table in the file is checked (:data:`STAGE_TABLES`).
        overrides: ``{"track.track_len_frames": 20}``-style values, typically from CLI flags.
        section: table name within the TOML file.
        allow_top_level: the file may instead hold ``cls``'s keys at its top level (no tables).

    Raises:
        ConfigError: unreadable TOML, an unknown table or key (naming the nearest valid
            name), or a wrong type; the message names the file and the table.
    """
    return load_stage(
        cls, toml_path, overrides, tables=STAGE_TABLES, section=section, allow_top_level=allow_top_level
    )


def check_config_file(toml_path: str | Path) -> dict[str, Any]:
    """Check every table of a config file now (unknown tables, keys, types); returns the parsed file."""
    return check_tables(toml_path, STAGE_TABLES)
