"""What a study's storage costs when several workers share it: the search's default choice.

    python tools/search_storage.py --workers 3 --trials 60 --repeats 3

Starts `--workers` processes of tests/search_worker.py (the search's real runner, choose lock,
adoption and pruner, with a stand-in training of no cost) on each storage in turn, Optuna's
journal file and SQLite (plus `--postgres URL` if given), and prints per storage the median wall
time of the whole study, the trials started (each must be started once), and the workers'
errors (SQLite's "database is locked" among them). BENCHMARKS.md quotes its output.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_study(storage: str, workers: int, trials: int) -> tuple[float, int, int]:
    """(seconds, trials started, workers that failed) for one study on `storage`."""
    with tempfile.TemporaryDirectory() as workdir:
        url = {"journal": "", "sqlite": f"sqlite:///{workdir}/study.db"}.get(storage, storage)
        command = [sys.executable, os.path.join(REPO, "tests", "search_worker.py"), workdir, url,
                   str(trials), "0", f"storage-{time.monotonic_ns()}"]
        env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
        start = time.perf_counter()
        procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(workers)]
        failed = sum(proc.wait() != 0 for proc in procs)
        seconds = time.perf_counter() - start
        started = sum(len(open(path).read().splitlines())
                      for path in glob.glob(os.path.join(workdir, "trials", "*", "starts")))
    return seconds, started, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres", default="", help="a postgresql:// URL to measure too")
    args = parser.parse_args()
    storages = ["journal", "sqlite"] + ([args.postgres] if args.postgres else [])
    for storage in storages:
        runs = [one_study(storage, args.workers, args.trials) for _ in range(args.repeats)]
        name = storage.split("@")[0] if "://" in storage else storage
        print(f"{name}: {statistics.median(r[0] for r in runs):.2f} s median for "
              f"{args.trials} trials by {args.workers} workers; started "
              f"{[r[1] for r in runs]}; failed workers {[r[2] for r in runs]}", flush=True)


if __name__ == "__main__":
    main()
