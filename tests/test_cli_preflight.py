"""Mistakes a new user makes, through the real ``trackemb`` entry point: each fails before any
Prefect server starts, with one ``error:`` line that names the input and the fix, creates
nothing, and costs well under a second of CPU. Tracebacks only with ``-v``.

Time is measured as the child's CPU time (user + sys), which a busy test machine does not
inflate the way it inflates wall time; a temporary Prefect server alone costs several CPU seconds.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from synth_store import build_synthetic_store

from trackemb import __version__
from trackemb.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, PREFECT_HOME=str(tmp / ".prefect-home"), COLUMNS="200")
    env.pop("PREFECT_API_URL", None)  # a preflight failure must not need any API
    return env


def run(
    args: list[str], cwd: Path, module: str = "trackemb.cli"
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the CLI in ``cwd``; returns the result and the child's CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=_env(cwd),
        capture_output=True,
        text=True,
        timeout=120,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if ".prefect-home" not in p.parts}


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"want one error line, got:\n{proc.stderr}"
    assert proc.stdout == "", f"nothing on stdout for an error, got {proc.stdout!r}"
    return lines[0]


@pytest.fixture(scope="module")
def one_video_store(tmp_path_factory) -> Path:
    return build_synthetic_store(tmp_path_factory.mktemp("one") / "one.lmdb", n_videos=1, tracks_per_video=2)


CASES = {
    # name: (args, words the error line must hold)
    "harvest a missing folder": (
        ["harvest", "no_such_dir", "--store", "s.lmdb"],
        ["no_such_dir", "no such folder"],
    ),
    "harvest into a file": (
        ["harvest", "videos", "--store", "afile"],
        ["afile", "is a file", "store directory"],
    ),
    "harvest an empty folder": (["harvest", "empty", "--store", "s.lmdb"], ["empty", "no video files"]),
    "train without a store": (
        ["train", "nostore.lmdb", "--run-dir", "run"],
        ["nostore.lmdb", "run `trackemb harvest"],
    ),
    "train with a misspelled table": (
        ["train", "nostore.lmdb", "--run-dir", "run", "--config", "trian.toml"],
        ["trian.toml", "[trian]", "did you mean [train]"],
    ),
    "train with a misspelled key": (
        ["train", "nostore.lmdb", "--run-dir", "run", "--config", "key.toml"],
        ["key.toml", "[train]", "batch_pair", "did you mean 'batch_pairs'"],
    ),
    "train with a misspelled nested key": (
        ["train", "nostore.lmdb", "--run-dir", "run", "--config", "nested.toml"],
        ["nested.toml", "[train.mine]", "did you mean 'margin'"],
    ),
    "harvest with a bad key in another table": (
        ["harvest", "videos", "--store", "s.lmdb", "--config", "key.toml"],
        ["key.toml", "[train]", "batch_pair"],
    ),
    "export a missing run": (["export", "norun"], ["norun", "no ckpt.pt", "trackemb train"]),
    "evaluate a missing run": (["evaluate", "norun", "--store", "nostore.lmdb"], ["norun", "trackemb train"]),
    "embed without an export": (["embed", "noexport", "nostore.lmdb"], ["noexport", "trackemb export"]),
    "cluster without embeddings": (["cluster", "videos"], ["videos", "model_card.json", "trackemb export"]),
    "pipeline of a missing folder": (
        ["pipeline", "no_such_dir", "--out", "out"],
        ["no_such_dir", "no such folder"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_preflight_fails_fast_with_one_line_and_creates_nothing(case: str, tmp_path: Path) -> None:
    args, words = CASES[case]
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(b"not really a video")
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "trian.toml").write_text("[trian]\nsteps = 5\n")
    (tmp_path / "key.toml").write_text("[train]\nbatch_pair = 8\n")
    (tmp_path / "nested.toml").write_text("[train.mine]\nmargn = 0.2\n")
    before = _tree(tmp_path)
    proc, cpu_s = run(args, tmp_path)
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr}"
    line = _one_error_line(proc)
    for word in words:
        assert word in line, f"{word!r} missing from {line!r}"
    assert _tree(tmp_path) == before, f"files created: {_tree(tmp_path) - before}"
    assert cpu_s < 1.0, f"preflight failure took {cpu_s:.2f} CPU s (a Prefect server must not start)"


def test_train_refuses_a_store_with_one_usable_video(one_video_store: Path, tmp_path: Path) -> None:
    proc, cpu_s = run(["train", str(one_video_store), "--run-dir", "run"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc)
    assert "1 of 1 stored video(s) have positive pairs" in line and "harvest more videos" in line, line
    assert not (tmp_path / "run").exists()
    assert cpu_s < 1.5, f"{cpu_s:.2f} CPU s"


def test_python_m_train_rejects_a_misspelled_table(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[trian]\nsteps = 5\n")
    args = ["--store", "nostore", "--run-dir", "run", "--config", "bad.toml"]
    proc, _ = run(args, tmp_path, module="trackemb.embedding.train")
    assert proc.returncode == 2, proc.stderr
    assert "bad.toml: unknown table [trian]; did you mean [train]?" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


def test_tracebacks_only_with_verbose(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "ckpt.pt").write_bytes(b"garbage, not a checkpoint")
    build_synthetic_store(tmp_path / "s.lmdb", n_videos=2, tracks_per_video=2)
    args = ["evaluate", "run", "--store", "s.lmdb"]
    quiet, _ = run(args, tmp_path)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr, quiet.stderr
    assert quiet.stderr.strip().splitlines()[-1].startswith("error: run/ckpt.pt"), quiet.stderr
    loud, _ = run(["-v", *args], tmp_path)
    assert loud.returncode == 2 and "Traceback (most recent call last)" in loud.stderr, loud.stderr
    assert loud.stderr.strip().splitlines()[-1] == quiet.stderr.strip().splitlines()[-1]


def test_version_and_help_text(tmp_path: Path) -> None:
    proc, _ = run(["--version"], tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"trackemb {__version__}"
    helps = {
        cmd: run([cmd, "--help"], tmp_path)[0].stdout
        for cmd in ("harvest", "train", "export", "cluster", "pipeline")
    }
    for cmd, text in helps.items():
        assert "{" not in text and "<bool>" not in text, f"{cmd} --help:\n{text}"
    # --steps shows the config's default, whatever it currently is
    assert "VIDEO_DIR" in helps["harvest"] and f"config default: {TrainConfig().steps}" in helps["train"]
    assert "--no-onnx" in helps["export"]
    assert "[train] steps" in helps["pipeline"], helps["pipeline"]
    assert "k_min..k_max" in helps["cluster"] and "--k-min" not in helps["cluster"]


def test_inspect_writes_its_report_to_stdout(tmp_path: Path) -> None:
    store = build_synthetic_store(tmp_path / "s.lmdb", n_videos=2, tracks_per_video=2)
    proc, _ = run(["inspect", str(store)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "videos done" in proc.stdout and "pairs" in proc.stdout and "montage" in proc.stdout
    assert "videos done" not in proc.stderr
