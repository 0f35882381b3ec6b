"""Reading a results folder back for analysis: ``llmtraffic.load(folder)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtraffic.errors import LLMTrafficError
from llmtraffic.results.jsonio import RERUN_HINT, ResultFileError, read_json

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class RunData:
    """One run's results: the summary as a dict, the tables as pandas DataFrames.

    Tables are read on first access. A table the run did not keep (``run.records``) raises
    with a message saying so.
    """

    folder: Path
    summary: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    _cache: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def table(self, name: str) -> pd.DataFrame:
        """Table ``name`` (requests, attempts, events, timeseries) as a DataFrame."""
        if name not in self._cache:
            path = self.folder / f"{name}.parquet"
            if not path.exists():
                raise LLMTrafficError(self.missing_tables_message([name]))
            import pandas as pd  # imported on use: it is slow to import and the CLI rarely needs it
            import pyarrow as pa

            try:
                self._cache[name] = pd.read_parquet(path)
            except (OSError, ValueError, pa.ArrowException) as exc:
                raise ResultFileError(
                    f"{path} is not a readable Parquet file (truncated or corrupted: "
                    f"{_first_line(exc)}); {RERUN_HINT}"
                ) from None
        return self._cache[name]

    @property
    def kept_tables(self) -> list[str]:
        """The tables the run wrote, as its manifest lists them (``run.records``)."""
        return [str(t) for t in self.manifest.get("tables", [])]

    def missing_tables(self, names: Sequence[str]) -> list[str]:
        """Those of ``names`` that have no Parquet file in the folder."""
        return [n for n in names if not (self.folder / f"{n}.parquet").exists()]

    def missing_tables_message(self, names: Sequence[str]) -> str:
        """Why the tables ``names`` (that have no file) are missing, and which ``run.records``
        setting writes them: a setting that did not keep them, or files gone from the folder."""
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

    @property
    def requests(self) -> pd.DataFrame:
        """One row per request (docs/records.md)."""
        return self.table("requests")

    @property
    def attempts(self) -> pd.DataFrame:
        """One row per attempt."""
        return self.table("attempts")

    @property
    def events(self) -> pd.DataFrame:
        """Breaker transitions, incident starts and ends, budget exhaustion."""
        return self.table("events")

    @property
    def timeseries(self) -> pd.DataFrame:
        """One row per time bin."""
        return self.table("timeseries")

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


def load(folder: str | Path) -> RunData:
    """Open a results folder written by ``llmtraffic run``."""
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
    summary = _read_part(path, "summary.json", SUMMARY_KEYS)
    config = _read_part(path, "config.json", ("run",))
    return RunData(path, summary, manifest, config)


SUMMARY_KEYS = ("requests", "billed_cost", "useful_cost", "wasted_cost", "features", "incidents")
"""Keys every run summary has, checked on load: a summary without them was not written by
llmtraffic (or was cut and patched by hand), and the tables and plots need them."""


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
