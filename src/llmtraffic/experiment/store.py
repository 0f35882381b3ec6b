"""The results folder of an experiment: layout, resume, and the summary tables.

::

    runs/<name>/
      experiment.toml          the file as given
      experiment.json          the resolved spec: axes, points (ids, values), seeds
      manifest.json            version, git revision, host, start, wall time, status, counts
      runs/<point-id>/rep-<r>/ one run folder each (written atomically by run_to_folder)
      runs/<point-id>/rep-<r>.error.txt   the traceback of a run that failed
      summary.parquet, .csv    one row per finished run
      points.parquet, .csv     per point and metric: mean, ci_low, ci_high, n

A run is *done* when its folder is complete (it has a manifest) and was made from the same
config (config hash) and seed as the spec asks; a rerun skips those and runs the rest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import re
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtraffic.errors import LLMTrafficError, OutputError
from llmtraffic.experiment.analysis import fill_counts, flatten_summary, point_stats
from llmtraffic.experiment.spec import ExperimentSpec, Run
from llmtraffic.results.folders import (
    FolderLock,
    FolderLockedError,
    atomic_folder,
    check_target,
    check_writable,
    describe,
    remove_stale_partials,
    results_kind,
)
from llmtraffic.results.jsonio import read_json, write_json
from llmtraffic.results.load import RunData, load, repr_html_table
from llmtraffic.runner import git_revision
from llmtraffic.wording import counted

if TYPE_CHECKING:
    import pandas as pd

EXPERIMENT_FILES = (
    "experiment.toml",
    "experiment.json",
    "manifest.json",
    "summary.parquet",
    "summary.csv",
    "points.parquet",
    "points.csv",
)


def default_folder(spec: ExperimentSpec, root: Path = Path("runs")) -> Path:
    """``runs/<experiment name>``: fixed, so that running the file again resumes it."""
    return root / spec.name


def is_experiment_folder(folder: Path) -> bool:
    """True for a folder written by an experiment (it holds experiment.json)."""
    return (Path(folder) / "experiment.json").is_file()


class ExperimentStore:
    """Reads and writes one experiment's results folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def run_dir(self, point_id: str, replication: int) -> Path:
        """Where run ``replication`` of point ``point_id`` is written."""
        return self.folder / "runs" / point_id / f"rep-{replication}"

    def error_path(self, point_id: str, replication: int) -> Path:
        """Where the traceback of a failed run is written."""
        return self.folder / "runs" / point_id / f"rep-{replication}.error.txt"

    def lock(self) -> FolderLock:
        """The lock a writer of this folder holds (``.<name>.lock`` beside it); creates the
        parent folder, which the lock file lives in."""
        check_target(self.folder)
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create the folder {self.folder.parent}: {exc.strerror}"
            ) from None
        check_writable(self.folder.parent)
        return FolderLock(self.folder)

    def prepare(self, spec: ExperimentSpec, *, force: bool) -> None:
        """Create the folder (or check that an existing one is an experiment's), and write the
        spec. ``force`` deletes earlier runs and tables first, and replaces a single run's
        results folder; any other folder is refused. Call it holding ``lock()``."""
        f = self.folder
        if f.is_symlink() or (f.exists() and not f.is_dir()):
            raise OutputError(
                f"{f} exists and is not a folder; --force only replaces results folders; "
                "choose another --out"
            )
        kind = results_kind(f) if f.exists() else None
        if kind is None and f.exists() and any(f.iterdir()):
            raise OutputError(
                f"{f} exists and is not a llmtraffic results folder (it holds {describe(f)}); "
                "--force only replaces results folders (a run's or an experiment's, which "
                "have a manifest.json); choose another --out"
            )
        if kind == "run":
            if not force:
                raise OutputError(
                    f"{f} is a single run's results folder; pass --force to replace it with "
                    "this experiment, or choose another --out"
                )
            shutil.rmtree(f)
        try:
            f.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the folder {f}: {exc.strerror}") from None
        check_writable(f)
        if force:
            shutil.rmtree(f / "runs", ignore_errors=True)
            for name in EXPERIMENT_FILES:
                (f / name).unlink(missing_ok=True)
        self._remove_partials()
        # Every run not done is run again and writes a fresh traceback if it fails again; one
        # left from an earlier invocation would outlive a run that has since finished.
        for stale in (f / "runs").glob("*/rep-*.error.txt"):
            stale.unlink(missing_ok=True)
        if spec.text is not None:
            _write_text(f / "experiment.toml", spec.text)
        write_json(f / "experiment.json", spec.to_json())

    def _remove_partials(self) -> None:
        """Hidden half-written run folders left by processes that were killed (those of live
        processes, such as another sweep's workers, are left alone)."""
        root = self.folder / "runs"
        if not root.is_dir():
            return
        finals = {
            hidden.parent / re.sub(r"\.(partial|old)-\d+$", "", hidden.name[1:])
            for pattern in ("*/.rep-*.partial-*", "*/.rep-*.old-*")
            for hidden in root.glob(pattern)
        }
        for final in finals:
            remove_stale_partials(final)
        self.remove_stale_locks()

    def remove_stale_locks(self) -> None:
        """Lock files of run folders whose writer was killed: taking such a lock (the kernel
        freed it) removes it; one a live process holds is left alone. Called as a sweep
        starts and again as it ends: a worker killed with an earlier command may still be
        dying, holding its lock, when the next command starts."""
        root = self.folder / "runs"
        if not root.is_dir():
            return
        for lock_file in root.glob("*/.rep-*.lock"):
            with (
                contextlib.suppress(FolderLockedError),
                FolderLock(lock_file.parent / lock_file.name[1:].removesuffix(".lock")),
            ):
                pass

    def is_done(self, run: Run) -> bool:
        """True when the run's folder is complete and made from the spec's config and seed."""
        folder = self.run_dir(run.point.id, run.replication)
        try:
            summary = read_json(folder / "summary.json")
            manifest = read_json(folder / "manifest.json")
        except (OSError, ValueError):
            return False
        return bool(
            manifest.get("complete")
            and summary.get("config_hash") == run.point.config_hash
            and summary.get("seed") == run.seed
        )

    def adopt(self, spec: ExperimentSpec) -> int:
        """Move finished runs that the grid now files under another point id into place.

        Point ids number the points, so adding a value to an axis renumbers the points after
        it; a finished run of the same scenario and seed (same config hash) is still valid,
        and is moved rather than run again. Returns how many were moved.
        """
        root = self.folder / "runs"
        if not root.is_dir():
            return 0
        runs = spec.runs()
        # Only folders no current run lives in are candidates: two points with the same
        # scenario must not take each other's folders.
        targets = {self.run_dir(r.point.id, r.replication) for r in runs}
        found: dict[tuple[str, int], Path] = {}
        for summary_path in root.glob("*/rep-*/summary.json"):
            folder = summary_path.parent
            if folder in targets:
                continue
            try:
                summary = read_json(summary_path)
                complete = read_json(folder / "manifest.json").get("complete")
            except (OSError, ValueError):
                continue
            if complete:
                found[(str(summary.get("config_hash")), int(summary.get("seed", -1)))] = folder
        moved = 0
        for run in runs:
            target = self.run_dir(run.point.id, run.replication)
            source = found.get((run.point.config_hash, run.seed))
            if source is None or source == target or self.is_done(run):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)  # a stale run of another config
            os.replace(source, target)
            with contextlib.suppress(OSError):
                source.parent.rmdir()  # only if it is now empty
            moved += 1
        return moved

    def record_failure(self, run: Run, text: str) -> Path:
        """Write a failed run's traceback beside where its folder would be."""
        path = self.error_path(run.point.id, run.replication)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_text(path, text)
        return path

    def clear_failure(self, run: Run) -> None:
        """Forget an earlier failure of a run that has now finished."""
        self.error_path(run.point.id, run.replication).unlink(missing_ok=True)

    def write_run_files(self, run: Run, files: Mapping[str, bytes]) -> Path:
        """Write a run folder from its files' bytes (a Dask worker sends them back), atomically:
        into a hidden folder first, renamed into place when complete."""
        final = self.run_dir(run.point.id, run.replication)
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_folder(final) as partial:
            for name, data in files.items():
                (partial / name).write_bytes(data)
        return final

    def write_manifest(self, data: Mapping[str, Any]) -> None:
        """Write manifest.json."""
        write_json(self.folder / "manifest.json", dict(data))

    def collect(self, spec: ExperimentSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Build and write the summary and points tables from the finished runs."""
        summary = summary_table(self, spec)
        axes = [a.name for a in spec.axes]
        points = point_stats(summary, axes) if len(summary) else _empty_points(axes)
        for name, df in (("summary", summary), ("points", points)):
            _write_table(df, self.folder / f"{name}.parquet", self.folder / f"{name}.csv")
        return summary, points


def summary_table(store: ExperimentStore, spec: ExperimentSpec) -> pd.DataFrame:
    """One row per finished run of the spec: point id, axis values, replication, seed, then
    every metric of the run's summary (flattened by ``flatten_summary``)."""
    import pandas as pd

    rows = []
    for run in spec.runs():
        if not store.is_done(run):
            continue
        summary = read_json(store.run_dir(run.point.id, run.replication) / "summary.json")
        head: dict[str, Any] = {"point_id": run.point.id}
        for axis, i in zip(spec.axes, run.point.value_index, strict=True):
            head[axis.name] = axis.column_value(i)
        head["replication"] = run.replication
        flat = flatten_summary(summary)
        flat.pop("seed", None)
        rows.append({**head, "seed": run.seed, **flat})
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(
            columns=["point_id", *(a.name for a in spec.axes), "replication", "seed"]
        )
    return fill_counts(df)


def _empty_points(axes: list[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(columns=["point_id", *axes, "metric", "mean", "ci_low", "ci_high", "n"])


def _write_table(df: pd.DataFrame, parquet: Path, csv: Path) -> None:
    """Write both files through temporary names, so a reader never sees half a table."""
    for path, write in ((parquet, df.to_parquet), (csv, df.to_csv)):
        tmp = path.with_name(f".{path.name}.tmp")
        write(tmp, index=False)
        os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def experiment_manifest(
    spec: ExperimentSpec,
    started: dt.datetime,
    wall: float,
    status: str,
    counts: Mapping[str, int],
    executor: str,
) -> dict[str, Any]:
    """Provenance of an experiment run: what ran, where, when, how long, and how it ended."""
    from llmtraffic import __version__

    return {
        "kind": "llmtraffic-experiment",
        "name": spec.name,
        "version": __version__,
        "git_revision": git_revision(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_time_s": wall,
        "status": status,
        "executor": executor,
        "overrides": list(spec.overrides),
        **{f"runs_{k}": v for k, v in counts.items()},
    }


@dataclass
class ExperimentData:
    """An experiment's results: the spec, the summary tables, and each run's folder.

    ``summary`` has one row per finished run, ``points`` the mean and 95% interval of every
    metric per point (long format: one row per point and metric). ``run(point, rep)`` opens
    one run as ``llmtraffic.load`` does.
    """

    folder: Path
    spec: dict[str, Any]
    manifest: dict[str, Any]
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        """The experiment's name."""
        return str(self.spec["name"])

    @property
    def axes(self) -> list[str]:
        """Axis column names, in sweep order."""
        return [a["name"] for a in self.spec["axes"]]

    def axis_info(self, name: str) -> dict[str, Any]:
        """The axis's path, name, values and labels."""
        for a in self.spec["axes"]:
            if name in (a["name"], a["path"]):
                return dict(a)
        raise LLMTrafficError(f"no axis {name!r}; axes: {', '.join(self.axes) or '(none)'}")

    @property
    def point_ids(self) -> list[str]:
        """Point ids in grid order."""
        return [p["id"] for p in self.spec["points"]]

    @property
    def replications(self) -> int:
        """Runs per point (one seed each, the same seeds at every point)."""
        return int(self.spec.get("replications", len(self.spec.get("seeds", [])) or 1))

    @property
    def status(self) -> str:
        """How the last run of the experiment ended: ``complete``, ``failed`` (some runs
        failed), ``interrupted`` or ``running``; ``unknown`` without a manifest.json."""
        return str(self.manifest.get("status", "unknown"))

    def _repr_rows(self) -> list[tuple[str, str]]:
        """The few lines a repr shows: axes, points, replications, status."""
        rows = []
        axes = self.spec.get("axes", [])
        for a in axes[:MAX_AXIS_ROWS]:
            labels = [str(v) for v in a.get("labels") or a.get("values", [])]
            shown = ", ".join(labels[:MAX_AXIS_VALUES])
            more = f", ... ({len(labels)} values)" if len(labels) > MAX_AXIS_VALUES else ""
            rows.append((f"axis {a['name']}", shown + more))
        if len(axes) > MAX_AXIS_ROWS:
            rows.append(("", f"and {len(axes) - MAX_AXIS_ROWS} more axes (.axes)"))
        if not axes:
            rows.append(("axes", "none (one point)"))
        points = len(self.spec.get("points", []))
        reps = self.replications
        rows.append(
            (
                "runs",
                f"{counted(points, 'point')} x {counted(reps, 'replication')} = "
                f"{counted(points * reps, 'run')}",
            )
        )
        m = self.manifest
        counts = ", ".join(
            f"{m[f'runs_{k}']} {k}" for k in ("done", "skipped", "failed") if f"runs_{k}" in m
        )
        status = self.status if self.manifest else "unknown (no manifest.json)"
        rows.append(("status", f"{status} ({counts})" if counts else status))
        return rows

    def _repr_title(self) -> str:
        text = str(self.folder)
        where = text if len(text) <= 80 else "..." + text[-77:]
        return f"ExperimentData {self.name!r} from {where}"

    def __repr__(self) -> str:
        """A few lines: name, folder, axes, points, replications, status."""
        rows = self._repr_rows()
        width = max(len(label) for label, _ in rows)
        lines = [f"<{self._repr_title()}"]
        lines += [f"  {label:<{width}}  {value}" for label, value in rows]
        return "\n".join(lines) + ">"

    def _repr_html_(self) -> str:
        """The repr as a small HTML table (Jupyter shows this one)."""
        return repr_html_table(self._repr_title(), self._repr_rows())

    @cached_property
    def summary(self) -> pd.DataFrame:
        """One row per finished run."""
        return self._table("summary")

    @cached_property
    def points(self) -> pd.DataFrame:
        """Mean, ci_low, ci_high, n per point and metric."""
        return self._table("points")

    def point_means(self, metrics: list[str] | None = None) -> pd.DataFrame:
        """Wide table of point means: one row per point, one column per metric."""
        pts = self.points
        if metrics is not None:
            pts = pts[pts["metric"].isin(metrics)]
        wide = pts.pivot_table(
            index=["point_id", *self.axes], columns="metric", values="mean", sort=False
        )
        wide.columns.name = None
        return wide.reset_index()

    def _table(self, name: str) -> pd.DataFrame:
        import pandas as pd

        path = self.folder / f"{name}.parquet"
        if not path.exists():
            raise LLMTrafficError(
                f"{self.folder} has no {name}.parquet yet: the experiment was interrupted "
                "before it wrote its tables; run its file again to resume"
            )
        import pyarrow as pa

        from llmtraffic.results.jsonio import RERUN_HINT, ResultFileError

        try:
            return pd.read_parquet(path)
        except (OSError, ValueError, pa.ArrowException):
            # A truncated or corrupted table: say which file, not pyarrow's internals.
            raise ResultFileError(
                f"{path} is not a readable Parquet file (truncated or corrupted); {RERUN_HINT}"
            ) from None

    def run(self, point: str | int = 0, replication: int = 0) -> RunData:
        """Open one run's folder (by point id, ``pNNN`` prefix or index)."""
        pid = self._point_id(point)
        return load(self.folder / "runs" / pid / f"rep-{replication}")

    def _point_id(self, point: str | int) -> str:
        for p in self.spec["points"]:
            if point in (p["id"], p["index"]) or (
                isinstance(point, str) and p["id"].split("-", 1)[0] == point
            ):
                return str(p["id"])
        raise LLMTrafficError(f"no point {point!r} in {self.folder}; points: {self.point_ids}")

    def failures(self) -> dict[str, str]:
        """Tracebacks of the runs that failed, by ``<point-id>/rep-<r>``."""
        root = self.folder / "runs"
        return {
            f"{p.parent.name}/{p.name.removesuffix('.error.txt')}": p.read_text(encoding="utf-8")
            for p in sorted(root.glob("*/rep-*.error.txt"))
        }


MAX_AXIS_ROWS = 4
"""Axes an experiment's repr lists one per line; the rest are counted."""

MAX_AXIS_VALUES = 5
"""Values of an axis its repr line shows."""


def load_experiment(folder: str | Path) -> ExperimentData:
    """Open an experiment's results folder written by ``llmtraffic run`` on a sweep."""
    path = Path(folder)
    if not is_experiment_folder(path):
        raise LLMTrafficError(
            f"{path} is not an experiment's results folder (no experiment.json); a single "
            "run's folder opens with llmtraffic.load"
        )
    spec = read_json(path / "experiment.json")
    manifest_path = path / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.exists() else {}
    return ExperimentData(path, spec, manifest)
