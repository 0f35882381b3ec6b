"""One benchmark measurement, run in its own process: ``python -m benchmarks.worker JSON``.

Prints one JSON line: the measurement's own figures plus CPU time, wall time and peak RSS of
this process. Each measurement gets a fresh interpreter, so none inherits another's heap.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DAY_CONFIG = Path(__file__).with_name("article_day.toml")


def mmc(args: dict[str, Any]) -> dict[str, Any]:
    """M/M/c through one of the three implementations; CPU time of the run alone."""
    which = args["impl"]
    if which == "simpy":
        from benchmarks.baselines.simpy_mmc import run
    elif which == "ciw":
        from benchmarks.baselines.ciw_mmc import run
    else:
        from benchmarks.llmtraffic_mmc import run
    c0 = time.process_time()
    out = run(args["lam"], args["mu"], args["c"], args["n"], args["seed"])
    out["cpu_s"] = time.process_time() - c0
    return out


def day(args: dict[str, Any]) -> dict[str, Any]:
    """The article's day (or a fraction of it), records as asked, Parquet to a temp folder."""
    from llmtraffic import load_config
    from llmtraffic.runner import run_to_folder

    fraction = float(args.get("fraction", 1.0))
    duration = 86400.0 * fraction
    overrides = [
        f"run.duration={duration}",
        f'run.records="{args["records"]}"',
        # Keep the brownout at the same share of the run (14:00 of a full day).
        f"providers.gpt-4o-mini.incidents.0.start={50400.0 * fraction}",
        f"providers.gpt-4o-mini.incidents.0.duration={max(60.0, 1200.0 * fraction)}",
    ]
    scenario = load_config(DAY_CONFIG, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        folder, result = run_to_folder(scenario, Path(tmp) / "run")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        files = sum(p.stat().st_size for p in folder.iterdir())
    s = result.summary
    return {
        "requests": s["requests"],
        "attempts": s["attempts"],
        "events": s["event_count"],
        "success_rate": s["success_rate"],
        "billed_cost": s["billed_cost"],
        "wall_s": wall,
        "cpu_s": cpu,
        "folder_bytes": files,
    }


def main() -> None:
    """Run the measurement named in the JSON argument and print its figures."""
    args = json.loads(sys.argv[1])
    c0 = time.process_time()
    out = {"mmc": mmc, "day": day}[args["bench"]](args)
    out["process_cpu_s"] = time.process_time() - c0
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import llmtraffic.client.client as hot

    out["compiled"] = not hot.__file__.endswith(".py")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
