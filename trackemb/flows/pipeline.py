"""The whole pipeline as one Prefect flow: harvest -> train -> export -> embed -> cluster -> evaluate.

Each stage is a subflow, so the Prefect UI shows them separately. Re-running with the same
inputs skips finished work: videos by content hash (in the store), training by config +
store state, export by export config + training run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from trackemb.config import ExportConfig, HarvestConfig, TrainConfig
from trackemb.embedding.rundir import CKPT_NAME
from trackemb.flows import runs
from trackemb.flows.export import export_flow
from trackemb.flows.harvest import harvest_flow
from trackemb.flows.train import train_flow


@flow(name="trackemb-pipeline", log_prints=False)
def pipeline_flow(
    video_dir: str,
    out_dir: str,
    harvest: HarvestConfig = HarvestConfig(),
    train: TrainConfig = TrainConfig(),
    export: ExportConfig = ExportConfig(),
    strict: bool = False,
    settle_s: float = 0.0,
) -> dict[str, Any]:
    """Harvest ``video_dir`` into ``out_dir/patches.lmdb``, train, and export to ``out_dir/export``.

    ``settle_s``: files changed more recently are left for a later run (watch mode).
    """
    logger = get_run_logger()
    paths = runs.pipeline_layout(out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    harvest_summary = harvest_flow(video_dir, str(paths["store"]), harvest, strict=strict, settle_s=settle_s)

    training = runs.training_work(paths, train)
    train_result = training.done
    if train_result is None:
        train_result = train_flow(
            str(paths["store"]), str(training.out_dir), train, resume=(training.out_dir / CKPT_NAME).exists()
        )
        if train_result.get("stopped"):  # Ctrl-C / SIGTERM: keep the checkpoint, export nothing
            logger.warning("training stopped at step %s; re-run to continue", train_result.get("step"))
            return {
                "store": str(paths["store"]),
                "run_dir": str(training.out_dir),
                "train": train_result,
                "stopped": True,
            }
        runs.mark_finished(training.out_dir, training.key, train_result)
    else:
        logger.info(
            "training %s already finished for this store state and config; skipping", training.out_dir
        )

    exporting = runs.export_work(paths, export, training)
    export_result = exporting.done
    if export_result is None:
        export_result = export_flow(str(training.out_dir), str(paths["export"]), str(paths["store"]), export)
        runs.mark_finished(paths["export"], exporting.key, export_result)
    else:
        logger.info("export %s is up to date; skipping", paths["export"])

    result = {
        "store": str(paths["store"]),
        "run_dir": str(training.out_dir),
        "export_dir": str(paths["export"]),
        "harvest": {k: harvest_summary[k] for k in ("done", "skipped", "failed", "pairs_added", "triplets")},
        "train": train_result,
        "export": export_result,
    }
    create_markdown_artifact(
        key="pipeline-summary", markdown=_summary_markdown(result), description="trackemb pipeline"
    )
    return result


def _summary_markdown(result: dict[str, Any]) -> str:
    h = result["harvest"]
    evaluation = result["export"].get("evaluation", {})
    lines = [
        "# trackemb pipeline",
        "",
        f"- store: `{result['store']}` ({h['done']} new videos, {h['skipped']} already done, {h['failed']} failed, {h['triplets']} triplets)",
        f"- training run: `{result['run_dir']}` (tensorboard --logdir {result['run_dir']})",
        f"- export: `{result['export_dir']}`",
    ]
    if evaluation.get("markdown"):
        lines += ["", evaluation["markdown"]]
    return "\n".join(lines)
