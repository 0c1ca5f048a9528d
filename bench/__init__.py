"""trackemb benchmarks: ratios of alternatives measured side by side in one run (``python -m bench``).

Each module has ``run(quick: bool, work: Path) -> BenchResult``.
"""

from __future__ import annotations

# name -> module, in the order the table lists them.
BENCHMARKS = {
    "harvest": "bench.bench_harvest",
    "coverage": "bench.bench_coverage",
    "store": "bench.bench_store",
    "store_scale": "bench.bench_store_scale",
    "cluster": "bench.bench_cluster",
    "gpu": "bench.bench_gpu",
    "scaling": "bench.bench_scaling",
    "workers": "bench.bench_workers",
}
