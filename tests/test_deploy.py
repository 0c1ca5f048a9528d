"""Deployments: prefect.yaml and serve_folder, checked statically and run end to end.

The end-to-end tests start a real ``prefect server`` on a free loopback port with a
throw-away PREFECT_HOME, then drive it the way the README does: ``prefect work-pool
create``, ``prefect deploy``, ``prefect deployment run``, ``prefect worker start
--run-once`` (and ``serve``), on two tiny synthetic videos. Every Prefect command runs
with this interpreter (``python -m prefect``), i.e. the venv trackemb is installed in.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from synthetic import write_synthetic_video

from trackemb.flows.deploy import HARVEST_DEPLOYMENT, build_deployments
from trackemb.flows.server import LocalServer, local_server

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "prefect.yaml"
YAML_HARVEST = "trackemb-harvest/harvest-folder"
SERVED_HARVEST = f"trackemb-harvest/{HARVEST_DEPLOYMENT}"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _deployments() -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}


# ---------------------------------------------------------------- static checks (fast)


def test_prefect_yaml_shape() -> None:
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    assert spec.get("build") is None and spec.get("push") is None, "no build/push steps: nothing is shipped"
    (step,) = spec["pull"]
    assert step == {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $TRACKEMB_REPO }}"}}
    deployments = _deployments()
    assert set(deployments) == {"harvest-folder", "pipeline"}
    for name, dep in deployments.items():
        assert dep["work_pool"]["name"] == "trackemb"
        assert dep["concurrency_limit"] == 1, f"{name}: runs on one store must not overlap"
        path, func = dep["entrypoint"].split(":")
        assert (REPO / path).is_file(), f"{name}: entrypoint file {path} missing"
        assert f"def {func}(" in (REPO / path).read_text()
    assert deployments["harvest-folder"]["entrypoint"] == "trackemb/flows/harvest.py:harvest_flow"
    assert deployments["pipeline"]["entrypoint"] == "trackemb/flows/pipeline.py:pipeline_flow"
    assert deployments["harvest-folder"]["parameters"]["settle_s"] >= 5  # watch mode: let copies finish
    # Registering must never start harvesting on its own: the schedule ships paused.
    assert all(s["active"] is False for s in deployments["harvest-folder"]["schedules"])


def test_harvest_deployment_parameters_fit_the_flow() -> None:
    from trackemb.flows.harvest import harvest_flow

    accepted = set(inspect.signature(harvest_flow.fn).parameters)
    params = _deployments()["harvest-folder"]["parameters"]
    assert {"video_dir", "store"} <= set(params) <= accepted
    harvest_flow.validate_parameters(params)


def test_pipeline_deployment_parameters_fit_the_flow() -> None:
    """The pipeline flow is imported plainly: an import error must fail, not skip."""
    from trackemb.flows import pipeline

    accepted = set(inspect.signature(pipeline.pipeline_flow.fn).parameters)
    params = _deployments()["pipeline"]["parameters"]
    assert {"video_dir", "out_dir"} <= set(params) <= accepted
    assert Path(params["out_dir"]) / "patches.lmdb" == Path(
        _deployments()["harvest-folder"]["parameters"]["store"]
    )


def _when(deployment: object) -> list[tuple[float | str, bool]]:
    """(interval seconds or cron, active) of each schedule."""
    out = []
    for s in deployment.schedules:
        when = s.schedule.cron if hasattr(s.schedule, "cron") else s.schedule.interval.total_seconds()
        assert s.slug == "poll-folder", "a stable slug, so a re-serve replaces its schedule"
        out.append((when, s.active))
    return out


def test_build_deployments_follow_the_retrain_policy(tmp_path: Path) -> None:
    never = build_deployments(tmp_path / "v", tmp_path / "o", interval_s=120, retrain_policy="never")
    assert [(d.name, _when(d)) for d in never] == [("harvest-folder-served", [(120, True)])]
    params = never[0].parameters
    assert params["video_dir"] == str((tmp_path / "v").resolve())
    assert params["store"] == str((tmp_path / "o" / "patches.lmdb").resolve())
    assert never[0].concurrency_limit == 1
    assert params["settle_s"] >= 5, "watch mode: files still being copied in wait for the next poll"
    assert never[0].entrypoint == "trackemb.flows.harvest.harvest_flow", (
        "module entrypoint: serve works from any cwd"
    )

    manual = build_deployments(tmp_path / "v", tmp_path / "o", interval_s=120, retrain_policy="manual")
    assert [(d.name, _when(d)) for d in manual] == [
        ("harvest-folder-served", [(120, True)]),
        ("pipeline-served", [(120, False)]),
    ]
    on_new = build_deployments(
        tmp_path / "v", tmp_path / "o", cron="0 * * * *", retrain_policy="on_new_videos"
    )
    assert [(d.name, _when(d)) for d in on_new] == [
        ("harvest-folder-served", [("0 * * * *", False)]),
        ("pipeline-served", [("0 * * * *", True)]),
    ]
    assert on_new[1].parameters["out_dir"] == str((tmp_path / "o").resolve())
    assert on_new[1].parameters["settle_s"] >= 5
    assert on_new[1].concurrency_limit == 1


def test_build_deployments_schedule_arguments(tmp_path: Path) -> None:
    (cron_only,) = build_deployments(tmp_path, tmp_path, cron="*/5 * * * *", retrain_policy="never")
    assert _when(cron_only) == [("*/5 * * * *", True)], "cron replaces the default interval"
    (manual_only,) = build_deployments(tmp_path, tmp_path, interval_s=None, retrain_policy="never")
    assert [active for _, active in _when(manual_only)] == [False], (
        "no schedule: an inactive one, never an old active one"
    )
    with pytest.raises(ValueError, match="positive"):
        build_deployments(tmp_path, tmp_path, interval_s=0, retrain_policy="never")
    with pytest.raises(ValueError, match="retrain_policy"):
        build_deployments(tmp_path, tmp_path, retrain_policy="sometimes")  # type: ignore[arg-type]


def test_build_deployments_take_settings_from_toml(tmp_path: Path) -> None:
    toml = tmp_path / "serve.toml"
    toml.write_text("[harvest]\npatch_px = 64\n[train]\nsteps = 7\n")
    harvest, pipeline = build_deployments(tmp_path, tmp_path, config=toml, retrain_policy="manual")
    assert harvest.parameters["config"]["patch_px"] == 64
    assert pipeline.parameters["harvest"]["patch_px"] == 64 and pipeline.parameters["train"]["steps"] == 7
    toml.write_text("[harvest]\npatch_pixels = 64\n")
    with pytest.raises(ValueError, match="patch_pixels"):
        build_deployments(tmp_path, tmp_path, config=toml, retrain_policy="never")


# ---------------------------------------------------------------- end to end (real server)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with local_server(home=tmp_path_factory.mktemp("prefect-home"), ui=False, timeout_s=120) as srv:
        yield srv


def _videos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"clip{i}.mp4" for i in range(n)]
    for i, path in enumerate(paths):
        write_synthetic_video(path, n_frames=45, seed=i)
    return paths


def _prefect(
    server: LocalServer, *args: str, cwd: Path = REPO, extra_env: dict[str, str] | None = None
) -> str:
    env = dict(server.env, **(extra_env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"prefect {' '.join(args)} exited {proc.returncode}:\n{output[-4000:]}"
    return output


def _api(server: LocalServer, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{server.api_url}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _state(server: LocalServer, flow_run_id: str) -> str:
    return _api(server, f"/flow_runs/{flow_run_id}")["state_type"]


def _run_id(output: str) -> str:
    match = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert match, f"no flow run id in:\n{output}"
    return match.group(1)


def _stored_videos(store: Path) -> dict[str, str]:
    from trackemb.storage.store import open_reader

    return {Path(v.path).name: v.status for v in open_reader(store).videos()}


@pytest.mark.prefect
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_prefect_yaml_deploy_and_worker_run(server: LocalServer, tmp_path: Path) -> None:
    videos = _videos(tmp_path / "videos", 2)
    store = tmp_path / "store.lmdb"
    _prefect(server, "work-pool", "create", "trackemb", "--type", "process")
    out = _prefect(server, "--no-prompt", "deploy", "--name", "harvest-folder")
    assert YAML_HARVEST in out
    out = _prefect(
        server,
        "deployment",
        "run",
        YAML_HARVEST,
        "--param",
        f"video_dir={videos[0].parent}",
        "--param",
        f"store={store}",
        "--param",
        "settle_s=0",  # the clips are seconds old: this manual run does not wait for them to settle
    )
    run_id = _run_id(out)
    # The worker starts elsewhere on purpose: the pull step must find the code via TRACKEMB_REPO.
    worker_log = _prefect(
        server,
        "worker",
        "start",
        "--pool",
        "trackemb",
        "--run-once",
        cwd=tmp_path,
        extra_env={"TRACKEMB_REPO": str(REPO), "PREFECT_LOGGING_LEVEL": "INFO"},
    )
    assert _state(server, run_id) == "COMPLETED", worker_log[-6000:]
    assert _stored_videos(store) == {"clip0.mp4": "done", "clip1.mp4": "done"}


@pytest.mark.prefect
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_serve_folder_runs_harvest(server: LocalServer, tmp_path: Path) -> None:
    videos = _videos(tmp_path / "videos", 1)
    out_dir = tmp_path / "out"
    env = dict(server.env, PREFECT_RUNNER_POLL_FREQUENCY="1")
    # What `trackemb serve VIDEO_DIR --out OUT --interval 3600` runs, minus the CLI's flag parsing.
    code = (
        "import logging, sys; from trackemb.flows.deploy import serve_folder; logging.basicConfig(level=logging.INFO); "
        "serve_folder(sys.argv[1], sys.argv[2], interval_s=3600, retrain_policy='never')"
    )
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        serve = subprocess.Popen(
            [sys.executable, "-c", code, str(videos[0].parent), str(out_dir)],
            env=env,
            cwd=tmp_path,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deployment = _wait_for_deployment(server, serve, log_path)
        assert [(s["schedule"]["interval"], s["active"]) for s in deployment["schedules"]] == [(3600.0, True)]
        assert deployment["parameters"]["store"] == str(out_dir.resolve() / "patches.lmdb")
        assert deployment["parameters"]["settle_s"] > 0  # scheduled polls wait for copies to finish
        # The clip was written seconds ago: this manual run does not wait for it to settle.
        run_id = _run_id(_prefect(server, "deployment", "run", SERVED_HARVEST, "--param", "settle_s=0"))
        deadline = time.monotonic() + 120
        while (state := _state(server, run_id)) not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.5)
        assert state == "COMPLETED", log_path.read_text()[-6000:]
        assert _stored_videos(out_dir / "patches.lmdb") == {"clip0.mp4": "done"}
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGINT)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait(timeout=30)


def _wait_for_deployment(server: LocalServer, serve: subprocess.Popen[bytes], log_path: Path) -> dict:
    """The served deployment, once ``serve`` has registered it with this test's store."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert serve.poll() is None, f"serve exited {serve.returncode}:\n{log_path.read_text()[-4000:]}"
        found = _api(server, "/deployments/filter", {"deployments": {"name": {"any_": [HARVEST_DEPLOYMENT]}}})
        for dep in found:
            if dep["parameters"].get("store", "").startswith(str(log_path.parent.resolve())):
                return dep
        time.sleep(0.5)
    raise AssertionError(f"serve did not register {SERVED_HARVEST} in time:\n{log_path.read_text()[-4000:]}")
