"""Harvest a folder's videos into a PatchStore: the whole run, orchestrator-agnostic.

:func:`harvest_folder` leaves files still being written for later, harvests identical
content once, hands each video to ``submit`` (a Prefect task, a pool worker, or the
calling thread) and commits the finished ones from this thread, the single writer, in
submission order through a bounded window: memory stays flat however many videos the
folder holds. It ends with the triplets and the run summary (summary.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from trackemb.config import HarvestConfig
from trackemb.harvest.ledger import RunLedger, split_duplicates, split_settled
from trackemb.harvest.pool import CRASH_RETRIES, HarvestPool, count_crash, crash_outcome, default_workers
from trackemb.harvest.summary import build_summary
from trackemb.storage.store import PatchStore, open_reader
from trackemb.tracking.files import unreadable_key
from trackemb.tracking.outcome import HarvestOutcome, failure_record, harvest_one

log = logging.getLogger(__name__)

Progress = Callable[[int, int, dict[str, Any]], None]


class Pending(Protocol):
    """A submitted video: a Prefect future, a ``concurrent.futures.Future``, ..."""

    def result(self) -> HarvestOutcome: ...


@dataclass
class Batch:
    """What a submission may use: content hashes already stored (skipped without decoding) and the
    run's worker pool (None with ``workers=0`` or ``shards``)."""

    done: set[str]
    pool: HarvestPool | None


Submit = Callable[[str, Batch], Pending]


def submit_here(cfg: HarvestConfig) -> Submit:
    """Harvest in the run's worker pool, or in the calling thread when it has none."""

    def submit(path: str, batch: Batch) -> Pending:
        if batch.pool is not None:
            return batch.pool.submit(path)
        future: Future[HarvestOutcome] = Future()
        future.set_result(harvest_one(path, cfg, batch.done))
        return future

    return submit


def resolve(path: str, pending: Pending) -> HarvestOutcome:
    """A submission that failed even after its retries becomes a failed outcome, never a lost run."""
    try:
        return pending.result()
    except Exception as exc:  # noqa: BLE001
        if type(exc).__name__ == "KilledWorker":  # Dask: each worker that tried this video died on it
            return crash_outcome(path, None, how=f"every Dask worker that tried it died: {exc}")
        rec = failure_record(path, unreadable_key(path), "transient_io", f"gave up after retries: {exc}")
        return HarvestOutcome("failed", path, rec.sha, record=rec)


def harvest_folder(
    paths: Sequence[str],
    store: str,
    cfg: HarvestConfig,
    *,
    root: str,
    submit: Submit | None = None,
    workers: int | None = None,
    shards: bool = False,
    settle_s: float = 0.0,
    lock_timeout_s: float = 0.0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Harvest ``paths`` (found under ``root``) into the store at ``store``; returns the run summary.

    Args:
        submit: starts one video (default :func:`submit_here`); with ``shards`` it writes the
            video into its worker's own shard and returns the outcome without the records.
        workers: harvest processes of the run's pool (None: one per core; 0: no pool).
        settle_s: files changed more recently are left for a later run (watch mode).
        lock_timeout_s: how long to wait for another writer of the store.
        progress: ``(videos done, videos, {"pairs": added})`` after each commit.
    """
    submit = submit or submit_here(cfg)
    ready, settling = split_settled(list(paths), settle_s)
    todo, duplicates = split_duplicates(ready)  # identical content is harvested once
    if settling:
        log.info("%d file(s) changed in the last %.0f s; left for a later run", len(settling), settle_s)
    n_workers = default_workers() if workers is None else workers
    outcomes: list[HarvestOutcome] = []
    with PatchStore.open(
        store, harvest_config=cfg.model_dump(mode="json"), lock_timeout_s=lock_timeout_s
    ) as writer:
        before = {v.sha: v for v in writer.videos()}
        done = {sha for sha, v in before.items() if v.status == "done"}
        crashes = {
            sha: v.crashes for sha, v in before.items() if v.error_kind == "crashed" and v.status == "failed"
        }
        gave_up = {sha for sha, n in crashes.items() if n > CRASH_RETRIES}  # crashed again on its retry
        ledger = RunLedger(writer)
        pool = HarvestPool(n_workers, cfg, done | gave_up) if n_workers > 0 and not shards else None
        batch = Batch(done, pool)
        # Shard writers keep their records: all are submitted at once and committed in order.
        window = len(todo) + 1 if shards else max(4, 2 * n_workers)
        pending: list[tuple[str, Pending]] = []
        pairs_added = 0

        def commit_oldest() -> None:
            nonlocal pairs_added
            outcome = resolve(*pending.pop(0))
            if outcome.status == "skipped" and outcome.sha in gave_up:
                outcome = HarvestOutcome("failed", outcome.path, outcome.sha, record=before[outcome.sha])
            else:
                outcome = ledger.commit(count_crash(outcome, crashes.get(outcome.sha, 0)))
            outcome.harvest = None
            outcomes.append(outcome)
            pairs_added += outcome.record.n_pairs if outcome.status == "done" and outcome.record else 0
            if progress is not None:
                progress(len(outcomes), len(todo), {"pairs": pairs_added})

        try:
            for path in todo:
                pending.append((path, submit(path, batch)))
                if len(pending) >= window:
                    commit_oldest()
            while pending:
                commit_oldest()
        finally:
            if pool is not None:
                pool.close()
        outcomes += [ledger.commit(d) for d in duplicates]
        superseded = ledger.drop_superseded()
        n_triplets = writer.build_triplets(per_pair=cfg.triplets_per_pair, seed=cfg.seed)
    with open_reader(store) as reader:  # the whole store, shards and earlier runs included
        with_pairs = sum(v.status == "done" and v.n_pairs > 0 for v in reader.videos())
    return build_summary(
        root, store, outcomes, videos_total=len(paths), triplets=n_triplets,
        videos_with_pairs=with_pairs, settling=settling, superseded=superseded,
    )  # fmt: skip
