"""Config of trace replay: which file, which columns, which rows, and how time is scaled."""

from __future__ import annotations

import math
import os.path
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from llmtraffic.config.base import Duration, Model

BUILTIN_PREFIX = "builtin:"

BUILTIN_TRACES: dict[str, dict[str, str]] = {
    "azure-conv": {
        "file": "AzureLLMInferenceTrace_conv.csv",
        "timestamp": "TIMESTAMP",
        "input_tokens": "ContextTokens",
        "output_tokens": "GeneratedTokens",
        "about": "one hour of a production conversation service on Azure (19,366 requests); "
        "CC-BY 4.0, Patel et al., Splitwise, ISCA 2024",
    },
}
"""Traces shipped in the package (``data/traces/``), usable as ``path = "builtin:NAME"``, with
their column names (used when the config does not name columns)."""

DEFAULT_COLUMNS = {
    "timestamp": "timestamp",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
}


class Trace(Model):
    """Replay of a request log: arrival times and token counts come from the file's rows.

    Time zero of the replay is the first row's timestamp (``origin = "first"``) or the value 0
    (``origin = "zero"``, for logs of relative seconds); ``window`` cuts a span of the trace
    (in its own seconds, before scaling) and ``speedup`` divides every time (6 plays an hour in
    ten minutes). See docs/traces.md.
    """

    path: str = Field(
        description="CSV, Parquet or JSONL file, relative to the config file's folder; or "
        "'builtin:azure-conv'"
    )
    format: Literal["auto", "csv", "parquet", "jsonl"] = Field(
        "auto", description="file format; auto: from the extension (.csv[.gz], .parquet, .jsonl)"
    )
    timestamp: str = Field("timestamp", description="column of arrival times")
    input_tokens: str = Field("input_tokens", description="column of input (prompt) tokens")
    output_tokens: str = Field("output_tokens", description="column of output (generated) tokens")
    time_unit: Literal["auto", "datetime", "s", "ms", "us", "ns"] = Field(
        "auto",
        description="datetime strings, or numbers in s/ms/us/ns; auto: date-time for strings "
        "and timestamps, for numbers by magnitude of the first value (see docs/traces.md)",
    )
    origin: Literal["first", "zero"] = Field(
        "first", description="time zero: the first row's timestamp, or the value 0"
    )
    window: list[Duration] | None = Field(
        None, description="[from, to]: replay only this span of the trace, in trace seconds"
    )
    speedup: float = Field(1.0, gt=0, description="divide every time by this (2: twice as fast)")
    loop: bool = Field(False, description="start the trace again when it ends, until run end")
    sort: Literal["refuse", "warn"] = Field(
        "refuse",
        description="unsorted times: refuse (error), or warn and sort in memory (loads the file)",
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field separator")
    feature_column: str | None = Field(
        None, description="keep only rows whose value in this column is feature_value"
    )
    feature_value: str | None = Field(None, description="default: the feature's own name")
    model_column: str | None = Field(
        None, description="keep only rows whose value in this column is model_value"
    )
    model_value: str | None = Field(None, description="the model_column value to keep")
    outcome_column: str | None = Field(
        None, description="keep only rows whose value in this column is in keep_outcomes"
    )
    keep_outcomes: list[str] = Field(
        ["ok", "success", "200"], min_length=1, description="outcome values replayed"
    )

    @model_validator(mode="before")
    @classmethod
    def _builtin_columns(cls, data: Any) -> Any:
        """A built-in trace brings its own column names (those given in the config win)."""
        if isinstance(data, dict):
            path = data.get("path")
            if isinstance(path, str) and path.startswith(BUILTIN_PREFIX):
                spec = BUILTIN_TRACES.get(path[len(BUILTIN_PREFIX) :])
                if spec is not None:
                    data = {**{k: spec[k] for k in DEFAULT_COLUMNS}, **data}
        return data

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, path: str, info: ValidationInfo) -> str:
        if path.startswith(BUILTIN_PREFIX):
            name = path[len(BUILTIN_PREFIX) :]
            if name not in BUILTIN_TRACES:
                raise ValueError(
                    f"unknown built-in trace {name!r}; built-in traces: "
                    f"{', '.join(BUILTIN_PREFIX + n for n in BUILTIN_TRACES)}"
                )
            return path
        p = Path(path).expanduser()
        context: Any = info.context
        if not isinstance(context, Mapping):
            context = {}
        if not p.is_absolute():
            base = context.get("base_dir")
            p = (Path(base) if base is not None else Path.cwd()) / p
        p = Path(_normalise(p))
        if not p.is_file():
            # What a relative path is relative to: a config's folder, or for a command line
            # (llmtraffic fit) the current folder.
            base_is = context.get("base_is", "the config file's folder")
            raise ValueError(f"trace file not found: {p} (relative paths are taken from {base_is})")
        return str(p)

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems: list[str] = []
        if self.window is not None:
            if len(self.window) != 2:
                problems.append(f".window: expected [from, to], got {len(self.window)} values")
            elif not self.window[0] < self.window[1]:
                problems.append(
                    f".window: 'from' ({self.window[0]:g} s) must be before 'to' "
                    f"({self.window[1]:g} s)"
                )
            elif math.isinf(self.window[0]):
                problems.append(".window: 'from' must be finite")
        if not math.isfinite(self.speedup):
            problems.append(".speedup: must be finite")
        if self.feature_value is not None and self.feature_column is None:
            problems.append(".feature_value: needs feature_column (the column to compare)")
        if self.model_column is not None and self.model_value is None:
            problems.append(".model_value: missing; model_column needs the value to keep")
        if self.model_value is not None and self.model_column is None:
            problems.append(".model_value: needs model_column (the column to compare)")
        if "keep_outcomes" in self.model_fields_set and self.outcome_column is None:
            # Without the column the list filters nothing: say so rather than replay every row.
            problems.append(".keep_outcomes: needs outcome_column (the column to compare)")
        if problems:
            raise ValueError("\n".join(problems))
        return self


def _normalise(p: Path) -> str:
    """An absolute path without ``..`` parts (no symlinks resolved)."""
    return os.path.normpath(p.absolute())
