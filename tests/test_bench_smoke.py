"""Every benchmark runs end to end in ``--quick`` mode on tiny inputs, so the bench code cannot rot.

Quick runs measure nothing worth comparing (one round, a few frames), so these tests
check the plumbing: each benchmark finishes without error, reports finite positive
figures, and ``python -m bench`` writes one JSON per benchmark and prints one table.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `bench` is a top-level package of the repository, not installed

from bench import BENCHMARKS  # noqa: E402
from bench.__main__ import main  # noqa: E402
from bench.common import BenchResult, interleave  # noqa: E402
from bench.inputs import distinct_copies  # noqa: E402


def _numbers(res: BenchResult) -> dict[str, float]:
    return {r.metric: float(r.value) for r in res.rows if isinstance(r.value, int | float)}


def test_interleave_runs_cases_alternately() -> None:
    order: list[str] = []

    def case(name: str):  # noqa: ANN202
        return lambda: order.append(name) or 1.0

    samples = interleave({"a": case("a"), "b": case("b")}, rounds=3)
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert samples == {"a": [1.0] * 3, "b": [1.0] * 3}


def test_distinct_copies_have_distinct_hashes_and_same_frames(tmp_path: Path, sample_videos: Path) -> None:
    from trackemb.config import DecodeConfig
    from trackemb.tracking.files import video_sha
    from trackemb.tracking.stream import iter_frames

    copies = distinct_copies(sample_videos / "cup.mp4", tmp_path, 2)
    assert len({video_sha(p) for p in copies}) == 2
    cfg = DecodeConfig(max_frames=3)
    a, b = ([f.sum() for _, f in iter_frames(p, cfg)] for p in copies)
    assert a == b and len(a) == 3


def test_python_m_bench_quick_writes_json_and_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    assert main(["--quick", "--out", str(out), "--work-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "machine:" in table and "load average" in table
    for name in BENCHMARKS:
        data = json.loads((out / f"{name}.json").read_text())
        assert data["name"] == name and data["machine"]["cores"] >= 1
        assert not data["skipped"].startswith("error"), data["skipped"]
        assert name in table
        if data["skipped"]:
            assert data["skipped"] == "skipped: no CUDA"
            continue
        values = [r["value"] for r in data["rows"] if isinstance(r["value"], int | float)]
        assert values and all(math.isfinite(v) for v in values), data["rows"]
    harvest = json.loads((out / "harvest.json").read_text())
    assert 0 < harvest["data"]["ratio"] < 5  # harvest does more than decode, so it cannot be much faster
    store = json.loads((out / "store.json").read_text())
    assert store["data"]["reads"]["ratio_store_memory"] > 0.2


def test_gpu_bench_code_path_on_cpu(tmp_path: Path) -> None:
    from bench import bench_gpu

    res = bench_gpu.run(True, tmp_path, device="cpu")
    nums = _numbers(res)
    assert nums["train samples/s (default batch)"] > 0
    assert res.data["runs"]["default batch"]["flops_per_step"] > 0
    assert bench_gpu.peak_flops("some unknown card") is None


# Dense BF16 tensor peaks from the vendors' datasheets (sparsity figures halved), written here
# independently of bench_gpu's table; the look-alike names check that the most specific entry wins.
DATASHEET_BF16_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989,  # SXM
    "NVIDIA H100 PCIe": 756,
    "NVIDIA A100-SXM4-80GB": 312,
    "NVIDIA L40S": 362,
    "NVIDIA L40": 181,
    "NVIDIA A10G": 70,
    "NVIDIA A10": 125,
}


@pytest.mark.parametrize("name", sorted(DATASHEET_BF16_TFLOPS))
def test_gpu_peak_matches_datasheet(name: str) -> None:
    from bench import bench_gpu

    assert bench_gpu.peak_flops(name) == pytest.approx(DATASHEET_BF16_TFLOPS[name] * 1e12, rel=0.01)


def test_step_flops_counts_forward_and_backward() -> None:
    """One bias-free linear layer: forward 2*B*I*O FLOPs, backward twice that (input and weight grads)."""
    import torch

    from bench import bench_gpu

    layer = torch.nn.Linear(64, 32, bias=False)
    batch = {"x": torch.randn(8, 64, requires_grad=True)}
    assert bench_gpu.step_flops(lambda b: layer(b["x"]).sum().backward(), batch) == 3 * 2 * 8 * 64 * 32
