"""PatchStore across processes: one writer at a time, readers during writes, DataLoader workers."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_store import CFG, REPO, make_harvest, writer_process

from trackemb.errors import StoreError, StoreLockedError
from trackemb.storage import PatchStore, StoreReader, VideoHarvest, open_reader, patch_key

SECOND_WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from trackemb.errors import StoreLockedError
from trackemb.storage import PatchStore
start = time.monotonic()
try:
    store = PatchStore.open({store!r}, lock_timeout_s={timeout})
except StoreLockedError as exc:
    print(f"{{time.monotonic() - start:.3f}} {{exc}}")
    sys.exit(3)
print(f"{{time.monotonic() - start:.3f}} opened")
store.close()
"""


def second_writer(store: Path, timeout: float) -> subprocess.Popen:
    code = SECOND_WRITER.format(tests=str(REPO / "tests"), store=str(store), timeout=timeout)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_second_writer_fails_fast_naming_the_holder(tmp_path: Path) -> None:
    with PatchStore.open(tmp_path / "s", harvest_config=CFG):
        proc = second_writer(tmp_path / "s", timeout=0.0)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out
    waited, message = out.split(" ", 1)
    assert float(waited) < 0.5
    assert f"pid {os.getpid()} on " in message and "locked by another writer" in message


def test_second_writer_waits_for_the_first_to_release(tmp_path: Path) -> None:
    store = PatchStore.open(tmp_path / "s", harvest_config=CFG)
    proc = second_writer(tmp_path / "s", timeout=30.0)
    time.sleep(1.0)  # the child imports, then waits on the lock
    store.close()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    waited, status = out.split()
    assert status == "opened" and float(waited) > 0.1


def test_writer_lock_in_one_process_names_this_pid(tmp_path: Path) -> None:
    with PatchStore.open(tmp_path / "s"):
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()} .*after waiting 0.2 s"):
            PatchStore.open(tmp_path / "s", lock_timeout_s=0.2)


def test_reader_sees_whole_videos_while_a_writer_writes(tmp_path: Path) -> None:
    store = tmp_path / "s"
    # A small map makes the writer grow it while we read (readers must follow the resize).
    PatchStore.open(store, harvest_config=CFG, map_size_bytes=256 << 10).close()
    proc = writer_process(store, n=40, px=64, pause=0.01, map_size=256 << 10)
    reader = open_reader(store)
    seen: set[int] = set()
    while True:
        running = proc.poll() is None
        videos = reader.videos()
        seen.add(len(videos))
        for video in videos:
            tracks = reader.tracks(video.sha)
            assert len(tracks) == video.n_tracks and video.n_pairs == video.n_tracks
            for track in tracks:
                for frame in track.frames:
                    assert reader.get_jpeg(patch_key(video.sha, track.track_id, frame))[:2] == b"\xff\xd8"
        if not running:
            break
    assert proc.returncode == 0
    assert len(reader.videos()) == 40 and len(reader.patches()) == sum(3 * (1 + s % 4) for s in range(40))
    assert len(seen - {0, 40}) >= 2, f"never read during the writes: {sorted(seen)}"
    assert reader.stats()["map"][0]["map_size_bytes"] > 1 << 20  # followed the writer's map growth


class JpegDataset:
    """Holds only a reader (a path) and keys, like the training datasets."""

    def __init__(self, reader: StoreReader, keys: list[str]) -> None:
        self.reader, self.keys = reader, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> tuple[str, bytes, int]:
        return self.keys[i], self.reader.get_jpeg(self.keys[i]), os.getpid()


def _identity(item: object) -> object:
    return item


def test_reader_is_picklable_and_works_in_dataloader_workers(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    harvests = [make_harvest(seed) for seed in range(3)]
    with PatchStore.open(tmp_path / "s") as store:
        for h in harvests:
            store.put_video(h)
    reader = open_reader(tmp_path / "s")
    keys = [p.key for p in reader.patches()]  # the parent opens its handles before the workers fork
    expected = {k: v for h in harvests for k, v in h.jpegs.items()}
    blob = pickle.dumps(reader)
    assert len(blob) < 200 and pickle.loads(blob).get_jpeg(keys[0]) == expected[keys[0]]
    # forkserver, as training uses: a plain fork of a process that already ran Prefect
    # (the session's test API) gives workers that die at start-up.
    loader = torch.utils.data.DataLoader(
        JpegDataset(reader, keys), batch_size=None, num_workers=2, collate_fn=_identity,
        multiprocessing_context="forkserver",
    )  # fmt: skip
    got = list(loader)
    assert {k: b for k, b, _ in got} == expected
    assert {pid for _, _, pid in got} - {os.getpid()}, "items were not read in worker processes"
    assert reader.get_jpeg(keys[-1]) == expected[keys[-1]]  # the parent's handles still work


def test_handles_are_shared_within_one_process(tmp_path: Path) -> None:
    a, b = make_harvest(1), make_harvest(2)
    with PatchStore.open(tmp_path / "s") as writer:
        writer.put_video(a)
        reader, other = (
            open_reader(tmp_path / "s"),
            open_reader(tmp_path / "s"),
        )  # LMDB: one handle per process
        assert [v.sha for v in reader.videos()] == [a.video.sha]
        writer.put_video(b)
        assert len(other.videos()) == 2
    assert reader.get_jpeg(b.patches[0].key) == b.jpegs[b.patches[0].key]  # outlives the writer
    reader.close(), other.close()
    with PatchStore.open(tmp_path / "s") as writer:  # nothing holds a read-only handle: fine
        reader = open_reader(tmp_path / "s")
        assert len(reader.patches()) == 12
    reader.close()
    with open_reader(tmp_path / "s") as reader:
        reader.videos()
        with pytest.raises(StoreError, match="open for reading; close those readers"):
            PatchStore.open(tmp_path / "s")


def test_root_writer_sees_a_shard_written_by_another_thread(tmp_path: Path) -> None:
    harvests = [make_harvest(seed) for seed in range(20)]
    errors: list[BaseException] = []
    with PatchStore.open(tmp_path / "s", harvest_config=CFG) as root:

        def work(name: str, part: list[VideoHarvest]) -> None:
            try:
                with PatchStore.open_shard(
                    tmp_path / "s", name, harvest_config=CFG, lock_timeout_s=10
                ) as shard:
                    for h in part:
                        shard.put_video(h)
                        # Reads every shard, including the other thread's while it is created and written.
                        assert root.is_done(h.video.sha)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(f"t{i}", harvests[i::2])) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert all(root.is_done(h.video.sha) for h in harvests)
        assert root.build_triplets(per_pair=1) == 40
