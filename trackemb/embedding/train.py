"""Train a Siamese encoder on tracked patches with a triplet loss (Wang & Gupta, ICCV 2015).

Reads top to bottom: setup -> data -> model -> resume -> loop (embed the batch with the
one shared encoder, mine triplets, step, log, validate, checkpoint). Every random choice
of a step (batch, augmentation, mining) derives from (seed, step, rank), so a resumed
run replays exactly what a straight run would have done.

    python -m trackemb.embedding.train --store STORE --run-dir RUN [--config cfg.toml] [--steps N] [--resume]
    torchrun --nproc-per-node 2 -m trackemb.embedding.train --store STORE --run-dir RUN
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from trackemb.config import ConfigError, TrainConfig, load_config, write_config_json
from trackemb.embedding import monitor, stop
from trackemb.embedding.checkpoint import (
    CKPT_NAME,
    restore_training,
    resumed_metrics,
    rng_state,
    save_checkpoint,
)
from trackemb.embedding.data import PairBatchDataset, PatchDataset, held_out_split, load_index, train_sampler
from trackemb.embedding.distributed import all_reduce_mean, setup_distributed, teardown_distributed
from trackemb.embedding.losses import build_loss, cosine_dist, triplet_stats
from trackemb.embedding.miners import mine_at_step
from trackemb.embedding.model import build_encoder
from trackemb.embedding.monitor import (
    CollapseDetector,
    MetricsWriter,
    embed_loader,
    recall_at_1,
)
from trackemb.embedding.triplet_view import log_triplet_views
from trackemb.errors import TrainingError
from trackemb.storage.store import open_reader

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    metrics: dict[str, float]
    checkpoint: Path
    val_r1_before: float | None
    val_r1_after: float | None
    stopped: bool = False  # ended early by a stop request (Ctrl-C / SIGTERM), resumable

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (paths as strings), e.g. for a Prefect artifact."""
        return {
            "run_dir": str(self.run_dir), "step": self.step, "metrics": dict(self.metrics),
            "checkpoint": str(self.checkpoint), "val_r1_before": self.val_r1_before,
            "val_r1_after": self.val_r1_after, "stopped": self.stopped,
        }  # fmt: skip


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``cfg.lr``, then cosine decay to ``cfg.lr * cfg.min_lr_frac`` at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    ratio = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    assert 0.0 <= ratio <= 1.0
    min_lr = cfg.lr * cfg.min_lr_frac
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - min_lr)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The miner's generator for one step: a function of (seed, step, rank) only."""
    return torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, step, rank, 3]).generate_state(1)[0])
    )


def train(
    store_path: str | Path,
    run_dir: str | Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    writer: MetricsWriter | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    allow_changes: bool = False,
) -> TrainResult:
    """Train the encoder on a PatchStore; checkpoints, config.json and TensorBoard go to ``run_dir``.

    Args:
        store_path: a PatchStore with at least two harvested videos.
        run_dir: output directory; holds ``ckpt.pt`` (resumable), ``config.json`` and ``tb/``.
        cfg: training config (``cfg.mine`` holds the loss/mining settings).
        resume: continue from ``run_dir/ckpt.pt`` when it exists (else start fresh).
        writer: metrics sink; None writes TensorBoard to ``run_dir/tb``. Only rank 0 writes.
        progress: called as ``progress(step, total_steps, metrics)`` after every step.

    Raises:
        TrainingError: fewer than two videos, an existing checkpoint without ``resume``, a
            checkpoint of another architecture, or a non-finite loss.
    """
    # ============ setup ============
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CKPT_NAME
    if ckpt_path.exists() and not resume:
        raise TrainingError(f"{ckpt_path} exists; resume it (resume=True, --resume) or use a new run dir")
    dist_info = setup_distributed(cfg.device)
    device, is_main, rank = dist_info.device, dist_info.is_main, dist_info.rank
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if use_amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    np.random.seed(cfg.seed + rank)
    random.seed(cfg.seed + rank)
    own_writer = is_main and writer is None
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config_json(cfg, run_dir / "config.json")
        writer = writer if writer is not None else monitor.TensorBoardWriter(run_dir / "tb")
    else:
        writer = monitor.NullWriter()
    reader = None
    try:
        # ============ data ============
        reader = open_reader(store_path)  # one LMDB handle per process, shared by every dataset below
        index = load_index(reader, cfg.negative_window_s)
        if len(index.group_video) < 2:
            raise TrainingError(
                f"{store_path}: {len(index.video_shas)} video(s) with positive pairs; negatives are patches of "
                "*other* videos, so training needs at least two harvested videos with tracks"
            )
        train_g, val_g = held_out_split(index, cfg)
        sampler = train_sampler(index, train_g, cfg, rank, dist_info.world_size)
        # Negatives and batch mixing use the group of each track: the video by default, a time
        # window of it with negative_window_s (with only a few videos, other-video negatives are
        # solved by recognising the scene, so the encoder learns scenes and merges instances).
        track_group = torch.from_numpy(index.track_group())
        pin = device.type == "cuda"
        # Workers are spawned, not forked: a fork copies the threads of whatever hosts us
        # (Prefect's API log and event workers), and such children died at random under a flow.
        workers = (
            {"multiprocessing_context": "forkserver", "persistent_workers": True} if cfg.num_workers else {}
        )
        loader = DataLoader(
            PairBatchDataset(reader, index, cfg), sampler=sampler, batch_size=None,
            num_workers=cfg.num_workers, pin_memory=pin, **workers,
        )  # fmt: skip
        val_rows = np.flatnonzero(np.isin(index.group, val_g))
        val_loader = DataLoader(
            PatchDataset(reader, index.keys[val_rows], cfg.input_px), batch_size=256,
            num_workers=min(cfg.num_workers, 1), pin_memory=pin, **workers,
        )  # fmt: skip
        val_tracks = torch.from_numpy(index.track[val_rows])
        log.info(
            "%d patches; %d training groups of %d videos (%d pairs, %d harvested triplets); "
            "%d held-out groups (%d patches, %d tracks)",
            len(index.keys), len(train_g), len(np.unique(index.group_video[train_g])), len(sampler.pairs),
            len(sampler.triplets), len(val_g), len(val_rows), len(np.unique(index.track[val_rows])),
        )  # fmt: skip

        def validate(step: int) -> float | None:
            if not is_main or len(val_rows) == 0:
                return None
            r1 = recall_at_1(embed_loader(model, val_loader, device, amp_dtype)[0], val_tracks)
            writer.scalar("val/R@1", r1, step)
            log.info("step %d: val R@1 %.3f over %d held-out patches", step, r1, len(val_rows))
            return r1

        # ============ model, loss, optimizer ============
        torch.manual_seed(cfg.seed)  # same init on every rank; evaluate.py rebuilds it as the random baseline
        model = build_encoder(cfg.arch, cfg.embed_dim, cfg.input_px, cfg.init_weights).to(device)
        loss_fn = build_loss(cfg.mine)
        if cfg.optimizer == "adamw":
            optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            optimizer = torch.optim.SGD(
                model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay
            )

        # ============ resume ============
        step, r1_before, ckpt = 0, None, None
        if resume and ckpt_path.exists():
            ckpt = restore_training(
                ckpt_path, model=model, optimizer=optimizer, scaler=scaler, sampler=sampler,
                model_args=model.model_args(), config=cfg.model_dump(mode="json"), allow_changes=allow_changes,
            )  # fmt: skip
            step, r1_before = int(ckpt["step"]), ckpt["metrics"].get("val_r1_before")
            log.info("resumed from %s at step %d", ckpt_path, step)
        elif resume:
            log.info("no checkpoint in %s; starting from scratch", run_dir)
        # Siamese: one module embeds anchors, positives and negatives in a single forward.
        net = (
            DistributedDataParallel(model, device_ids=[device] if pin else None)
            if dist_info.enabled
            else model
        )
        if step == 0:
            r1_before = validate(0)

        # ============ training loop ============
        collapse = CollapseDetector(cfg.mine.margin, cfg.collapse_window_steps)
        metrics, r1_after = resumed_metrics(ckpt, r1_before)  # a finished run reports its last metrics
        batches = iter(loader)
        t_last, seen = time.perf_counter(), 0
        while step < cfg.steps:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = next(batches)
            assert batch["step"] == step, (batch["step"], step)
            images = batch["images"].to(device, non_blocking=True)
            track = batch["track"]
            group = track_group[track].to(device)
            track = track.to(device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=use_amp):
                emb = net(images).float()
            harvested = None
            if batch["groups"] == 3:  # harvested triplets laid out as (anchors, positives, negatives)
                b = torch.arange(len(images) // 3, device=device)
                harvested = (b, b + len(b), b + 2 * len(b))
            gen = step_generator(cfg.seed, step, rank)
            triplets, strategy = mine_at_step(cosine_dist(emb), track, group, step, cfg.mine, gen, harvested)
            loss = loss_fn(emb, indices_tuple=triplets)
            loss_value = float(all_reduce_mean(loss.detach(), dist_info))  # CPU-GPU sync point, once a step
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"non-finite loss {loss_value} at step {step}; lower the lr or turn amp off"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            seen += len(images)

            # ============ logging, validation, checkpoint ============
            metrics = triplet_stats(emb, triplets, cfg.mine.margin) | {
                "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                "aug_strength": float(batch["strength"]), "hard_mining": float(strategy != "random"),
            }  # fmt: skip
            collapsed = collapse.update(step, loss_value, metrics["emb_std"])
            metrics["collapse"] = float(collapsed)
            if step % cfg.log_every_steps == 0 or step == cfg.steps or collapsed:
                now = time.perf_counter()
                metrics["samples_per_s"] = seen / max(now - t_last, 1e-9)
                t_last, seen = now, 0
                for key, value in metrics.items():
                    writer.scalar(f"train/{key}", value, step)
                if collapsed:
                    writer.text("train/collapse", f"collapse suspected at step {step}: {metrics}", step)
            if step % cfg.val_every_steps == 0 or step == cfg.steps:
                log_triplet_views(writer, images, emb, triplets, cfg.mine.margin, step)
                r1_after = validate(step)
                metrics["val_r1"] = math.nan if r1_after is None else r1_after
            stopping = stop.requested()  # Ctrl-C / SIGTERM: checkpoint this step, then leave the loop
            if is_main and (step % cfg.ckpt_every_steps == 0 or step == cfg.steps or stopping):
                save_checkpoint(ckpt_path, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                    "step": step, "rng": rng_state(), "sampler": sampler.state_dict(step),
                    "model_args": model.model_args(), "config": cfg.model_dump(mode="json"),
                    "metrics": {"val_r1_before": r1_before, **metrics},
                })  # fmt: skip
            if progress is not None:
                progress(step, cfg.steps, metrics)
            if stopping:
                log.warning(
                    "stopped at step %d of %d; checkpoint %s (continue with --resume)",
                    step,
                    cfg.steps,
                    ckpt_path,
                )
                break

        # ============ finish: projector of held-out patches ============
        if is_main and cfg.projector_max_patches > 0 and len(val_rows) > 0 and not stop.requested():
            rows = val_rows[: cfg.projector_max_patches]
            sub = DataLoader(PatchDataset(reader, index.keys[rows], cfg.input_px), batch_size=256)
            emb_all, thumbs = embed_loader(model, sub, device, amp_dtype, keep_thumbnails=len(rows))
            # Columns to colour and search by in TensorBoard's projector: file, track, negative group.
            names = {v.sha: Path(v.path).name for v in reader.videos()}
            meta = [[names.get(s, s[:12]), str(t), str(g)] for s, t, g in zip(
                index.video_shas[index.video[rows]], index.track[rows], index.group[rows], strict=True)]  # fmt: skip
            writer.embedding(
                emb_all, meta, thumbs, step, tag="val_patches", header=["video", "track", "group"]
            )
        log.info("finished at step %d: val R@1 %s -> %s", step, r1_before, r1_after)
        return TrainResult(run_dir, step, metrics, ckpt_path, r1_before, r1_after, stop.requested())
    finally:
        if own_writer:
            writer.close()
        if reader is not None:
            reader.close()
        teardown_distributed(dist_info)


def main(argv: list[str] | None = None) -> None:
    """``python -m trackemb.embedding.train`` / ``torchrun ... -m trackemb.embedding.train`` entry point."""
    parser = argparse.ArgumentParser(description="Train the trackemb encoder on a PatchStore.")
    parser.add_argument("--store", required=True, help="PatchStore directory written by `trackemb harvest`.")
    parser.add_argument("--run-dir", required=True, help="Output directory (ckpt.pt, config.json, tb/).")
    parser.add_argument("--config", help="TOML file with TrainConfig keys (top level or a [train] table).")
    parser.add_argument("--steps", type=int, help="Override the number of training steps.")
    parser.add_argument("--resume", action="store_true", help="Continue from RUN_DIR/ckpt.pt if present.")
    parser.add_argument(
        "--allow-changes",
        action="store_true",
        help="Resume even with other steps/schedule/data settings or another number of processes.",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(
            TrainConfig, args.config, {"steps": args.steps}, section="train", allow_top_level=True
        )
    except ConfigError as exc:
        parser.error(str(exc))
    with stop.on_signals():
        result = train(args.store, args.run_dir, cfg, resume=args.resume, allow_changes=args.allow_changes)
    log.info("run dir %s, checkpoint %s, metrics %s", result.run_dir, result.checkpoint, result.metrics)


if __name__ == "__main__":
    # Run the importable module's main so log records carry "trackemb.embedding.train", not "__main__".
    from trackemb.embedding.train import main as _main

    _main()
