"""Per-video store cost independent of store size: the path index and incremental triplets."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest
from test_store import CFG, make_harvest

from trackemb.storage import PatchStore, TripletRecord, VideoRecord, open_reader, records, schema


def failure(sha: str, path: str) -> VideoRecord:
    return VideoRecord(sha=sha, path=path, status="failed", error="bad", error_kind="not_a_video")


def test_a_commit_decodes_only_the_records_at_its_path(tmp_path: Path, monkeypatch) -> None:
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        for i in range(300):
            store.put_failure(failure(f"{i:064x}", f"/videos/bad{i}.mp4"))
        decoded = []
        real = records.decode

        def counting(cls, blob):
            decoded.append(cls.__name__)
            return real(cls, blob)

        monkeypatch.setattr(records, "decode", counting)
        store.put_failure(failure("f" * 64, "/videos/bad7.mp4"))  # replaces bad7's record
        store.put_video(make_harvest(1, path="/videos/bad8.mp4"))  # fixes bad8
        assert decoded.count("VideoRecord") == 2, decoded  # one record at each path, not 300
        monkeypatch.undo()
        paths = {v.path: v for v in store.videos()}
    assert len(paths) == 300 and paths["/videos/bad7.mp4"].sha == "f" * 64
    assert paths["/videos/bad8.mp4"].status == "done"


def test_an_old_store_gets_its_path_index_back_filled(tmp_path: Path) -> None:
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        store.put_failure(failure("0" * 64, "/videos/x.mp4"))
        store.put_failure(failure("1" * 64, "/videos/y.mp4"))
    env = lmdb.open(str(tmp_path / "s"), max_dbs=schema.MAX_DBS)
    with env.begin(write=True) as txn:  # as a store written before the index existed
        txn.drop(env.open_db(schema.PATHS.encode(), txn=txn), delete=True)
    env.close()
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        store.put_video(make_harvest(2, path="/videos/x.mp4"))
        store.put_failure(failure("3" * 64, "/videos/y.mp4"))
        done = make_harvest(2).video.sha
        assert sorted((v.sha, v.status) for v in store.videos()) == sorted(
            [("3" * 64, "failed"), (done, "done")]
        )


def test_a_moved_file_keeps_both_paths_apart(tmp_path: Path) -> None:
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        h = make_harvest(1, path="/videos/a.mp4")
        store.put_video(h)
        h.video.path = "/videos/b.mp4"
        store.put_video(h)  # the same content found at a new path
        store.put_failure(failure("e" * 64, "/videos/a.mp4"))  # a new, broken file at the old path
        store.put_failure(failure("f" * 64, "/videos/a.mp4"))  # replaced again: one failure record left
        assert sorted((v.path, v.status) for v in store.videos()) == [
            ("/videos/a.mp4", "failed"),
            ("/videos/b.mp4", "done"),
        ]


def _txnid(store: PatchStore) -> int:
    return int(store._own.env.info()["last_txnid"])


def test_triplets_are_built_incrementally_and_not_rewritten_when_nothing_changed(tmp_path: Path) -> None:
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        store.put_video(make_harvest(1))
        store.put_video(make_harvest(2, n_tracks=3))
        n = store.build_triplets(per_pair=4, seed=3)
        before, txnid = store.triplets(), _txnid(store)
        assert n == len(before) == 4 * 5
        assert store.build_triplets(per_pair=4, seed=3) == n and _txnid(store) == txnid  # no write at all
        store.put_failure(failure("e" * 64, "/videos/bad.mp4"))
        assert store.build_triplets(per_pair=4, seed=3) == n and store.triplets() == before
        new = make_harvest(3, n_tracks=2)
        store.put_video(new)
        assert store.build_triplets(per_pair=4, seed=3) == n + 4 * 2
        after = store.triplets()
        old_videos = {make_harvest(s).video.sha for s in (1, 2)}
        assert [t for t in after if t.anchor_video in old_videos] == before  # old ones keep theirs
        added = [t for t in after if t.anchor_video == new.video.sha]
        assert len(added) == 8 and all(t.negative_video in old_videos for t in added)
        # The same content built in one go gives the same triplets for the new video (same seed).
        with PatchStore.open(tmp_path / "t", harvest_config=CFG) as fresh:
            for s, k in ((1, 2), (2, 3), (3, 2)):
                fresh.put_video(make_harvest(s, n_tracks=k))
            fresh.build_triplets(per_pair=4, seed=3)
            assert [t for t in fresh.triplets() if t.anchor_video == new.video.sha] == added
        assert store.build_triplets(per_pair=4, seed=4) == n + 8 and store.triplets() != after  # new seed


def test_a_new_shard_is_seen_and_a_lone_video_gets_triplets_once_others_exist(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with PatchStore.open(root, harvest_config=CFG) as writer:
        writer.put_video(make_harvest(1))
        assert writer.build_triplets(per_pair=2) == 0  # nothing to contrast with yet
    with PatchStore.open_shard(root, "w1", harvest_config=CFG) as shard:
        shard.put_video(make_harvest(2))
    with PatchStore.open(root, harvest_config=CFG) as writer:
        assert writer.build_triplets(per_pair=2) == 2 * 4
        shas = {t.anchor_video for t in writer.triplets()}
    assert shas == {make_harvest(1).video.sha, make_harvest(2).video.sha}


def test_triplets_of_an_old_store_are_rebuilt_once_in_the_new_layout(tmp_path: Path) -> None:
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        for s in (1, 2):
            store.put_video(make_harvest(s))
        expected = store.build_triplets(per_pair=1)
    env = lmdb.open(str(tmp_path / "s"), max_dbs=schema.MAX_DBS)
    with env.begin(write=True) as txn:  # the schema-1 layout: <index:09d> keys and no state table
        trips = env.open_db(schema.TRIPLETS.encode(), txn=txn)
        old = [v for _, v in txn.cursor(db=trips)]
        txn.drop(trips, delete=False)
        for i, blob in enumerate(old[:1]):
            txn.put(f"{i:09d}".encode(), blob, db=trips)
        txn.drop(env.open_db(schema.TRIPSTATE.encode(), txn=txn), delete=True)
    env.close()
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        assert store.build_triplets(per_pair=1) == expected
    with open_reader(tmp_path / "s") as reader:
        trips = reader.triplets()
    assert len(trips) == expected and all(isinstance(t, TripletRecord) for t in trips)


@pytest.mark.parametrize("per_pair", [0, 1])
def test_no_videos_no_triplets(tmp_path: Path, per_pair: int) -> None:
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        assert store.build_triplets(per_pair=per_pair) == 0
        assert store.build_triplets(per_pair=per_pair) == 0


def test_index_columns_match_a_brute_force_index_over_records(tmp_path: Path) -> None:
    from trackemb.embedding.data import load_index
    from trackemb.storage.records import PatchRecord, patch_key

    root = tmp_path / "s"
    late = make_harvest(4)  # frame numbers past 999999: keys longer than the fixed width
    for p in late.patches:
        p.frame += 1_000_000
        old, p.key = p.key, patch_key(p.video_sha, p.track_id, p.frame)
        late.jpegs[p.key] = late.jpegs.pop(old)
    for pair in late.pairs:
        pair.anchor, pair.positive = (
            patch_key(pair.video_sha, int(k.split("/")[1]), int(k.split("/")[2]) + 1_000_000)
            for k in (pair.anchor, pair.positive)
        )
    no_pairs = make_harvest(5)
    no_pairs.pairs = []
    with PatchStore.open(root, harvest_config=CFG) as writer:
        writer.put_video(make_harvest(0, n_tracks=3))
        writer.put_failure(failure("e" * 64, "/videos/bad.mp4"))
    with PatchStore.open_shard(root, "w1", harvest_config=CFG) as shard:
        for h in (make_harvest(1), make_harvest(3, n_tracks=4), no_pairs):
            shard.put_video(h)
    with PatchStore.open_shard(root, "w2", harvest_config=CFG) as shard:
        for h in (make_harvest(2), make_harvest(3, n_tracks=4), late):
            shard.put_video(h)
    with PatchStore.open(root, harvest_config=CFG) as writer:
        writer.build_triplets(per_pair=3)
    with open_reader(root) as reader:
        index = load_index(reader)
        patches: list[PatchRecord] = reader.patches()
        pairs, trips = reader.pairs(), reader.triplets()
    used = sorted({p.video_sha for p in pairs})
    mine = sorted((p for p in patches if p.video_sha in used), key=lambda p: p.key)
    tracks = sorted({(used.index(p.video_sha), p.track_id) for p in mine})
    row = {p.key: i for i, p in enumerate(mine)}
    assert index.keys.tolist() == [p.key.encode() for p in mine]
    assert index.video.tolist() == [used.index(p.video_sha) for p in mine]
    assert index.track.tolist() == [tracks.index((used.index(p.video_sha), p.track_id)) for p in mine]
    assert index.group.tolist() == index.video.tolist() and index.video_shas.tolist() == used
    assert index.pairs.tolist() == [[row[p.anchor], row[p.positive]] for p in pairs]
    kept = [t for t in trips if t.negative in row]  # a video without pairs is not in the index
    assert 0 < len(kept) < len(trips) == 3 * len(pairs) and no_pairs.video.sha not in used
    assert index.triplets.tolist() == [[row[t.anchor], row[t.positive], row[t.negative]] for t in kept]
