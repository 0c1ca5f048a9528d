"""The packages import in one direction only (ARCHITECTURE.md), no two modules import each other
(directly or round a loop), library code stays free of orchestration, tracking free of torch.

Imports are read with ``ast`` from every module under ``trackemb/``, including imports inside
functions (deferred to keep the CLI fast, but still a dependency); imports under
``if TYPE_CHECKING:`` are annotations only and are left out.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "trackemb"

# Modules every layer may use: errors, version, config, and small helpers with no pipeline logic.
BASE = {"_version", "errors", "atomic", "fsnames", "pictures", "config"}
# Layer -> the layers it may import besides itself (ARCHITECTURE.md draws the same arrows).
ALLOWED = {
    "base": set(),
    "tracking": {"base"},
    "storage": {"base", "tracking"},
    "embedding": {"base", "tracking", "storage"},
    "harvest": {"base", "tracking", "storage"},
    "flows": {"base", "tracking", "storage", "embedding", "harvest"},
    "cli": {"base", "tracking", "storage", "embedding", "harvest", "flows"},
    "api": {"base", "embedding"},  # trackemb/__init__.py: load_encoder
}
LIBRARY = ("base", "tracking", "storage", "embedding", "harvest")


def _name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_name(p): p for p in PKG.rglob("*.py")}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    return "base" if parts[1] in BASE else parts[1]


def _raw_imports(path: Path) -> set[str]:
    """Dotted names imported anywhere in ``path`` (``from m import x`` gives ``m.x``), except under
    ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


@cache
def _graph() -> dict[str, frozenset[str]]:
    """Module -> the trackemb modules it imports: the longest module each imported name lies in
    (``from trackemb.storage import records`` is storage.records, not the package)."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for imported in _raw_imports(path):
            if imported.split(".")[0] != "trackemb":
                continue
            while imported not in mods:
                imported = imported.rpartition(".")[0]
            deps.add(imported)
        graph[name] = frozenset(deps - {name})
    return graph


def _third_party(package: str) -> dict[str, set[str]]:
    return {
        name: {n.split(".")[0] for n in _raw_imports(path)}
        for name, path in _modules().items()
        if _layer(name) == package
    }


def test_every_module_has_a_layer() -> None:
    unknown = {m for m in _modules() if _layer(m) not in ALLOWED}
    assert not unknown, f"modules outside the known layers (add them to ALLOWED / BASE): {sorted(unknown)}"


def test_imports_point_down_the_layers() -> None:
    wrong = [
        f"{module} ({_layer(module)}) imports {dep} ({_layer(dep)})"
        for module, deps in _graph().items()
        for dep in sorted(deps)
        if _layer(dep) != _layer(module) and _layer(dep) not in ALLOWED[_layer(module)]
    ]
    assert not wrong, "\n".join(wrong)


def test_storage_takes_only_the_harvest_results_from_tracking() -> None:
    wrong = {
        module: sorted(d for d in deps if _layer(d) == "tracking" and d != "trackemb.tracking.results")
        for module, deps in _graph().items()
        if _layer(module) == "storage"
    }
    assert not any(wrong.values()), wrong


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            strongconnect(module)
    assert not cycles, f"modules that import each other (directly or round a loop): {cycles}"


def test_the_graph_reads_real_imports() -> None:
    """The graph is built from real imports: a deferred import back to an importer is an edge."""
    graph = _graph()
    assert "trackemb.embedding.launch" in graph["trackemb.embedding.train"]
    assert "trackemb.storage.stats" in graph["trackemb.storage.shards"]
    assert "trackemb.embedding.data" not in graph["trackemb.embedding.sampler"]  # TYPE_CHECKING only
    # `from trackemb.storage import records` names the module, not the package:
    assert "trackemb.storage" not in graph["trackemb.storage.shards"]


@pytest.mark.parametrize("package", LIBRARY)
def test_library_never_imports_prefect(package: str) -> None:
    offenders = {f for f, names in _third_party(package).items() if names & {"prefect", "prefect_dask"}}
    assert not offenders, f"library modules import prefect: {sorted(offenders)}"


@pytest.mark.parametrize("package", ["tracking", "harvest", "storage", "base"])
def test_harvest_side_never_imports_torch(package: str) -> None:
    offenders = {f for f, names in _third_party(package).items() if names & {"torch", "torchvision"}}
    assert not offenders, f"these modules import torch (harvest workers must stay light): {sorted(offenders)}"


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
