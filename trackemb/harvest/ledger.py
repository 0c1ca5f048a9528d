"""The bookkeeping of one harvest run over a folder: settling files, duplicate content, old versions.

Plain Python that the harvest flow calls from its single writer thread (no Prefect here):

- :func:`split_settled`: in watch mode a file changed in the last ``settle_s`` seconds may still
  be copied or recorded; it is left for a later poll instead of being harvested half-written.
- :func:`split_duplicates`: files of equal size are hashed up front, so identical content
  at several paths is decoded once (files of a unique size cannot be copies: no extra read).
- :class:`RunLedger`: commits outcomes in order; identical content at two paths is stored
  and counted once (the second path is stored in ``also_at`` and reported as a duplicate);
  at the end, a video whose path now holds other, harvested content is dropped, so an old
  (e.g. half-copied) version never stays beside the new one.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass, field

from trackemb import fsnames
from trackemb.errors import TrackembError
from trackemb.storage import versions
from trackemb.storage.store import PatchStore
from trackemb.tracking.files import content_sha, retry_transient
from trackemb.tracking.outcome import HarvestOutcome

log = logging.getLogger(__name__)


def split_settled(
    paths: list[str], settle_s: float, now: float | None = None
) -> tuple[list[str], dict[str, float]]:
    """``(settled paths, {unsettled path: seconds since its last change})``.

    A file is unsettled while its content or metadata changed less than ``settle_s`` ago (the
    later of mtime and ctime: a growing file updates both; ``cp -p`` restores an old mtime only
    after writing, but never ctime). Paths that cannot be stat'ed count as settled: the harvest
    reports their error.
    """
    if settle_s <= 0:
        return list(paths), {}
    now = time.time() if now is None else now
    ready, waiting = [], {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            ready.append(path)
            continue
        age = now - max(st.st_mtime, st.st_ctime)
        if age < settle_s:
            waiting[path] = round(max(age, 0.0), 2)
        else:
            ready.append(path)
    return ready, waiting


def split_duplicates(paths: list[str]) -> tuple[list[str], list[HarvestOutcome]]:
    """``(paths to harvest, duplicate outcomes)``: a file with the same bytes as an earlier path
    of ``paths`` becomes a ``duplicate`` outcome naming that path instead of being harvested.

    Only files sharing their size with another are read (hashed); a file that cannot be read
    here stays in the list, so its harvest reports why.
    """
    by_size: dict[int, list[str]] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        # Only non-empty regular files: opening a FIFO would block, empty files are errors anyway.
        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
            by_size.setdefault(st.st_size, []).append(path)
    first_of: dict[str, str] = {}
    duplicates: dict[str, HarvestOutcome] = {}
    for group in by_size.values():
        if len(group) < 2:
            continue  # a unique size: no copy of anything here
        for path in group:
            try:
                sha = retry_transient(lambda p=path: content_sha(p), path)
            except (OSError, TrackembError):
                continue
            first = first_of.setdefault(sha, path)
            if first != path:
                duplicates[path] = HarvestOutcome("duplicate", path, sha, duplicate_of=first)
    return [p for p in paths if p not in duplicates], [duplicates[p] for p in paths if p in duplicates]


def store_outcome(store: PatchStore, outcome: HarvestOutcome) -> None:
    """Write a harvested video's records, or a failed one's error record, in one transaction."""
    if outcome.status == "done" and outcome.harvest is not None:
        store.put_video(outcome.harvest)
    elif outcome.status == "failed" and outcome.record is not None:
        store.put_failure(outcome.record)


@dataclass
class RunLedger:
    """Commits each outcome into ``store`` once per content hash, in the order given."""

    store: PatchStore
    first_path: dict[str, str] = field(default_factory=dict)  # sha -> first path seen this run
    content_at: dict[str, str] = field(default_factory=dict)  # path -> sha found there this run

    def commit(self, outcome: HarvestOutcome) -> HarvestOutcome:
        """Store ``outcome`` (or note its path on the copy already stored); returns it, re-labelled."""
        sha, path = outcome.sha, outcome.path
        if outcome.status == "duplicate":  # found before harvesting (split_duplicates)
            if sha in self.first_path:
                self.content_at[path] = sha
            self._add_path(sha, path)
            return outcome
        if outcome.status in ("done", "skipped"):
            self.content_at[path] = sha
            first = self.first_path.setdefault(sha, path)
            if first != path:
                self._add_path(sha, path)
                outcome.status, outcome.duplicate_of = "duplicate", first
                outcome.harvest = None
                log.info("%s has the same content as %s: stored once", fsnames.display(path), first)
                return outcome
            if outcome.status == "skipped":
                self._add_path(sha, path)  # a moved or copied file: remember where it is now
        store_outcome(self.store, outcome)
        return outcome

    def _add_path(self, sha: str, path: str) -> None:
        self.store.apply(lambda txn, dbs: versions.add_path(txn, dbs, sha, path), f"path of {sha}")

    def drop_superseded(self) -> list[str]:
        """Drop stored videos whose path now holds other content that this run harvested.

        Only content seen nowhere in this run goes: a file moved to another path of the folder is
        kept. Returns the dropped videos' paths.
        """
        dropped = []
        for rec in self.store.videos():
            now_there = self.content_at.get(rec.fs_path)
            if rec.status != "done" or now_there in (None, rec.sha) or rec.sha in self.first_path:
                continue
            if self.store.apply(lambda txn, dbs, s=rec.sha: versions.drop_video(txn, dbs, s), "old version"):
                log.warning(
                    "%s changed since it was harvested: dropped its old version %s (now %s)",
                    rec.path, rec.sha[:12], now_there[:12],
                )  # fmt: skip
                dropped.append(rec.path)
        return dropped
