"""``make bench``: every performance target of the design, measured side by side in one run,
written to benchmarks/RESULTS.md.

Each measurement runs in its own process pinned to one core (``taskset -c 0`` when present),
with the pure-Python engine (this interpreter) and, when ``--compiled PYTHON`` is given, the
mypyc-compiled engine (an interpreter whose llmtraffic was installed with
``LLMTRAFFIC_COMPILE=1``). Throughput figures are CPU seconds of the measured process, which
on a shared machine wander less than wall time; both are recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from llmtraffic.theory import mmc_mean_wait

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")

LAM, MU, C = 9.0, 1.0, 10


def measure(python: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh, pinned process and return its figures."""
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [*pin, python, "-m", "benchmarks.worker", json.dumps(args)]
    print("  running", json.dumps(args), "with", python, flush=True)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark failed: {args}\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def machine() -> str:
    """A line about the machine the figures come from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform()}; measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    )


def mmc_section(pure: str, compiled: str | None, n: int) -> tuple[str, dict[str, float]]:
    """M/M/c through SimPy, Ciw and llmtraffic; rates and ratios."""
    theory = mmc_mean_wait(LAM, MU, C)
    rows: list[tuple[str, dict[str, Any]]] = []
    base = {"bench": "mmc", "lam": LAM, "mu": MU, "c": C, "n": n, "seed": 1}
    rows.append(
        ("hand-written SimPy, a process per customer", measure(pure, {**base, "impl": "simpy"}))
    )
    rows.append(("Ciw", measure(pure, {**base, "impl": "ciw"})))
    rows.append(("llmtraffic (pure Python)", measure(pure, {**base, "impl": "llmtraffic"})))
    if compiled:
        rows.append(("llmtraffic (compiled)", measure(compiled, {**base, "impl": "llmtraffic"})))
    rate = {name: r["customers"] / r["cpu_s"] for name, r in rows}
    simpy_rate = rate[rows[0][0]]
    ciw_rate = rate[rows[1][0]]
    lines = [
        f"lambda = {LAM:g}/s, mu = {MU:g}/s, c = {C}, {n:,} customers, records kept; "
        f"Erlang C mean wait {theory:.4f} s.",
        "",
        "| model | customers/s (CPU) | wall s | vs SimPy | vs Ciw | mean wait | vs Erlang C |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {rate[name]:,.0f} | {r['wall_s']:.1f} | {rate[name] / simpy_rate:.2f}x "
            f"| {rate[name] / ciw_rate:.2f}x | {r['mean_wait']:.4f} | "
            f"{r['mean_wait'] / theory - 1:+.1%} |"
        )
    return "\n".join(lines), rate


Measured = dict[tuple[str, str], dict[str, Any]]
"""Full-day measurements by (engine label, records), reused by the scaling table."""


def day_section(pure: str, compiled: str | None) -> tuple[str, Measured]:
    """The article's day: 5M requests in 24 simulated hours."""
    lines = [
        "The article's scenario (`benchmarks/article_day.toml`): 5M requests over 24 simulated "
        "hours, diurnal, four features on three models with rate limits, 1.5% fast and 0.3% "
        "mid-stream errors, a 20-minute brownout, exponential backoff with jitter behind a "
        "breaker, costs, a one-minute time series. Target: under 60 s, under 1 GiB.",
        "",
        "| engine | records | requests | CPU s | wall s | peak RSS MiB | results on disk |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    runs = [(pure, "pure Python", "timeseries")]
    if compiled:
        runs += [(compiled, "compiled", "timeseries"), (compiled, "compiled", "all")]
    measured: Measured = {}
    for python, label, records in runs:
        r = measure(python, {"bench": "day", "records": records, "fraction": 1.0})
        measured[label, records] = r
        lines.append(
            f"| {label} | {records} | {r['requests']:,} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {r['folder_bytes'] / 2**20:,.1f} MiB |"
        )
    return "\n".join(lines), measured


# Fractions of the day: 0.018 of it (from midnight, the quiet hours) is about 50,000 requests.
SCALING_FRACTIONS = (0.018, 0.1, 0.3, 1.0)


def scaling_section(python: str, label: str, full_day: Measured) -> str:
    """Wall time and memory from 50k to 5M requests, with and without per-request records
    (the full day's figures come from the day section's runs of the same engine)."""
    lines = [
        f"Engine: {label}. The day scenario cut to a fraction of 24 hours.",
        "",
        "| requests | records | CPU s | requests/s | peak RSS MiB |",
        "|---:|---|---:|---:|---:|",
    ]
    for fraction in SCALING_FRACTIONS:
        for records in ("timeseries", "all"):
            reuse = full_day.get((label, records)) if fraction == 1.0 else None
            r = reuse or measure(python, {"bench": "day", "records": records, "fraction": fraction})
            lines.append(
                f"| {r['requests']:,} | {records} | {r['cpu_s']:.1f} | "
                f"{r['requests'] / r['cpu_s']:,.0f} | {r['peak_rss_mib']:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    """Run every benchmark and write RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--compiled", help="interpreter with the compiled engine installed")
    parser.add_argument("--mmc-customers", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the harness")
    args = parser.parse_args()
    pure = sys.executable
    n = 100_000 if args.quick else args.mmc_customers
    print("M/M/c side by side", flush=True)
    mmc_md, _ = mmc_section(pure, args.compiled, n)
    sections = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}.",
        "Written by `make bench` (`benchmarks/run.py`); each figure is one process pinned to "
        "one core. Rates are per CPU second of that process.",
        "",
        "## M/M/c side by side",
        "",
        mmc_md,
    ]
    if not args.quick:
        print("The article's day", flush=True)
        day_md, full_day = day_section(pure, args.compiled)
        sections += ["", "## A day of the article's scenario", "", day_md]
        print("Scaling", flush=True)
        engine = args.compiled or pure
        label = "compiled" if args.compiled else "pure Python"
        sections += ["", "## Scaling", "", scaling_section(engine, label, full_day)]
    sweep = ROOT / "benchmarks" / "sweep_scaling.py"
    if sweep.exists() and not args.quick:
        print("Sweep scaling", flush=True)
        out = subprocess.run(
            [pure, "-m", "benchmarks.sweep_scaling"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        sections += ["", "## Sweeps on 1 and 2 workers", "", "```", out.stdout.strip(), "```"]
    RESULTS.write_text("\n".join(sections) + "\n", encoding="utf-8")
    print(RESULTS.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
