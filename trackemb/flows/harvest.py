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
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from trackemb import fsnames
from trackemb.config import HarvestConfig
from trackemb.errors import HarvestFailedError, TransientIOError
from trackemb.flows import progress
from trackemb.harvest.ledger import RunLedger, split_duplicates, split_settled
from trackemb.harvest.pool import CRASH_RETRIES, HarvestPool, count_crash, crash_outcome, default_workers
from trackemb.harvest.summary import build_summary, summary_markdown
from trackemb.storage.store import PatchStore, open_reader
from trackemb.tracking.files import find_videos, unreadable_key
from trackemb.tracking.outcome import HarvestOutcome, failure_record, harvest_one

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
            _commit(shard, outcome)
    outcome.harvest = None
    return outcome


def _commit(store: PatchStore, outcome: HarvestOutcome) -> None:
    if outcome.status == "done" and outcome.harvest is not None:
        store.put_video(outcome.harvest)
    elif outcome.status == "failed" and outcome.record is not None:
        store.put_failure(outcome.record)


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
    ready, settling = split_settled(found, settle_s)
    paths, duplicates = split_duplicates(ready)  # identical content is harvested once
    logger.info("found %d video files under %s", len(found), fsnames.display(video_dir))
    if settling:
        logger.info("%d file(s) changed in the last %.0f s; left for a later run", len(settling), settle_s)
    harvest_cfg = config.model_dump(mode="json")
    outcomes: list[HarvestOutcome] = []
    report = progress.reporter("harvest videos")
    with PatchStore.open(store, harvest_config=harvest_cfg, lock_timeout_s=lock_timeout_s) as writer:
        before = {v.sha: v for v in writer.videos()}
        done = {sha for sha, v in before.items() if v.status == "done"}
        crashes = {
            sha: v.crashes for sha, v in before.items() if v.error_kind == "crashed" and v.status == "failed"
        }
        gave_up = {sha for sha, n in crashes.items() if n > CRASH_RETRIES}  # crashed again on its retry
        n_workers = default_workers() if workers is None else workers
        ledger = RunLedger(writer)
        if shards:
            futures = [(p, harvest_to_shard_task.submit(p, config, done, store)) for p in paths]
            wait([f for _, f in futures])
            for p, f in futures:
                outcome = _resolve(p, f)
                outcomes.append(ledger.commit(count_crash(outcome, crashes.get(outcome.sha, 0))))
        else:
            pool = HarvestPool(n_workers, config, done | gave_up) if n_workers > 0 else None
            pool_key = f"{os.getpid()}-{id(pool)}"
            if pool is not None:
                _POOLS[pool_key] = pool
            # A bounded window of submitted videos: each finished one is committed (and freed)
            # in submission order, so memory stays flat however many videos the folder holds.
            window = max(4, 2 * n_workers)
            pending: list[tuple[str, Any]] = []
            pairs_added = 0

            def commit_oldest() -> None:
                nonlocal pairs_added
                outcome = _resolve(*pending.pop(0))
                if outcome.status == "skipped" and outcome.sha in gave_up:
                    outcome = HarvestOutcome("failed", outcome.path, outcome.sha, record=before[outcome.sha])
                else:
                    outcome = ledger.commit(count_crash(outcome, crashes.get(outcome.sha, 0)))
                outcome.harvest = None
                outcomes.append(outcome)
                pairs_added += outcome.record.n_pairs if outcome.status == "done" and outcome.record else 0
                if report:
                    report(len(outcomes), len(paths), {"pairs": pairs_added})

            try:
                for path in paths:
                    future = (
                        harvest_in_pool_task.submit(path, pool_key)
                        if pool is not None
                        else harvest_video_task.submit(path, config, done)
                    )
                    pending.append((path, future))
                    if len(pending) >= window:
                        commit_oldest()
                while pending:
                    commit_oldest()
            finally:
                _POOLS.pop(pool_key, None)
                if pool is not None:
                    pool.close()
        outcomes += [ledger.commit(d) for d in duplicates]
        superseded = ledger.drop_superseded()
        n_triplets = writer.build_triplets(per_pair=config.triplets_per_pair, seed=config.seed)
    with open_reader(store) as reader:  # the whole store, shards and earlier runs included
        with_pairs = sum(v.status == "done" and v.n_pairs > 0 for v in reader.videos())
    summary = build_summary(
        video_dir, store, outcomes, videos_total=len(found), triplets=n_triplets,
        videos_with_pairs=with_pairs, settling=settling, superseded=superseded,
    )  # fmt: skip
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
            f"{summary['failed']} of {len(paths)} videos failed (strict mode); see the error records", summary
        )
    return summary


def _resolve(path: str, future: Any) -> HarvestOutcome:
    """A task that failed even after retries becomes a failed outcome, never a lost run."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001
        if type(exc).__name__ == "KilledWorker":  # Dask: each worker that tried this video died on it
            return crash_outcome(path, None, how=f"every Dask worker that tried it died: {exc}")
        rec = failure_record(path, unreadable_key(path), "transient_io", f"gave up after retries: {exc}")
        return HarvestOutcome("failed", path, rec.sha, record=rec)
