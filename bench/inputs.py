"""Inputs the benchmarks run on: sample clips, distinct copies, a PatchStore of real crops,
and the training step and DataLoader exactly as ``trackemb.embedding.train`` builds them.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import SAMPLE_VIDEOS


def sample_clips() -> list[Path]:
    """The bundled sample clips, smallest name first (stable order)."""
    clips = sorted(SAMPLE_VIDEOS.glob("*.mp4"))
    if not clips:
        raise FileNotFoundError(f"{SAMPLE_VIDEOS}: no sample clips (*.mp4)")
    return clips


def cut_clip(src: Path, dst: Path, frames: int) -> Path:
    """Re-encode the first ``frames`` frames of ``src`` to ``dst`` (H.264 via imageio-ffmpeg, else OpenCV mp4v)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        import imageio_ffmpeg

        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src),
               "-frames:v", str(frames), "-an", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
               "-threads", "1", str(dst)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        return dst
    except (ImportError, subprocess.CalledProcessError, OSError):
        pass
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    for _ in range(frames):
        ok, bgr = cap.read()
        if not ok:
            break
        if writer is None:
            h, w = bgr.shape[:2]
            writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        writer.write(bgr)
    cap.release()
    if writer is None:
        raise RuntimeError(f"{src}: no frame could be read to cut a clip")
    writer.release()
    return dst


def distinct_copies(src: Path, out_dir: Path, n: int) -> list[Path]:
    """``n`` copies of an MP4 with identical frames but distinct content hashes.

    Each copy gets a trailing ISO ``free`` box naming it: decoders skip ``free`` boxes, and
    the box keeps the file well formed (the store would skip byte-identical copies).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        dst = out_dir / f"{src.stem}_copy{i:02d}.mp4"
        shutil.copyfile(src, dst)
        payload = f"trackemb bench copy {i}".encode()
        with open(dst, "ab") as fh:
            fh.write(struct.pack(">I", 8 + len(payload)) + b"free" + payload)
        paths.append(dst)
    return paths


def video_crops(clip: Path, n: int, patch_px: int, seed: int = 0, max_frames: int = 120) -> list[np.ndarray]:
    """``n`` square crops (patch_px, patch_px, 3) uint8 BGR cut at random places of a real clip.

    Real image content, so JPEG sizes and decode costs are those of harvested patches.
    """
    import cv2

    rng = random.Random(seed)
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while len(frames) < max_frames:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    cap.release()
    if not frames:
        raise RuntimeError(f"{clip}: no frame could be read")
    crops = []
    for _ in range(n):
        bgr = frames[rng.randrange(len(frames))]
        h, w = bgr.shape[:2]
        side = rng.randint(min(h, w) // 8, min(h, w) // 3)
        x, y = rng.randrange(w - side), rng.randrange(h - side)
        crops.append(
            cv2.resize(bgr[y : y + side, x : x + side], (patch_px, patch_px), interpolation=cv2.INTER_AREA)
        )
    return crops


def build_patch_store(
    path: Path, n_patches: int, *, patch_px: int = 96, n_videos: int = 8, quality: int = 90, seed: int = 0
) -> Path:
    """A PatchStore of ``n_patches`` real video crops: ``n_videos`` videos of 2-patch tracks with one pair each.

    Written through ``PatchStore.put_video``, so layout and keys are the library's own.
    """
    import hashlib

    from bench.synthetic_store import video_harvest
    from trackemb.storage.store import PatchStore
    from trackemb.tracking.crops import encode_jpeg

    clips = sample_clips()
    crops = video_crops(clips[-1], n_patches, patch_px, seed)
    box = (0.0, 0.0, float(patch_px), float(patch_px))
    with PatchStore.open(path) as store:
        per_video = int(np.ceil(n_patches / n_videos / 2))
        it = iter(crops)
        for v in range(n_videos):
            sha = hashlib.sha256(f"bench-video-{seed}-{v}".encode()).hexdigest()
            tracks = []
            for t in range(per_video):
                pair = [next(it, None), next(it, None)]
                if pair[1] is None:
                    break
                tracks.append(
                    [(f, box, encode_jpeg(img, quality)) for f, img in zip((t, t + 30), pair, strict=True)]
                )
            if tracks:
                store.put_video(video_harvest(sha, f"bench/{v}.mp4", tracks, frames=100))
    return path


def make_train_step(cfg: Any, device: Any) -> tuple[Callable[[dict[str, Any]], float], Any]:
    """One training step exactly as ``trackemb.embedding.train`` runs it (autocast forward,
    mining, triplet loss, backward, clipping, optimizer step, the loss read back).

    Args:
        cfg: a ``TrainConfig``.
        device: ``torch.device``; AMP (bf16, else fp16) when it is CUDA and ``cfg.amp``.

    Returns:
        ``(step(batch) -> loss, model)``; ``batch`` is a ``PairBatchDataset`` item.
    """
    import torch

    from trackemb.embedding.model import build_encoder
    from trackemb.embedding.step import TrainBatch, TrainView, build_optimizer, loss_and_stats, step_generator

    torch.manual_seed(cfg.seed)
    model = build_encoder(cfg.arch, cfg.embed_dim, cfg.input_px).to(device)
    view = TrainView(model)
    optimizer = build_optimizer(model, cfg)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if use_amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    def step(batch: dict[str, Any]) -> float:
        s = int(batch["step"])
        train_batch = TrainBatch(
            images=batch["images"].to(device, non_blocking=True), track=batch["track"].to(device),
            group=batch["video"].to(device), apart=None, harvested=None, strength=float(batch["strength"]),
        )  # fmt: skip
        loss, _, _, _ = loss_and_stats(view, train_batch, s, cfg, step_generator(cfg.seed, s, 0), amp_dtype)
        value = float(loss.detach())  # the loop's one CPU-GPU sync a step
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        return value

    return step, model


def make_loader(store: Path, cfg: Any, num_workers: int, pin_memory: bool = False) -> tuple[Any, Any, Any]:
    """The training DataLoader as ``trackemb.embedding.train`` builds it, over every pair of ``store``.

    Returns:
        ``(loader, dataset, sampler)``; the loader yields ``PairBatchDataset`` batches forever.
    """
    from torch.utils.data import DataLoader

    from trackemb.embedding.data import PairBatchDataset, PairBatchSampler, load_index
    from trackemb.storage.store import open_reader

    reader = open_reader(store)
    index = load_index(reader)
    sampler = PairBatchSampler(
        index.pairs, index.video[index.pairs[:, 0]], batch_pairs=cfg.batch_pairs,
        min_videos=cfg.min_videos_per_batch, seed=cfg.seed,
    )  # fmt: skip
    dataset = PairBatchDataset(reader, index, cfg)
    loader = DataLoader(
        dataset, sampler=sampler, batch_size=None, num_workers=num_workers, pin_memory=pin_memory
    )
    return loader, dataset, sampler


def loader_seconds(loader: Any, n_batches: int) -> float:
    """Seconds for ``n_batches`` from a fresh iterator once its workers are warm and prefetch drained.

    The iterator (and its worker processes) is dropped afterwards, so workers never run in
    the background while another alternative is being timed.
    """
    it = iter(loader)
    warm = max(1, loader.num_workers * (loader.prefetch_factor or 0))
    for _ in range(warm):
        next(it)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    seconds = time.perf_counter() - t0
    del it
    return seconds
