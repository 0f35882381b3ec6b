"""``llmtraffic fit``: describe a trace's load and fit distributions that reproduce it.

Arrival statistics (mean rate, inter-arrival CV, per-minute counts, index of dispersion) and
the arrival model that reproduces them, chosen among Poisson, an MMPP, batches and a block
bootstrap of the trace's gaps by the figures their synthetic traffic shows (``fit_arrivals``);
per token column, a lognormal fit (scipy's maximum-likelihood fit) with its Kolmogorov-Smirnov
distance to the data; when the distance is above ``KS_MAX`` the column is described by its
measured quantiles instead (``kind = "empirical"``, with finer levels above p99 up to the
maximum). The result prints as tables and as a scenario TOML that reproduces the load with
distributions (docs/traces.md).

The trace is streamed: counts and sums are exact over every row; quantiles and the fits use
every row up to ``SAMPLE`` rows, and a uniform random sample of that size beyond. The arrival
times are kept (8 bytes each, up to ``fit_arrivals.MAX_GAPS``) for the batch and resampling
models.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from llmtraffic.config.trace import Trace
from llmtraffic.errors import ConfigError, OutputError, TraceError
from llmtraffic.fit_arrivals import (
    FIGURES,
    LABELS,
    MAX_GAPS,
    MIN_WINDOWS,
    SEEDS,
    ArrivalChoice,
    choose,
)
from llmtraffic.workload.trace import TraceReader

KS_MAX = 0.05
"""Largest Kolmogorov-Smirnov distance at which the lognormal is used."""

SAMPLE = 1_000_000
TAIL_LEVELS = (0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999)
"""Levels above p99 of a fitted empirical distribution: the top percentile keeps its shape
and the maximum stays the trace's (linear interpolation between p99 and the maximum alone
would draw the top 1% uniformly up to it)."""
MAX_SPAN = 10 * 366 * 86_400.0
"""Longest span (seconds, after speedup) ``fit`` reads: ten years. Per-minute counts take 8
bytes a minute (42 MB at this span); a longer span is nearly always a timestamp in the wrong
unit or a stray row, and is refused with the advice to cut it with --window."""
Z99 = NormalDist().inv_cdf(0.99)


@dataclass(frozen=True)
class ArrivalFit:
    """Arrival statistics of a trace and the arrival process that reproduces them."""

    requests: int
    span: float
    """Seconds from the first to the last request."""
    mean_rate: float
    """requests / span, per second."""
    gap_cv: float
    """Coefficient of variation of the inter-arrival times (1 for Poisson)."""
    full_minutes: int
    per_minute_min: float
    per_minute_mean: float
    per_minute_max: float
    dispersion_minute: float
    """Variance / mean of the counts in full minutes (1 for Poisson)."""
    dispersion_second: float
    """Variance / mean of the counts in full seconds (1 for Poisson)."""
    config: dict[str, Any] = field(default_factory=dict)
    """The ``arrivals`` table of the fitted process."""
    choice: ArrivalChoice | None = None
    """The candidate models, their figures, and the one chosen (None: too few requests)."""

    @property
    def peak_to_mean(self) -> float:
        """Busiest full minute / mean full minute."""
        return self.per_minute_max / self.per_minute_mean if self.per_minute_mean else math.nan

    @property
    def kind(self) -> str:
        """The chosen arrival kind: ``poisson``, ``mmpp``, ``batch`` or ``resample``."""
        return str(self.config.get("kind", "poisson"))


@dataclass(frozen=True)
class TokenFit:
    """One token column: its figures, the lognormal fit, and the distribution chosen."""

    column: str
    n: int
    mean: float
    minimum: int
    p50: float
    p99: float
    maximum: int
    mu: float
    """Mean of log(tokens), maximum-likelihood (rows with 0 tokens left out)."""
    sigma: float
    """Standard deviation of log(tokens)."""
    ks: float
    """Kolmogorov-Smirnov distance between the data and the rounded fitted lognormal."""
    quantiles: list[float]
    """The quantiles at ``levels``: the minimum, p1, ..., p99, finer ones up to the maximum."""
    levels: list[float] = field(default_factory=list)
    """Their probabilities: 0, 0.01, ..., 0.99, then ``TAIL_LEVELS`` (those the sample can
    tell apart: below 1 - 1 / rows), then 1."""

    @property
    def kind(self) -> str:
        """``lognormal`` when it fits (KS <= KS_MAX), else ``empirical``."""
        return "lognormal" if self.ks <= KS_MAX else "empirical"

    def config(self) -> dict[str, Any]:
        """The token table that reproduces the column."""
        if self.kind == "lognormal":
            return {
                "kind": "lognormal",
                "median": _sig(math.exp(self.mu)),
                "p99": _sig(math.exp(self.mu + Z99 * self.sigma)),
            }
        return {
            "kind": "empirical",
            "quantiles": [round(q, 1) for q in self.quantiles],
            "levels": self.levels,
        }


@dataclass(frozen=True)
class TraceFit:
    """Everything ``llmtraffic fit`` reports about one trace."""

    trace: Trace
    time_unit: str
    rows: int
    arrivals: ArrivalFit
    input_tokens: TokenFit
    output_tokens: TokenFit
    file_format: str = "csv"
    """``csv``, ``parquet`` or ``jsonl``: how the file was read."""
    layout: str | None = None
    """The public trace layout of its columns (``BurstGPT``, ...), or None."""

    def describe_format(self) -> str:
        """The file's format and, when its columns are a public layout's, that layout."""
        kind = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSON Lines"}[self.file_format]
        return f"{kind}, {self.layout}" if self.layout else kind

    def scenario(self, feature: str = "replayed", model: str = "openai/gpt-4o-mini") -> str:
        """A runnable scenario TOML that reproduces the trace's load with distributions."""
        a, i, o = self.arrivals, self.input_tokens, self.output_tokens
        t = self.trace
        notes = [
            f"Fitted by `llmtraffic fit` from {t.path} ({self.describe_format()}):",
            f"{a.requests:,} requests over {a.span:,.1f} s ({a.mean_rate:.3f} per second), "
            f"inter-arrival CV {a.gap_cv:.2f}, per-minute counts {a.per_minute_min:g}.."
            f"{a.per_minute_max:g} (peak/mean {a.peak_to_mean:.2f}, index of dispersion "
            f"{a.dispersion_minute:.1f}): {a.kind}.",
        ]
        for tf, name in ((i, "input"), (o, "output")):
            notes.append(
                f"{name} tokens ({tf.column}): mean {tf.mean:,.1f}, p50 {tf.p50:g}, p99 "
                f"{tf.p99:g}, max {tf.maximum:,}; lognormal KS {tf.ks:.3f}: {tf.kind}."
            )
        if "empirical" in (i.kind, o.kind):
            notes.append(
                "empirical = the quantiles at levels: the minimum, p1..p99, finer levels "
                "above p99, and the maximum."
            )
        notes.append(
            "To replay the trace itself instead of these distributions, replace the arrivals, "
            "input_tokens and output_tokens tables with:"
        )
        lines = [
            *_comment(notes),
            f"#   [features.{_key(feature)}.trace]",
            *(f"#   {line}" for line in _table_lines(_trace_table(t))),
            "",
            f'name = "{feature}-fitted"',
            "",
            "[run]",
            f"duration = {math.ceil(a.span)}  # the trace's span, in seconds",
            "",
            "[providers.main]",
            "# prices from the model's preset; add rate_limit, capacity, ... here",
            f'model = "{model}"',
            "",
            f"[features.{_key(feature)}]",
            'provider = "main"',
            f"max_tokens = {max(o.maximum, 1)}  # the trace's largest output",
            "",
            f"[features.{_key(feature)}.arrivals]",
            *_table_lines({k: v for k, v in a.config.items() if not isinstance(v, dict)}),
        ]
        for k, v in a.config.items():
            if isinstance(v, dict):
                # A sub-table (resample's trace), one key a line: a long path stays alone.
                lines += ["", f"[features.{_key(feature)}.arrivals.{k}]", *_table_lines(v)]
        for tf, key in ((i, "input_tokens"), (o, "output_tokens")):
            lines += ["", f"[features.{_key(feature)}.{key}]", *_table_lines(tf.config())]
        return "\n".join(lines) + "\n"


def trace_from_flags(path: str, flags: Mapping[str, object], base_dir: Path) -> Trace:
    """The trace config ``llmtraffic fit`` reads: the TRACE argument and the flags given (by
    their ``Trace`` field names). A ``ConfigError`` names the argument or flag, as typed."""
    from pydantic import ValidationError

    from llmtraffic.config.loader import format_errors

    raw: dict[str, object] = {"path": path, **flags}
    try:
        context = {"base_dir": base_dir, "base_is": "the current folder"}
        return Trace.model_validate(raw, context=context)
    except ValidationError as exc:
        raise ConfigError([_flag_names(p) for p in format_errors(exc, raw, Trace)]) from None


def _flag_names(line: str) -> str:
    """A config error line with the ``Trace`` field names replaced by the command's own:
    ``path`` is the TRACE argument, ``feature_column`` the --feature-column flag."""
    head, sep, rest = line.partition(": ")
    field = head.split("[", 1)[0]
    head = _FLAGS.get(field, f"--{field.replace('_', '-')}") + head[len(field) :]
    for name in sorted(Trace.model_fields, key=len, reverse=True):
        if name != "path" and "_" in name:
            rest = rest.replace(name, _FLAGS.get(name, f"--{name.replace('_', '-')}"))
    return head + sep + rest


_FLAGS = {"path": "TRACE", "keep_outcomes": "--keep-outcome"}
"""``Trace`` fields whose argument is not ``--`` and the field's name with dashes."""


def check_snippet(path: Path, text: str | None = None) -> None:
    """Refuse a ``--snippet FILE`` that cannot be written (a folder, a folder that does not
    exist, no permission), before the trace is read, so a long fit is not lost at the end;
    with ``text``, write it there. ``OutputError`` names the flag and the fix."""
    where = f"--snippet: cannot write the scenario to {path}"
    folder = path.absolute().parent
    if path.is_dir():
        raise OutputError(
            f"{where}: it is a folder; give a file name, such as {path / 'fitted.toml'}"
        )
    if not folder.exists():
        raise OutputError(
            f"{where}: the folder {folder} does not exist; create it, or give a file in an "
            "existing folder"
        )
    if not folder.is_dir():
        raise OutputError(f"{where}: {folder} is not a folder; give a file in a folder")
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise OutputError(f"{where}: permission denied; give a file in a folder you can write to")
    if text is None:
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{where}: {exc.strerror}; give another file") from None


def check_options(name: str, model: str) -> None:
    """Refuse, before the trace is read, a ``--name`` the fitted scenario cannot use (its
    feature, and ``NAME-fitted`` as the scenario's name, must be slugs) and a ``--model`` that
    is not a preset (listing the known ones): the scenario must run as written."""
    from llmtraffic import presets
    from llmtraffic.config.base import check_slug

    problems = []
    try:
        check_slug(name)
        check_slug(f"{name}-fitted")
    except ValueError as exc:
        problems.append(f"--name: {exc}")
    if presets.find_model(model) is None:
        problems.append(
            f"--model: {presets.unknown_model_message(model)} (llmtraffic presets --kind models)"
        )
    if problems:
        raise ConfigError(problems)


def fit_trace(cfg: Trace, feature: str | None = None, seed: int = 0) -> TraceFit:
    """Read the whole trace (as its config replays it, once) and fit it."""
    reader = TraceReader(cfg, feature)
    arrivals = _ArrivalStats(cfg.path)
    inp = _TokenStats(cfg.input_tokens, seed)
    out = _TokenStats(cfg.output_tokens, seed + 1)
    for t, i, o in reader.cycle():
        arrivals.add(t / cfg.speedup)
        inp.add(i)
        out.add(o)
    if not arrivals.last > arrivals.first:
        # No span, no rate: the scenario would have a rate of NaN and a duration of 0.
        what = (
            "only 1 request is replayed"
            if arrivals.n == 1
            else f"the {arrivals.n:,} replayed requests all arrive at the same time"
        )
        raise TraceError(
            f"{cfg.path}: {what}, so there is no rate to fit; fit a longer trace, or replay "
            f"this one as it is: trace = {_inline(_trace_table(cfg))}"
        )
    layout = cfg.layout
    return TraceFit(
        trace=cfg,
        time_unit=reader.unit or "?",
        rows=reader.rows,
        arrivals=arrivals.fit(_trace_table(cfg), seed),
        input_tokens=inp.fit(),
        output_tokens=out.fit(),
        file_format=reader.format,
        layout=layout.describe(reader.first_stamp) if layout is not None else None,
    )


# --- arrivals ----------------------------------------------------------------------------


class _ArrivalStats:
    """Streaming counts: gaps (sum, sum of squares) and the requests of every second since the
    first that has any. Seconds are counted sparsely, so a long quiet stretch costs nothing;
    a span past ``MAX_SPAN`` is refused as it is met."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.n = 0
        self.first = math.nan
        self.last = math.nan
        self.gap_sum = 0.0
        self.gap_sq = 0.0
        # Seconds (since the first request) that have requests, and their counts: in pieces,
        # merged when they grow (a second can appear in two batches).
        self._keys: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._pending = 0
        # Every time (for the batch and resampling models), while there are not too many.
        self._times: list[np.ndarray] | None = []
        # Whether every timestamp so far is a whole multiple of each resolution (seconds).
        self.exact = {r: True for r in (60.0, 1.0, 0.1, 0.01, 0.001)}

    def add(self, t: np.ndarray) -> None:
        if t.size == 0:
            return
        if self.n == 0:
            self.first = float(t[0])
            gaps = np.diff(t)
        else:
            gaps = np.diff(t, prepend=self.last)
        if float(t[-1]) - self.first > MAX_SPAN:
            self._too_long(t, gaps)
        self.gap_sum += float(gaps.sum())
        self.gap_sq += float(np.dot(gaps, gaps))
        self.n += t.size
        self.last = float(t[-1])
        if self._times is not None:
            self._times.append(t)
            if self.n > MAX_GAPS:
                self._times = None
        for r, ok in self.exact.items():
            if ok:
                ratio = t / r
                self.exact[r] = bool(np.all(np.abs(ratio - np.rint(ratio)) < 1e-6))
        second, count = np.unique(np.floor(t - self.first).astype(np.int64), return_counts=True)
        self._keys.append(second)
        self._counts.append(count)
        self._pending += second.size
        if self._pending > 4 * SAMPLE:
            self._merge()

    def _merge(self) -> tuple[np.ndarray, np.ndarray]:
        """The busy seconds, ascending, and their counts (one piece from here on)."""
        if not self._keys:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        keys, inverse = np.unique(np.concatenate(self._keys), return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate(self._counts)).astype(np.int64)
        self._keys, self._counts, self._pending = [keys], [counts], keys.size
        return keys, counts

    def _too_long(self, t: np.ndarray, gaps: np.ndarray) -> None:
        i = int(np.argmax(gaps)) if gaps.size else 0
        years = MAX_SPAN / 86_400 / 366
        raise TraceError(
            f"{self.label}: the trace spans more than {years:g} years: a request at "
            f"{float(t[-1]) - self.first:.4g} s after the first (the longest gap here is "
            f"{float(gaps[i]) if gaps.size else 0.0:.4g} s); a timestamp in the wrong unit "
            "(--time-unit) or a stray row? Fit a part of it with --window FROM TO (seconds)"
        )

    def fit(self, trace_table: dict[str, Any], seed: int = 0) -> ArrivalFit:
        n = self.n
        span = self.last - self.first if n else 0.0
        rate = n / span if span > 0 else math.nan
        gaps = n - 1
        if gaps > 0 and self.gap_sum > 0:
            mean = self.gap_sum / gaps
            var = max(0.0, self.gap_sq / gaps - mean * mean)
            cv = math.sqrt(var) / mean
        else:
            cv = math.nan
        keys, counts = self._merge()
        full_seconds = math.floor(span)
        minutes_n = math.floor(span / 60.0)
        in_minutes = keys < minutes_n * 60
        minutes = np.bincount(
            keys[in_minutes] // 60, weights=counts[in_minutes], minlength=minutes_n
        ).astype(np.int64)
        fit = ArrivalFit(
            requests=n,
            span=span,
            mean_rate=rate,
            gap_cv=cv,
            full_minutes=minutes_n,
            per_minute_min=float(minutes.min()) if minutes_n else math.nan,
            per_minute_mean=float(minutes.mean()) if minutes_n else math.nan,
            per_minute_max=float(minutes.max()) if minutes_n else math.nan,
            dispersion_minute=_dispersion(minutes),
            dispersion_second=_sparse_dispersion(counts[keys < full_seconds], full_seconds),
        )
        if not math.isfinite(rate) or n < 3:
            return ArrivalFit(**{**fit.__dict__, "config": {"kind": "poisson", "rate": 1.0}})
        times = np.concatenate(self._times) - self.first if self._times is not None else None
        got = choose(keys, counts, span, cv, times, trace_table, self.exact, seed)
        return ArrivalFit(**{**fit.__dict__, "config": got.model.config, "choice": got})


def _sparse_dispersion(counts: np.ndarray, bins: int) -> float:
    """Variance / mean of ``bins`` counts of which ``counts`` are the non-zero ones (the same
    as ``_dispersion`` of the dense array, without building it)."""
    total = float(counts.sum())
    if bins < 2 or total == 0:
        return math.nan
    mean = total / bins
    var = float(np.dot(counts.astype(np.float64), counts)) / bins - mean * mean
    return max(0.0, var) / mean


def _dispersion(counts: np.ndarray) -> float:
    if counts.size < 2 or counts.mean() == 0:
        return math.nan
    return float(counts.var() / counts.mean())


# --- tokens ------------------------------------------------------------------------------


class _TokenStats:
    """Exact count, sum, min, max; a uniform sample of at most SAMPLE values for the rest."""

    def __init__(self, column: str, seed: int) -> None:
        self.column = column
        self.n = 0
        self.total = 0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.rng = np.random.default_rng(seed)
        self.sample = np.zeros(0, dtype=np.int64)
        self.keys = np.zeros(0)

    def add(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        self.n += x.size
        self.total += int(x.sum())
        self.minimum = min(self.minimum, int(x.min()))
        self.maximum = max(self.maximum, int(x.max()))
        # Reservoir by random keys: keep the SAMPLE values with the smallest keys.
        sample = np.concatenate([self.sample, x])
        keys = np.concatenate([self.keys, self.rng.random(x.size)])
        if sample.size > SAMPLE:
            keep = np.argpartition(keys, SAMPLE)[:SAMPLE]
            sample, keys = sample[keep], keys[keep]
        self.sample, self.keys = sample, keys

    def fit(self) -> TokenFit:
        from scipy import stats

        x = self.sample
        positive = x[x > 0]
        if positive.size >= 2 and np.ptp(positive) > 0:
            sigma, _, scale = stats.lognorm.fit(positive, floc=0)
            mu = math.log(scale)
            ks = _ks_rounded_lognormal(x, mu, sigma)
        else:
            mu = math.log(positive[0]) if positive.size else 0.0
            sigma, ks = 0.0, math.inf
        levels = token_levels(x.size)
        qs = np.quantile(x, levels) if x.size else np.zeros(len(levels))
        if self.n:
            # The sample's ends are the column's (a reservoir might have missed them).
            qs[0], qs[-1] = self.minimum, self.maximum
        return TokenFit(
            column=self.column,
            n=self.n,
            mean=self.total / self.n if self.n else math.nan,
            minimum=int(self.minimum) if self.n else 0,
            p50=float(np.quantile(x, 0.5)) if x.size else math.nan,
            p99=float(np.quantile(x, 0.99)) if x.size else math.nan,
            maximum=int(self.maximum) if self.n else 0,
            mu=mu,
            sigma=float(sigma),
            ks=ks,
            quantiles=[float(q) for q in qs],
            levels=levels,
        )


def token_levels(n: int) -> list[float]:
    """Levels of a fitted empirical distribution of ``n`` values: 0, 0.01, ..., 0.99, the
    tail levels below 1 - 1 / n, and 1."""
    tail = [lv for lv in TAIL_LEVELS if lv < 1.0 - 1.0 / max(n, 1)]
    return [round(i / 100, 2) for i in range(100)] + tail + [1.0]


def _ks_rounded_lognormal(x: np.ndarray, mu: float, sigma: float) -> float:
    """Kolmogorov-Smirnov distance between integer data and max(1, rint(LogNormal(mu, sigma)))
    (what the simulator draws): the largest gap between the two CDFs at or just before each
    observed value."""
    from scipy import stats

    dist = stats.lognorm(sigma, scale=math.exp(mu))
    values, counts = np.unique(x, return_counts=True)
    ecdf = np.cumsum(counts) / x.size
    before = ecdf - counts / x.size
    v = values.astype(float)
    model = np.where(v >= 1, dist.cdf(v + 0.5), 0.0)
    model_before = np.where(v >= 2, dist.cdf(v - 0.5), 0.0)
    return float(max(np.abs(ecdf - model).max(), np.abs(before - model_before).max()))


# --- output ------------------------------------------------------------------------------


def print_fit(console: Console, fit: TraceFit) -> None:
    """The fit as two readable tables."""
    a = fit.arrivals
    t = fit.trace
    # The format and columns as prose, which wraps at a narrow terminal, not as table cells.
    console.print(f"Trace: {t.path}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"format: {fit.describe_format()}; time {t.timestamp!r}, input {t.input_tokens!r}, "
        f"output {t.output_tokens!r}",
        markup=False,
        highlight=False,
    )
    head = Table(show_header=False, box=box.SIMPLE, show_edge=False, pad_edge=False)
    head.add_column(style="bold")
    head.add_column(justify="right")
    unit = fit.time_unit
    if t.time_unit == "auto":
        unit += " (assumed; --time-unit)" if unit != "datetime" else " (auto: date-times)"
    rows = [
        ("rows read / replayed", f"{fit.rows:,} / {a.requests:,}"),
        ("time unit", unit),
        ("span", f"{a.span:,.1f} s"),
        ("mean rate", f"{a.mean_rate:.3f} /s ({a.mean_rate * 60:,.1f} /min)"),
        ("inter-arrival CV", f"{a.gap_cv:.3f}"),
        (
            "per-minute count min / mean / max",
            f"{a.per_minute_min:g} / {a.per_minute_mean:,.1f} / {a.per_minute_max:g}"
            f" ({a.full_minutes} full minutes)",
        ),
        ("per-minute peak / mean", f"{a.peak_to_mean:.2f}"),
        ("index of dispersion, per second", f"{a.dispersion_second:.2f}"),
        ("index of dispersion, per minute", f"{a.dispersion_minute:.2f}"),
        *_describe_arrivals(a.config),
    ]
    for k, v in rows:
        head.add_row(k, v)
    console.print()
    console.print(head)
    console.print()
    if a.choice is not None:
        # Prose, not a cell: it wraps at a narrow terminal.
        b = a.choice.batching
        how = b.describe() if b is not None else f"not measured (over {MAX_GAPS:,} requests)"
        _prose(console, f"Batched timestamps: {how}")
        console.print()
        _print_models(console, a.choice)
    # The columns' names are on the format line: a long name would squeeze the numbers.
    # One row per figure, one column per token column: a context in the millions of tokens
    # still fits 80 columns, as nine figures side by side would not.
    tok = Table(
        title="Token sizes",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    tok.add_column("")
    for name in ("input", "output"):
        tok.add_column(name, justify="right", no_wrap=True)
    i, o = fit.input_tokens, fit.output_tokens
    figures: list[tuple[str, Callable[[TokenFit], str]]] = [
        ("mean", lambda tf: f"{tf.mean:,.1f}"),
        ("p50", lambda tf: f"{tf.p50:,g}"),
        ("p99", lambda tf: f"{tf.p99:,g}"),
        ("max", lambda tf: f"{tf.maximum:,}"),
        ("lognormal fit p50", lambda tf: f"{math.exp(tf.mu):,.0f}"),
        ("lognormal fit p99", lambda tf: f"{math.exp(tf.mu + Z99 * tf.sigma):,.0f}"),
        ("KS distance", lambda tf: f"{tf.ks:.3f}"),
        ("model", lambda tf: tf.kind),
    ]
    for label, show in figures:
        tok.add_row(label, show(i), show(o))
    console.print(tok)
    console.print()


def _describe_arrivals(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows of the fitted arrival model: an MMPP's states on rows of their own, so that the
    table fits 80 columns."""
    kind = cfg.get("kind")
    if kind == "mmpp":
        rates = ", ".join(f"{r:g}" for r in cfg["rates"])
        q = cfg["generator"]
        stays = ", ".join(f"{-1 / row[i]:.3g}" if row[i] else "inf" for i, row in enumerate(q))
        return [
            ("arrival model", f"mmpp ({len(cfg['rates'])} states)"),
            ("  state rates", f"{rates} /s"),
            ("  state mean durations", f"{stays} s"),
        ]
    if kind == "batch":
        when = f"every {cfg['period']:g} s" if "period" in cfg else f"{cfg['rate']:g} /s"
        return [("arrival model", f"batch: batches {when}")]
    if kind == "resample":
        return [
            ("arrival model", "resample: the trace's gaps"),
            ("  rate, mean block", f"{cfg['rate']:g} /s, {cfg['mean_block']:g} gaps"),
        ]
    return [("arrival model", f"poisson: {cfg.get('rate', math.nan):g} /s")]


def _print_models(console: Console, choice: ArrivalChoice) -> None:
    """The trace's figures beside each candidate's (mean of its synthetic runs); the chosen
    one starred."""
    table = Table(
        title="Arrival models: the trace vs synthetic traffic",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("")
    table.add_column("real", justify="right", no_wrap=True)
    for i, c in enumerate(choice.candidates):
        star = "*" if i == choice.chosen else ""
        table.add_column(c.name + star, justify="right", no_wrap=True)

    def show(name: str, v: float) -> str:
        if not math.isfinite(v):
            return "-"
        return f"{v:.1%}" if name == "empty" else f"{v:.3g}"

    for name in FIGURES:
        # A figure of too few windows to compare is shown in brackets.
        label = LABELS[name] if name in choice.candidates[0].errors else f"({LABELS[name]})"
        table.add_row(
            label,
            show(name, choice.real[name]),
            *(show(name, c.figures[name]) for c in choice.candidates),
        )
    table.add_row(
        "worst error", "", *(f"{c.worst:.0%}" if math.isfinite(c.worst) else "-"
                             for c in choice.candidates)
    )  # fmt: skip
    console.print(table)
    chosen = choice.model
    why = (
        "the simplest within 25% on every figure"
        if chosen.worst <= 0.25
        else "none within 25% on every figure: the smallest worst error"
    )
    mmpp_k = min(choice.bic, key=choice.bic.__getitem__)
    note = (
        f"* chosen: {chosen.name}, {why}. Fitted figures: mean of {SEEDS} synthetic runs "
        f"over the trace's span. MMPP states by BIC on {choice.bin_width:g} s bins: "
        f"{mmpp_k} (of 1..{max(choice.bic)}). Empty minutes: within 1 point when the trace "
        "has under 4% empty."
    )
    if len(choice.candidates[0].errors) < len(FIGURES):
        note += f" In brackets: under {MIN_WINDOWS} windows in the trace, not compared."
    _prose(console, note)
    console.print()


def _prose(console: Console, text: str) -> None:
    """``text`` wrapped at 80 columns, however wide the terminal, like the tables."""
    for line in textwrap.wrap(text, 80, break_long_words=False, break_on_hyphens=False):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def _key(name: str) -> str:
    bare = name.replace("-", "").replace("_", "").isalnum()
    return name if bare else f'"{name}"'


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return f"{value:g}" if value == int(value) and abs(value) < 1e15 else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return _inline(value)
    return str(value)


def _table_lines(table: dict[str, Any]) -> list[str]:
    """``table`` as TOML lines; a long list (percentiles) ten values a line, so that a line
    starts at p0, p10, ..., or five when ten would run past 80 columns."""
    lines = []
    for k, v in table.items():
        if isinstance(v, list) and v and all(isinstance(row, list) for row in v):
            # A matrix: one row a line.
            lines += [f"{k} = [", *(f"  {_toml(row)}," for row in v), "]"]
        elif isinstance(v, list) and len(v) > 8:
            lines.append(f"{k} = [")
            rows = _list_rows(v, 10)
            if max(map(len, rows)) > 80:
                rows = _list_rows(v, 5)
            lines += [*rows, "]"]
        else:
            lines.append(f"{k} = {_toml(v)}")
    return lines


def _list_rows(values: list[Any], per_row: int) -> list[str]:
    return [
        "  " + ", ".join(_toml(x) for x in values[j : j + per_row]) + ","
        for j in range(0, len(values), per_row)
    ]


def _trace_table(t: Trace) -> dict[str, Any]:
    """The trace config's keys that differ from the defaults."""
    defaults = Trace.model_fields
    out: dict[str, Any] = {"path": t.path}
    for name, info in defaults.items():
        value = getattr(t, name)
        if name != "path" and value is not None and value != info.default:
            out[name] = value
    return out


def _comment(paragraphs: list[str]) -> list[str]:
    """``paragraphs`` as TOML comment lines of at most 80 columns, like the rest of the
    command's output; only a word longer than a line (a long path) runs past it."""
    return [
        line
        for text in paragraphs
        for line in textwrap.wrap(
            text,
            80,
            break_long_words=False,
            break_on_hyphens=False,
            initial_indent="# ",
            subsequent_indent="# ",
        )
    ]


def _inline(table: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in table.items()) + " }"
