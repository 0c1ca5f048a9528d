"""The error kinds: README's list, the code's enum and the labels the code emits are one set;
transient read errors are retried where the file is read (hashing included)."""

from __future__ import annotations

import ast
import builtins
import errno
import re
from pathlib import Path

import pytest
from synthetic import write_synthetic_video

from trackemb.config import HarvestConfig
from trackemb.errors import TransientIOError
from trackemb.tracking import files
from trackemb.tracking.files import video_sha
from trackemb.tracking.outcome import harvest_one

REPO = Path(__file__).resolve().parents[1]
# Calls whose argument at this position is an error kind; and functions returning (kind, cause).
_KIND_ARG = {"VideoDecodeError": 2, "failure_record": 2, "failed": 1}
_KIND_RETURNERS = {"os_error_kind", "probe_file"}


def _readme_kinds() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Bad input and exit status", 1)[1].split("Valid videos", 1)[0]
    return set(re.findall(r"`([a-z_]+)`", section)) - {"failed", "error_kind", "harvest-summary", "inspect"}


def _code_kinds() -> set[str]:
    found: set[str] = set()
    for path in (REPO / "trackemb").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                pos = _KIND_ARG.get(name)
                args = node.args
                if pos is not None and len(args) > pos and isinstance(args[pos], ast.Constant):
                    found.add(args[pos].value)
                for kw in node.keywords:
                    wanted = kw.arg == "error_kind" or (kw.arg == "kind" and name in _KIND_ARG)
                    if wanted and isinstance(kw.value, ast.Constant) and kw.value.value:
                        found.add(kw.value.value)
            if isinstance(node, ast.FunctionDef) and node.name in _KIND_RETURNERS:
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple):
                        first = ret.value.elts[0]
                        if isinstance(first, ast.Constant):
                            found.add(first.value)
    return found


def test_readme_lists_exactly_the_enum() -> None:
    from trackemb.errors import ErrorKind

    assert _readme_kinds() == {k.value for k in ErrorKind}


def test_every_kind_the_code_emits_is_in_the_enum() -> None:
    from trackemb.errors import ErrorKind

    emitted = _code_kinds()
    assert len(emitted) >= 12, f"the scan found too few kinds to be looking in the right places: {emitted}"
    assert emitted <= {k.value for k in ErrorKind}, emitted - {k.value for k in ErrorKind}


_REAL_OPEN = builtins.open


class _FlakyOpen:
    """``open`` whose first ``failures`` bulk reads of ``target`` raise EIO (a flaky network mount).

    Installed as ``builtins.open``, so it hits whichever module reads the file's content.
    Small header reads (probing, MP4 box headers) pass: the failure is in the one full read.
    """

    def __init__(self, target: Path, failures: int) -> None:
        self.target, self.failures, self.calls = str(target), failures, 0

    def __call__(self, file, mode="r", *args, **kwargs):
        fh = _REAL_OPEN(file, mode, *args, **kwargs)
        if str(file) != self.target or "b" not in mode:
            return fh
        flaky = self

        class Reader:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()

            def read(self, *a):
                if a and a[0] >= 1 << 16:
                    flaky.calls += 1
                if a and a[0] >= 1 << 16 and flaky.calls <= flaky.failures:
                    raise OSError(errno.EIO, "Input/output error")
                return fh.read(*a)

            def __getattr__(self, name):
                return getattr(fh, name)

        return Reader()


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_synthetic_video(tmp_path / "flaky.mp4", n_objects=1, n_frames=30, seed=2).path


def test_transient_error_while_hashing_is_retried(clip: Path, monkeypatch) -> None:
    flaky = _FlakyOpen(clip, failures=1)
    monkeypatch.setattr(builtins, "open", flaky)
    monkeypatch.setattr(files, "RETRY_DELAYS_S", (0.01, 0.01))
    outcome = harvest_one(clip, HarvestConfig())
    assert outcome.status == "done", outcome.record
    assert outcome.sha == video_sha(clip) and flaky.calls > 1


def test_persistent_transient_error_goes_to_the_orchestrator(clip: Path, monkeypatch) -> None:
    monkeypatch.setattr(builtins, "open", _FlakyOpen(clip, failures=10**6))
    monkeypatch.setattr(files, "RETRY_DELAYS_S", (0.01,))
    with pytest.raises(TransientIOError, match="flaky.mp4"):
        harvest_one(clip, HarvestConfig())
