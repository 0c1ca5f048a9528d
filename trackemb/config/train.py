"""Training settings: mining and the training loop (data, optimiser, validation, checkpoints)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trackemb.config.base import StageConfig


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
    # ntxent (with reg = "vicreg", batchnorm = "frozen" and the context swap) beat the triplet loss on
    # the dev scenes on every metric and on the held-out scenes on four of five (README, Quality, round 3).
    loss: Literal["triplet", "ntxent"] = Field(
        "ntxent",
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
        "vicreg",
        description="Spreading regulariser against dimensional collapse: vicreg (variance + covariance "
        "terms on the backbone features) or koleo (nearest-neighbour entropy of the head's embeddings).",
    )
    reg_weight: float = Field(1.0, ge=0, description="Weight of the regulariser relative to the loss.")
    # frozen: on scenes held out from training, +0.03 labelled MAP@R and +0.02 real MAP@R over batch
    # statistics (README, Quality, round 3).
    batchnorm: Literal["batch", "frozen"] = Field(
        "frozen",
        description="batch: BatchNorm layers normalise with batch statistics while training and keep running "
        "statistics of the training scenes for later. frozen: they keep their initial statistics (mean 0, "
        "variance 1; only their scale and shift learn), so embeddings of another user's video are not "
        "normalised with statistics of the training scenes.",
    )
    # 96, the stored patch side (no downscaling): on held-out scenes the same recipe at 64 px scored
    # real MAP@R 0.662 and labelled 0.222, at 96 px 0.704 and 0.254; it costs ~1.5x CPU training time
    # (README, Quality, round 4).
    input_px: int = Field(96, ge=32, description="Side of the encoder input (patches are resized/cropped).")
    init_weights: str | None = Field(
        None, description="Optional local .pth/.safetensors backbone to start from."
    )
    # 1200: at 96 px the held-out labelled scores kept rising past step 600 (MAP@R 0.254 -> 0.271,
    # real level); about 18 minutes on 2 CPU cores (README, Quality, round 4).
    steps: int = Field(1200, ge=1)
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
    aug_background: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of patches (at full strength) whose context around the tracked box is swapped for "
        "another patch's, so surroundings stop being a cue for matching.",
    )
    aug_geometry: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of patches (at full strength) rotated by up to 30 degrees, and share blurred.",
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
    val_every_steps: int = Field(
        50, ge=1, description="Validate (and keep the best checkpoint) every N steps."
    )
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
