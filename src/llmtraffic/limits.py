"""How big a run or an experiment is, estimated before it starts, and the limits it must keep.

A config can ask for more than any machine gives: a billion requests a second, a time series of
microsecond bins, ten million replications, a run of 10^12 seconds. Each is valid as a value;
each would fill the memory or run for days behind a green ``validate``. ``estimate`` sizes a
run from its config alone (no run, no user code): the expected arrivals, the time-series bins
and the memory and CPU time they take at the rates measured on this engine; ``check`` refuses
what exceeds the limits below, naming the field to change, unless the user passes
``--allow-large`` (``allow_large=True``).

Measured costs (CPython 3.11, one attempt per request, ``records = "summary"``; retries, gates
and more tables only add to them, so the estimates are lower bounds):

- ``BYTES_PER_REQUEST``: 24 bytes of memory per request (6 million requests: +143 MB of peak
  memory; the latencies kept for the percentiles and the engine's state);
- ``SECONDS_PER_REQUEST``: 6 microseconds of CPU per request (6 million in 40 s);
- ``BYTES_PER_CELL``: 40 bytes per time-series bin and series (600,000 bins of 27 series:
  +613 MB with the table written);
- ``SECONDS_PER_BIN``: 15 microseconds per bin (600,000 bins in 9.7 s).

Limits: a run may take ``MAX_RUN_BYTES`` (2 GB: one run per worker process, several at a time
on a laptop or a CI runner) and ``MAX_RUN_SECONDS`` (one hour); an experiment at most
``MAX_RUNS`` runs (100,000: each is a folder of files and at least a tenth of a second) and
``MAX_TOTAL_SECONDS`` (24 hours of CPU time over all its runs).
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmtraffic.config.scenario import Scenario
from llmtraffic.config.trace import BUILTIN_PREFIX, Trace
from llmtraffic.errors import ConfigError
from llmtraffic.workload.pauses import mean_count

BYTES_PER_REQUEST = 24
SECONDS_PER_REQUEST = 6e-6
BYTES_PER_CELL = 40
SECONDS_PER_BIN = 15e-6
BASE_BYTES = 100 * 2**20
"""The interpreter, numpy, pandas and pyarrow: what a run takes before its first request."""

MAX_RUN_BYTES = 2e9
MAX_RUN_SECONDS = 3600.0
MAX_RUNS = 100_000
MAX_TOTAL_SECONDS = 24 * 3600.0

BASE_SERIES = 21
"""Time-series columns of a run whatever its features: counts by status, costs, levels and
samples (``results.recorder``); each feature adds ``SERIES_PER_FEATURE``, each provider one."""
SERIES_PER_FEATURE = 7

ALLOW = "or pass --allow-large (allow_large=True in Python) to run it anyway"


class SizeError(ConfigError):
    """A config asks for a run or an experiment too large to run without ``--allow-large``;
    each problem names the field to change, the estimate and the limit."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        super().__init__(problems, source)
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            text = f"{where}too large to run: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            text = f"{where}too large to run ({len(self.problems)} problems):\n{lines}"
        self.args = (text,)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class FeatureLoad:
    """A feature's expected arrivals in one run, and the config field that sets them."""

    arrivals: float
    field: str
    how: str


@dataclass(frozen=True)
class RunSize:
    """The estimated size of one run."""

    seconds: float
    """run.duration in seconds."""
    features: Mapping[str, FeatureLoad]
    bins: float
    series: int
    bin_width: float

    @property
    def arrivals(self) -> float:
        """Expected arrivals over all features (an upper bound for ramps, diurnal profiles
        and traces cut short by run.duration)."""
        return sum(f.arrivals for f in self.features.values())

    @property
    def request_bytes(self) -> float:
        """Memory that grows with the requests."""
        return self.arrivals * BYTES_PER_REQUEST

    @property
    def series_bytes(self) -> float:
        """Memory of the time series."""
        return self.bins * self.series * BYTES_PER_CELL

    @property
    def memory(self) -> float:
        """Estimated peak memory of the run, bytes."""
        return BASE_BYTES + self.request_bytes + self.series_bytes

    @property
    def cpu_seconds(self) -> float:
        """Estimated CPU time of the run (a lower bound: one attempt per request)."""
        return self.arrivals * SECONDS_PER_REQUEST + self.bins * SECONDS_PER_BIN

    def describe(self) -> str:
        """One line for ``validate``: arrivals, bins, memory and time."""
        return (
            f"about {fmt_count(self.arrivals)} arrivals and {fmt_count(self.bins)} "
            f"time-series bins x {self.series} series per run: about "
            f"{fmt_bytes(self.memory)} of memory and {fmt_time(self.cpu_seconds)} of CPU time"
        )


@dataclass(frozen=True)
class ExperimentSize:
    """The estimated size of an experiment: its runs, the largest run, and the total."""

    runs: int
    largest: RunSize
    largest_point: str
    total_arrivals: float
    total_cpu_seconds: float
    sizes: Mapping[str, RunSize] = field(repr=False, default_factory=dict)

    def describe(self) -> str:
        """One line for ``validate``."""
        return (
            f"{self.runs} runs, about {fmt_count(self.total_arrivals)} arrivals and "
            f"{fmt_time(self.total_cpu_seconds)} of CPU time in all; the largest run: "
            + self.largest.describe()
        )


def estimate(scenario: Scenario) -> RunSize:
    """The size of one run of ``scenario`` (``run.duration`` resolved to seconds), from its
    config alone; replayed traces are counted (row counts, or one pass when they loop)."""
    seconds = scenario.run.seconds
    features = {name: _feature_load(name, f, seconds) for name, f in scenario.features.items()}
    width = scenario.run.timeseries_bin
    # The recorder allocates bins for 1.1 x the duration up front (the drain that follows).
    bins = math.ceil(seconds * 1.1 / width) + 2 if width > 0 and math.isfinite(seconds) else 0
    series = BASE_SERIES + SERIES_PER_FEATURE * len(scenario.features) + len(scenario.providers)
    return RunSize(seconds, features, float(bins), series, width)


def _feature_load(name: str, feature: Any, seconds: float) -> FeatureLoad:
    """Expected arrivals (requests) of one feature over ``seconds``: a closed-loop feature's
    arrivals are sessions (or tasks), each making its mean number of turns (or calls)."""
    load = _arrival_load(name, feature, seconds)
    conv, key = (
        (feature.session, "turns") if feature.session is not None else (feature.agent, "calls")
    )
    if conv is None:
        return load
    turns = mean_count(getattr(conv, key))
    table = "session" if feature.session is not None else "agent"
    return FeatureLoad(
        load.arrivals * turns,
        load.field,
        f"{load.how}, x {turns:g} {key} each (features.{name}.{table}.{key})",
    )


def _arrival_load(name: str, feature: Any, seconds: float) -> FeatureLoad:
    """Expected arrivals of one feature over ``seconds``."""
    where = f"features.{name}"
    if feature.trace is not None:
        return _trace_load(where, feature.trace, name, seconds)
    a = feature.arrivals
    kind = getattr(a, "kind", None)
    span = f"over run.duration = {seconds:g} s"
    if kind == "poisson":
        return FeatureLoad(a.rate * seconds, f"{where}.arrivals.rate", f"{a.rate:g}/s {span}")
    if kind == "diurnal":
        if a.profile is not None:
            peak = a.mean_rate * max(a.profile) / (sum(a.profile) / len(a.profile))
        else:
            peak = a.mean_rate * 2 * a.peak_to_trough / (a.peak_to_trough + 1)
        return FeatureLoad(
            peak * seconds, f"{where}.arrivals.mean_rate", f"up to {peak:g}/s at the peak {span}"
        )
    if kind == "bursty":
        weights = list(a.mean_durations)
        mean = sum(r * w for r, w in zip(a.rates, weights, strict=True)) / sum(weights)
        return FeatureLoad(
            mean * seconds, f"{where}.arrivals.rates", f"{mean:g}/s on average {span}"
        )
    if kind in ("mmpp", "batch", "resample"):
        from llmtraffic.workload.fitted import fitted_mean_rate, switch_rate

        mean = fitted_mean_rate(a)
        switches = switch_rate(a) if kind == "mmpp" else 0.0
        if switches > mean:
            # Each state change is drawn like an arrival: a chain that switches far faster
            # than requests arrive costs its switches, and the field to change is the chain's.
            key = "generator" if a.generator is not None else "mean_durations"
            return FeatureLoad(
                (mean + switches) * seconds,
                f"{where}.arrivals.{key}",
                f"{mean:g}/s on average and {switches:g} state changes/s {span}",
            )
        return FeatureLoad(
            mean * seconds, f"{where}.arrivals.rate", f"{mean:g}/s on average {span}"
        )
    if kind == "ramp":
        peak = max(a.start_rate, a.end_rate)
        mean = (a.start_rate + a.end_rate) / 2
        return FeatureLoad(
            mean * seconds,
            f"{where}.arrivals.start_rate/end_rate",
            f"{mean:g}/s on average, {peak:g}/s at the peak, {span}",
        )
    if kind == "dau":
        daily = a.users * a.requests_per_user
        peak = daily / 86400 * 2 * a.peak_to_trough / (a.peak_to_trough + 1)
        return FeatureLoad(
            peak * seconds,
            f"{where}.arrivals.users",
            f"{fmt_count(a.users)} users x {a.requests_per_user:g} requests a day, up to "
            f"{peak:g}/s {span}",
        )
    if kind == "times":
        return FeatureLoad(float(len(a.at)), f"{where}.arrivals.at", "the listed times")
    return FeatureLoad(0.0, f"{where}.arrivals", "no arrivals")


def _trace_load(where: str, cfg: Trace, feature: str, seconds: float) -> FeatureLoad:
    """A replayed trace: its rows once; a looping trace, its rows per pass times the passes."""
    if not cfg.loop:
        rows = trace_rows(cfg)
        return FeatureLoad(
            float(rows), f"{where}.trace", f"the {fmt_count(rows)} rows of the trace"
        )
    from llmtraffic.workload.trace import TraceReader

    reader = TraceReader(cfg, feature)
    for _ in reader.cycle():
        pass
    period = reader.period() / cfg.speedup
    passes = seconds / period if period > 0 else math.inf
    return FeatureLoad(
        reader.kept * passes,
        f"{where}.trace.speedup",
        f"{fmt_count(reader.kept)} rows a pass, {fmt_count(passes)} passes of {period:g} s "
        f"over run.duration = {seconds:g} s",
    )


def trace_rows(cfg: Trace) -> int:
    """The number of rows in a trace file, without parsing it (Parquet: its metadata; CSV and
    JSONL: its lines)."""
    if cfg.path.startswith(BUILTIN_PREFIX):
        from llmtraffic.workload.trace import builtin_trace_file

        path = builtin_trace_file(cfg.path[len(BUILTIN_PREFIX) :])
    else:
        path = Path(cfg.path)
    name = path.name.lower()
    if cfg.format == "parquet" or (cfg.format == "auto" and name.endswith(".parquet")):
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception:  # a broken file is the trace reader's to report, with its line
            return 0
    opener: Any = gzip.open if name.endswith(".gz") else open
    lines = 0
    last = b"\n"
    try:
        with opener(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError:
        return 0
    lines += last != b"\n"
    is_csv = cfg.format == "csv" or (cfg.format == "auto" and ".csv" in name)
    return max(0, lines - 1) if is_csv else lines  # a CSV's header is not a request


def problems_of(size: RunSize, where: str = "") -> list[str]:
    """What makes one run too large: one line per limit exceeded, naming the field."""
    out = []
    at = f" ({where})" if where else ""
    if size.memory > MAX_RUN_BYTES or size.cpu_seconds > MAX_RUN_SECONDS:
        busiest = max(size.features.items(), key=lambda kv: kv[1].arrivals, default=None)
        if busiest is not None and size.request_bytes >= size.series_bytes:
            load = busiest[1]
            out.append(
                f"{load.field}{at}: about {fmt_count(load.arrivals)} arrivals in one run "
                f"({load.how}), about {fmt_bytes(size.memory)} of memory and "
                f"{fmt_time(size.cpu_seconds)} of CPU time at the measured "
                f"{BYTES_PER_REQUEST} bytes and {SECONDS_PER_REQUEST * 1e6:g} us per request; "
                f"a run may take {fmt_bytes(MAX_RUN_BYTES)} and {fmt_time(MAX_RUN_SECONDS)}: lower "
                f"{load.field} or run.duration, {ALLOW}"
            )
        else:
            out.append(
                f"run.timeseries_bin{at}: {size.bin_width:g} s bins over run.duration = "
                f"{size.seconds:g} s make about {fmt_count(size.bins)} time-series bins x "
                f"{size.series} series, about {fmt_bytes(size.memory)} of memory and "
                f"{fmt_time(size.cpu_seconds)} of CPU time at the measured {BYTES_PER_CELL} "
                f"bytes per bin and series; a run may take {fmt_bytes(MAX_RUN_BYTES)} and "
                f"{fmt_time(MAX_RUN_SECONDS)}: widen run.timeseries_bin or shorten "
                f"run.duration, {ALLOW}"
            )
    return out


def check(scenario: Scenario, *, allow_large: bool = False, source: str | None = None) -> RunSize:
    """Estimate one run of ``scenario``; raise ``SizeError`` when it is too large (unless
    ``allow_large``). Returns the estimate."""
    est = estimate(scenario)
    problems = problems_of(est)
    if problems and not allow_large:
        raise SizeError(problems, source=source)
    return est


def check_runs(runs: int, *, allow_large: bool, source: str | None, fields: str) -> None:
    """Refuse an experiment of more than ``MAX_RUNS`` runs before its grid is built (building
    it takes memory and time of its own). ``fields`` says what sets the count."""
    if runs > MAX_RUNS and not allow_large:
        raise SizeError(
            [
                f"experiment.replications: {fields} make {fmt_count(runs)} runs; an experiment may "
                f"have {fmt_count(MAX_RUNS)} (each run is a folder of files and at least 0.1 s): "
                f"lower experiment.replications or the sweep's values, {ALLOW}"
            ],
            source=source,
        )


def estimate_experiment(
    points: Iterable[tuple[str, Scenario]], replications: int
) -> ExperimentSize:
    """The size of an experiment of ``points`` (id, scenario), each run ``replications``
    times."""
    sizes = {pid: estimate(sc) for pid, sc in points}
    largest_point = max(sizes, key=lambda p: (sizes[p].memory, sizes[p].cpu_seconds))
    return ExperimentSize(
        runs=len(sizes) * replications,
        largest=sizes[largest_point],
        largest_point=largest_point,
        total_arrivals=sum(s.arrivals for s in sizes.values()) * replications,
        total_cpu_seconds=sum(s.cpu_seconds for s in sizes.values()) * replications,
        sizes=sizes,
    )


def check_experiment(
    points: Iterable[tuple[str, Scenario]],
    replications: int,
    *,
    allow_large: bool = False,
    source: str | None = None,
) -> ExperimentSize:
    """Estimate an experiment; raise ``SizeError`` when a run or the whole is too large
    (unless ``allow_large``). Returns the estimate."""
    est = estimate_experiment(points, replications)
    problems = problems_of(
        est.largest, f"grid point {est.largest_point}" if len(est.sizes) > 1 else ""
    )
    if est.total_cpu_seconds > MAX_TOTAL_SECONDS:
        problems.append(
            f"experiment.replications: {est.runs} runs of about {fmt_count(est.total_arrivals)} "
            f"arrivals in all take about {fmt_time(est.total_cpu_seconds)} of CPU time; an "
            f"experiment may take {fmt_time(MAX_TOTAL_SECONDS)}: fewer replications, sweep "
            f"values or a shorter run.duration, {ALLOW}"
        )
    if problems and not allow_large:
        raise SizeError(problems, source=source)
    return est


def fmt_count(n: float) -> str:
    """A count for messages: 1,234 or 6.0e+10."""
    if not math.isfinite(n):
        return "more than 1e308"
    return f"{n:,.0f}" if n < 1e7 else f"{n:.1e}"


def fmt_bytes(n: float) -> str:
    """Bytes for messages: 512 MB, 2 GB, 1.4 TB, 8e+300 bytes."""
    if not math.isfinite(n) or n >= 1e15:
        return f"{n:.0e} bytes" if math.isfinite(n) else "more than any memory"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2g} {unit}" if n < 10 * scale else f"{n / scale:,.0f} {unit}"
    return f"{n:.0f} bytes"


def fmt_time(s: float) -> str:
    """Seconds for messages: 0.4 s, 12 min, 3.5 h, 41 days, 3e+290 years."""
    if not math.isfinite(s):
        return "forever"
    if s < 60:
        return f"{s:.1g} s" if s < 1 else f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.2g} h"
    if s < 1000 * 86400:
        return f"{s / 86400:,.0f} days"
    return f"{s / (365 * 86400):.1g} years"
