"""PatchStore on real LMDB with real JPEG bytes: records, schema, atomic writes, triplets, shards."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest

from trackemb.config import HarvestConfig
from trackemb.errors import StoreError
from trackemb.pictures import png_text
from trackemb.storage import (
    MissingKeyError,
    PairRecord,
    PatchRecord,
    PatchStore,
    TrackRecord,
    TripletRecord,
    VideoHarvest,
    VideoRecord,
    open_reader,
    patch_key,
    records,
    schema,
)
from trackemb.storage.inspect import format_stats, stats_tables, store_montage
from trackemb.storage.shards import StoreView

REPO = Path(__file__).resolve().parents[1]
CFG = HarvestConfig().model_dump(mode="json")


def make_harvest(seed: int, n_tracks: int = 2, px: int = 32, path: str | None = None) -> VideoHarvest:
    """A harvest of one fake video: tracks of 3 patches (first, inner, last), real JPEG bytes."""
    rng = np.random.default_rng(seed)
    sha = hashlib.sha256(f"video-{seed}".encode()).hexdigest()
    video = VideoRecord(
        sha=sha, path=path or f"/videos/clip{seed}.mp4", status="done", frames=120, fps=30.0, width=640,
        height=480, backend="opencv", seconds=0.25,
    )  # fmt: skip
    harvest = VideoHarvest(video)
    for t in range(n_tracks):
        frames = [10 * t, 10 * t + 15, 10 * t + 29]
        boxes = [(float(5 * t + i), 7.5, 40.0, 44.0) for i in range(3)]
        harvest.tracks.append(TrackRecord(sha, t, frames[0], frames[-1], frames, boxes, "length"))
        for frame, box, role in zip(frames, boxes, ("first", "inner", "last"), strict=True):
            key = patch_key(sha, t, frame)
            img = cv2.GaussianBlur(rng.integers(0, 256, (px, px, 3), dtype=np.uint8), (3, 3), 0)
            harvest.jpegs[key] = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
            harvest.patches.append(PatchRecord(key, sha, t, frame, box, role))
        harvest.pairs.append(PairRecord(patch_key(sha, t, frames[0]), patch_key(sha, t, frames[-1]), sha, t))
    return harvest


def dump(path: Path) -> dict[str, dict[bytes, bytes]]:
    """Every entry of every sub-database, read with plain lmdb (no trackemb code)."""
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=schema.MAX_DBS)
    try:
        with env.begin() as txn:
            return {db: dict(txn.cursor(db=env.open_db(db.encode(), txn=txn))) for db in schema.ALL_DBS}
    finally:
        env.close()


def video_tables(tables: dict[str, dict[bytes, bytes]], sha: str) -> dict[str, int]:
    prefix = schema.video_prefix(sha)
    counts = {
        db: sum(k.startswith(prefix) for k in tables[db]) for db in ("tracks", "patches", "jpegs", "pairs")
    }
    counts["video"] = int(sha.encode() in tables["videos"])
    counts["done"] = int(sha.encode() in tables["done"])
    return counts


def test_records_round_trip_through_msgpack() -> None:
    h = make_harvest(1)
    trip = TripletRecord("a/1", "a/2", "b/3", "a" * 64, "b" * 64)
    for rec in [h.video, h.tracks[0], h.patches[0], h.pairs[0], trip]:
        assert records.decode(type(rec), records.encode(rec)) == rec
    assert isinstance(records.decode(TrackRecord, records.encode(h.tracks[0])).boxes[0], tuple)


def test_store_round_trips_every_record_type(tmp_path: Path) -> None:
    a, b = make_harvest(1), make_harvest(2, n_tracks=3)
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        store.put_video(a)
        store.put_video(b)
        assert store.build_triplets(per_pair=2, seed=0) == 2 * 5
        assert store.is_done(a.video.sha) and not store.is_done("f" * 64)
        assert store.video(a.video.sha).n_tracks == 2 and store.video("f" * 64) is None
    reader = open_reader(tmp_path / "s")
    vids = {v.sha: v for v in reader.videos()}
    assert (
        vids[b.video.sha].n_patches == 9
        and vids[b.video.sha].n_pairs == 3
        and vids[b.video.sha].status == "done"
    )
    assert vids[a.video.sha].path == a.video.path and vids[a.video.sha].fps == 30.0
    assert reader.tracks(a.video.sha) == a.tracks
    assert sorted(reader.tracks(), key=lambda t: (t.video_sha, t.track_id)) == sorted(
        a.tracks + b.tracks, key=lambda t: (t.video_sha, t.track_id)
    )
    assert sorted(reader.patches(), key=lambda p: p.key) == sorted(a.patches + b.patches, key=lambda p: p.key)
    assert sorted(reader.pairs(), key=lambda p: p.anchor) == sorted(a.pairs + b.pairs, key=lambda p: p.anchor)
    for key, blob in {**a.jpegs, **b.jpegs}.items():
        assert reader.get_jpeg(key) == blob
        assert cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR).shape == (32, 32, 3)
    trips = reader.triplets()
    assert len(trips) == 10 and all(isinstance(t, TripletRecord) for t in trips)
    meta = reader.meta()
    assert meta["schema_version"] == schema.SCHEMA_VERSION and meta["harvest_config"] == CFG
    assert meta["config_fingerprint"] == HarvestConfig().fingerprint() and meta["shards"] == []
    with pytest.raises(MissingKeyError, match="no patch JPEG with key 'nope/000001/000002'") as err:
        reader.get_jpeg("nope/000001/000002")
    assert isinstance(err.value, KeyError) and isinstance(err.value, StoreError)
    keys = list({**a.jpegs, **b.jpegs})
    assert reader.get_jpegs(keys) == [{**a.jpegs, **b.jpegs}[k] for k in keys]


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        store.put_video(make_harvest(1))
    env = lmdb.open(str(tmp_path / "s"), max_dbs=schema.MAX_DBS)
    with env.begin(write=True) as txn:
        txn.put(b"schema_version", schema.pack(99), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(StoreError, match=r"schema version 99.*reads schema versions? \(?1\b.*new --store"):
        PatchStore.open(tmp_path / "s", harvest_config=CFG)
    with pytest.raises(StoreError, match="schema version 99"):
        open_reader(tmp_path / "s").videos()
    with pytest.raises(StoreError, match="no PatchStore here"):
        open_reader(tmp_path / "missing")


def test_other_harvest_config_is_refused(tmp_path: Path) -> None:
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        store.put_video(make_harvest(1))
    other = HarvestConfig(patch_px=64, track={"track_len_frames": 20}).model_dump(mode="json")
    with pytest.raises(
        StoreError, match=r"patch_px: 96 -> 64; track\.track_len_frames: 30 -> 20.*new --store"
    ):
        PatchStore.open(tmp_path / "s", harvest_config=other)
    PatchStore.open(tmp_path / "s", harvest_config=CFG).close()  # same config: fine
    PatchStore.open(tmp_path / "s").close()  # no config given: not checked
    # An empty store may still be re-purposed for another config.
    PatchStore.open(tmp_path / "e", harvest_config=CFG).close()
    with PatchStore.open(tmp_path / "e", harvest_config=other) as store:
        assert store.meta()["harvest_config"] == other


class CrashingStore(PatchStore):
    """Dies after writing every record of a video but before the transaction commits."""

    def _write_video(self, txn, harvest, video) -> None:  # noqa: ANN001
        super()._write_video(txn, harvest, video)
        raise RuntimeError("simulated crash inside the write transaction")


def test_crash_inside_the_transaction_leaves_the_video_absent(tmp_path: Path) -> None:
    kept, lost = make_harvest(1), make_harvest(2)
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        store.put_video(kept)
    with CrashingStore.open(tmp_path / "s", harvest_config=CFG) as store:
        with pytest.raises(RuntimeError, match="simulated crash"):
            store.put_video(lost)
    tables = dump(tmp_path / "s")
    assert video_tables(tables, lost.video.sha) == dict.fromkeys(
        ["tracks", "patches", "jpegs", "pairs", "video", "done"], 0
    )
    assert video_tables(tables, kept.video.sha) == {
        "tracks": 2,
        "patches": 6,
        "jpegs": 6,
        "pairs": 2,
        "video": 1,
        "done": 1,
    }


WRITER_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from test_store import make_harvest, CFG
from trackemb.storage import PatchStore
with PatchStore.open({store!r}, harvest_config=CFG, map_size_bytes={map_size}) as store:
    print("ready", flush=True)
    for seed in range({n}):
        store.put_video(make_harvest(seed, n_tracks=1 + seed % 4, px={px}))
        time.sleep({pause})
"""


def writer_process(
    store: Path, n: int, px: int = 32, pause: float = 0.0, map_size: int = 64 << 30
) -> subprocess.Popen:
    code = WRITER_SCRIPT.format(
        tests=str(REPO / "tests"), store=str(store), n=n, px=px, pause=pause, map_size=map_size
    )
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_kill_9_mid_harvest_leaves_each_video_whole_or_absent(tmp_path: Path) -> None:
    store = tmp_path / "s"
    proc = writer_process(store, n=400, px=48)
    reader = open_reader(store)
    deadline = time.monotonic() + 30
    while len(reader.videos()) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.close()
    tables = dump(store)
    done = {k.decode() for k in tables["done"]}
    assert 6 <= len(done) < 400
    for seed in range(400):
        h = make_harvest(seed, n_tracks=1 + seed % 4, px=48)
        counts = video_tables(tables, h.video.sha)
        if h.video.sha in done:
            n = len(h.tracks)
            assert counts == {
                "tracks": n,
                "patches": 3 * n,
                "jpegs": 3 * n,
                "pairs": n,
                "video": 1,
                "done": 1,
            }
            assert all(tables["jpegs"][k.encode()] == v for k, v in h.jpegs.items())
        else:
            assert counts == dict.fromkeys(counts, 0), f"partial video {seed}: {counts}"
    # The kernel dropped the dead writer's lock; a rerun skips what is done and ends identical.
    with PatchStore.open(store, harvest_config=CFG) as writer:
        for seed in range(len(done) + 3):
            h = make_harvest(seed, n_tracks=1 + seed % 4, px=48)
            if not writer.is_done(h.video.sha):
                writer.put_video(h)
    again = dump(store)
    assert {k: v for k, v in again["jpegs"].items() if k in tables["jpegs"]} == tables["jpegs"]
    assert len(again["done"]) == len(done) + 3


def test_putting_the_same_harvest_twice_changes_nothing(tmp_path: Path) -> None:
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        store.put_video(make_harvest(1))
        store.put_video(make_harvest(2))
    first = dump(tmp_path / "s")
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        store.put_video(make_harvest(1))
    assert dump(tmp_path / "s") == first


def test_reharvest_replaces_the_old_records(tmp_path: Path) -> None:
    with PatchStore.open(tmp_path / "s") as store:
        store.put_video(make_harvest(1, n_tracks=4))
        store.put_video(make_harvest(1, n_tracks=2))
        assert (
            len(store.tracks()) == 2
            and len(store.patches()) == 6
            and store.video(make_harvest(1).video.sha).n_pairs == 2
        )


def test_failure_record_then_success_and_never_over_done(tmp_path: Path) -> None:
    h = make_harvest(1)
    failure = VideoRecord(
        sha=h.video.sha, path=h.video.path, status="done", error="boom: no stream", error_kind="x"
    )
    with PatchStore.open(tmp_path / "s") as store:
        store.put_failure(failure)
        rec = store.video(h.video.sha)
        assert rec.status == "failed" and rec.error == "boom: no stream" and not store.is_done(h.video.sha)
        assert store.stats()["errors"] == [
            {"sha": h.video.sha, "path": h.video.path, "error": "boom: no stream", "error_kind": "x"}
        ]
        store.put_video(h)
        assert store.video(h.video.sha).status == "done" and store.video(h.video.sha).error == ""
        store.put_failure(failure)
        assert store.video(h.video.sha).status == "done" and store.is_done(h.video.sha)
        assert len(store.patches()) == 6 and store.stats()["errors"] == []


def test_inconsistent_harvest_is_refused(tmp_path: Path) -> None:
    h = make_harvest(1)
    h.pairs.append(PairRecord(h.patches[0].key, "0000000000000000/000009/000001", h.video.sha, 9))
    del h.jpegs[h.patches[1].key]
    with PatchStore.open(tmp_path / "s") as store:
        with pytest.raises(
            StoreError, match="refusing to store video.*has no JPEG bytes.*refers to patches not in"
        ):
            store.put_video(h)
        assert store.videos() == []


def test_triplets_negatives_come_from_other_videos_and_are_deterministic(tmp_path: Path) -> None:
    with PatchStore.open(tmp_path / "s") as store:
        store.put_video(make_harvest(1, n_tracks=1))
        assert store.build_triplets(per_pair=3) == 0  # one video: nothing to contrast with
        for seed in (2, 3):
            store.put_video(make_harvest(seed, n_tracks=seed))
        patches = {p.key: p.video_sha for p in store.patches()}
        n = store.build_triplets(per_pair=300, seed=7)
        trips = store.triplets()
        assert n == len(trips) == 300 * len(store.pairs())
        for t in trips:
            assert patches[t.anchor] == patches[t.positive] == t.anchor_video
            assert patches[t.negative] == t.negative_video != t.anchor_video
        # Brute force: every patch of another video can be drawn, none of the anchor's own.
        for sha in {t.anchor_video for t in trips}:
            drawn = {t.negative for t in trips if t.anchor_video == sha}
            assert drawn == {k for k, v in patches.items() if v != sha}
        assert store.build_triplets(per_pair=300, seed=7) == n and store.triplets() == trips
        store.build_triplets(per_pair=300, seed=8)
        assert store.triplets() != trips
        assert store.build_triplets(per_pair=0) == 0 and store.triplets() == []


def test_map_grows_when_full(tmp_path: Path) -> None:
    harvests = [make_harvest(seed, n_tracks=4, px=128) for seed in range(16)]
    total = sum(len(b) for h in harvests for b in h.jpegs.values())
    assert total > 4 * (256 << 10)
    with PatchStore.open(tmp_path / "s", map_size_bytes=256 << 10) as store:
        for h in harvests:
            store.put_video(h)
        assert store.build_triplets(per_pair=4) == 4 * 4 * 16
        assert store.stats()["map"][0]["map_size_bytes"] > 4 * (256 << 10)
    with PatchStore.open(tmp_path / "s", map_size_bytes=256 << 10) as store:  # reopen small: still fine
        store.put_video(make_harvest(99, n_tracks=4, px=128))
    reader = open_reader(tmp_path / "s")
    assert all(reader.get_jpeg(k) == v for h in harvests for k, v in h.jpegs.items())


def test_failed_write_raises_store_error_and_keeps_what_was_committed(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with PatchStore.open(store) as writer:
        writer.put_video(make_harvest(1))
    limit = (store / "data.mdb").stat().st_size + (64 << 10)
    code = f"""
import resource, signal, sys
sys.path.insert(0, {str(REPO / "tests")!r})
from test_store import make_harvest
from trackemb.errors import StoreError
from trackemb.storage import PatchStore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
with PatchStore.open({str(store)!r}) as writer:
    try:
        writer.put_video(make_harvest(2, n_tracks=8, px=128))
    except StoreError as exc:
        print(exc)
        sys.exit(3)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    assert "could not write the video" in out.stdout and "committed before stays readable" in out.stdout
    reader = open_reader(store)
    assert [v.sha for v in reader.videos()] == [make_harvest(1).video.sha]
    assert all(reader.get_jpeg(k) == v for k, v in make_harvest(1).jpegs.items())


def test_full_disk_is_a_store_error_and_keeps_committed_videos(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        pytest.skip("needs permission to mount a 2 MiB tmpfs")
    try:
        stored = []
        with PatchStore.open(mnt / "s") as writer:
            with pytest.raises(StoreError, match="disk full .*everything committed before stays readable"):
                for seed in range(100):
                    writer.put_video(make_harvest(seed, n_tracks=4, px=128))
                    stored.append(seed)
        assert stored
        with open_reader(mnt / "s") as reader:
            assert len(reader.videos()) == len(stored)
            assert all(
                reader.get_jpeg(k) == v for s in stored for k, v in make_harvest(s, 4, 128).jpegs.items()
            )
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_readonly_store_refuses_writes(tmp_path: Path) -> None:
    PatchStore.open(tmp_path / "s").close()
    with PatchStore.open(tmp_path / "s", readonly=True) as store:
        with pytest.raises(StoreError, match="opened read-only"):
            store.put_video(make_harvest(1))
    with pytest.raises(StoreError, match="no PatchStore here"):
        PatchStore.open(tmp_path / "nothing", readonly=True)


def test_sharded_store_reads_as_one(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with PatchStore.open(root, harvest_config=CFG) as writer:
        writer.put_video(make_harvest(0))
    with PatchStore.open_shard(root, "w1", harvest_config=CFG) as shard:
        shard.put_video(make_harvest(1))
        shard.put_video(make_harvest(3))
    with PatchStore.open_shard(root, "w2", harvest_config=CFG) as shard:
        shard.put_video(make_harvest(2, n_tracks=3))
        shard.put_video(make_harvest(3))  # the same video harvested twice is read once
    other = HarvestConfig(patch_px=64).model_dump(mode="json")
    with pytest.raises(StoreError, match="patch_px"):
        PatchStore.open_shard(root, "w3", harvest_config=other)
    with pytest.raises(StoreError, match="invalid shard name"):
        PatchStore.open_shard(root, "../escape", harvest_config=CFG)
    with PatchStore.open(root, harvest_config=CFG) as writer:
        assert all(writer.is_done(make_harvest(s).video.sha) for s in range(4))
        assert writer.build_triplets(per_pair=2, seed=1) == 2 * 9
    reader = open_reader(root)
    expected = [make_harvest(0), make_harvest(1), make_harvest(2, n_tracks=3), make_harvest(3)]
    assert sorted(v.sha for v in reader.videos()) == sorted(h.video.sha for h in expected)
    assert len(reader.patches()) == 27 and len(reader.pairs()) == 9 and len(reader.tracks()) == 9
    assert reader.patches() == sorted(reader.patches(), key=lambda p: p.key)
    assert all(reader.get_jpeg(k) == v for h in expected for k, v in h.jpegs.items())
    # A batch mixing root and shard keys, in a scrambled order, comes back in that order.
    batch = [(k, v) for h in expected for k, v in h.jpegs.items()][::-1][::2]

    def check_batch(view: StoreView) -> None:
        assert view.get_jpegs([k for k, _ in batch]) == [blob for _, blob in batch]
        assert view.get_jpegs([]) == []
        with pytest.raises(MissingKeyError, match="nope/000001/000002"):
            view.get_jpegs([batch[0][0], "nope/000001/000002"])

    with reader:
        check_batch(reader)
    with PatchStore.open(root, harvest_config=CFG) as writer:
        check_batch(writer)  # the writer reads its shards too
    reader = open_reader(root)
    shard_of = {v["sha"]: v["shard"] for v in reader.stats()["per_video"]}
    assert shard_of[expected[0].video.sha] == "" and shard_of[expected[2].video.sha] == "w2"
    assert reader.meta()["shards"] == ["w1", "w2"]
    trips = reader.triplets()
    assert {t.negative_video for t in trips} == {h.video.sha for h in expected}
    assert all(t.negative_video != t.anchor_video for t in trips)
    # Triplets depend on the store's content, not on how it was sharded.
    with PatchStore.open(tmp_path / "flat") as flat:
        for h in expected:
            flat.put_video(h)
        flat.build_triplets(per_pair=2, seed=1)
        assert flat.triplets() == trips


def test_stats_and_montage(tmp_path: Path) -> None:
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        store.put_video(make_harvest(1, n_tracks=3))
        store.put_video(make_harvest(2, n_tracks=2))
        store.put_failure(
            VideoRecord(
                sha="e" * 64,
                path="/videos/bad.mp4",
                status="failed",
                error="no video stream",
                error_kind="no_video_stream",
            )
        )
        store.build_triplets()
    stats = open_reader(tmp_path / "s").stats()
    assert (
        stats["videos_done"],
        stats["videos_failed"],
        stats["tracks"],
        stats["patches"],
        stats["pairs"],
        stats["triplets"],
    ) == (2, 1, 5, 15, 5, 5)
    row = {v["path"]: v for v in stats["per_video"]}["/videos/clip1.mp4"]
    assert (row["tracks"], row["patches"], row["pairs"], row["status"]) == (3, 9, 3, "done")
    assert stats["errors"][0]["error_kind"] == "no_video_stream" and stats["used_bytes"] > 0
    text = format_stats(stats)
    assert "2 videos done, 1 failed" in text and "[no_video_stream] no video stream" in text
    titles = [t.title for t in stats_tables(stats)]
    assert titles == [f"PatchStore {tmp_path / 's'}", "videos", "yield", "errors"]
    out = store_montage(tmp_path / "s", tmp_path / "m" / "pairs.png", n_pairs=4, seed=0, tile_px=40)
    img = cv2.imread(str(out))
    assert img.shape[1] == 2 * (82 + 16) + 16  # 4 pairs: 2 x 2 cells of first|last, 16 px apart
    assert (img[16 : 16 + 40, 16 + 40 : 16 + 42] == 230).all()  # the thin separator between first and last
    caption = img[16 + 40 : 16 + 40 + 20, 16 : 16 + 82]
    assert (caption > 200).any(), "no caption text drawn under the first pair"
    text = png_text(out)
    pairs = [text[f"pair {n}"] for n in range(1, 5)]
    assert all(p.startswith("clip") and " track " in p and "frames " in p and " -> " in p for p in pairs), (
        pairs
    )
    with PatchStore.open(tmp_path / "empty") as empty:
        with pytest.raises(StoreError, match="no positive pairs"):
            store_montage(empty, tmp_path / "x.png")


def test_a_fixed_file_replaces_its_stale_failure_record(tmp_path: Path) -> None:
    """A file that failed and was later replaced (new content hash) keeps one record: the new one."""
    good = make_harvest(7, path="/videos/fixed.mp4")
    stale = VideoRecord(
        sha="0" * 64, path="/videos/fixed.mp4", status="failed", error="truncated", error_kind="truncated"
    )
    other = VideoRecord(
        sha="1" * 64, path="/videos/other.mp4", status="failed", error="empty", error_kind="empty_file"
    )
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as store:
        store.put_failure(stale)
        store.put_failure(other)
        newer = VideoRecord(
            sha="2" * 64, path="/videos/fixed.mp4", status="failed", error="x", error_kind="not_a_video"
        )
        store.put_failure(newer)
        assert {(v.sha[:1], v.status) for v in store.videos()} == {("2", "failed"), ("1", "failed")}
        store.put_video(good)
        assert sorted((v.path, v.status) for v in store.videos()) == [
            ("/videos/fixed.mp4", "done"),
            ("/videos/other.mp4", "failed"),
        ]
