"""One run's results, whether it ran in memory (``Simulation(...).run()``) or was read back
from its results folder (``llmtraffic.load(folder)``): the same ``RunResult`` either way."""

from __future__ import annotations

import difflib
import html
import json
import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtraffic.errors import LLMTrafficError
from llmtraffic.results.jsonio import RERUN_HINT, ResultFileError, json_safe, read_json

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from llmtraffic.config.scenario import Scenario

__all__ = ["TABLE_NAMES", "MissingTableError", "RunData", "RunResult", "load"]

TABLE_NAMES = ("requests", "attempts", "events", "timeseries")
"""The record tables a run can keep (docs/records.md), in the order they are listed."""


class MissingTableError(LLMTrafficError, KeyError):
    """A table the run did not keep (``run.records``) or whose file is gone. A ``KeyError``
    too, as ``RunResult.df`` raised before the two results objects became one."""

    def __str__(self) -> str:
        # KeyError's own str() quotes its argument; this one is a sentence.
        return str(self.args[0]) if self.args else ""


class RunResult:
    """One run's results: the summary, the resolved config, and the record tables as pandas
    DataFrames.

    ``Simulation(...).run()`` returns one with its tables in memory (``folder`` is None);
    ``llmtraffic.load(folder)`` returns one that reads the folder's Parquet files on first
    access. Both have the same attributes and give the same values for the same run:
    ``summary`` (dict, docs/metrics.md), ``config`` (the resolved scenario as a dict, as
    ``config.json`` holds it), ``scenario`` (the same as a ``Scenario``), ``manifest``,
    ``features`` and ``incidents`` (DataFrames of the summary's per-feature and per-incident
    metrics), ``requests``, ``attempts``, ``events``, ``timeseries`` (DataFrames,
    docs/records.md) and ``df(name)``. A table the run did not keep raises
    ``MissingTableError`` saying which ``run.records`` setting keeps it.
    """

    def __init__(
        self,
        summary: dict[str, Any],
        tables: Mapping[str, pa.Table] | None = None,
        *,
        config: dict[str, Any] | None = None,
        manifest: dict[str, Any] | None = None,
        folder: str | Path | None = None,
        scenario: Scenario | None = None,
        sink: str | None = None,
    ) -> None:
        """``tables`` are the in-memory tables (a run from memory); ``folder`` the results
        folder to read them from (a run from disk). ``config`` defaults to ``scenario``'s
        dump; ``sink`` names the sink the records went to when not to memory (a
        ``ParquetSink``), for the message of a missing table."""
        self.summary = summary
        self.folder = Path(folder) if folder is not None else None
        self._arrow: dict[str, pa.Table] = dict(tables or {})
        self._config = config
        self._scenario = scenario
        self._manifest = manifest
        self._sink = sink
        self._frames: dict[str, pd.DataFrame] = {}

    # --- what ran ---------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """The resolved scenario (every default filled in) as a dict, as ``config.json``
        holds it: NaN as None, infinity as "inf"."""
        if self._config is None:
            if self._scenario is None:
                raise LLMTrafficError("this run result has neither a config nor a scenario")
            # The same conversion as config.json's, so that memory and disk agree.
            self._config = json.loads(
                json.dumps(json_safe(self._scenario.model_dump(mode="python")))
            )
        return self._config

    @property
    def scenario(self) -> Scenario:
        """The resolved scenario as a ``Scenario`` (from a folder: built from config.json)."""
        if self._scenario is None:
            from llmtraffic.config.loader import scenario_from_dict

            source = str(self.folder / "config.json") if self.folder is not None else None
            self._scenario = scenario_from_dict(self.config, source=source)
        return self._scenario

    @property
    def manifest(self) -> dict[str, Any]:
        """Provenance: ``manifest.json`` of a folder; for a run in memory, what it kept."""
        if self._manifest is None:
            s = self.summary
            self._manifest = {
                "kind": "llmtraffic-run",
                "scenario": s.get("scenario"),
                "seed": s.get("seed"),
                "config_hash": s.get("config_hash"),
                "version": s.get("version"),
                "schema_version": s.get("schema_version"),
                "wall_time_s": s.get("wall_time_s"),
                "records": self._records(),
                "tables": [t for t in TABLE_NAMES if t in self._arrow],
            }
        return self._manifest

    @property
    def name(self) -> str:
        """The scenario's name."""
        return str(self.summary.get("scenario", ""))

    @property
    def seed(self) -> int:
        """The root seed the run used."""
        return int(self.summary["seed"])

    # --- tables -----------------------------------------------------------------------------

    def df(self, name: str) -> pd.DataFrame:
        """Table ``name`` (``requests``, ``attempts``, ``events``, ``timeseries``) as a
        DataFrame, made on first access and kept."""
        if name not in self._frames:
            self._frames[name] = self._read(name).to_pandas()
        return self._frames[name]

    def table(self, name: str) -> pd.DataFrame:
        """The same as ``df(name)`` (the spelling ``llmtraffic.load`` results had)."""
        return self.df(name)

    @property
    def tables(self) -> dict[str, pa.Table]:
        """The kept tables as Arrow tables, by name (from a folder: read on each access)."""
        return {name: self._read(name) for name in self.kept_tables}

    @property
    def requests(self) -> pd.DataFrame:
        """One row per request (docs/records.md)."""
        return self.df("requests")

    @property
    def attempts(self) -> pd.DataFrame:
        """One row per attempt."""
        return self.df("attempts")

    @property
    def events(self) -> pd.DataFrame:
        """Breaker transitions, incident starts and ends, budget exhaustion."""
        return self.df("events")

    @property
    def timeseries(self) -> pd.DataFrame:
        """One row per time bin."""
        return self.df("timeseries")

    @cached_property
    def features(self) -> pd.DataFrame:
        """The per-feature breakdown of the summary, one row per feature."""
        rows = {
            name: {k: v for k, v in m.items() if not isinstance(v, dict)}
            for name, m in self.summary.get("features", {}).items()
        }
        import pandas as pd

        return pd.DataFrame.from_dict(rows, orient="index")

    @cached_property
    def incidents(self) -> pd.DataFrame:
        """Per-incident metrics (success rates, extra cost, recovery time, metastability)."""
        import pandas as pd

        return pd.DataFrame(self.summary.get("incidents", []))

    @property
    def kept_tables(self) -> list[str]:
        """The tables this result can give: those kept in memory, or those the folder's
        manifest lists (``run.records``)."""
        if self.folder is None:
            return [t for t in TABLE_NAMES if t in self._arrow]
        return [str(t) for t in self.manifest.get("tables", [])]

    def missing_tables(self, names: Sequence[str]) -> list[str]:
        """Those of ``names`` this result cannot give (no file in the folder, or not kept in
        memory)."""
        if self.folder is None:
            return [n for n in names if n not in self._arrow]
        return [n for n in names if not (self.folder / f"{n}.parquet").exists()]

    def missing_tables_message(self, names: Sequence[str]) -> str:
        """Why the tables ``names`` are missing, and which ``run.records`` setting writes
        them: a setting that did not keep them, or files gone from the folder."""
        if self.folder is None:
            return self._memory_message(names)
        records = self.manifest.get("records")
        kept = self.kept_tables
        gone = [n for n in names if n in kept]
        not_kept = [n for n in names if n not in kept]
        parts = []
        if gone:
            parts.append(
                f"{self.folder} is missing {_files(gone)}: its manifest says the run wrote "
                f"{'it' if len(gone) == 1 else 'them'} (run.records = {records!r}), so the "
                "folder is incomplete; restore the files from a copy, or run the config again"
            )
        if not_kept:
            tables = f"tables: {', '.join(kept)}" if kept else "no tables"
            parts.append(
                f"{self.folder} has no {' or '.join(not_kept)} table: the run kept "
                f"run.records = {records!r} ({tables}); run it again with "
                f"{_records_for(not_kept)}"
            )
        return "; and ".join(parts)

    def _memory_message(self, names: Sequence[str]) -> str:
        missing = " or ".join(names)
        if self._sink is not None:
            return (
                f"this run has no {missing} table in memory: its records went to the "
                f"{self._sink} given to Simulation; read them from there (a results folder "
                "opens with llmtraffic.load(folder))"
            )
        records = self._records()
        kept = [t for t in TABLE_NAMES if t in self._arrow]
        tables = f"tables: {', '.join(kept)}" if kept else "no tables"
        return (
            f"this run has no {missing} table: it kept run.records = {records!r} ({tables}); "
            f"run it again with {_records_for(names)}"
        )

    def _records(self) -> str | None:
        """The run's ``run.records`` setting, from whatever this result knows."""
        if self._scenario is not None:
            return str(self._scenario.run.records)
        if self._manifest is not None and "records" in self._manifest:
            return str(self._manifest["records"])
        run = (self._config or {}).get("run")
        return str(run["records"]) if isinstance(run, dict) and "records" in run else None

    def _read(self, name: str) -> pa.Table:
        """Table ``name`` as an Arrow table, or the error that says why it is missing."""
        if name not in TABLE_NAMES:
            close = difflib.get_close_matches(name, TABLE_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise MissingTableError(f"no table {name!r}{hint} (tables: {', '.join(TABLE_NAMES)})")
        if self.folder is None:
            if name not in self._arrow:
                raise MissingTableError(self._memory_message([name]))
            return self._arrow[name]
        path = self.folder / f"{name}.parquet"
        if not path.exists():
            raise MissingTableError(self.missing_tables_message([name]))
        import pyarrow as pa  # imported on use: the CLI rarely needs the tables
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise ResultFileError(
                f"{path} is not a readable Parquet file (truncated or corrupted: "
                f"{_first_line(exc)}); {RERUN_HINT}"
            ) from None

    # --- display ----------------------------------------------------------------------------

    def _where(self) -> str:
        if self.folder is None:
            return "in memory"
        text = str(self.folder)
        return f"from {text if len(text) <= 80 else '...' + text[-77:]}"

    def _rows(self) -> list[tuple[str, str]]:
        """The few lines a repr shows: label and value."""
        from llmtraffic.report_table import money

        s = self.summary
        requests = s.get("requests", 0)
        rows = [
            (
                "requests",
                f"{requests:,} (success {_share(s.get('success_rate'))}, "
                f"{_num(s.get('attempt_amplification'), '.3f')} attempts each)",
            ),
            (
                "billed cost",
                f"{money(_nan(s.get('billed_cost')))} (wasted "
                f"{money(_nan(s.get('wasted_cost')))}, "
                f"{_num(s.get('cost_amplification'), '.3f')}x the useful cost)",
            ),
        ]
        incidents = s.get("incidents") or []
        if not incidents:
            rows.append(("incidents", "none"))
        # Numbered from 1 as the CLI's tables and the plots number them (the metric names
        # keep their index: incident.0.* is incident 1).
        for i, inc in enumerate(incidents[:MAX_INCIDENT_ROWS], start=1):
            rows.append((f"incident {i}", _incident_line(inc)))
        if len(incidents) > MAX_INCIDENT_ROWS:
            more = len(incidents) - MAX_INCIDENT_ROWS
            rows.append(("", f"and {more} more (.incidents)"))
        kept = self.kept_tables
        if kept:
            tables = ", ".join(kept)
        elif self._sink is not None:
            tables = f"none in memory (the records went to a {self._sink})"
        else:
            tables = f"none kept (run.records = {self._records()!r})"
        rows.append(("tables", tables))
        return rows

    def _title(self) -> str:
        seed = self.summary.get("seed")
        return f"RunResult {self.name!r}, seed {seed}, {self._where()}"

    def __repr__(self) -> str:
        """A few lines: scenario, seed, requests, success, billed cost, incidents, tables."""
        rows = self._rows()
        width = max(len(label) for label, _ in rows)
        lines = [f"<{self._title()}"]
        lines += [f"  {label:<{width}}  {value}" for label, value in rows]
        return "\n".join(lines) + ">"

    def _repr_html_(self) -> str:
        """The repr as a small HTML table (Jupyter shows this one)."""
        return repr_html_table(self._title(), self._rows())


RunData = RunResult
"""The name ``llmtraffic.load`` results had: the same class as ``RunResult``."""

MAX_INCIDENT_ROWS = 3
"""Incidents a repr lists one per line; the rest are counted."""


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def _num(v: Any, fmt: str) -> str:
    v = _nan(v)
    return "-" if math.isnan(v) else format(v, fmt)


def _share(v: Any) -> str:
    return _num(v, ".2%")


def _incident_line(inc: Mapping[str, Any]) -> str:
    """``brownout on gpt-4o-mini, 600-900 s: recovered after 40 s``."""
    span = f"{_num(inc.get('start'), '.0f')}-{_num(inc.get('end'), '.0f')} s"
    metastable = inc.get("metastable")
    if metastable is None:
        verdict = "recovery undetermined"
    elif metastable:
        verdict = "metastable (not recovered)"
    else:
        verdict = f"recovered after {_num(inc.get('recovery_time'), '.0f')} s"
    during = _share(inc.get("success_rate_during"))
    return f"{inc.get('kind')} on {inc.get('provider')}, {span}: success {during}, {verdict}"


def repr_html_table(title: str, rows: Sequence[tuple[str, str]]) -> str:
    """A two-column HTML table with a caption, every text escaped."""
    esc = html.escape
    body = "".join(
        f"<tr><th style='text-align:left'>{esc(label)}</th>"
        f"<td style='text-align:left'>{esc(value)}</td></tr>"
        for label, value in rows
    )
    return f"<table><caption style='text-align:left'>{esc(title)}</caption>{body}</table>"


def load(folder: str | Path) -> RunResult:
    """Open a results folder written by ``llmtraffic run`` (or ``run_to_folder``)."""
    path = Path(folder)
    if not path.is_dir():
        raise LLMTrafficError(f"{path} is not a folder (expected a results folder)")
    if (path / "experiment.json").exists():
        raise LLMTrafficError(
            f"{path} is an experiment's results folder (a grid of runs); open it with "
            "llmtraffic.load_experiment, or one of its runs with load_experiment(...).run(point)"
        )
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise LLMTrafficError(
            f"{path} is not a complete llmtraffic run folder (no manifest.json); an "
            "interrupted run leaves only a hidden .partial folder"
        )
    manifest = _read_part(path, "manifest.json")
    summary = restore_numbers(_read_part(path, "summary.json", SUMMARY_KEYS))
    config = _read_part(path, "config.json", ("run",))
    return RunResult(summary, config=config, manifest=manifest, folder=path)


SUMMARY_KEYS = ("requests", "billed_cost", "useful_cost", "wasted_cost", "features", "incidents")
"""Keys every run summary has, checked on load: a summary without them was not written by
llmtraffic (or was cut and patched by hand), and the tables and plots need them."""

NULLABLE_KEYS = frozenset({"metastable"})
"""Summary keys whose null means "no verdict" rather than NaN."""

TEXT_KEYS = frozenset(
    {"scenario", "config_hash", "version", "provider", "kind", "features", "metastable_reason"}
)
"""Summary keys that hold text: their "inf" is a name, not infinity."""


def restore_numbers(summary: dict[str, Any]) -> dict[str, Any]:
    """summary.json's values as the run computed them: null back to NaN (an undefined ratio;
    ``metastable`` keeps its null, "no verdict") and "inf" back to infinity."""

    def restore(key: str, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: restore(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [restore(key, v) for v in value]
        if value is None and key not in NULLABLE_KEYS:
            return math.nan  # the one NaN object, so that dict equality holds for copies
        if isinstance(value, str) and value in ("inf", "-inf") and key not in TEXT_KEYS:
            return float(value)
        return value

    return {k: restore(k, v) for k, v in summary.items()}


def _read_part(folder: Path, name: str, keys: Sequence[str] = ()) -> dict[str, Any]:
    """One of a run folder's JSON files, which must hold an object with ``keys``."""
    path = folder / name
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise ResultFileError(
            f"{folder} is not a complete run folder: it has no {name}; {RERUN_HINT}"
        ) from None
    except OSError as exc:
        raise ResultFileError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise ResultFileError(
            f"{path} holds a JSON {type(data).__name__}, not the object llmtraffic writes; "
            f"{RERUN_HINT}"
        )
    missing = [k for k in keys if k not in data]
    if missing:
        raise ResultFileError(
            f"{path} is not what llmtraffic writes there: it has no {', '.join(missing)}; "
            f"{RERUN_HINT}"
        )
    return data


def _records_for(tables: Sequence[str]) -> str:
    """The ``run.records`` settings that write all of ``tables``."""
    from llmtraffic.runner import TABLES_BY_RECORDS  # the runner decides what each keeps

    settings = [r for r, kept in TABLES_BY_RECORDS.items() if set(tables) <= set(kept)]
    return " or ".join(f"run.records = {r!r}" for r in settings) or "run.records = 'all'"


def _files(names: Sequence[str]) -> str:
    return ", ".join(f"{n}.parquet" for n in names)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
