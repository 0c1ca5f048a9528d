"""Embed every patch of a PatchStore with an exported encoder.

Writes ``embeddings.npy`` ((N, D) float32, L2-normalised) and ``patches.csv`` (one row
per embedding, same order) into the export directory, plus ``embed.json`` recording
which store and which weights produced them.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.io import ImageReadMode, decode_jpeg

from trackemb.atomic import atomic_path
from trackemb.embedding.augment import to_input
from trackemb.embedding.card import read_card
from trackemb.embedding.distributed import resolve_device
from trackemb.embedding.export import load_encoder

log = logging.getLogger(__name__)

CSV_COLUMNS = ("patch_id", "video", "video_path", "track", "frame", "x", "y", "w", "h", "role", "cluster")
Progress = Callable[[int, int], None]


def decode_patches(jpegs: Sequence[bytes], size_px: int, device: torch.device) -> torch.Tensor:
    """Decode JPEG patches and resize them to the encoder input.

    Args:
        jpegs: encoded patches (any size; the store holds squares of ``patch_px``).
        size_px: output side.
        device: where to decode (nvjpeg on CUDA) and return the batch.

    Returns:
        (B, 3, size_px, size_px) float32 RGB in [0, 1].
    """
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]
    try:
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as exc:
        if device.type == "cpu":
            raise
        # Builds without nvjpeg cannot decode on the GPU; the CPU decoder gives the same pixels.
        log.warning("GPU JPEG decoding failed (%s); decoding on the CPU", exc)
        images = [img.to(device) for img in decode_jpeg(data, mode=ImageReadMode.RGB)]
    # The same deterministic view training validates on, so exported embeddings match it.
    if len({tuple(img.shape) for img in images}) == 1:
        return to_input(torch.stack(images), size_px)
    return torch.cat([to_input(img[None], size_px) for img in images])


def embed_keys(
    encode: Callable[[torch.Tensor], torch.Tensor],
    reader: Any,
    keys: Sequence[str],
    *,
    input_px: int,
    batch_size: int,
    device: torch.device,
    progress: Progress | None = None,
) -> np.ndarray:
    """Run ``encode`` over the patches ``keys`` of an open store reader, in batches.

    An ``nn.Module`` encoder is switched to channels_last memory format in place (same
    weights): convolutions ran 1.3x faster that way on CPU (bench/bench_cluster.py), and
    tensor cores want it under CUDA AMP.

    Args:
        encode: maps (B, 3, input_px, input_px) float RGB in [0, 1] on ``device`` to (B, D).
        reader: a store reader (``get_jpegs(keys) -> list[bytes]``).
        keys: patch keys, in output order.

    Returns:
        (N, D) float32, in the order of ``keys``.
    """
    chunks: list[np.ndarray] = []
    amp = device.type == "cuda"
    # Outside inference_mode: converted parameters must stay ordinary tensors, usable for training.
    channels_last = isinstance(encode, nn.Module)
    if channels_last:
        encode.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for start in range(0, len(keys), batch_size):
            batch_keys = keys[start : start + batch_size]
            # One read transaction per batch: ~6x cheaper lookups than one per key.
            x = decode_patches(reader.get_jpegs(batch_keys), input_px, device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                emb = encode(x)
            # Half-precision outputs are renormalised in float32 so rows stay exactly unit length.
            chunks.append(F.normalize(emb.float(), dim=1).cpu().numpy())
            if progress is not None:
                progress(min(start + batch_size, len(keys)), len(keys))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def patch_rows(reader: Any) -> list[dict[str, Any]]:
    """One ``patches.csv`` row per store patch, sorted by key (stable across shards and runs)."""
    paths = {v.sha: v.path for v in reader.videos()}
    rows = []
    for p in sorted(reader.patches(), key=lambda r: r.key):
        x, y, w, h = (round(float(v), 2) for v in p.box)
        rows.append(
            {
                "patch_id": p.key,
                "video": p.video_sha,
                "video_path": paths.get(p.video_sha, ""),
                "track": int(p.track_id),
                "frame": int(p.frame),
                "x": x,
                "y": y,
                "w": w,
                "h": h,
                "role": p.role,
                "cluster": "",
            }
        )
    return rows


def write_patches_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` atomically with the contract's column order."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_patches_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of ``patches.csv`` as strings, in file order."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".tmp.npy") as tmp:
        np.save(tmp, array)


def embed_store(
    export_dir: str | Path,
    store_path: str | Path,
    *,
    batch_size: int = 256,
    device: str = "auto",
    progress: Progress | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Embed every patch of a store with the encoder exported in ``export_dir``.

    Args:
        export_dir: a ``trackemb export`` directory; outputs are written here too.
        store_path: the PatchStore (directory or sharded directory).
        batch_size: patches per forward pass.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        progress: called as ``progress(done, total)`` after each batch.

    Returns:
        ``(embeddings, rows)``: (N, D) float32 L2-normalised, and the ``patches.csv`` rows
        in the same order (``cluster`` empty until :func:`cluster_embeddings` runs).

    Raises:
        ModelCardError: the export directory is invalid.
        StoreError: the store cannot be opened.
    """
    from trackemb.storage.store import open_reader

    export_dir = Path(export_dir)
    card = read_card(export_dir)
    dev = resolve_device(device)
    model: nn.Module = load_encoder(export_dir).eval().to(dev)
    with open_reader(store_path) as reader:
        rows = patch_rows(reader)
        keys = [r["patch_id"] for r in rows]
        log.info("embedding %d patches from %s on %s", len(keys), store_path, dev)
        emb = embed_keys(
            model,
            reader,
            keys,
            input_px=card.input_size[0],
            batch_size=batch_size,
            device=dev,
            progress=progress,
        )
    if len(keys) == 0:
        emb = np.zeros((0, card.embedding_dim), dtype=np.float32)
    _save_npy(export_dir / "embeddings.npy", emb)
    write_patches_csv(export_dir / "patches.csv", rows)
    info = {
        "store": str(Path(store_path).resolve()),
        "patches": len(keys),
        "embedding_dim": int(emb.shape[1]),
        "encoder_sha256": card.file("encoder.safetensors").sha256,
        "device": str(dev),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (export_dir / "embed.json").write_text(json.dumps(info, indent=2) + "\n")
    return emb, rows
