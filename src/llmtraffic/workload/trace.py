"""Trace replay: a request log (CSV, Parquet or JSONL) read in chunks, as arrival times and
token counts.

The file is streamed: CSV through ``pyarrow.csv.open_csv`` (blocks of 1 MiB), Parquet through
``ParquetFile.iter_batches``, JSONL line by line, so a multi-gigabyte log is never held whole
(except with ``sort = "warn"``, which must sort it). Every value is checked as it is read; a bad
one raises ``TraceError`` naming the file, the line (1-based, the CSV header is line 1; for
Parquet, the row) and the column.

Times: a row's *trace time* is its timestamp minus the origin (the first row's timestamp, or
0), in seconds. The replay keeps the rows whose trace time is in ``window = [from, to)`` and
plays row ``i`` at ``(trace_time_i - from + k * period) / speedup`` in loop ``k`` (docs/traces.md).
"""

from __future__ import annotations

import bz2
import csv
import difflib
import gzip
import json
import math
import re
import shlex
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import IO, Any, TextIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from llmtraffic.config.trace import BUILTIN_PREFIX, BUILTIN_TRACES, LAYOUTS, Trace
from llmtraffic.config.workload import MAX_TOKENS
from llmtraffic.errors import TraceError, TraceWarning

CSV_BLOCK = 1 << 20
BATCH_ROWS = 65_536

_DIVISORS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
_COLUMN_NAME = re.compile(r"[^\W\d][\w .()\[\]-]{0,63}")
"""What a column name in a CSV header looks like. A first line that is not made of such names
is not quoted in errors: a trace path that points at another file (a password file, a key)
must not print its first line."""
_UTF8_HELP = "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > NEW)"
_DATETIME_HELP = (
    "expected an ISO 8601 date-time such as 2023-11-16 18:15:46.680 or 2023-11-16T18:15:46Z"
)


@dataclass(frozen=True)
class TraceChunk:
    """Consecutive replayed requests: arrival times (seconds from the start of the run) and
    their input and output token counts."""

    times: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.times)


def builtin_trace_file(name: str) -> Path:
    """The file of a trace shipped in the package (``azure-conv``)."""
    spec = BUILTIN_TRACES.get(name)
    if spec is None:
        raise TraceError(
            f"unknown built-in trace {name!r}; built-in traces: "
            f"{', '.join(BUILTIN_PREFIX + n for n in BUILTIN_TRACES)}"
        )
    res = files("llmtraffic").joinpath("data", "traces", spec["file"])
    if not isinstance(res, Path):  # pragma: no cover - zipped installs
        raise TraceError("built-in traces need llmtraffic installed as files, not from a zip")
    return res


def replay(
    cfg: Trace, horizon: float = math.inf, feature: str | None = None
) -> Iterator[TraceChunk]:
    """Chunks of the replayed requests with arrival times in [0, horizon), in time order.

    ``feature`` is the default value compared with ``cfg.feature_column``.
    """
    reader = TraceReader(cfg, feature)
    period = 0.0
    loop = 0
    while True:
        offset = loop * period
        for t, inp, out in reader.cycle():
            times = (t + offset) / cfg.speedup if offset else t / cfg.speedup
            if times.size and times[-1] >= horizon:
                cut = int(np.searchsorted(times, horizon, side="left"))
                if cut:
                    yield TraceChunk(times[:cut], inp[:cut], out[:cut])
                return
            yield TraceChunk(times, inp, out)
        if not cfg.loop:
            return
        period = reader.period()
        loop += 1


@dataclass
class _Batch:
    """Columns of consecutive rows and where they are in the file."""

    columns: dict[str, pa.Array]
    first: int
    lines: Sequence[int] | None = None  # JSONL: blank lines make the numbering uneven

    def line(self, i: int) -> int:
        return self.lines[i] if self.lines is not None else self.first + i


class TraceReader:
    """Reads one trace config's file: column checks, parsing, filters, window.

    ``cycle()`` yields one pass over the file as (trace time from the window's start, input,
    output) arrays; after a full pass, ``rows``, ``kept`` and ``period()`` describe it.
    """

    def __init__(self, cfg: Trace, feature: str | None = None) -> None:
        self.cfg = cfg
        self.label = cfg.path
        if cfg.path.startswith(BUILTIN_PREFIX):
            self.path = builtin_trace_file(cfg.path[len(BUILTIN_PREFIX) :])
        else:
            self.path = Path(cfg.path)
        self.format = _format_of(self.path, cfg.format, self.label)
        self.word = "row" if self.format == "parquet" else "line"
        self.filters: list[tuple[str, list[str]]] = []
        if cfg.feature_column is not None:
            value = cfg.feature_value if cfg.feature_value is not None else feature
            if value is None:
                raise TraceError(f"{self.label}: feature_column needs a feature_value")
            self.filters.append((cfg.feature_column, [value]))
        if cfg.model_column is not None and cfg.model_value is not None:
            self.filters.append((cfg.model_column, [cfg.model_value]))
        if cfg.outcome_column is not None:
            self.filters.append((cfg.outcome_column, list(cfg.keep_outcomes)))
        self.lo, self.hi = (cfg.window[0], cfg.window[1]) if cfg.window else (0.0, math.inf)
        self.unit: str | None = None if cfg.time_unit == "auto" else cfg.time_unit
        self.rows = 0
        self.kept = 0
        self.first_time = math.nan
        self.last_time = math.nan
        self.first_stamp: Any = None
        """The first row's timestamp as written (a date-time string, a number)."""
        self._origin: int | float | None = 0 if cfg.origin == "zero" else None
        self._memory: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._cast_first: dict[str, pa.DataType] = {}

    # --- one pass --------------------------------------------------------------------------

    def cycle(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One pass over the trace (or its window), in time order."""
        if self.cfg.sort == "warn":
            if self._memory is None:
                self._memory = self._read_sorted()
            t, inp, out = self._memory
            yield t, inp, out
            return
        self.rows = self.kept = 0
        prev: tuple[int | float, Any, int] | None = None
        for batch in self._batches():
            ticks = self._ticks(batch)
            inp, out = self._tokens(batch)
            n = len(ticks)
            if n == 0:
                continue
            if self._origin is None:
                self._origin = ticks[0].item()
            if self.first_stamp is None:
                self.first_stamp = _cell(batch.columns[self.cfg.timestamp], 0)
            self._check_sorted(batch, ticks, prev)
            prev = (
                ticks[-1].item(),
                _cell(batch.columns[self.cfg.timestamp], n - 1),
                batch.line(n - 1),
            )
            self.rows += n
            rel = self._seconds(ticks)
            keep = self._mask(batch) & (rel >= self.lo)
            past = rel >= self.hi
            stop = bool(past.any())
            if stop:
                keep &= ~past
            if keep.any():
                t = rel[keep] - self.lo
                self._note(t)
                yield t, inp[keep], out[keep]
            if stop:
                break
        self._finish()

    def period(self) -> float:
        """Trace seconds between the starts of two loops: the window's length when it ends
        inside the trace, else the last kept time plus the mean gap between kept rows."""
        if not math.isinf(self.hi):
            return self.hi - self.lo
        gap = (self.last_time - self.first_time) / (self.kept - 1) if self.kept > 1 else 1.0
        return self.last_time + (gap if gap > 0 else 1.0)

    def _note(self, t: np.ndarray) -> None:
        if self.kept == 0:
            self.first_time = float(t[0])
        self.kept += len(t)
        self.last_time = float(t[-1])

    def _finish(self) -> None:
        if self.rows == 0:
            raise TraceError(
                f"{self.label}: the trace has no rows (an empty file or a header only)"
            )
        if self.kept == 0:
            what = []
            if self.filters:
                what.append(
                    "the filters "
                    + ", ".join(
                        f"{c} in {v}" if len(v) > 1 else f"{c} = {v[0]!r}" for c, v in self.filters
                    )
                )
            if self.cfg.window:
                what.append(f"the window [{self.lo:g}, {self.hi:g}) s")
            raise TraceError(
                f"{self.label}: none of the {self.rows:,} rows read are replayed; check "
                f"{' and '.join(what) or 'the file'}"
            )

    def _read_sorted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The whole trace in memory, sorted by time (sort = "warn")."""
        ticks_l, inp_l, out_l, keep_l = [], [], [], []
        for batch in self._batches():
            ticks = self._ticks(batch)
            inp, out = self._tokens(batch)
            if self.first_stamp is None and len(ticks):
                self.first_stamp = _cell(batch.columns[self.cfg.timestamp], 0)
            ticks_l.append(ticks)
            inp_l.append(inp)
            out_l.append(out)
            keep_l.append(self._mask(batch))
        self.rows = sum(len(t) for t in ticks_l)
        if self.rows == 0:
            self._finish()
        ticks = _concat(ticks_l)
        order = np.argsort(ticks, kind="stable")
        unsorted = int(np.count_nonzero(np.diff(ticks) < 0))
        if unsorted:
            warnings.warn(
                TraceWarning(
                    f"{self.label}: {unsorted:,} rows are earlier than the row before them; "
                    f"sorted {self.rows:,} rows by {self.cfg.timestamp!r} in memory "
                    '(sort = "warn")'
                ),
                stacklevel=3,
            )
        ticks = ticks[order]
        if self._origin is None:
            self._origin = ticks[0].item()
        rel = self._seconds(ticks)
        keep = np.concatenate(keep_l)[order] & (rel >= self.lo) & (rel < self.hi)
        t = rel[keep] - self.lo
        inp = np.concatenate(inp_l)[order][keep]
        out = np.concatenate(out_l)[order][keep]
        if t.size:
            self._note(t)
        self._finish()
        return t, inp, out

    # --- columns ---------------------------------------------------------------------------

    def _needed(self) -> list[str]:
        cfg = self.cfg
        names = [cfg.timestamp, cfg.input_tokens, cfg.output_tokens]
        names += [c for c, _ in self.filters]
        return list(dict.fromkeys(names))

    def _check_columns(self, present: Sequence[str]) -> None:
        cfg = self.cfg
        roles = {
            cfg.timestamp: "timestamp",
            cfg.input_tokens: "input_tokens",
            cfg.output_tokens: "output_tokens",
        }
        for c, _ in self.filters:
            roles.setdefault(c, "filter")
        needed = self._needed()
        if self.format == "csv" and not _is_header(present, needed):
            raise TraceError(
                f"{self.label}: the first line is not a header of trace columns (split at "
                f"{self.cfg.delimiter!r}; the file's content is not shown): a CSV trace starts "
                "with a line naming its columns, such as timestamp,input_tokens,output_tokens. "
                "Is it the right file? Another separator is set with the trace table's "
                "delimiter key (llmtraffic fit: --delimiter)"
            )
        missing = [name for name in needed if name not in present]
        if missing:
            raise TraceError(_missing_columns(self.label, missing, roles, present))

    def _batches(self) -> Iterator[_Batch]:
        if self.format == "csv":
            return self._csv_batches()
        if self.format == "parquet":
            return self._parquet_batches()
        return self._jsonl_batches()

    def _csv_batches(self) -> Iterator[_Batch]:
        header = self._csv_header()
        self._check_columns(header)
        needed = self._needed()
        try:
            reader = pcsv.open_csv(
                self.path,
                read_options=pcsv.ReadOptions(block_size=CSV_BLOCK),
                parse_options=pcsv.ParseOptions(delimiter=self.cfg.delimiter),
                convert_options=pcsv.ConvertOptions(
                    include_columns=needed, column_types=dict.fromkeys(needed, pa.string())
                ),
            )
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._csv_error(exc) from None
        line = 2
        while True:
            try:
                rb = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise self._csv_error(exc, after=line - 1) from None
            yield _Batch({c: rb.column(c) for c in needed}, line)
            line += rb.num_rows

    def _csv_error(self, exc: Exception, after: int | None = None) -> TraceError:
        """Arrow refused the CSV: find the line (ragged rows, bytes that are not UTF-8) by
        reading the file again in Python; Arrow's own message quotes the row, so it is shown
        only in part, when the line cannot be found."""
        problem = _csv_problem(self.path, self.cfg.delimiter)
        if problem is not None:
            return TraceError(f"{self.label}: {problem}")
        where = f" after line {after}" if after is not None else ""
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        text = re.sub(r"(got \d+)\s*:.*$", r"\1", text)  # drop the quoted row
        return TraceError(f"{self.label}: cannot read it as CSV{where}: {text}")

    def _csv_header(self) -> list[str]:
        try:
            with _open_text(self.path) as f:
                first = f.readline()
        except UnicodeDecodeError:
            raise TraceError(f"{self.label}: {_utf8_problem(self.path)}") from None
        except (OSError, EOFError) as exc:
            raise TraceError(f"{self.label}: cannot read the file: {exc}") from None
        if not first.strip():
            raise TraceError(f"{self.label}: the file is empty (no header line)")
        return next(csv.reader([first], delimiter=self.cfg.delimiter))

    def _parquet_batches(self) -> Iterator[_Batch]:
        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise TraceError(f"{self.label}: cannot read it as Parquet: {exc}") from None
        self._check_columns(pf.schema_arrow.names)
        needed = self._needed()
        row = 1
        for rb in pf.iter_batches(batch_size=BATCH_ROWS, columns=needed):
            yield _Batch({c: rb.column(c) for c in needed}, row)
            row += rb.num_rows

    def _jsonl_batches(self) -> Iterator[_Batch]:
        needed = self._needed()
        checked = False
        values: dict[str, list[Any]] = {c: [] for c in needed}
        lines: list[int] = []
        try:
            with _open_text(self.path) as f:
                for number, text in enumerate(f, start=1):
                    if not text.strip():
                        continue
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise TraceError(
                            f"{self.label}: line {number}: not valid JSON ({exc.msg})"
                        ) from None
                    if not isinstance(obj, dict):
                        raise TraceError(
                            f"{self.label}: line {number}: expected a JSON object, got "
                            f"{type(obj).__name__}"
                        )
                    if not checked:
                        self._check_columns(list(obj))
                        checked = True
                    for c in needed:
                        if c not in obj:
                            raise TraceError(
                                f"{self.label}: line {number}, column {c!r}: missing (this "
                                f"line has {', '.join(repr(k) for k in obj)})"
                            )
                        values[c].append(obj[c])
                    lines.append(number)
                    if len(lines) >= BATCH_ROWS:
                        yield _Batch({c: _json_array(v) for c, v in values.items()}, 0, lines)
                        values = {c: [] for c in needed}
                        lines = []
        except UnicodeDecodeError:
            raise TraceError(f"{self.label}: {_utf8_problem(self.path)}") from None
        except (OSError, EOFError) as exc:
            raise TraceError(f"{self.label}: cannot read the file: {exc}") from None
        if not checked:
            raise TraceError(f"{self.label}: the file is empty (no JSON lines)")
        if lines:
            yield _Batch({c: _json_array(v) for c, v in values.items()}, 0, lines)

    # --- values ----------------------------------------------------------------------------

    def _error(self, batch: _Batch, i: int, column: str, text: str) -> TraceError:
        return TraceError(f"{self.label}: {self.word} {batch.line(i)}, column {column!r}: {text}")

    def _ticks(self, batch: _Batch) -> np.ndarray:
        """Timestamps as int64 nanoseconds (date-times) or raw numbers (s, ms, us, ns)."""
        col = self.cfg.timestamp
        arr = _plain(batch.columns[col])
        if len(arr) == 0:
            return np.empty(0)
        if self.unit is None:
            self.unit = self._detect_unit(arr)
        if self.unit == "datetime":
            return self._datetimes(batch, arr)
        if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
            raise self._error(
                batch,
                0,
                col,
                f"holds date-times, but time_unit = {self.unit!r}; use "
                'time_unit = "datetime" (or "auto")',
            )
        return self._numbers(batch, arr, col, "a time")

    def _detect_unit(self, arr: pa.Array) -> str:
        if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
            return "datetime"
        first = arr[0].as_py()
        if isinstance(first, str):
            try:
                first = float(first)
            except ValueError:
                return "datetime"
        if isinstance(first, int | float) and not isinstance(first, bool):
            mag = abs(first)
            return "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"
        return "datetime"

    def _datetimes(self, batch: _Batch, arr: pa.Array) -> np.ndarray:
        col = self.cfg.timestamp
        if pa.types.is_timestamp(arr.type):
            ns = arr.cast(pa.timestamp("ns", tz=arr.type.tz))
        elif pa.types.is_date(arr.type):
            ns = arr.cast(pa.timestamp("ns"))
        elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            ns = _parse_datetimes(arr)
            if ns is None:
                bad, value = _first_bad_datetime(arr)
                text = (
                    f"cannot read {value!r} as a date-time; {_DATETIME_HELP}"
                    if value.strip()
                    else "empty value"
                )
                raise self._error(batch, bad, col, text)
        else:
            raise self._error(
                batch,
                0,
                col,
                f"holds {arr.type} values, not date-times; set time_unit to "
                "s, ms, us or ns for numbers",
            )
        self._no_nulls(batch, ns, col)
        out: np.ndarray = ns.cast(pa.int64()).to_numpy()
        return out

    def _numbers(self, batch: _Batch, arr: pa.Array, col: str, what: str) -> np.ndarray:
        """A column as int64 or float64 numbers (strings are parsed)."""
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            parsed = None
            # A failed cast is slow (as slow as twenty good ones): try the type that worked
            # last time for this column first, or the one the first value looks like.
            first = self._cast_first.get(col)
            if first is None:
                text = arr[0].as_py() or ""
                first = pa.int64() if text.strip().lstrip("+-").isdigit() else pa.float64()
            for target in (first, pa.float64() if first == pa.int64() else pa.int64()):
                try:
                    parsed = pc.cast(arr, target)
                    self._cast_first[col] = target
                    break
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue
            if parsed is None:
                parsed = self._slow_numbers(batch, arr, col, what)
            arr = parsed
        elif pa.types.is_decimal(arr.type):
            arr = arr.cast(pa.float64())
        elif not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
            raise self._error(batch, 0, col, f"holds {arr.type} values; expected numbers ({what})")
        self._no_nulls(batch, arr, col)
        values: np.ndarray = arr.to_numpy(zero_copy_only=False)
        if values.dtype.kind == "f":
            bad = ~np.isfinite(values)
            if bad.any():
                i = int(np.argmax(bad))
                raise self._error(batch, i, col, f"{_number(values[i])} is not a finite number")
        elif values.dtype != np.int64:
            values = values.astype(np.int64)
        return values

    def _slow_numbers(self, batch: _Batch, arr: pa.Array, col: str, what: str) -> pa.Array:
        """Parse strings one by one (only when the vectorised cast failed): finds the first
        unreadable one, or reads values Arrow would not (surrounding spaces)."""
        out: list[float | None] = []
        for i, value in enumerate(arr.to_pylist()):
            if value is None:
                out.append(None)
                continue
            try:
                out.append(float(value))
            except ValueError:
                text = f"cannot read {value!r} as {what}" if value.strip() else "empty value"
                raise self._error(batch, i, col, text) from None
        return pa.array(out, pa.float64())

    def _no_nulls(self, batch: _Batch, arr: pa.Array, col: str) -> None:
        if arr.null_count:
            i = int(np.argmax(arr.is_null().to_numpy(zero_copy_only=False)))
            raise self._error(batch, i, col, "empty value")

    def _tokens(self, batch: _Batch) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for col in (self.cfg.input_tokens, self.cfg.output_tokens):
            values = self._numbers(batch, _plain(batch.columns[col]), col, "a token count")
            # Checked before the cast to int64: 1e30 would wrap around to a negative count.
            big = values > MAX_TOKENS
            if big.any():
                i = int(np.argmax(big))
                raise self._error(
                    batch,
                    i,
                    col,
                    f"{_number(values[i])} tokens is more than {MAX_TOKENS:,} (the largest "
                    "context window); is it the right column?",
                )
            if values.dtype.kind == "f":
                frac = values != np.floor(values)
                if frac.any():
                    i = int(np.argmax(frac))
                    raise self._error(
                        batch, i, col, f"{values[i]:g} is not a whole number of tokens"
                    )
                values = values.astype(np.int64)
            neg = values < 0
            if neg.any():
                i = int(np.argmax(neg))
                raise self._error(batch, i, col, f"negative token count {values[i]}")
            out.append(values)
        return out[0], out[1]

    def _mask(self, batch: _Batch) -> np.ndarray:
        n = len(batch.columns[self.cfg.timestamp])
        keep = np.ones(n, dtype=bool)
        for col, allowed in self.filters:
            arr = _plain(batch.columns[col])
            if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
                arr = arr.cast(pa.string())
            hit = pc.is_in(arr, value_set=pa.array(allowed, pa.string()))
            keep &= hit.fill_null(False).to_numpy(zero_copy_only=False)
        return keep

    def _seconds(self, ticks: np.ndarray) -> np.ndarray:
        """Trace time in seconds: (timestamp - origin) / unit."""
        divisor = 1e9 if self.unit == "datetime" else _DIVISORS[self.unit or "s"]
        assert self._origin is not None
        diff = ticks - self._origin
        return np.asarray(diff / divisor if divisor != 1.0 else diff.astype(np.float64))

    def _check_sorted(
        self, batch: _Batch, ticks: np.ndarray, prev: tuple[int | float, Any, int] | None
    ) -> None:
        back = np.flatnonzero(np.diff(ticks) < 0)
        col = self.cfg.timestamp
        arr = batch.columns[col]
        if prev is not None and ticks[0] < prev[0]:
            i, before, before_line = 0, prev[1], prev[2]
        elif back.size:
            i = int(back[0]) + 1
            before, before_line = _cell(arr, i - 1), batch.line(i - 1)
        else:
            return
        raise self._error(
            batch,
            i,
            col,
            f"{_cell(arr, i)} is earlier than {before} on {self.word} {before_line}: the "
            f"trace is not sorted by time. Sort the file by {col!r} first, or set "
            'sort = "warn" in the trace table to sort it in memory (this loads the whole '
            "trace)",
        )


# --- helpers ------------------------------------------------------------------------------

_ROLE_WORDS = {
    "timestamp": ("timestamp", "time", "arrival", "date", "created", "when"),
    "input_tokens": ("input", "prompt", "context", "request"),
    "output_tokens": ("output", "completion", "generated", "response"),
}
"""Words in a column name that suggest it for a role (the public layouts' names among them)."""
_TOKEN_WORDS = ("token", "length", "len", "size", "count")
_FLAG = {
    "timestamp": "--timestamp",
    "input_tokens": "--input-tokens",
    "output_tokens": "--output-tokens",
}


def _suggest(name: str, role: str, free: Sequence[str]) -> str | None:
    """The column of ``free`` (not used by another role) most likely meant by ``name``: the
    same name in another case; a name with a word of the role (for token counts, with a word
    such as "tokens" too, so 'request_id' is not taken for input); a close spelling."""
    lower = {f.lower(): f for f in free}
    if name.lower() in lower:
        return lower[name.lower()]
    if role == "timestamp" and "ts" in lower:
        return lower["ts"]
    words = _ROLE_WORDS.get(role, ())
    for strict in (True, False):
        for f in free:
            low = f.lower()
            if any(w in low for w in words) and (
                role == "timestamp" or not strict or any(t in low for t in _TOKEN_WORDS)
            ):
                return f
    close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.6)
    return lower[close[0]] if close else None


def _missing_columns(
    label: str, missing: Sequence[str], roles: dict[str, str], present: Sequence[str]
) -> str:
    """One message for every missing column: each with its role and a guess among the file's
    columns (each column guessed once, and never one that another role already uses), the
    file's columns, and the keys (or fit flags) that name them."""
    used = {name for name in roles if name in present}
    free = [p for p in present if p not in used]
    parts, fixes = [], {}
    for name in missing:
        role = roles[name]
        guess = _suggest(name, role, free)
        if guess is not None:
            free.remove(guess)
            if role in _FLAG:
                fixes[role] = guess
        hint = f"; did you mean {guess!r}?" if guess is not None else ""
        parts.append(f"no column {name!r} (the {role} column{hint})")
    found = ", ".join(repr(p) for p in present) or "(none)"
    text = f"{label}: {', '.join(parts)}; the file has: {found}. "
    if fixes and len(fixes) == sum(roles[n] in _FLAG for n in missing):
        keys = ", ".join(f"{role} = {json.dumps(col)}" for role, col in fixes.items())
        flags = " ".join(f"{_FLAG[role]} {shlex.quote(col)}" for role, col in fixes.items())
        text += f"Set {keys} in the trace table (llmtraffic fit: {flags})"
    else:
        text += (
            "Name the columns with the trace table's timestamp, input_tokens and output_tokens "
            "keys (llmtraffic fit: --timestamp, --input-tokens, --output-tokens)"
        )
    layouts = ", ".join(layout.name for layout in LAYOUTS)
    return text + f". Files of the public layouts ({layouts}) need no names (docs/traces.md)"


_HEADER_BYTES = 1 << 20
"""The most read of a file's first line (or first JSON object) when recognising its layout."""


def header_names(path: Path, fmt: str = "auto", delimiter: str = ",") -> list[str] | None:
    """The column names a trace file declares, read cheaply to recognise its layout: a CSV
    file's first line, the keys of a JSONL file's first object, a Parquet file's schema. None
    when the file cannot be read so: the trace reader reports why, with the line, when it
    reads the file."""
    try:
        kind = _format_of(path, fmt, str(path))
        if kind == "parquet":
            return list(pq.ParquetFile(path).schema_arrow.names)
        with _open_text(path) as f:
            if kind == "csv":
                return next(csv.reader([f.readline(_HEADER_BYTES)], delimiter=delimiter), None)
            while line := f.readline(_HEADER_BYTES):
                if line.strip():
                    obj = json.loads(line)
                    return list(obj) if isinstance(obj, dict) else None
    except Exception:  # any failure only means "not recognised": see the docstring
        return None
    return None


def _format_of(path: Path, fmt: str, label: str) -> str:
    if fmt != "auto":
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2"):
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".csv", ".txt"):
        return "csv"
    if ext in (".parquet", ".pq"):
        return "parquet"
    if ext in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise TraceError(
        f"{label}: cannot tell the format from the extension {ext or '(none)'!r}; set "
        'format = "csv", "parquet" or "jsonl" in the trace table'
    )


def _is_header(names: Sequence[str], needed: Sequence[str]) -> bool:
    """Whether a CSV file's first line, split into ``names``, reads as a header of trace
    columns: it names a needed column, or it has several fields that all look like names."""
    if any(n in names for n in needed):
        return True
    return len(names) >= 2 and all(_COLUMN_NAME.fullmatch(n.strip()) for n in names)


def _number(value: Any) -> str:
    """A number as a person writes it: ``nan``, ``inf``, ``1e+30``, ``12`` (not numpy's repr)."""
    x = float(value)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:g}"


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    if name.endswith(".bz2"):
        return cast(IO[bytes], bz2.open(path, "rb"))
    return open(path, "rb")


class _NotUtf8Error(Exception):
    """A line of the file is not UTF-8 (raised inside the line reader of ``_csv_problem``)."""

    def __init__(self, line: int, column: int, byte: int) -> None:
        super().__init__(line, column, byte)
        self.text = f"line {line}: byte {column} (0x{byte:02x}) is not UTF-8 text; {_UTF8_HELP}"


def _lines(f: IO[bytes]) -> Iterator[str]:
    """The file's lines as text, numbered from 1; ``_NotUtf8Error`` at the first that is not."""
    for number, raw in enumerate(f, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _NotUtf8Error(number, exc.start + 1, raw[exc.start]) from None


def _utf8_problem(path: Path) -> str:
    """Where the file stops being UTF-8: 'line N: byte C (0x..) is not UTF-8 text; ...'."""
    try:
        with _open_binary(path) as f:
            for _ in _lines(f):
                pass
    except _NotUtf8Error as bad:
        return bad.text
    except (OSError, EOFError) as exc:
        return f"cannot read the file: {exc}"
    return f"the file is not UTF-8 text; {_UTF8_HELP}"  # pragma: no cover - decoder disagreed


def _csv_problem(path: Path, delimiter: str) -> str | None:
    """The first line of a CSV file that Arrow cannot read: bytes that are not UTF-8, or a
    row with another number of fields than the header (a ragged row). Lines are counted as an
    editor counts them, blank ones included; None when no such line is found."""
    width: int | None = None
    try:
        with _open_binary(path) as f:
            reader = csv.reader(_lines(f), delimiter=delimiter)
            try:
                for row in reader:
                    if not row:
                        continue  # a blank line: Arrow skips it too
                    if width is None:
                        width = len(row)
                    elif len(row) != width:
                        return (
                            f"line {reader.line_num}: {len(row)} fields, but the header has "
                            f"{width} (a missing or extra {delimiter!r}, or a quote left open); "
                            "fix or remove that row"
                        )
            except csv.Error as exc:
                return f"line {reader.line_num}: {exc}"
    except _NotUtf8Error as bad:
        return bad.text
    except (OSError, EOFError):
        return None
    return None


def _open_text(path: Path) -> TextIO:
    """The file as text; a UTF-8 byte order mark (spreadsheets write one) is not part of the
    first column's name, as Arrow's CSV reader also drops it."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    if name.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks()
    return arr


def _cell(arr: pa.Array | pa.ChunkedArray, i: int) -> Any:
    value = arr[i].as_py()
    return value.isoformat(sep=" ") if hasattr(value, "isoformat") else value


def _json_array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    if any(p.dtype.kind == "f" for p in parts):
        return np.concatenate([p.astype(np.float64) for p in parts])
    return np.concatenate(parts)


def _parse_datetimes(arr: pa.Array) -> pa.Array | None:
    """Date-time strings as timestamp[ns]: without a zone as they are, with one in UTC."""
    for tz in (None, "UTC"):
        try:
            out: pa.Array = pc.cast(arr, pa.timestamp("ns", tz=tz))
            return out
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    # Mixed zoned and unzoned strings: one at a time.
    values: list[int | None] = []
    for value in arr.to_pylist():
        if value is None:
            values.append(None)
            continue
        ns = _one_datetime(value)
        if ns is None:
            return None
        values.append(ns)
    return pa.array(values, pa.int64()).cast(pa.timestamp("ns"))


def _one_datetime(value: str) -> int | None:
    for tz in (None, "UTC"):
        try:
            scalar = pc.cast(pa.array([value]), pa.timestamp("ns", tz=tz))
            result: int = scalar.cast(pa.int64())[0].as_py()
            return result
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return None


def _first_bad_datetime(arr: pa.Array) -> tuple[int, Any]:
    for i, value in enumerate(arr.to_pylist()):
        if value is not None and _one_datetime(value) is None:
            return i, value
    return 0, arr[0].as_py()  # pragma: no cover - only called after a failure
