"""``make profile``: where the pure-Python engine spends its time, as pyinstrument sees it.

Profiles two runs in this process: M/M/c with every record kept (200,000 customers, the queue
of the side-by-side benchmark) and the article's day cut to its first 2.4 hours (fraction 0.1,
about 260,000 requests, the time series kept). Prints each call tree (frames under 2% of the
run hidden) and writes interactive HTML reports to ``runs/profile/``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pyinstrument import Profiler

from benchmarks.llmtraffic_mmc import run as run_mmc
from benchmarks.worker import DAY_CONFIG

OUT = Path(__file__).resolve().parents[1] / "runs" / "profile"


def _day() -> None:
    from llmtraffic import load_config
    from llmtraffic.runner import run_to_folder

    fraction = 0.1
    scenario = load_config(
        DAY_CONFIG,
        [
            f"run.duration={86400.0 * fraction}",
            'run.records="timeseries"',
            f"providers.gpt-4o-mini.incidents.0.start={50400.0 * fraction}",
            f"providers.gpt-4o-mini.incidents.0.duration={1200.0 * fraction}",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_to_folder(scenario, Path(tmp) / "run")


def main() -> None:
    """Profile both runs; print the trees, write the HTML reports."""
    OUT.mkdir(parents=True, exist_ok=True)
    # pyarrow imports pandas on its first pa.array (about 0.25 s, once per process): done
    # here so that the profiles show the simulation, not the import.
    import pandas  # noqa: F401

    runs = {"mmc": lambda: run_mmc(9.0, 1.0, 10, 200_000, 1), "day": _day}
    for name, fn in runs.items():
        # pyinstrument's default 1 ms samples: finer ones slowed the runs threefold and
        # inflated whatever makes many short calls (the pandas import most of all).
        profiler = Profiler()
        profiler.start()
        fn()
        profiler.stop()
        print(f"=== {name} ===")
        print(
            profiler.output_text(
                unicode=True, color=False, show_all=False, time="percent_of_total", flat=False
            )
        )
        (OUT / f"{name}.html").write_text(profiler.output_html(), encoding="utf-8")
        print(f"HTML report: {OUT / f'{name}.html'}")


if __name__ == "__main__":
    main()
