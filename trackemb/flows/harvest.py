"""Prefect flow: a folder of videos -> tracked positive pairs and other-video triplets in a PatchStore.

One task per video (bounded concurrency, retries only for transient I/O); the flow thread
is the single writer that commits each finished video in one transaction. By default each
task hands its video to a :class:`~trackemb.harvest.pool.HarvestPool` worker process (all cores; a
native crash costs that video only); ``workers=0`` harvests in the task's own thread. With
``shards=True`` (Dask or other multi-process runners) each worker process writes its own
shard instead, and readers see the shards as one store.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from trackemb import fsnames
from trackemb.config import HarvestConfig
from trackemb.errors import HarvestFailedError, TransientIOError
from trackemb.flows import progress
from trackemb.harvest import ledger
from trackemb.harvest.folder import Batch, harvest_folder
from trackemb.harvest.pool import HarvestPool, default_workers
from trackemb.harvest.summary import summary_markdown
from trackemb.storage.store import PatchStore
from trackemb.tracking.files import find_videos
from trackemb.tracking.outcome import HarvestOutcome, harvest_one

log = logging.getLogger(__name__)


def _is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only I/O errors that may pass; a corrupt video is a result, not a retryable failure."""
    try:
        state.result()
    except TransientIOError:
        return True
    except Exception:  # noqa: BLE001
        return False
    return False


@task(retries=2, retry_delay_seconds=[1, 4], retry_condition_fn=_is_transient, task_run_name="harvest {path}")
def harvest_video_task(path: str, cfg: HarvestConfig, done: set[str]) -> HarvestOutcome:
    return harvest_one(path, cfg, done)


# Pools of running flows, by run key: tasks take the key, not the pool, as their parameter.
_POOLS: dict[str, HarvestPool] = {}


@task(retries=2, retry_delay_seconds=[1, 4], retry_condition_fn=_is_transient, task_run_name="harvest {path}")
def harvest_in_pool_task(path: str, pool: str) -> HarvestOutcome:
    """Harvest in a worker process of the flow's pool; the finished records travel back to the writer."""
    return _POOLS[pool].run(path)


@task(
    retries=2,
    retry_delay_seconds=[1, 4],
    retry_condition_fn=_is_transient,
    task_run_name="harvest {path} (shard)",
)
def harvest_to_shard_task(path: str, cfg: HarvestConfig, done: set[str], store: str) -> HarvestOutcome:
    """Harvest and write into this worker's own shard; only the small outcome travels back."""
    outcome = harvest_one(path, cfg, done)
    if outcome.status != "skipped":
        name = f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"
        with PatchStore.open_shard(
            store, name, harvest_config=cfg.model_dump(mode="json"), lock_timeout_s=60
        ) as shard:
            ledger.store_outcome(shard, outcome)
    outcome.harvest = None
    return outcome


# Each task only waits for its worker process: one thread per worker of the largest default pool.
@flow(
    name="trackemb-harvest",
    task_runner=ThreadPoolTaskRunner(max_workers=default_workers() + 1),
    log_prints=False,
)
def harvest_flow(
    video_dir: str,
    store: str,
    config: HarvestConfig = HarvestConfig(),
    pattern: str = "**/*",
    strict: bool = False,
    shards: bool = False,
    lock_timeout_s: float = 0.0,
    workers: int | None = None,
    settle_s: float = 0.0,
) -> dict[str, Any]:
    """Harvest every video under ``video_dir`` into the PatchStore at ``store``.

    Bad files are recorded with their cause and the rest goes on; with ``strict`` the run
    ends Failed when any video failed (after everything else has been stored).
    ``workers``: harvest processes (None: one per core; 0: in the task threads, no processes).
    The task runner needs at least as many threads as ``workers`` to keep them all busy.
    Identical content at several paths is harvested once. With ``settle_s`` > 0 (watch mode)
    files changed in the last ``settle_s`` seconds are left for a later run.
    """
    logger = get_run_logger()
    found = [str(p) for p in find_videos(video_dir, pattern)]
    logger.info("found %d video files under %s", len(found), fsnames.display(video_dir))
    pools: set[str] = set()

    def submit(path: str, batch: Batch) -> Any:
        if shards:
            return harvest_to_shard_task.submit(path, config, batch.done, store)
        if batch.pool is None:
            return harvest_video_task.submit(path, config, batch.done)
        key = f"{os.getpid()}-{id(batch.pool)}"
        _POOLS[key] = batch.pool
        pools.add(key)
        return harvest_in_pool_task.submit(path, key)

    try:
        summary = harvest_folder(
            found, store, config, root=video_dir, submit=submit, workers=workers, shards=shards,
            settle_s=settle_s, lock_timeout_s=lock_timeout_s, progress=progress.reporter("harvest videos"),
        )  # fmt: skip
    finally:
        for key in pools:
            _POOLS.pop(key, None)
    for row in summary["videos"]:
        if row["status"] == "failed":
            logger.warning("FAILED %s [%s]", row["error"], row["error_kind"])
    for warning in summary["warnings"]:
        logger.warning(warning)
    create_markdown_artifact(
        key="harvest-summary", markdown=summary_markdown(summary), description="trackemb harvest"
    )
    if strict and summary["failed"]:
        raise HarvestFailedError(
            f"{summary['failed']} of {summary['videos_total']} videos failed (strict mode); see the error records",
            summary,
        )
    return summary
