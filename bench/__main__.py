"""``python -m bench``: run the benchmarks, print one table, write ``bench/results/<name>.json``.

python -m bench                      # all benchmarks (about 20 minutes on 2 cores; store_scale builds 100k-video and 1M-patch stores)
python -m bench --only harvest,store # a subset
python -m bench --quick              # tiny inputs, seconds (what tests/test_bench_smoke.py runs)
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import BENCHMARKS
from bench.common import RESULTS_DIR, BenchResult, format_table, load_avg, machine_info, write_json


def run_all(
    names: list[str], *, quick: bool, out_dir: Path, work_dir: Path | None = None
) -> list[BenchResult]:
    """Run the named benchmarks in order; a benchmark that raises is reported, not fatal.

    Returns:
        One result per benchmark; each is also written to ``out_dir/<name>.json``.
    """
    import importlib

    machine = machine_info()
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="trackemb-bench-", dir=work_dir) as tmp:
        for name in names:
            module = importlib.import_module(BENCHMARKS[name])
            work = Path(tmp) / name
            work.mkdir(parents=True)
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                res = module.run(quick, work)
            except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
                traceback.print_exc()
                res = BenchResult(name, skipped=f"error: {type(exc).__name__}: {exc}"[:200])
            res.seconds = time.perf_counter() - t0
            print(f"[bench] {name} done in {res.seconds:.0f} s", file=sys.stderr, flush=True)
            results.append(res)
    machine["load_avg_end"] = load_avg()
    for res in results:
        write_json(res, machine, out_dir)
    print(format_table(results, machine))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="tiny inputs and one round (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for <name>.json")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch space (default: system temp)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    logging.basicConfig(level=logging.WARNING)
    results = run_all(names, quick=args.quick, out_dir=args.out, work_dir=args.work_dir)
    return 1 if any(r.skipped.startswith("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
