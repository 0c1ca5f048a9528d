"""Serve trackemb's flows as Prefect deployments (a local Prefect server to serve them against: server.py).

Two ways to run trackemb continuously (both documented in the README):

- ``serve_folder``: one long-running process that registers the deployments and runs
  their scheduled and manual runs itself (``prefect.serve``); no work pool needed.
- ``prefect.yaml`` + a ``process`` work pool + ``prefect worker start``: the same flows
  registered once, run by any number of workers.

Either way a scheduled harvest re-reads the folder and only processes new videos,
because the store skips videos whose content hash is already done.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from trackemb.config import ExportConfig, HarvestConfig, TrainConfig, load_config

log = logging.getLogger(__name__)

RetrainPolicy = Literal["never", "manual", "on_new_videos"]
# prefect.yaml's deployment names are `harvest-folder` and `pipeline`. Served ones get
# their own names: they belong to the serving process, not to the work pool, and Prefect
# cannot turn one kind into the other in place (an update keeps the old code location).
HARVEST_DEPLOYMENT = "harvest-folder-served"
PIPELINE_DEPLOYMENT = "pipeline-served"
SCHEDULE_SLUG = "poll-folder"
# Scheduled runs leave files changed this recently for the next poll (still being copied in).
WATCH_SETTLE_S = 10.0


def _schedules(interval_s: int | None, cron: str | None, *, active: bool) -> list[Any]:
    """One schedule with a fixed slug (a cron expression replaces the interval).

    A stable slug lets a re-serve replace the schedule rather than add a second one. A deployment that should not run on its own still gets the schedule, inactive: updating a
    deployment with no schedules would leave an earlier, possibly active, one in place.
    """
    from prefect.schedules import Cron, Interval

    if cron is not None:
        return [Cron(cron, slug=SCHEDULE_SLUG, active=active)]
    if interval_s is not None and interval_s <= 0:
        raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s}")
    return [Interval(interval_s or 600, slug=SCHEDULE_SLUG, active=active and interval_s is not None)]


def build_deployments(
    video_dir: str | Path,
    out_dir: str | Path,
    *,
    interval_s: int | None = 600,
    cron: str | None = None,
    retrain_policy: RetrainPolicy = "manual",
    config: str | Path | None = None,
) -> list[Any]:
    """The runner deployments ``serve_folder`` serves (separate so they can be checked without serving).

    Args:
        video_dir: folder watched for videos (made absolute: served runs start elsewhere).
        out_dir: output root; the store is ``out_dir/patches.lmdb``, as in the pipeline flow.
        interval_s: seconds between scheduled runs (None and no ``cron``: run only when triggered).
        cron: cron schedule; replaces ``interval_s`` when given.
        retrain_policy: ``never`` serves only the harvest deployment; ``manual`` adds the
            pipeline deployment unscheduled (run it from the UI when you want a new model);
            ``on_new_videos`` puts the schedule on the pipeline instead, which harvests and
            retrains only when the store changed.
        config: TOML file with ``[harvest]``, ``[train]``, ``[export]`` tables (as for the CLI);
            the resolved settings become the deployments' default parameters.

    Returns:
        ``prefect.deployments.runner.RunnerDeployment`` objects, harvest first.

    Raises:
        ValueError: a non-positive ``interval_s`` or an unknown policy.
        ConfigError: ``config`` is unreadable or invalid (a ValueError naming the file).
        ImportError: ``on_new_videos`` while the pipeline flow cannot be imported.
    """
    # Module entrypoints (trackemb.flows.harvest.harvest_flow) load from the installed
    # package, whatever directory the serving process was started in.
    from prefect.deployments.runner import EntrypointType

    from trackemb.flows.harvest import harvest_flow

    if retrain_policy not in ("never", "manual", "on_new_videos"):
        raise ValueError(f"unknown retrain_policy {retrain_policy!r}; use never, manual or on_new_videos")
    video_dir, out_dir = Path(video_dir).resolve(), Path(out_dir).resolve()
    harvest_cfg = load_config(HarvestConfig, config, section="harvest").model_dump(mode="json")
    store = out_dir / "patches.lmdb"
    harvest_params = {
        "video_dir": str(video_dir),
        "store": str(store),
        "config": harvest_cfg,
        "lock_timeout_s": 300.0,  # wait for a pipeline run writing the same store instead of failing
        "settle_s": WATCH_SETTLE_S,
    }
    retrain_on_schedule = retrain_policy == "on_new_videos"
    deployments = [
        harvest_flow.to_deployment(
            name=HARVEST_DEPLOYMENT,
            parameters=harvest_params,
            concurrency_limit=1,
            tags=["trackemb", "harvest"],
            entrypoint_type=EntrypointType.MODULE_PATH,
            schedules=_schedules(interval_s, cron, active=not retrain_on_schedule),
        )
    ]
    if retrain_policy == "never":
        return deployments
    try:
        from trackemb.flows.pipeline import pipeline_flow
        from trackemb.flows.runs import pipeline_layout
    except ImportError:
        if retrain_policy == "on_new_videos":
            raise
        log.warning("trackemb.flows.pipeline is not importable; serving harvest only", exc_info=True)
        return deployments
    if pipeline_layout(out_dir)["store"] != store:
        raise ValueError(
            f"the harvest deployment's store {store} is not the pipeline's store under {out_dir}"
        )
    deployments.append(
        pipeline_flow.to_deployment(
            name=PIPELINE_DEPLOYMENT,
            parameters={
                "video_dir": str(video_dir),
                "out_dir": str(out_dir),
                "harvest": harvest_cfg,
                "train": load_config(TrainConfig, config, section="train").model_dump(mode="json"),
                "export": load_config(ExportConfig, config, section="export").model_dump(mode="json"),
                "settle_s": WATCH_SETTLE_S,
            },
            concurrency_limit=1,
            tags=["trackemb", "pipeline"],
            entrypoint_type=EntrypointType.MODULE_PATH,
            schedules=_schedules(interval_s, cron, active=retrain_on_schedule),
        )
    )
    return deployments


def serve_folder(
    video_dir: str,
    out_dir: str,
    *,
    interval_s: int | None = 600,
    cron: str | None = None,
    retrain_policy: RetrainPolicy = "manual",
    config: str | Path | None = None,
    limit: int | None = 1,
) -> None:
    """Watch ``video_dir``: harvest new videos on a schedule (and optionally retrain), until interrupted.

    Blocks, running the deployments' runs in subprocesses of this process. Needs a Prefect
    API (``PREFECT_API_URL``; see ``local_server``). On Ctrl-C the schedules are paused.

    Args:
        video_dir: folder of videos; files added later are picked up by the next run.
        out_dir: output root (``out_dir/patches.lmdb``, and ``runs/``, ``export/`` for the pipeline).
        interval_s: seconds between runs (None with no ``cron``: runs only when triggered).
        cron: cron schedule; replaces ``interval_s`` when given.
        retrain_policy: see ``build_deployments``.
        config: optional TOML file with ``[harvest]``, ``[train]``, ``[export]`` tables.
        limit: runs at once in this process (one: a harvest and a training never compete for CPU).
    """
    from prefect import serve

    deployments = build_deployments(
        video_dir, out_dir, interval_s=interval_s, cron=cron, retrain_policy=retrain_policy, config=config
    )
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "trackemb")
    log.info("serving %s for %s -> %s", [d.name for d in deployments], video_dir, out_dir)
    serve(*deployments, limit=limit)
