"""Store integrity across harvest runs: identical content, changed files, files still being copied.

Real harvest flows (the session's local Prefect API) on synthetic clips; the store is read back
after each run. Each test failed on the code before the fix: a copy was harvested and counted
twice, a changed file left its old version beside the new one, a growing file was harvested
half-written.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from badcorpus import GrowingFile
from synthetic import write_synthetic_video

from trackemb.config import HarvestConfig
from trackemb.storage import records
from trackemb.storage.store import open_reader

pytestmark = pytest.mark.prefect


def _clip(path: Path, seed: int, n_frames: int = 45) -> Path:
    write_synthetic_video(path, n_objects=2, n_frames=n_frames, seed=seed)
    return path


def _harvest(videos: Path, store: Path, **kw) -> dict:
    from trackemb.flows.harvest import harvest_flow

    return harvest_flow(str(videos), str(store), HarvestConfig(), **kw)


def _by_name(summary: dict) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in summary["videos"]}


def _pairs_per_video(store: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    with open_reader(store) as reader:
        for pair in reader.pairs():
            counts[pair.video_sha] = counts.get(pair.video_sha, 0) + 1
    return counts


def test_identical_content_is_harvested_once_and_every_path_kept(prefect_api, tmp_path: Path) -> None:
    videos, store = tmp_path / "videos", tmp_path / "store"
    videos.mkdir()
    shutil.copy(_clip(videos / "cup.mp4", seed=1), videos / "a copy.mp4")
    _clip(videos / "box.mp4", seed=2)

    first = _harvest(videos, store)
    rows = _by_name(first)
    assert (first["done"], first["duplicates"]) == (2, 1), rows
    # Sorted order: "a copy.mp4" comes first and is the one harvested.
    assert rows["cup.mp4"]["status"] == "duplicate" and "a copy.mp4" in rows["cup.mp4"]["note"]
    assert rows["cup.mp4"]["pairs"] == 0
    with open_reader(store) as reader:
        records = {v.sha: v for v in reader.videos()}
    assert len(records) == 2
    copy = records[rows["a copy.mp4"]["sha"]]
    assert Path(copy.path).name == "a copy.mp4" and [Path(p).name for p in copy.also_at] == ["cup.mp4"]
    assert first["pairs_added"] == sum(_pairs_per_video(store).values()) > 0, "pairs counted twice"

    again = _by_name(_harvest(videos, store))
    assert {n: r["status"] for n, r in again.items()} == {
        "a copy.mp4": "skipped", "box.mp4": "skipped", "cup.mp4": "duplicate"
    }  # fmt: skip


def test_copies_are_found_before_harvesting_so_each_content_is_decoded_once(tmp_path: Path) -> None:
    from trackemb.harvest.ledger import split_duplicates

    a = _clip(tmp_path / "a.mp4", seed=7)
    (tmp_path / "b.mp4").write_bytes(a.read_bytes())  # copy
    same_size = bytearray(a.read_bytes())
    same_size[-1] ^= 0xFF  # same size, other content: not a copy
    (tmp_path / "c.mp4").write_bytes(bytes(same_size))
    (tmp_path / "d.mp4").write_bytes(b"x" * 10)  # a size of its own: never read
    os.mkfifo(tmp_path / "fifo")  # size 0 like the empty files: must never be opened (it would block)
    os.symlink("fifo", tmp_path / "e.mp4")
    (tmp_path / "f.mp4").write_bytes(b"")
    names = ("a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4", "f.mp4")
    paths = [str(tmp_path / n) for n in names]
    harvest, dups = split_duplicates(paths)
    assert harvest == [paths[0], *paths[2:]]
    assert [(d.path, d.duplicate_of, d.status) for d in dups] == [(paths[1], paths[0], "duplicate")]


def test_a_changed_file_replaces_its_old_version(prefect_api, tmp_path: Path) -> None:
    videos, store = tmp_path / "videos", tmp_path / "store"
    videos.mkdir()
    _clip(videos / "cam.mp4", seed=3, n_frames=30)  # e.g. the part of a recording copied so far
    _clip(videos / "other.mp4", seed=4)
    old_sha = _by_name(_harvest(videos, store))["cam.mp4"]["sha"]
    assert _pairs_per_video(store).get(old_sha, 0) > 0

    _clip(videos / "cam.mp4", seed=3, n_frames=60)  # the whole recording
    second = _harvest(videos, store)
    new_sha = _by_name(second)["cam.mp4"]["sha"]
    assert new_sha != old_sha and second["done"] == 1
    assert [Path(p).name for p in second["superseded"]] == ["cam.mp4"]
    with open_reader(store) as reader:
        at_cam = [v for v in reader.videos() if Path(v.path).name == "cam.mp4"]
        assert [v.sha for v in at_cam] == [new_sha], "the old version of cam.mp4 is still stored"
        assert not [p for p in reader.patches() if p.video_sha == old_sha]
        triplets = reader.triplets()
    assert old_sha not in _pairs_per_video(store)
    assert triplets and all(old_sha not in (t.anchor_video, t.negative_video) for t in triplets)


def test_watch_mode_leaves_a_growing_file_for_the_next_poll(prefect_api, tmp_path: Path) -> None:
    videos, store, settle_s = tmp_path / "videos", tmp_path / "store", 2.0
    videos.mkdir()
    _clip(videos / "old.mp4", seed=5)
    full = _clip(tmp_path / "new.mp4", seed=6).read_bytes()
    time.sleep(settle_s + 0.2)  # old.mp4 has settled
    with GrowingFile(videos / "new.mp4", full) as growing:
        first = _harvest(videos, store, settle_s=settle_s)
        assert growing.written < len(full), "the file finished growing during the run"
    rows = _by_name(first)
    assert rows["old.mp4"]["status"] == "done" and rows["new.mp4"]["status"] == "settling", rows
    assert first["settling"] == 1 and "later run" in rows["new.mp4"]["note"]
    with open_reader(store) as reader:
        assert [Path(v.path).name for v in reader.videos()] == ["old.mp4"], "a half-copied file was stored"

    time.sleep(settle_s + 0.2)
    second = _by_name(_harvest(videos, store, settle_s=settle_s))
    assert second["new.mp4"]["status"] == "done" and second["old.mp4"]["status"] == "skipped"
    with open_reader(store) as reader:
        (rec,) = [v for v in reader.videos() if Path(v.path).name == "new.mp4"]
    assert rec.n_pairs > 0 and rec.frames == 45


def test_non_utf8_names_round_trip_through_a_record(tmp_path: Path) -> None:
    from trackemb import fsnames
    from trackemb.storage.records import VideoRecord

    raw = os.fsdecode(b"/videos/caf\xe9.mp4")
    rec = records.decode(VideoRecord, records.encode(VideoRecord(sha="a" * 64, path=raw, status="failed")))
    assert rec.path == "/videos/caf\\xe9.mp4" and rec.fs_path == raw and rec.path_bytes == os.fsencode(raw)
    plain = records.decode(
        VideoRecord, records.encode(VideoRecord(sha="b" * 64, path="/v/café.mp4", status="done"))
    )
    assert plain.fs_path == plain.path == "/v/café.mp4" and plain.path_bytes == b""
    target = tmp_path / os.fsdecode(b"x\xff.mp4")
    target.write_bytes(b"data")
    with fsnames.decodable(target) as alias:
        assert alias.encode("utf-8") and alias.endswith(".mp4") and Path(alias).read_bytes() == b"data"
    assert not Path(alias).exists(), "the alias outlived its block"
