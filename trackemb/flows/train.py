"""Prefect flow around the library training loop.

A crash mid-run is retried with ``resume=True``, so the retry continues from the last
atomic checkpoint instead of starting over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from trackemb.config import TrainConfig
from trackemb.embedding.rundir import CKPT_NAME
from trackemb.flows import progress


@task(retries=1, retry_delay_seconds=5, task_run_name="train {run_dir}")
def train_task(
    store: str, run_dir: str, cfg: TrainConfig, resume: bool, allow_changes: bool = False
) -> dict[str, Any]:
    from trackemb.embedding import stop
    from trackemb.embedding.train import train

    # After a failed attempt a checkpoint may exist: the retry resumes from it.
    resume = resume or (Path(run_dir) / CKPT_NAME).exists()
    # Installed here, inside the flow, because Prefect's engine replaces SIGTERM for the flow run.
    with stop.on_signals():
        result = train(
            store,
            run_dir,
            cfg,
            resume=resume,
            progress=progress.reporter("train steps"),
            allow_changes=allow_changes,
        )
    return result.as_dict()


def _metrics_markdown(run_dir: str, result: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {k} | {v:.4g} |" for k, v in result.get("metrics", {}).items() if isinstance(v, int | float)
    )
    return f"# Training run `{run_dir}`\n\nstep {result.get('step')}, checkpoint `{result.get('checkpoint')}`\n\n| metric | value |\n|---|---:|\n{rows}\n"


@flow(name="trackemb-train", log_prints=False)
def train_flow(
    store: str,
    run_dir: str,
    config: TrainConfig = TrainConfig(),
    resume: bool = False,
    allow_changes: bool = False,
) -> dict[str, Any]:
    """Train the Siamese triplet encoder on a PatchStore; TensorBoard logs go to ``run_dir``."""
    logger = get_run_logger()
    logger.info("training on %s -> %s (tensorboard --logdir %s)", store, run_dir, run_dir)
    result = train_task(store, run_dir, config, resume, allow_changes)
    create_markdown_artifact(
        key="train-summary", markdown=_metrics_markdown(run_dir, result), description="trackemb train"
    )
    return result
