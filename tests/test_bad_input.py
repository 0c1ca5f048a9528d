"""Bad input end to end: a generated corpus of broken files next to good ones, harvested by the CLI.

Policy under test (README, "Bad input and exit status"): every bad file gets a failed record
with a specific ``error_kind`` and a cause naming the file, in the store and in the run
summary; every good file in the same folder is harvested; without ``--strict`` the run exits
0 and the flow ends Completed; with ``--strict`` it exits 1 and the flow ends Failed, after
all good files are stored. Two CLI runs in total; they share the session's Prefect API.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from badcorpus import (
    GOOD_NAMES,
    NON_UTF8_NAME,
    NON_UTF8_SHOWN,
    ODD_NAMES,
    Expect,
    child_obeys_file_modes,
    cli_env,
    make_bad_corpus,
    run_cli,
)

from trackemb.storage.store import open_reader

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Expect]]:
    root = tmp_path_factory.mktemp("bad") / "videos"
    return root, make_bad_corpus(root)


def _flow_run(store: Path) -> Any:
    """The harvest flow run (from the session's Prefect API) that wrote ``store``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=50)
    matching = [r for r in runs if r.parameters.get("store") == str(store)]
    assert matching, f"no flow run with store={store} among {[r.parameters.get('store') for r in runs]}"
    return matching[0]


@pytest.fixture(scope="module")
def lax_run(corpus, prefect_api, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One CLI harvest of the whole corpus without --strict, obeying file modes even as root."""
    root, _ = corpus
    tmp = tmp_path_factory.mktemp("lax")
    store, out = tmp / "store", tmp / "summary.json"
    obey = child_obeys_file_modes(root / "unreadable.mp4")
    proc = run_cli(
        ["harvest", str(root), "--store", str(store), "--json", str(out)], cli_env(tmp), obey_file_modes=obey
    )
    summary = json.loads(out.read_text()) if out.exists() else None
    return {"proc": proc, "store": store, "summary": summary, "obeys_modes": obey}


def _expected(exp: Expect, obeys_modes: bool) -> Expect:
    if exp.unprivileged_only and not obeys_modes:
        return Expect("done", note="readable: this process bypasses file modes and could not drop that")
    return exp


def _rows_by_name(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows = {Path(r["path"]).name: r for r in summary["videos"]}
    assert len(rows) == len(summary["videos"]), "two summary rows for one file"
    return rows


def _check_failure(name: str, error: str, kind: str, exp: Expect) -> None:
    assert kind == exp.kind, (
        f"{name}: error_kind {kind!r}, expected {exp.kind!r} ({exp.note}); error: {error}"
    )
    assert name in error, f"{name}: the error does not name the file: {error!r}"
    cause = error.split(f"{name}:", 1)[-1].strip()
    assert len(cause) >= 10, f"{name}: no readable cause after the file name: {error!r}"


def test_lax_run_exits_zero_and_flow_completes(lax_run) -> None:
    proc = lax_run["proc"]
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    assert lax_run["summary"] is not None, "--json summary was not written"
    assert _flow_run(lax_run["store"]).state.is_completed()


def test_every_file_gets_its_outcome_in_the_summary(lax_run, corpus) -> None:
    _, expect = corpus
    rows = _rows_by_name(lax_run["summary"])
    for name, exp in expect.items():
        exp = _expected(exp, lax_run["obeys_modes"])
        if exp.status == "absent":
            assert name not in rows, f"{name} ({exp.note}) should not be listed as a video: {rows.get(name)}"
            continue
        assert name in rows, f"{name} ({exp.note}) missing from the summary"
        row = rows[name]
        assert row["status"] == exp.status, f"{name} ({exp.note}): {row}"
        if exp.status == "duplicate":
            assert row["pairs"] == 0 and exp.kind in row["note"], f"{name} ({exp.note}): {row}"
        elif exp.status == "failed":
            _check_failure(name, row["error"], row["error_kind"], exp)
        else:
            assert row["pairs"] >= exp.min_pairs, f"{name} ({exp.note}): {row}"
            if exp.max_pairs is not None:
                assert row["pairs"] <= exp.max_pairs, f"{name} ({exp.note}): {row}"
    listed = {n for n, e in expect.items() if e.status != "absent"}
    assert set(rows) == listed, f"unexpected files in the summary: {set(rows) - listed}"
    s = lax_run["summary"]
    assert s["failed"] == sum(r["status"] == "failed" for r in rows.values())
    assert s["done"] == sum(r["status"] == "done" for r in rows.values())
    assert s["duplicates"] == sum(e.status == "duplicate" for e in expect.values()) == 1
    assert s["pairs_added"] == len(open_reader(lax_run["store"]).pairs()), "pairs counted twice"


def test_store_holds_the_same_outcomes(lax_run, corpus) -> None:
    _, expect = corpus
    reader = open_reader(lax_run["store"])
    records = {Path(v.path).name: v for v in reader.videos()}
    pairs_per_video: dict[str, int] = {}
    for pair in reader.pairs():
        pairs_per_video[pair.video_sha] = pairs_per_video.get(pair.video_sha, 0) + 1
    for name, exp in expect.items():
        exp = _expected(exp, lax_run["obeys_modes"])
        if exp.status == "absent":
            assert name not in records
            continue
        rec = records.get(name)
        if exp.status == "duplicate":  # stored once, under the first path, with this one beside it
            assert rec is None and name in [Path(p).name for p in records[exp.kind].also_at], records[
                exp.kind
            ]
            continue
        assert rec is not None, f"{name} ({exp.note}) has no video record in the store"
        assert rec.status == exp.status, f"{name}: stored {rec}"
        if exp.status == "failed":
            _check_failure(name, rec.error, rec.error_kind, exp)
        else:
            assert rec.n_pairs == pairs_per_video.get(rec.sha, 0), f"{name}: record says {rec.n_pairs} pairs"
            assert rec.n_pairs >= exp.min_pairs, f"{name}: {rec}"
    for name in GOOD_NAMES + ODD_NAMES:  # odd names are stored under their exact (unicode) path
        assert records[name].path.endswith(name)
    latin1 = records[NON_UTF8_SHOWN]  # shown with an escape, kept exactly: the file is found again
    assert Path(latin1.fs_path).name == NON_UTF8_NAME and Path(latin1.fs_path).is_file()
    assert len(reader.triplets()) > 0, "good videos were stored but no other-video triplets were built"


def test_strict_exits_one_after_storing_good_files(corpus, prefect_api, tmp_path: Path) -> None:
    root, expect = corpus
    small = tmp_path / "videos"
    small.mkdir()
    chosen = [GOOD_NAMES[0], ODD_NAMES[0], "not_a_video.mp4", "truncated.mp4"]
    for name in chosen:
        shutil.copy2(root / name, small / name)
    store, out = tmp_path / "store", tmp_path / "summary.json"
    proc = run_cli(
        ["harvest", str(small), "--store", str(store), "--strict", "--json", str(out)], cli_env(tmp_path)
    )
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    assert "strict" in proc.stderr, proc.stderr[-2000:]
    assert _flow_run(store).state.is_failed()

    records = {Path(v.path).name: v for v in open_reader(store).videos()}
    for name in chosen:
        exp = expect[name]
        assert records[name].status == exp.status, f"{name}: {records[name]}"
        if exp.status == "done":
            assert records[name].n_pairs >= 1
        else:
            _check_failure(name, records[name].error, records[name].error_kind, exp)
            assert name in proc.stderr, f"strict run output does not name the failed file {name}"
    # The run summary (file, cause) is part of the contract in strict mode too.
    assert out.exists(), "--strict run did not write its --json summary"
    rows = _rows_by_name(json.loads(out.read_text()))
    assert {n for n, r in rows.items() if r["status"] == "failed"} == {"not_a_video.mp4", "truncated.mp4"}
