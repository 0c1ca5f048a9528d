"""Train a Siamese encoder on tracked patches with a triplet loss (Wang & Gupta, ICCV 2015).

Reads top to bottom: setup -> data -> model -> resume -> loop (embed the batch with the
one shared encoder, mine triplets, step, log, validate, checkpoint). Every random choice
of a step (batch, augmentation, mining) derives from (seed, step, rank), so a resumed
run replays exactly what a straight run would have done.

    python -m trackemb.embedding.train --store STORE --run-dir RUN [--config cfg.toml] [--steps N] [--resume]
    torchrun --nproc-per-node 2 -m trackemb.embedding.train --store STORE --run-dir RUN
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from trackemb.config import TrainConfig, write_config_json
from trackemb.embedding import monitor, stop
from trackemb.embedding.checkpoint import (
    restore_training,
    resumed_metrics,
    rng_state,
    save_checkpoint,
)
from trackemb.embedding.collapse import CollapseDetector
from trackemb.embedding.data import PairBatchDataset, PatchDataset, load_index, train_sampler
from trackemb.embedding.distributed import (
    all_reduce_mean,
    barrier,
    setup_distributed,
    teardown_distributed,
)
from trackemb.embedding.metrics import embed_loader
from trackemb.embedding.model import build_encoder
from trackemb.embedding.monitor import MetricsWriter
from trackemb.embedding.result import TrainResult, ckpt_metrics, train_result
from trackemb.embedding.rundir import BEST_CKPT_NAME, CKPT_NAME
from trackemb.embedding.split import run_split, split_summary
from trackemb.embedding.step import (
    TrainView,
    build_optimizer,
    loss_and_stats,
    lr_at,
    step_generator,
    to_batch,
)
from trackemb.embedding.triplet_view import log_triplet_views
from trackemb.embedding.validate import LAYERS, Validator
from trackemb.errors import TrainingError
from trackemb.storage.store import open_reader

log = logging.getLogger(__name__)


def export_layers(cfg: TrainConfig) -> tuple[str, ...]:
    """Layers that may be exported (and so may win keep-best)."""
    return LAYERS if cfg.embed_layer == "auto" else (cfg.embed_layer,)


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
        run_dir: output directory; holds ``ckpt.pt`` (last, resumable), ``ckpt_best.pt`` (best
            validation MAP@R so far, step 0 included), ``split.json``, ``config.json`` and ``tb/``.
        cfg: training config (``cfg.mine`` holds the loss/mining settings).
        resume: continue from ``run_dir/ckpt.pt`` when it exists (else start fresh).
        writer: metrics sink; None writes TensorBoard to ``run_dir/tb``. Only rank 0 writes.
        progress: called as ``progress(step, total_steps, metrics)`` after every step.
        allow_changes: resume even with changed steps/schedule/data settings or another number
            of processes (a continuation, not an exact replay).

    Raises:
        TrainingError: fewer than two videos, an existing checkpoint without ``resume``, a
            checkpoint of another architecture, or a non-finite loss.
    """
    # ============ setup ============
    run_dir = Path(run_dir)
    ckpt_path, best_path = run_dir / CKPT_NAME, run_dir / BEST_CKPT_NAME
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
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_config_json(cfg, run_dir / "config.json")
            writer = writer if writer is not None else monitor.TensorBoardWriter(run_dir / "tb")
        else:
            writer = monitor.NullWriter()
        # Rank 0 chooses and saves the split; the others read the same split.json after the barrier.
        train_g, val_g = run_split(index, cfg, run_dir) if is_main else (None, None)
        barrier(dist_info)
        if not is_main:
            train_g, val_g = run_split(index, cfg, run_dir)
        sampler = train_sampler(index, train_g, cfg, rank, dist_info.world_size)
        # Negatives and batch mixing use the group of each track: the video by default, a time
        # window of it with negative_window_s (with only a few videos, other-video negatives are
        # solved by recognising the scene, so the encoder learns scenes and merges instances).
        track_group = torch.from_numpy(index.track_group())
        apart_keys = index.apart_keys() if cfg.mine.in_video_negatives else None
        overlap_keys = index.overlap_keys()
        pin = device.type == "cuda"
        # Workers are spawned, not forked: a fork copies the threads of whatever hosts us
        # (Prefect's API log and event workers), and such children died at random under a flow.
        # Workers ignore SIGINT: a terminal's Ctrl-C reaches the whole process group, and the
        # main process stops at a step boundary (embedding/stop.py) with its workers alive.
        workers = (
            {"multiprocessing_context": "forkserver", "persistent_workers": True,
             "worker_init_fn": stop.ignore_interrupts} if cfg.num_workers else {}
        )  # fmt: skip
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
        data_summary = split_summary(index, train_g, val_g, len(sampler.pairs))
        log.info("%d patches, %d training groups, %d held-out groups; %s", len(index.keys), len(train_g),
                 len(val_g), data_summary)  # fmt: skip

        # ============ model, loss, optimizer ============
        torch.manual_seed(cfg.seed)  # same init on every rank; evaluate.py rebuilds it as the random baseline
        model = build_encoder(cfg.arch, cfg.embed_dim, cfg.input_px, cfg.init_weights).to(device)
        model.freeze_batchnorm_stats(cfg.batchnorm == "frozen")
        optimizer = build_optimizer(model, cfg)

        def save_best(state: dict[str, Any]) -> None:
            save_checkpoint(best_path, {
                "model": model.state_dict(), "step": state["best"]["step"], "model_args": model.model_args(),
                "config": cfg.model_dump(mode="json"), "metrics": dict(state["best"]), "best": state,
                "data_summary": data_summary,
            })  # fmt: skip

        validate = Validator(
            model, val_loader, val_tracks, writer, export_layers(cfg), device, amp_dtype, save_best,
            enabled=is_main and len(val_rows) > 0, collapse_layer="head" if cfg.embed_layer == "auto" else cfg.embed_layer,
        )  # fmt: skip

        # ============ resume ============
        step, ckpt = 0, None
        if resume and ckpt_path.exists():
            ckpt = restore_training(
                ckpt_path, model=model, optimizer=optimizer, scaler=scaler, sampler=sampler,
                model_args=model.model_args(), config=cfg.model_dump(mode="json"),
                allow_changes=allow_changes,
            )  # fmt: skip
            step = int(ckpt["step"])
            validate.load(ckpt.get("best"))
            log.info("resumed from %s at step %d", ckpt_path, step)
        elif resume:
            log.info("no checkpoint in %s; starting from scratch", run_dir)
        # Siamese: one module embeds anchors, positives and negatives in a single forward.
        view = TrainView(model)
        net = (
            DistributedDataParallel(view, device_ids=[device] if pin else None) if dist_info.enabled else view
        )
        if step == 0:
            validate(0)

        # ============ training loop ============
        collapse = CollapseDetector(cfg.mine.margin, cfg.collapse_window_steps)
        metrics = resumed_metrics(ckpt, None)[0]  # a finished run reports its last metrics
        batches = iter(loader)
        t_last, seen = time.perf_counter(), 0
        while step < cfg.steps:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            raw = next(batches)
            if raw["step"] != step:
                raise TrainingError(f"data order broken: batch of step {raw['step']} at step {step}")
            batch = to_batch(raw, track_group, apart_keys, index.n_tracks, device, overlap_keys)
            gen = step_generator(cfg.seed, step, rank)
            loss, stats, emb, triplets = loss_and_stats(net, batch, step, cfg, gen, amp_dtype)
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
            seen += len(batch.images)

            # ============ logging, validation, checkpoint ============
            metrics = stats | {
                "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm), "aug_strength": batch.strength,
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
                log_triplet_views(writer, batch.images, emb, triplets, cfg.mine.margin, step)
                scores = validate(step)
                metrics["val_r1"] = math.nan if scores is None else scores["head"]["R@1"]
            stopping = stop.requested()  # Ctrl-C / SIGTERM: checkpoint this step, then leave the loop
            if is_main and (step % cfg.ckpt_every_steps == 0 or step == cfg.steps or stopping):
                save_checkpoint(ckpt_path, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                    "step": step, "rng": rng_state(), "sampler": sampler.state_dict(step),
                    "model_args": model.model_args(), "config": cfg.model_dump(mode="json"),
                    "metrics": ckpt_metrics(validate.best, metrics), "best": validate.best.state(), "data_summary": data_summary,
                })  # fmt: skip
            if progress is not None:
                progress(step, cfg.steps, metrics)
            if stopping:
                log.warning("stopped at step %d of %d; checkpoint %s (continue with --resume)", step,
                            cfg.steps, ckpt_path)  # fmt: skip
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
        result = train_result(run_dir, step, metrics, ckpt_path, validate.best, stop.requested())
        log.info("finished at step %d: val R@1 (head) %s -> %s; best %s", step, result.val_r1_before,
                 result.val_r1_after, validate.best.best)  # fmt: skip
        return result
    finally:
        if own_writer and writer is not None:
            writer.close()
        if reader is not None:
            reader.close()
        teardown_distributed(dist_info)


def main(argv: list[str] | None = None) -> None:
    """``python -m trackemb.embedding.train`` / torchrun target: parses flags, calls the same train() as the CLI."""
    from trackemb.embedding.launch import main as launch

    launch(argv, train)


if __name__ == "__main__":
    # Run the importable module's main so log records carry "trackemb.embedding.train", not "__main__".
    from trackemb.embedding.train import main as _main

    _main()
