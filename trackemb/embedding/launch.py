"""``python -m trackemb.embedding.train`` / ``torchrun ... -m trackemb.embedding.train``: a thin launcher.

It parses a few flags and calls the same :func:`trackemb.embedding.train.train` the CLI calls
(train.py passes it in, so this module does not import train.py back).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

from trackemb.config import ConfigError, TrainConfig, load_config
from trackemb.embedding import stop

log = logging.getLogger("trackemb.embedding.train")


def main(argv: list[str] | None, train: Callable[..., Any]) -> None:
    """``python -m trackemb.embedding.train`` / ``torchrun ... -m trackemb.embedding.train`` entry point:
    parses ``argv`` and runs ``train`` (:func:`trackemb.embedding.train.train`)."""
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
