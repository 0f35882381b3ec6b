"""``llmtraffic calibrate``: fit a provider's continuous-batching curve to a load test's table.

A load test run at several concurrency levels gives, per level, the mean time to first token
and the mean time per output token. The per-token time is fitted by least squares to the
linear step-time model ``tpot(n) = a + b n`` (the shape Vidur, BLIS and llm-d-inference-sim
use: one decode iteration costs a fixed part plus a part per sequence in the batch), and
printed as the two-point ``batching.tpot`` table that reproduces it. When the line misses a
point by more than ``MAX_LINE_ERROR`` the measured points are printed instead (they are
interpolated as they are). The time to first token at concurrency 1 becomes ``service.ttft``.

Two table layouts are read (docs/providers.md, "Calibrating from a load test"):

- a plain CSV with one header row: a concurrency column (``concurrency`` or vLLM's
  ``max_concurrency``), a TTFT column (``ttft_s``, ``ttft_ms`` or vLLM's ``mean_ttft_ms``) and
  a per-token column (``tpot_s``, ``tpot_ms`` or vLLM's ``mean_tpot_ms``), one row per level;
- GuideLLM's ``benchmarks.csv`` (its CSV output, three header rows): the "Time to First
  Token" and "Time per Output Token" "Successful ms" means, and the measured "Server
  Throughput" "Successful Concurrency" mean (else the ``concurrent@N`` strategy).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from llmtraffic.errors import TraceError

MAX_LINE_ERROR = 0.10
"""Largest relative miss of the fitted line at a measured point before the points are used."""

CONCURRENCY = ("concurrency", "max_concurrency")
TTFT = {"ttft_s": 1.0, "ttft_ms": 1e-3, "mean_ttft_ms": 1e-3}
TPOT = {"tpot_s": 1.0, "tpot_ms": 1e-3, "mean_tpot_ms": 1e-3}

GUIDELLM_TTFT = ("Time to First Token", "Successful ms", "Mean")
GUIDELLM_TPOT = ("Time per Output Token", "Successful ms", "Mean")
GUIDELLM_CONCURRENCY = ("Server Throughput", "Successful Concurrency", "Mean")
GUIDELLM_STRATEGY = ("Benchmark", "Strategy")


@dataclass(frozen=True)
class BenchRow:
    """One load level of a load test: concurrency, mean TTFT and per-token time (seconds)."""

    concurrency: float
    ttft: float
    tpot: float
    line: int
    """The row's line in the file (for messages)."""


@dataclass(frozen=True)
class LineFit:
    """``y = intercept + slope x`` by least squares, with its fit quality."""

    intercept: float
    slope: float
    r2: float
    """Coefficient of determination (1 for a perfect line; NaN for one point or a flat y)."""
    worst: float
    """Largest relative miss |fit - y| / y over the points."""

    def at(self, x: float) -> float:
        """The line's value at ``x``."""
        return self.intercept + self.slope * x


@dataclass(frozen=True)
class Calibration:
    """The fitted curve of a load test, and the TOML that puts it in a scenario."""

    rows: list[BenchRow]
    tpot: LineFit
    ttft: LineFit

    def line_points(self) -> list[tuple[int, float]] | None:
        """The fitted line at the lowest and highest whole concurrency measured; None when it
        misses a point by more than ``MAX_LINE_ERROR`` or is not positive there."""
        lo = max(1, math.floor(self.rows[0].concurrency))
        hi = max(1, round(self.rows[-1].concurrency))
        pts = (
            [(lo, self.tpot.at(lo))]
            if hi <= lo
            else [(lo, self.tpot.at(lo)), (hi, self.tpot.at(hi))]
        )
        if self.tpot.worst > MAX_LINE_ERROR or any(s <= 0 for _, s in pts):
            return None
        return pts

    def points(self) -> list[tuple[int, float]]:
        """The ``batching.tpot`` points: ``line_points``, else the measured points (at whole
        concurrencies, the first of any that round to the same one)."""
        line = self.line_points()
        if line is not None:
            return line
        out: list[tuple[int, float]] = []
        for r in self.rows:
            n = max(1, round(r.concurrency))
            if not out or n > out[-1][0]:
                out.append((n, r.tpot))
        return out

    def ttft_at_one(self) -> float:
        """Time to first token of one request alone: the TTFT line at concurrency 1 (the
        lowest measured TTFT when the line would go below zero there)."""
        value = self.ttft.at(1.0)
        return value if value > 0 else min(r.ttft for r in self.rows)

    def snippet(self, provider: str = "NAME") -> str:
        """The TOML to paste into a scenario, every line within 80 columns."""
        rows = self.rows
        lo, hi = rows[0].concurrency, rows[-1].concurrency
        t = self.tpot
        lines = [
            f"# llmtraffic calibrate: {len(rows)} load levels, concurrency "
            f"{_num(lo)} to {_num(hi)}",
            f"# per-token time = {_sec(t.intercept)} + {_sec(t.slope)} x batch",
            f"#   (R^2 {_r2(t.r2)}, worst point {t.worst:.1%} off the line)",
            f"# TTFT = {_sec(self.ttft.intercept)} + {_sec(self.ttft.slope)} x concurrency "
            f"(R^2 {_r2(self.ttft.r2)})",
            "# service.ttft is TTFT at concurrency 1; its growth under load comes from",
            "# the queue and batching.prefill_tps (docs/providers.md).",
        ]
        if self.line_points() is None:
            lines.append("# The line misses the points: the measured points are used.")
        lines += [
            "# capacity.slots: the server's batch limit (vLLM's max_num_seqs).",
            f"[providers.{provider}.service]",
            'kind = "tokens"',
            f"ttft = {_sec(self.ttft_at_one())}",
            f"[providers.{provider}.batching]",
            "tpot = [",
        ]
        lines += [f"  [{n}, {_sec(s)}]," for n, s in self.points()]
        lines.append("]")
        return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    return f"{x:g}"


def _sec(x: float) -> str:
    return f"{x:.4g}"


def _r2(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def fit_line(xs: list[float], ys: list[float]) -> LineFit:
    """Ordinary least squares of ``ys`` on ``xs`` (a flat line through one point)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    intercept = my - slope * mx
    fitted = [intercept + slope * x for x in xs]
    ss_res = sum((y - f) ** 2 for y, f in zip(ys, fitted, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1 - ss_res / ss_tot if n > 1 and ss_tot > 0 else math.nan
    worst = max(abs(f - y) / y for y, f in zip(ys, fitted, strict=True))
    return LineFit(intercept, slope, r2, worst)


def calibrate(rows: list[BenchRow]) -> Calibration:
    """Fit the per-token and TTFT lines to the load levels (sorted by concurrency)."""
    rows = sorted(rows, key=lambda r: r.concurrency)
    xs = [r.concurrency for r in rows]
    return Calibration(
        rows, fit_line(xs, [r.tpot for r in rows]), fit_line(xs, [r.ttft for r in rows])
    )


# Reading -------------------------------------------------------------------------------------


def read_bench(path: Path) -> list[BenchRow]:
    """The load levels of a plain or GuideLLM CSV (module docstring); a bad file raises
    ``TraceError`` naming the line and column and the fix."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file; give the load test's CSV") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a folder; give the load test's CSV file") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text ({exc.reason}); save the CSV as UTF-8") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot be read ({exc.strerror})") from None
    table = list(csv.reader(text.splitlines()))
    if not table or not any(table[0]):
        raise TraceError(f"{path}: empty; expected a header row and a row per load level")
    if any(cell.strip() == GUIDELLM_TPOT[0] for cell in table[0]):
        rows = _read_guidellm(path, table)
    else:
        rows = _read_plain(path, table)
    if not rows:
        raise TraceError(f"{path}: no load levels after the header; add a row per level")
    seen: dict[float, int] = {}
    for r in rows:
        if r.concurrency in seen:
            raise TraceError(
                f"{path}, line {r.line}: concurrency {_num(r.concurrency)} again (first on "
                f"line {seen[r.concurrency]}); give one row per load level (average repeats)"
            )
        seen[r.concurrency] = r.line
    return rows


def _column(path: Path, header: list[str], names: tuple[str, ...] | list[str], what: str) -> int:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    raise TraceError(
        f"{path}, line 1: no {what} column; name one of {', '.join(names)} "
        f"(the header has {', '.join(h.strip() for h in header if h.strip()) or 'nothing'})"
    )


def _read_plain(path: Path, table: list[list[str]]) -> list[BenchRow]:
    header = table[0]
    i_c = _column(path, header, CONCURRENCY, "concurrency")
    i_f = _column(path, header, list(TTFT), "time to first token")
    i_t = _column(path, header, list(TPOT), "per-token time")
    f_unit = TTFT[header[i_f].strip().lower()]
    t_unit = TPOT[header[i_t].strip().lower()]
    rows = []
    for lineno, cells in enumerate(table[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise TraceError(
                f"{path}, line {lineno}: {len(cells)} fields, the header has {len(header)}; "
                "give every row the header's columns"
            )
        c = _value(path, lineno, header[i_c], cells[i_c])
        if c < 1:
            raise TraceError(
                f"{path}, line {lineno}, column {header[i_c].strip()}: concurrency must be "
                f">= 1, got {cells[i_c].strip()}"
            )
        f = _value(path, lineno, header[i_f], cells[i_f]) * f_unit
        t = _value(path, lineno, header[i_t], cells[i_t]) * t_unit
        rows.append(BenchRow(c, f, t, lineno))
    return rows


def _value(path: Path, lineno: int, column: str, cell: str) -> float:
    """A positive finite number from a cell, or a ``TraceError`` naming it."""
    try:
        x = float(cell)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        raise TraceError(
            f"{path}, line {lineno}, column {column.strip()}: expected a number > 0, got "
            f"{cell.strip()!r}; fix or remove the row"
        )
    return x


_STRATEGY = re.compile(r"^concurrent@(\d+)$")


def _read_guidellm(path: Path, table: list[list[str]]) -> list[BenchRow]:
    if len(table) < 3:
        raise TraceError(
            f"{path}: GuideLLM's CSV has three header rows (group, metric, statistic); this "
            "one is cut short: export it again with --outputs csv"
        )
    keys = [
        tuple(table[r][i].strip() if i < len(table[r]) else "" for r in range(3))
        for i in range(len(table[0]))
    ]

    def find(key: tuple[str, ...]) -> int | None:
        for i, k in enumerate(keys):
            if k[: len(key)] == key:
                return i
        return None

    i_f = find(GUIDELLM_TTFT)
    i_t = find(GUIDELLM_TPOT)
    for idx, key in ((i_f, GUIDELLM_TTFT), (i_t, GUIDELLM_TPOT)):
        if idx is None:
            raise TraceError(
                f"{path}, lines 1-3: no {' / '.join(key)} column; a GuideLLM CSV of a "
                "streaming (text) benchmark has it: run it with streaming on"
            )
    i_c = find(GUIDELLM_CONCURRENCY)
    i_s = find(GUIDELLM_STRATEGY)
    assert i_f is not None and i_t is not None
    rows = []
    for lineno, cells in enumerate(table[3:], start=4):
        if not any(c.strip() for c in cells):
            continue

        cells = cells + [""] * (len(keys) - len(cells))  # a short row: missing cells
        if i_c is not None and cells[i_c].strip():
            c = _value(path, lineno, "Successful Concurrency Mean", cells[i_c])
        elif i_s is not None and cells[i_s].strip() == "synchronous":
            c = 1.0
        elif i_s is not None and (m := _STRATEGY.match(cells[i_s].strip())):
            c = float(m.group(1))
        else:
            raise TraceError(
                f"{path}, line {lineno}: no concurrency (neither Server Throughput / "
                "Successful Concurrency / Mean nor a concurrent@N strategy); run GuideLLM "
                "with --profile concurrent or synchronous"
            )
        f = _value(path, lineno, "Time to First Token Mean", cells[i_f]) * 1e-3
        t = _value(path, lineno, "Time per Output Token Mean", cells[i_t]) * 1e-3
        rows.append(BenchRow(c, f, t, lineno))
    return rows
