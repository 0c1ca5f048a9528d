"""The harvest summary, as the CLI table, ``--json`` and the Prefect artifact show it: short file
names with full paths as footnotes, an error-kind column, and a warning while the store cannot be
trained on (fewer than two videos with pairs). One real harvest through the CLI, one good video
and one broken file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from badcorpus import cli_env, run_cli
from synthetic import write_synthetic_video

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def _artifact_markdown(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read() -> str:
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
            return str(max(arts, key=lambda a: a.created).data)

    return asyncio.run(read())


def test_summary_table_json_and_artifact_agree(prefect_api, tmp_path: Path) -> None:
    videos = tmp_path / "clips"
    (videos / "sub").mkdir(parents=True)
    write_synthetic_video(videos / "sub" / "walk.mp4", n_objects=2, n_frames=45, seed=1)
    (videos / "broken.mp4").write_bytes(b"\x00" * 4096)
    store, summary_json = tmp_path / "s.lmdb", tmp_path / "summary.json"
    proc = run_cli(
        ["harvest", str(videos), "--store", str(store), "--json", str(summary_json)], cli_env(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    summary = json.loads(summary_json.read_text())
    rows = {r["file"]: r for r in summary["videos"]}
    assert set(rows) == {"broken.mp4", "sub/walk.mp4"}, "short names are relative to the harvested folder"
    broken = rows["broken.mp4"]
    assert broken["status"] == "failed" and broken["error_kind"] and str(videos) not in broken["cause"]
    assert broken["path"] == str(videos / "broken.mp4")
    assert summary["videos_with_pairs"] == 1 and "training needs at least two" in summary["warnings"][0]

    # CLI: the table (stdout) has the kind column and short names; full paths as footnotes.
    table = proc.stdout
    assert "error kind" in table and broken["error_kind"] in table and "sub/walk.mp4 [" in table
    footnotes = [line.strip() for line in table.splitlines() if line.strip().startswith("[")]
    assert f"[1] {videos / 'broken.mp4'}" in footnotes and f"[2] {videos / 'sub' / 'walk.mp4'}" in footnotes
    assert "warning: the store holds 1 video(s) with positive pairs" in proc.stderr

    # Prefect artifact: the same rows, kind column, footnoted paths, and the warning.
    md = _artifact_markdown("harvest-summary")
    header = next(line for line in md.splitlines() if line.startswith("| video | status |"))
    assert {"tracks", "pairs", "error kind", "error / note"} <= {
        c.strip() for c in header.strip("|").split("|")
    }
    assert "| broken.mp4 [1] | failed |" in md and f"1. `{videos / 'broken.mp4'}`" in md
    assert "**Warning:** the store holds 1 video(s) with positive pairs" in md
