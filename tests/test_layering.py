"""The library packages stay free of orchestration (and tracking free of torch), as the design says."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "trackemb"


def _imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (PKG / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(PKG))] = names
    return found


@pytest.mark.parametrize("package", ["tracking", "storage", "embedding"])
def test_library_never_imports_prefect(package: str) -> None:
    offenders = {f for f, names in _imports(package).items() if "prefect" in names or "prefect_dask" in names}
    assert not offenders, f"library modules import prefect: {sorted(offenders)}"


def test_tracking_never_imports_torch() -> None:
    offenders = {f for f, names in _imports("tracking").items() if names & {"torch", "torchvision"}}
    assert not offenders, (
        f"tracking modules import torch (harvest workers must stay light): {sorted(offenders)}"
    )


def test_no_pickle_for_data() -> None:
    offenders = []
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        if "import pickle" in text or "pickle.load" in text:
            offenders.append(str(path.relative_to(PKG)))
        for line in text.splitlines():
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(PKG)}: {line.strip()}")
    assert not offenders, offenders
