"""Prefect flow: checkpoint -> exported encoder -> embeddings of every patch -> clusters -> evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from trackemb.config import ExportConfig
from trackemb.flows import progress


@task(task_run_name="export {run_dir}")
def export_task(run_dir: str, out_dir: str, cfg: ExportConfig, store: str | None) -> str:
    from trackemb.embedding.export import export_run

    return str(export_run(run_dir, out_dir, cfg, store))


@task(task_run_name="embed {store}")
def embed_task(export_dir: str, store: str, cfg: ExportConfig) -> int:
    from trackemb.embedding.embed import embed_store

    emb, _ = embed_store(
        export_dir, store, batch_size=cfg.batch_size, progress=progress.reporter("embed patches")
    )
    return int(emb.shape[0])


@task(task_run_name="cluster {export_dir}")
def cluster_task(export_dir: str, cfg: ExportConfig, store: str) -> dict[str, Any]:
    from trackemb.embedding.cluster import cluster_embeddings

    return cluster_embeddings(export_dir, cfg, store_path=store).as_dict()


@task(task_run_name="evaluate {run_dir}")
def evaluate_task(run_dir: str, store: str, out_dir: str) -> dict[str, Any]:
    from trackemb.embedding.evaluate import evaluate_run
    from trackemb.embedding.report import write_report

    report = evaluate_run(run_dir, store, out_dir=out_dir)
    return {**report, "report_html": str(write_report(out_dir, report))}


@flow(name="trackemb-export", log_prints=False)
def export_flow(
    run_dir: str,
    out_dir: str,
    store: str | None = None,
    config: ExportConfig = ExportConfig(),
    evaluate: bool = True,
) -> dict[str, Any]:
    """Export the encoder of ``run_dir``; with a store, also embed, cluster and evaluate its patches."""
    logger = get_run_logger()
    export_dir = export_task(run_dir, out_dir, config, store)
    result: dict[str, Any] = {"export_dir": export_dir}
    if store:
        result["embedded"] = embed_task(export_dir, store, config)
        result["clusters"] = cluster_task(export_dir, config, store)
        if evaluate:
            result["evaluation"] = evaluate_task(run_dir, store, export_dir)
    logger.info("exported to %s", export_dir)
    files = "\n".join(f"- `{p}`" for p in sorted(Path(export_dir).iterdir()))
    create_markdown_artifact(
        key="export-summary", markdown=f"# Export `{export_dir}`\n\n{files}\n", description="trackemb export"
    )
    return result
