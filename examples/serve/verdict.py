"""Read a served session's results folder and judge it: exit 1 with the failed bounds.

``python examples/serve/verdict.py runs/serve-battery`` prints each metric against its bound.
The metrics are the simulator's own (docs/metrics.md), computed from the attempts the server
logged; the bounds are the team's, here those of experiments/ci.toml's checks.
"""

from __future__ import annotations

import sys

import llmtraffic

BOUNDS = [
    # (metric, op, bound, why)
    ("success_rate", ">=", 0.95, "users get answers through a storm and a brownout"),
    # A storm at 3x the limit for 3 of the 10 s: the simulated policy makes 1.6 to 3.2
    # attempts per request over 20 seeds; more than 4 is a retry storm of the client's own.
    ("attempt_amplification", "<=", 4.0, "no retry storm of our own"),
    ("cost_vs_baseline", "<=", 1.3, "failed attempts add at most 30% to the bill"),
]


def main(folder: str) -> int:
    """Print the verdict of the session in ``folder``; 1 if a bound is not kept."""
    summary = llmtraffic.load(folder).summary
    failed = 0
    print(f"verdict on {folder} ({summary['requests']} requests, {summary['attempts']} attempts)")
    for metric, op, bound, why in BOUNDS:
        value = summary[metric]
        ok = value >= bound if op == ">=" else value <= bound
        failed += not ok
        print(f"  {'pass' if ok else 'FAIL'}  {metric} = {value:.3f} {op} {bound}: {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
