"""``trackemb pipeline`` and ``trackemb serve``: every stage as one flow, or deployments on a schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trackemb.cli import preflight
from trackemb.cli.app import ConfigOpt, app, fail, load, prefect_logging
from trackemb.cli.present import RichReporter, out
from trackemb.cli.train import exit_if_stopped
from trackemb.config import ExportConfig, HarvestConfig, TrainConfig


@app.command()
def pipeline(
    video_dir: Annotated[Path, typer.Argument(metavar="VIDEO_DIR", help="Folder of videos.")],
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder: patches.lmdb, runs/, export/.")
    ],
    config: ConfigOpt = None,
    steps: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help=f"Training steps (overrides \\[train] steps). \\[config default: {TrainConfig().steps}]",
        ),
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail if any video fails to harvest.")] = False,
) -> None:
    """harvest -> train -> export -> cluster -> evaluate as one Prefect flow; re-runs skip finished work."""
    hcfg = load(HarvestConfig, config, "harvest", {})
    tcfg = load(TrainConfig, config, "train", {"steps": steps})
    ecfg = load(ExportConfig, config, "export", {})
    preflight.video_source(video_dir)
    preflight.output_dir(out_dir)
    preflight.writable_store(out_dir / "patches.lmdb")
    from trackemb.flows.pipeline import pipeline_flow

    prefect_logging()
    with RichReporter():
        result = pipeline_flow(str(video_dir), str(out_dir), hcfg, tcfg, ecfg, strict=strict)
    exit_if_stopped("the pipeline's training")
    out.print_json(data={k: result[k] for k in ("store", "run_dir", "export_dir", "harvest")})
    evaluation = result.get("export", {}).get("evaluation", {})
    if evaluation.get("markdown"):
        out.print(evaluation["markdown"], markup=False, highlight=False)
    if evaluation.get("report_html"):
        out.print(f"report: {evaluation['report_html']}", markup=False, highlight=False)


@app.command()
def serve(
    video_dir: Annotated[
        Path,
        typer.Argument(metavar="VIDEO_DIR", help="Folder to watch; new videos are harvested on each run."),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder (as for `pipeline`).")
    ] = Path("runs/served"),
    interval: Annotated[
        int | None, typer.Option(metavar="SECONDS", help="Seconds between harvest runs.")
    ] = 600,
    cron: Annotated[
        str | None, typer.Option(metavar="CRON", help="Cron schedule instead of --interval.")
    ] = None,
    retrain: Annotated[
        str,
        typer.Option(
            metavar="POLICY",
            help="never: harvest only; manual: also serve the pipeline, run it from the UI; "
            "on_new_videos: the schedule runs the pipeline, which retrains only when the store changed.",
        ),
    ] = "manual",
    config: ConfigOpt = None,
) -> None:
    """Serve Prefect deployments over VIDEO_DIR until interrupted (PREFECT_API_URL, or a temporary local API)."""
    if retrain not in ("never", "manual", "on_new_videos"):
        fail(f"--retrain must be never, manual or on_new_videos, not {retrain!r}")
    if not video_dir.is_dir():
        fail(f"{video_dir}: no such folder; pass the folder to watch")
    preflight.output_dir(out_dir)
    if config is not None:
        load(HarvestConfig, config, "harvest", {})
    from trackemb.flows.deploy import serve_folder

    prefect_logging()
    serve_folder(
        str(video_dir), str(out_dir), interval_s=None if cron else interval, cron=cron,
        retrain_policy=retrain, config=str(config) if config else None,  # type: ignore[arg-type]
    )  # fmt: skip
