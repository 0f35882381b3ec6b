"""Sweep scaling: the same 8 runs on 1 and on 2 local workers (target: at least 1.8x faster).

Each run is the quickstart scenario (two features, rate limits, a brownout, backoff behind a
breaker) stretched to six simulated hours: about 2 s of work, as a sweep's runs typically
are; the experiment keeps time series, as sweeps do by default. ``--workers 1`` runs in this
process; ``--workers 2`` in two worker processes (forkserver), whose start-up (about half a
second: a fresh interpreter imports the simulator) is part of the time measured, so runs much
shorter than a second scale less well.

    .venv/bin/python -m benchmarks.sweep_scaling [--runs 8] [--duration 6h] [--repeat 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from llmtraffic.experiment import read_experiment, run_experiment

ROOT = Path(__file__).resolve().parents[1]


def sweep_wall(workers: int, runs: int, duration: str, folder: Path) -> float:
    """Seconds of wall time to run the whole sweep on ``workers`` workers."""
    spec = read_experiment(
        ROOT / "experiments" / "quickstart.toml",
        [f"experiment.replications={runs}", f"run.duration={duration}"],
    )
    t0 = time.perf_counter()
    outcome = run_experiment(spec, folder, workers=workers, force=True)
    wall = time.perf_counter() - t0
    if not (outcome.ok and outcome.done == runs):
        first = next(iter(outcome.failed.values()), "")
        raise SystemExit(f"the sweep did not finish: {outcome.failed.keys()}\n{first}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--duration", default="6h", help="simulated time of each run")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many timings")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmtraffic-sweep-bench-"))
    try:
        walls = {}
        for workers in (1, 2):
            walls[workers] = min(
                sweep_wall(workers, args.runs, args.duration, work / f"w{workers}")
                for _ in range(args.repeat)
            )
            print(
                f"{args.runs} runs of {args.duration} on {workers} worker(s): "
                f"{walls[workers]:.2f} s (best of {args.repeat})",
                flush=True,
            )
        speedup = walls[1] / walls[2]
        verdict = "meets" if speedup >= 1.8 else "misses"
        print(f"speedup 1 -> 2 workers: {speedup:.2f}x ({verdict} the 1.8x target)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
