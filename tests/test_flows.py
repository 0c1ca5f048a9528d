"""Harvest flow under a real local Prefect API: summary, artifact, skip on re-run, Dask shards."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import write_synthetic_video

from trackemb.config import HarvestConfig
from trackemb.storage.store import open_reader

pytestmark = pytest.mark.prefect


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flow-videos")
    (root / "sub dir").mkdir()
    write_synthetic_video(root / "a.mp4", n_objects=2, n_frames=60, seed=1)
    write_synthetic_video(root / "sub dir" / "b.mp4", n_objects=1, n_frames=60, seed=2, camera_pan=(1, 0))
    (root / "notes.txt").write_text("not a video, and not selected by extension")
    (root / "broken.mp4").write_text("this is text, not video")
    return root


def _store_content(store: Path) -> dict[str, object]:
    with open_reader(store) as reader:
        return {
            "videos": sorted((v.sha, v.status, v.n_pairs) for v in reader.videos()),
            "patches": sorted(p.key for p in reader.patches()),
            "pairs": sorted((p.anchor, p.positive) for p in reader.pairs()),
            "jpegs": [reader.get_jpeg(p.key) for p in sorted(reader.patches(), key=lambda p: p.key)],
        }


def _every_record(store: Path) -> dict[str, object]:
    """Every record of the store (video wall times aside), for runs that must store the same thing."""
    from dataclasses import replace

    with open_reader(store) as reader:
        return {
            **_store_content(store),
            "video_records": [replace(v, seconds=0.0) for v in reader.videos()],
            "tracks": sorted(reader.tracks(), key=lambda t: (t.video_sha, t.track_id)),
            "patch_records": reader.patches(),
            "pair_records": reader.pairs(),
            "triplets": sorted(reader.triplets(), key=lambda t: (t.anchor, t.positive, t.negative)),
        }


def test_harvest_flow_stores_pairs_records_errors_and_skips_on_rerun(
    prefect_api, video_dir: Path, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client  # noqa: F401  (API must be the harness's)

    from trackemb.flows.harvest import harvest_flow

    store = tmp_path / "patches.lmdb"
    summary = harvest_flow(str(video_dir), str(store), HarvestConfig())
    assert summary["videos_total"] == 3
    assert summary["done"] == 2 and summary["failed"] == 1
    failed = next(r for r in summary["videos"] if r["status"] == "failed")
    assert failed["path"].endswith("broken.mp4") and "broken.mp4" in failed["error"] and failed["error_kind"]
    assert summary["pairs_added"] > 0 and summary["triplets"] > 0
    before = _store_content(store)
    with open_reader(store) as reader:
        for t in reader.triplets():
            assert t.anchor_video != t.negative_video

    again = harvest_flow(str(video_dir), str(store), HarvestConfig())
    assert again["skipped"] == 2 and again["done"] == 0 and again["pairs_added"] == 0
    assert _store_content(store) == before


def test_harvest_flow_state_and_artifact(prefect_api, video_dir: Path, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from trackemb.flows.harvest import harvest_flow

    state = harvest_flow(
        str(video_dir), str(tmp_path / "s.lmdb"), HarvestConfig(), strict=True, return_state=True
    )
    assert state.is_failed(), "strict mode must end Failed when a video failed"
    assert (tmp_path / "s.lmdb").exists()
    with open_reader(tmp_path / "s.lmdb") as reader:
        assert sum(v.status == "done" for v in reader.videos()) == 2, (
            "good videos are stored even in strict mode"
        )

    import asyncio

    async def _artifacts() -> list[object]:
        async with get_client() as client:
            return await client.read_artifacts()

    keys = {a.key for a in asyncio.run(_artifacts())}
    assert "harvest-summary" in keys


@pytest.mark.slow
def test_dask_sharded_harvest_equals_single_process(prefect_api, video_dir: Path, tmp_path: Path) -> None:
    from distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

    from trackemb.flows.harvest import harvest_flow

    single = tmp_path / "single.lmdb"
    harvest_flow(str(video_dir), str(single), HarvestConfig())
    sharded = tmp_path / "sharded.lmdb"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        flow = harvest_flow.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        summary = flow(str(video_dir), str(sharded), HarvestConfig(), shards=True)
    assert summary["done"] == 2 and summary["failed"] == 1
    assert len(list((sharded / "shards").iterdir())) >= 1
    a, b = _every_record(single), _every_record(sharded)
    assert a["patch_records"] and a["triplets"]
    for name in a:
        assert a[name] == b[name], f"{name} differ between a single-process and a 2-worker Dask harvest"


@pytest.mark.slow
def test_worker_processes_store_what_one_process_stores(prefect_api, video_dir: Path, tmp_path: Path) -> None:
    from trackemb.flows.harvest import harvest_flow

    harvest_flow(str(video_dir), str(tmp_path / "one"), HarvestConfig(), workers=0)
    summary = harvest_flow(str(video_dir), str(tmp_path / "two"), HarvestConfig(), workers=2)
    assert summary["done"] == 2 and summary["failed"] == 1
    a, b = _every_record(tmp_path / "one"), _every_record(tmp_path / "two")
    assert a["patch_records"] and a["triplets"]
    for name in a:
        assert a[name] == b[name], f"{name} differ between an in-process and a 2-process harvest"
