"""``trackemb train`` and ``trackemb evaluate``: the encoder, and how well it retrieves held-out tracks."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from trackemb.cli import preflight
from trackemb.cli.app import ConfigOpt, app, fail, load, prefect_logging
from trackemb.cli.present import RichReporter, out, print_metrics
from trackemb.config import TrainConfig

_T = TrainConfig()


def _default(value: object) -> str:
    return f" \\[config default: {value}]"


def exit_if_stopped(what: str) -> None:
    """After Ctrl-C / SIGTERM stopped a run cleanly: say how to continue, exit 128 + signal."""
    from trackemb.embedding import stop

    signum = stop.stop_signal()
    if signum is not None:
        fail(
            f"{what} stopped by {signal.Signals(signum).name}; the checkpoint is saved, add --resume to continue",
            128 + signum,
        )


@app.command()
def train(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="PatchStore written by `trackemb harvest`.")],
    run_dir: Annotated[
        Path,
        typer.Option(
            "--run-dir", "-o", metavar="DIR", help="Where checkpoints, config.json and TensorBoard logs go."
        ),
    ],
    config: ConfigOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue exactly where the last checkpoint in RUN_DIR stopped.")
    ] = False,
    allow_changes: Annotated[
        bool,
        typer.Option(
            "--allow-changes",
            help="With --resume: continue even though steps, schedule, data settings or the number of "
            "processes differ from the checkpoint's (refused by default: not an exact continuation).",
        ),
    ] = False,
    steps: Annotated[
        int | None, typer.Option(metavar="N", help="Optimiser steps in total." + _default(_T.steps))
    ] = None,
    batch_pairs: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="Positive pairs per batch (from many videos)." + _default(_T.batch_pairs)
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="Backbone: resnet18, resnet34, resnet50 or smallcnn." + _default(_T.arch)
        ),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(metavar="LR", help="Peak learning rate." + _default(_T.lr))
    ] = None,
    margin: Annotated[
        float | None,
        typer.Option(metavar="M", help="Triplet margin on cosine distance." + _default(_T.mine.margin)),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="auto (CUDA when present), cpu or cuda." + _default(_T.device)),
    ] = None,
    num_workers: Annotated[
        int | None, typer.Option(metavar="N", help="DataLoader worker processes." + _default(_T.num_workers))
    ] = None,
) -> None:
    """Train the Siamese encoder, NT-Xent or triplet loss (a Prefect flow); watch it with `tensorboard --logdir RUN_DIR`.

    Ctrl-C or SIGTERM stops after the current step with a checkpoint; `--resume` continues.
    """
    overrides = {
        "steps": steps, "batch_pairs": batch_pairs, "arch": arch, "lr": lr,
        "mine.margin": margin, "device": device, "num_workers": num_workers,
    }  # fmt: skip
    cfg = load(TrainConfig, config, "train", overrides)
    preflight.new_run_dir(run_dir, resume)
    preflight.trainable_store(store, windows=cfg.negative_window_s is not None)
    from trackemb.flows.train import train_flow

    prefect_logging()
    with RichReporter():
        result = train_flow(str(store), str(run_dir), cfg, resume=resume, allow_changes=allow_changes)
    print_metrics(f"training run {run_dir} (step {result.get('step')})", result.get("metrics", {}))
    out.print(f"checkpoint: {result.get('checkpoint')}\ntensorboard --logdir {run_dir}", highlight=False)
    exit_if_stopped("training")


@app.command()
def evaluate(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="Training run directory (holds ckpt.pt).")
    ],
    store: Annotated[Path, typer.Option(metavar="STORE", help="PatchStore the run was trained on.")],
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="DIR", help="Where evaluation.md/json go (default RUN_DIR)."),
    ] = None,
) -> None:
    """R@1, R@5, MAP@R and NMI on held-out tracks, next to a random-init encoder and raw pixels.

    Writes evaluation.md/json and a one-page report.html (verdict, metrics, curves, pictures) to the output folder.
    """
    preflight.trained_run(run_dir)
    preflight.readable_store(store)
    if out_dir is not None:
        preflight.output_dir(out_dir)
    from trackemb.embedding.evaluate import evaluate_run
    from trackemb.embedding.report import write_report

    report = evaluate_run(run_dir, store, out_dir=out_dir or run_dir)
    out.print(report["markdown"], markup=False, highlight=False)
    out.print(f"report: {write_report(out_dir or run_dir, report)}", markup=False, highlight=False)
