"""Config of trace replay: which file, which columns, which rows, and how time is scaled."""

from __future__ import annotations

import math
import os.path
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class TraceLayout:
    """The column layout of a public LLM trace: the columns that recognise it (its timestamp,
    input and output token columns, as published) and the time unit its timestamps are in."""

    name: str
    """How messages and ``llmtraffic fit`` name it."""
    timestamp: str
    input_tokens: str
    output_tokens: str
    time_unit: str
    """``auto`` (date-times), or the unit of its numeric timestamps (``s``, ``ms``)."""

    @property
    def columns(self) -> tuple[str, str, str]:
        """The timestamp, input and output token columns."""
        return (self.timestamp, self.input_tokens, self.output_tokens)

    def keys(self) -> dict[str, str]:
        """The trace keys that read a file of this layout."""
        keys = dict(zip(DEFAULT_COLUMNS, self.columns, strict=True))
        if self.time_unit != "auto":
            keys["time_unit"] = self.time_unit
        return keys

    def describe(self, first_timestamp: object = None) -> str:
        """The layout's name; for the Azure traces, with the release its first timestamp's year
        names (the 2023 and 2024 files have the same columns)."""
        if self is AZURE and isinstance(first_timestamp, str):
            year = first_timestamp[:4]
            if year in AZURE_RELEASES:
                return f"{self.name} {year} ({AZURE_RELEASES[year]})"
        return self.name


AZURE = TraceLayout("Azure LLM inference", "TIMESTAMP", "ContextTokens", "GeneratedTokens", "auto")
AZURE_RELEASES = {"2023": "Splitwise", "2024": "DynamoLLM"}
"""The Azure LLM inference releases, by the year of their timestamps: the 2023 files are the
trace of the Splitwise paper, the 2024 one-week files that of DynamoLLM."""

LAYOUTS: tuple[TraceLayout, ...] = (
    AZURE,
    TraceLayout("BurstGPT", "Timestamp", "Request tokens", "Response tokens", "s"),
    TraceLayout("Mooncake", "timestamp", "input_length", "output_length", "ms"),
    TraceLayout("SplitwiseSim", "arrival_timestamp", "prompt_size", "token_size", "s"),
)
"""Public LLM trace layouts recognised by their columns (sources in docs/traces.md): a trace
config that does not name its columns, of a file that lacks the default ones, reads them."""


def recognise(names: Sequence[str]) -> TraceLayout | None:
    """The public layout whose timestamp and token columns are all among ``names`` (a file's
    columns), or None."""
    present = set(names)
    return next((lay for lay in LAYOUTS if all(c in present for c in lay.columns)), None)


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

    @model_validator(mode="before")
    @classmethod
    def _recognise_layout(cls, data: Any, info: ValidationInfo) -> Any:
        """A file of a public layout (``LAYOUTS``) brings its column names and time unit when
        the config leaves a column unnamed and the file lacks the default name: the keys given
        in the config win. Only the file's header is read; a file that cannot be read is left
        for the trace reader to report, with its line."""
        if not isinstance(data, dict):
            return data
        path, fmt, delimiter = (
            data.get("path"),
            data.get("format", "auto"),
            data.get("delimiter", ","),
        )
        given = {k: data[k] for k in DEFAULT_COLUMNS if k in data}
        if (
            not isinstance(path, str)
            or path.startswith(BUILTIN_PREFIX)
            or len(given) == len(DEFAULT_COLUMNS)
            or not all(isinstance(v, str) for v in given.values())
            or not isinstance(fmt, str)
            or not (isinstance(delimiter, str) and len(delimiter) == 1)
        ):
            return data
        file = _absolute(path, info.context)
        if not file.is_file():
            return data  # the path validator says so
        # Imported here: the workload layer builds on the config layer, not the reverse.
        from llmtraffic.workload.trace import header_names

        names = header_names(file, fmt, delimiter)
        if names is None:
            return data
        wanted = {**DEFAULT_COLUMNS, **given}
        if all(name in names for name in wanted.values()):
            return data
        layout = recognise(names)
        if layout is None:
            return data
        return {**layout.keys(), **data}

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
        p = _absolute(path, info.context)
        if not p.is_file():
            context: Any = info.context if isinstance(info.context, Mapping) else {}
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

    @property
    def layout(self) -> TraceLayout | None:
        """The public layout whose columns these are (recognised from the file's header, named
        by the config, or those of the built-in Azure trace), or None."""
        columns = (self.timestamp, self.input_tokens, self.output_tokens)
        return next((lay for lay in LAYOUTS if lay.columns == columns), None)


def _absolute(path: str, context: Any) -> Path:
    """A trace path made absolute: a relative one is taken from the context's ``base_dir``
    (a config file's folder), else from the current folder."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        base = context.get("base_dir") if isinstance(context, Mapping) else None
        p = (Path(base) if base is not None else Path.cwd()) / p
    return Path(_normalise(p))


def _normalise(p: Path) -> str:
    """An absolute path without ``..`` parts (no symlinks resolved)."""
    return os.path.normpath(p.absolute())
