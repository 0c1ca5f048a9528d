"""Harvest settings: decoding, motion discovery, tracking, and the patches and pairs kept."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trackemb.config.base import StageConfig


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
