"""Reading a results folder back for analysis: ``llmtraffic.load(folder)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtraffic.errors import LLMTrafficError
from llmtraffic.results.jsonio import read_json

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
                kept = ", ".join(self.manifest.get("tables", [])) or "none"
                raise LLMTrafficError(
                    f"{self.folder} has no {name} table: the run kept records = "
                    f"{self.manifest.get('records')!r} (tables: {kept}); rerun with "
                    "run.records = 'all'"
                )
            import pandas as pd  # imported on use: it is slow to import and the CLI rarely needs it

            self._cache[name] = pd.read_parquet(path)
        return self._cache[name]

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
    manifest = read_json(manifest_path)
    summary = read_json(path / "summary.json")
    config = read_json(path / "config.json")
    return RunData(path, summary, manifest, config)
