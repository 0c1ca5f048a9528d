"""Tiny training runs and patch stores with known identities, for the export/embed/cluster/evaluate tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from bench.synthetic_store import video_harvest
from trackemb.config import HarvestConfig, TrainConfig
from trackemb.embedding.model import build_encoder

# Distinct BGR base colours; a track's identity is its colour plus a stripe pattern.
PALETTE = [(40, 40, 220), (40, 200, 40), (220, 60, 40), (30, 200, 220), (200, 40, 200), (220, 220, 220)]


def make_run_dir(
    path: Path, *, arch: str = "smallcnn", embed_dim: int = 16, input_px: int = 32, **cfg
) -> Path:
    """A run directory with ``ckpt.pt`` as training writes it (random weights, step 0)."""
    path.mkdir(parents=True, exist_ok=True)
    train_cfg = TrainConfig(arch=arch, embed_dim=embed_dim, input_px=input_px, **cfg)
    torch.manual_seed(train_cfg.seed)
    model = build_encoder(arch, embed_dim, input_px)
    ckpt = {
        "schema": 1,
        "model": model.state_dict(),
        "model_args": model.model_args(),
        "config": train_cfg.model_dump(mode="json"),
        "step": 0,
    }
    torch.save(ckpt, path / "ckpt.pt")
    return path


def track_patch(identity: int, jitter: int, patch_px: int, rng: np.random.Generator) -> np.ndarray:
    """One BGR patch of identity ``identity``: its colour, its stripe count, a little noise and shift."""
    base = np.array(PALETTE[identity % len(PALETTE)], dtype=np.float32)
    img = np.empty((patch_px, patch_px, 3), dtype=np.float32)
    img[:] = base * 0.5
    stripes = 1 + identity // len(PALETTE)
    band = patch_px // (2 * stripes)
    for s in range(stripes):
        y0 = (2 * s * band + jitter) % patch_px
        img[y0 : y0 + band] = base
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_store(
    path: Path,
    *,
    n_videos: int = 4,
    tracks_per_video: int = 3,
    patches_per_track: int = 3,
    patch_px: int = 32,
    identity_of=lambda video, track: video * 3 + track,
    seed: int = 0,
) -> Path:
    """A PatchStore whose tracks are synthetic objects with known identity.

    Returns:
        ``path``; every track has ``patches_per_track`` patches with roles first/inner/last.
    """
    from trackemb.storage.store import PatchStore

    rng = np.random.default_rng(seed)
    hcfg = HarvestConfig(patch_px=patch_px)
    with PatchStore.open(str(path), harvest_config=hcfg.model_dump(mode="json")) as store:
        for v in range(n_videos):
            sha = f"{v:02d}" * 32
            tracks = []
            for t in range(tracks_per_video):
                patches = []
                for i in range(patches_per_track):
                    ok, jpg = cv2.imencode(".jpg", track_patch(identity_of(v, t), i, patch_px, rng))
                    assert ok
                    patches.append(
                        (10 * t + 5 * i, (float(10 + i), float(20 + t), 30.0, 40.0), jpg.tobytes())
                    )
                tracks.append(patches)
            harvest = video_harvest(
                sha,
                f"/videos/v{v}.mp4",
                tracks,
                frames=100,
                fps=10.0,
                width=320,
                height=240,
                backend="opencv",
            )
            store.put_video(harvest)
    return path
