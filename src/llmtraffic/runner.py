"""Running a scenario into a results folder, atomically, under a lock.

The run is written into a hidden ``.<name>.partial-<pid>`` folder beside the target and renamed
into place only when complete (``results.folders.atomic_folder``), so an interrupted or crashed
run never leaves a folder that looks finished; a lock (``results.folders.FolderLock``) refuses
a second writer of the same folder while the first is running. ``force`` replaces an existing
folder only when it is a results folder (``results.folders.results_kind``). A finished folder
holds:

- ``config.json``: the resolved scenario (every default filled in), and ``config.toml``, the
  file it came from, when there was one;
- ``manifest.json``: seed, version, git revision, host, Python, start time, wall time;
- ``summary.json``: every metric (docs/metrics.md);
- ``requests.parquet``, ``attempts.parquet``, ``events.parquet``, ``timeseries.parquet`` as
  ``run.records`` asks (docs/records.md).
"""

from __future__ import annotations

import datetime as dt
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from llmtraffic.config.scenario import Scenario
from llmtraffic.config.span import resolve_duration
from llmtraffic.errors import OutputError
from llmtraffic.results.folders import (
    FolderLock,
    atomic_folder,
    check_target,
    check_writable,
    describe,
    results_kind,
)
from llmtraffic.results.jsonio import write_json
from llmtraffic.results.sink import ParquetSink
from llmtraffic.simulation import ProgressFn, RunResult, Simulation

TABLES_BY_RECORDS = {
    "all": ("requests", "attempts", "events", "timeseries"),
    "timeseries": ("events", "timeseries"),
    "summary": (),
}


def default_folder(scenario: Scenario, root: Path = Path("runs")) -> Path:
    """``runs/<scenario name>-<UTC timestamp>``, with a counter if that exists already."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    folder = root / f"{scenario.name}-{stamp}"
    n = 2
    while folder.exists():
        folder = root / f"{scenario.name}-{stamp}-{n}"
        n += 1
    return folder


def git_revision(cwd: Path | None = None) -> str | None:
    """The git commit of the working directory's repository, if there is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_to_folder(
    scenario: Scenario,
    folder: Path | None = None,
    *,
    seed: int | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    config_text: str | None = None,
    overrides: list[str] | None = None,
) -> tuple[Path, RunResult]:
    """Run ``scenario`` and write its results folder; return the folder and the result.

    ``seed`` replaces ``run.seed`` (so ``config.json`` reproduces the run); ``config_text``
    and ``overrides`` are kept for provenance.
    """
    scenario = resolve_duration(scenario)  # config.json records the seconds it ran
    if seed is not None:
        scenario = scenario.model_copy(
            update={"run": scenario.run.model_copy(update={"seed": int(seed)})}
        )
    final = Path(folder) if folder is not None else default_folder(scenario)
    check_target(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {final.parent}: {exc.strerror}") from None
    check_writable(final.parent)
    started = dt.datetime.now(dt.UTC)
    # Checked under the lock: a run that finished a moment ago is seen as existing.
    with FolderLock(final):
        check_replaceable(final, force)
        with atomic_folder(final) as partial:
            write_json(partial / "config.json", scenario.model_dump(mode="python"))
            if config_text is not None:
                (partial / "config.toml").write_text(config_text, encoding="utf-8")
            sink = ParquetSink(partial, TABLES_BY_RECORDS[scenario.run.records])
            result = Simulation(scenario, sink=sink, progress=progress).run()
            write_json(partial / "summary.json", result.summary)
            meta = manifest(scenario, result, started)
            meta["overrides"] = list(overrides or [])
            write_json(partial / "manifest.json", meta)
    return final, result


def check_replaceable(final: Path, force: bool) -> None:
    """Refuse an existing ``final`` unless it is a results folder and ``force`` is given. An
    empty folder is taken as it is (nothing in it can be lost)."""
    if not final.exists() and not final.is_symlink():
        return
    if final.is_symlink() or not final.is_dir():
        raise OutputError(
            f"{final} exists and is not a folder; --force only replaces results folders; "
            "choose another --out"
        )
    kind = results_kind(final)
    if kind is None and not any(final.iterdir()):
        return
    if kind is None:
        raise OutputError(
            f"{final} exists and is not a llmtraffic results folder (it holds "
            f"{describe(final)}); --force only replaces results folders (a run's or an "
            "experiment's, which have a manifest.json); choose another --out"
        )
    if not force:
        what = "an experiment's results folder" if kind == "experiment" else "results folder"
        raise OutputError(
            f"{what} {final} already exists; pass --force to replace it, or choose another --out"
        )


def manifest(scenario: Scenario, result: RunResult, started: dt.datetime) -> dict[str, Any]:
    """Provenance of a run: what ran, where, when, and how long it took."""
    s = result.summary
    return {
        "kind": "llmtraffic-run",
        "scenario": scenario.name,
        "seed": s["seed"],
        "config_hash": s["config_hash"],
        "version": s["version"],
        "schema_version": s["schema_version"],
        "git_revision": git_revision(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_time_s": s["wall_time_s"],
        "records": scenario.run.records,
        "tables": list(TABLES_BY_RECORDS[scenario.run.records]),
        "complete": True,
    }
