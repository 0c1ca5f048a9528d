"""Soak test: kill -9 a harvest at many random points and check the store after each kill.

Rounds start from an empty store; each round kills the harvest 1-3 times at random moments,
checking after every kill that the store opens and holds only whole videos, then re-runs it
to completion and compares every key and value with an uninterrupted harvest.

    python bench/soak_kill.py --kills 20 [--videos 6] [--seed 1]

Prints one line per kill and ends with ``kills=N mismatches=M`` (exit status 1 if M > 0).
Uses the same worker and checks as ``tests/test_crash_safety.py``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_crash_safety import (  # noqa: E402 - the tests folder is put on the path just above
    check_after_kill,
    diff_stores,
    dump_store,
    kill_harvest_at,
    make_videos,
    run_harvest,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kill -9 points in total")
    parser.add_argument("--videos", type=int, default=6, help="synthetic clips harvested per run")
    parser.add_argument("--seed", type=int, default=None, help="fixes the kill points (default: random)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print it")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else time.time_ns() % 1_000_000
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="trackemb-soak-"))
    print(f"seed={seed} tmp={tmp}", flush=True)
    try:
        videos = make_videos(tmp / "videos", args.videos)
        work_s = run_harvest(videos, tmp / "reference")
        reference = dump_store(tmp / "reference")
        print(
            f"uninterrupted harvest of {args.videos} clips: {work_s:.1f} s after opening the store",
            flush=True,
        )
        kills = mismatches = rounds = 0
        while kills < args.kills:
            rounds += 1
            store = tmp / f"round-{rounds:03d}"
            for _ in range(min(rng.randint(1, 3), args.kills - kills)):
                delay = rng.uniform(0.0, work_s * 1.1)  # a little past the end also hits the triplet rebuild
                out = kill_harvest_at(videos, store, delay)
                kills += 1
                problems = check_after_kill(store)
                mismatches += bool(problems)
                state = "store ok" if not problems else "MISMATCH: " + "; ".join(problems[:3])
                print(
                    f"kill {kills}: round {rounds}, +{delay:.2f} s, {out.count('video ')} videos handled, {state}"
                )
            run_harvest(videos, store)
            differences = diff_stores(reference, dump_store(store))
            if differences:
                mismatches += 1
                print(f"round {rounds}: re-run differs from the uninterrupted store: {differences[:5]}")
            shutil.rmtree(store)
        print(f"kills={kills} mismatches={mismatches}")
        return 1 if mismatches else 0
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
