"""Held-out track retrieval: does the trained encoder find the other patches of a track?

Queries are patches of the videos training held out (the same split as training,
:func:`trackemb.embedding.data.split_groups`) whose track has at least two patches; a
query's positives are the other patches of its track, and every other held-out patch is
a distractor. The trained encoder is always reported next to two baselines measured in
the same run on the same patches: the same architecture from random init (same seed
protocol) and raw pixels (a downsampled patch, flattened and L2-normalised).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trackemb.embedding.metrics import retrieval_metrics
from trackemb.errors import TrackembError

log = logging.getLogger(__name__)

RAW_PIXELS_PX = 16  # 16 x 16 x 3 = 768 dims: small enough that noise does not dominate distances
METRIC_NAMES = ("R@1", "R@5", "MAP@R", "NMI", "eff_rank", "ctx_R@1", "ctx_MAP@R")


def _chance_r1(labels: np.ndarray) -> float:
    """Expected R@1 of a random ranking: mean over queries of positives / (N - 1)."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    per = counts[inverse] - 1
    return float(np.mean(per[per > 0] / (len(labels) - 1)))


def _embed_swapped(encode, dataset, labels: np.ndarray, device: torch.device, batch: int) -> np.ndarray:  # noqa: ANN001
    """Every patch with its context swapped for another held-out track's (as validation does)."""
    import torch.nn.functional as F

    from trackemb.embedding.augment import swap_backgrounds

    out = []
    for start in range(0, len(dataset), batch):
        rows = list(range(start, min(start + batch, len(dataset))))
        images = torch.stack([img for img, _ in dataset.__getitems__(rows)])
        gen = torch.Generator().manual_seed(start)
        images = swap_backgrounds(images, 1.0, gen, labels=torch.as_tensor(labels[rows]))
        with torch.no_grad():
            out.append(F.normalize(encode(images.to(device)).float(), dim=1).cpu())
    return torch.cat(out).numpy()


def _markdown(report: dict[str, Any]) -> str:
    """The text of ``evaluation.md``: verdict, metric definitions, baselines, held-out files."""
    from trackemb.embedding.report import evaluation_markdown

    return evaluation_markdown(report)


def evaluate_run(
    run_dir: str | Path,
    store_path: str | Path,
    *,
    out_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 256,
    which: str = "best",
) -> dict[str, Any]:
    """Evaluate a training run on held-out tracks and write ``evaluation.{json,md}``.

    Args:
        run_dir: training output with ``ckpt_best.pt`` / ``ckpt.pt`` and ``split.json``.
        store_path: the PatchStore the run trained on; held-out groups are read from the run's
            ``split.json`` (videos harvested later are never scored), or, for runs made before
            splits were saved, recomputed from the checkpoint's config.
        out_dir: where to write the report (default ``run_dir``).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        batch_size: patches per forward pass.
        which: ``"best"`` (what ``export`` ships by default) or ``"last"`` checkpoint.

    Returns:
        The report: split, counts, ``methods`` -> {trained, random_init, raw_pixels} -> metrics,
        and ``markdown`` (the text of ``evaluation.md``).

    Raises:
        TrackembError: no held-out track with two or more patches to query.
    """
    from trackemb.embedding.data import PatchDataset, load_index, split_groups
    from trackemb.embedding.distributed import resolve_device
    from trackemb.embedding.embed import embed_keys
    from trackemb.embedding.export import encoder_from_checkpoint
    from trackemb.embedding.model import encoder_from_args
    from trackemb.embedding.rank import effective_rank
    from trackemb.embedding.split import groups_of, read_split
    from trackemb.storage.store import open_reader

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    model, ckpt = encoder_from_checkpoint(run_dir, which)
    config = ckpt.get("config") or {}
    val_frac, seed = float(config.get("val_frac", 0.2)), int(config.get("seed", 0))
    window_s = config.get("negative_window_s")
    index = load_index(store_path, window_s)
    # The training split: held-out videos, or held-out time windows with val_by="group".
    val_by = str(config.get("val_by", "video"))
    persisted = read_split(run_dir)
    if persisted is not None:
        val_groups = groups_of(index, persisted["val_groups"])
    else:
        log.warning("%s has no split.json (made before splits were saved); recomputing the split", run_dir)
        _, val_groups = split_groups(
            index, val_frac, seed, val_by=val_by, min_tracks=int(config.get("val_min_tracks", 0))
        )
    val_videos = np.unique(index.group_video[val_groups])
    mode = "held-out videos" if val_by == "video" else f"held-out {window_s} s windows"
    if len(val_videos) == 0:
        # Too few videos to hold any out: say so in the report rather than silently mixing.
        log.warning(
            "no held-out videos (val_frac=%s, %d videos); evaluating on TRAINING videos",
            val_frac,
            len(index.video_shas),
        )
        val_groups, mode = np.arange(len(index.group_video)), "training videos (none held out)"
        val_videos = np.arange(len(index.video_shas))
    in_val = np.isin(index.group, val_groups)
    track_sizes = np.bincount(index.track[in_val], minlength=int(index.track.max(initial=-1)) + 1)
    rows = np.flatnonzero(in_val & (track_sizes[index.track] >= 2)) if in_val.any() else np.zeros(0, np.int64)
    if len(rows) < 2:
        raise TrackembError(f"{store_path}: no {mode} track with >= 2 patches to evaluate retrieval on")
    keys = [k.decode() for k in index.keys[rows]]
    labels = index.track[rows]

    dev = resolve_device(device)
    reader = open_reader(str(store_path))
    input_px = int(ckpt["model_args"]["input_px"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # training builds its encoder right after seeding with cfg.seed
        random_model = encoder_from_args({**ckpt["model_args"], "embed_layer": model.embed_layer}).eval()
    encoders = {
        "trained": (model.to(dev), input_px),
        "random_init": (random_model.to(dev), input_px),
        "raw_pixels": (lambda x: x.flatten(1), RAW_PIXELS_PX),
    }
    methods = {}
    with reader:
        for name, (encode, px) in encoders.items():
            emb = embed_keys(encode, reader, keys, input_px=px, batch_size=batch_size, device=dev)
            methods[name] = retrieval_metrics(emb, labels, seed=seed) | {"eff_rank": effective_rank(emb)}
            patches = PatchDataset(reader, index.keys[rows], px)
            ctx = retrieval_metrics(
                _embed_swapped(encode, patches, labels, dev, batch_size), labels, nmi=False
            )
            methods[name] |= {"ctx_R@1": ctx["R@1"], "ctx_MAP@R": ctx["MAP@R"]}
            log.info("%s: %s", name, {m: round(methods[name][m], 3) for m in METRIC_NAMES})

    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "store": str(store_path),
        "step": int(ckpt["step"]) if "step" in ckpt else None,
        "checkpoint": which,
        "embedding_layer": model.embed_layer,
        "seed": seed,
        "split": {
            "mode": mode,
            "val_frac": val_frac,
            "videos": [str(s) for s in index.video_shas[val_videos]],
            "groups": len(val_groups),
        },
        "queries": len(rows),
        "tracks": len(np.unique(labels)),
        "videos": len(np.unique(index.video[rows])),
        "chance_R@1": _chance_r1(labels),
        "methods": methods,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = _markdown(report)
    (out_dir / "evaluation.md").write_text(markdown)
    return {**report, "markdown": markdown}
