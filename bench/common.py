"""Shared pieces of the benchmarks: results, interleaved timing, machine info, the table.

Every figure a benchmark reports is a ratio of alternatives measured side by side in one
run: :func:`interleave` runs them A B C A B C ... and keeps every sample, and the
benchmarks compare medians, so load from other processes hits all alternatives alike.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE_VIDEOS = REPO / "examples" / "videos"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One line of the table: a measured value, optionally checked against a target."""

    metric: str
    value: float | str | None
    unit: str = ""
    target: float | None = None  # the value must be >= target
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.target is None or not isinstance(self.value, int | float):
            return None
        return float(self.value) >= self.target


@dataclass
class BenchResult:
    """What one benchmark module returns: table rows plus every raw number behind them."""

    name: str
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""  # reason, when the benchmark could not run here
    seconds: float = 0.0

    def add(
        self,
        metric: str,
        value: float | str | None,
        unit: str = "",
        target: float | None = None,
        note: str = "",
    ) -> None:
        self.rows.append(Row(metric, value, unit, target, note))

    def to_json(self, machine: dict[str, Any]) -> dict[str, Any]:
        rows = [asdict(r) | {"passed": r.passed} for r in self.rows]
        return {"name": self.name, "skipped": self.skipped, "seconds": round(self.seconds, 2),
                "machine": machine, "rows": rows, "data": self.data}  # fmt: skip


def interleave(cases: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every case once per round, in a fixed order (A B C A B C ...).

    Args:
        cases: name -> callable returning the seconds it measured (so setup can be left out).
        rounds: how many samples of each case.

    Returns:
        name -> list of ``rounds`` durations in seconds.
    """
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(float(fn()))
    return samples


def timed(fn: Callable[[], Any]) -> Callable[[], float]:
    """Wrap ``fn`` so that calling it returns its wall time in seconds."""

    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return run


def med(values: list[float]) -> float:
    return float(median(values))


def rate(count: float, seconds: list[float]) -> float:
    """Items per second from the median duration of ``count`` items."""
    return count / max(med(seconds), 1e-12)


def spread(values: list[float]) -> float:
    """Relative spread (max - min) / median of the samples, to show how noisy a figure was."""
    m = med(values)
    return float((max(values) - min(values)) / m) if m > 0 else 0.0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, thread settings, library versions and the load average."""
    import cv2
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cv2_threads": cv2.getNumThreads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }
    for mod in ("decord", "faiss", "sklearn", "lmdb"):
        try:
            info[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            info[mod] = None
    return info


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def format_value(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_table(results: list[BenchResult], machine: dict[str, Any]) -> str:
    """One plain-text table of every benchmark's rows, with the machine in the header."""
    head = [
        f"machine: {machine['cpu']} | {machine['cores_usable']}/{machine['cores']} cores | "
        f"torch threads {machine['torch_threads']} | cv2 threads {machine['cv2_threads']} | "
        f"OMP_NUM_THREADS={machine['omp_num_threads'] or 'unset'} | CUDA: {machine['cuda'] or 'none'}",
        f"load average (1/5/15 min): start {machine['load_avg_start']}, end {machine.get('load_avg_end', '?')}",
    ]
    lines = [["bench", "metric", "value", "unit", "target", "ok", "note"]]
    for res in results:
        if res.skipped:
            lines.append([res.name, "-", res.skipped, "", "", "", ""])
        for r in res.rows:
            ok = {True: "PASS", False: "FAIL", None: ""}[r.passed]
            target = f">= {r.target:g}" if r.target is not None else ""
            lines.append([res.name, r.metric, format_value(r.value), r.unit, target, ok, r.note])
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]) - 1)]
    out = []
    for k, row in enumerate(lines):
        cells = [
            c.rjust(w) if i == 2 else c.ljust(w)
            for i, (c, w) in enumerate(zip(row[:-1], widths, strict=True))
        ]
        out.append("  ".join(cells + [row[-1]]).rstrip())
        if k == 0:
            out.append("-" * len(out[0]))
    return "\n".join(head + [""] + out)


def write_json(result: BenchResult, machine: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.name}.json"
    path.write_text(json.dumps(result.to_json(machine), indent=2, default=str) + "\n")
    return path
