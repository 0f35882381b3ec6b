"""Collects what a run produces: rows (flushed to a sink in batches), time-series bins and
per-feature tallies from which the summary is computed.

The hot path only bumps cumulative counters (in ``Tally``, per feature) and, for levels, keeps
``acc`` and ``n`` such that the integral of the level from 0 to T is ``acc + n * T``. A tick at
every bin boundary turns both into bins: counts are differences of the counters, levels are
differences of the integrals over the bin width (time-weighted means). A tally and a level are
different statistics and are kept apart.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llmtraffic.engine.entities import ATTEMPT_STATUSES, OK, REQUEST_OUTCOMES
from llmtraffic.results.schema import ATTEMPTS, EVENTS, REQUESTS, SIMPLE, TIMESERIES
from llmtraffic.results.sink import RecordSink

FLUSH_ROWS = 65_536

COUNT_COLUMNS = (
    "arrivals",
    "attempts",
    "retries",
    *ATTEMPT_STATUSES,
    "requests_ok",
    "requests_failed",
)
ARRIVAL_COLUMNS = ("arrived_failed", "arrived_unfinished")
"""Kept by arrival bin, for the recovery metrics. Failures are rare, so the hot path only
counts them; ``arrived_ok`` and ``arrived_done`` are derived from the arrivals."""
FEATURE_COLUMNS = ("arrivals", "attempts", "rate_limited", "overloaded", "billed_cost")
"""Kept per feature as well, for the incident metrics: an incident is judged on the features
whose provider chain it hits (docs/metrics.md). Filled by the ticks, off the hot path."""
COST_COLUMNS = ("billed_cost", "wasted_cost")
LEVEL_COLUMNS = ("in_flight", "busy_slots", "queue_length", "breakers_open")
SAMPLE_COLUMNS = ("rate_limit_headroom", "budget_level")

Integral = Callable[[float], float]
"""The integral of a level from 0 to T."""


class Tally:
    """Per-feature cumulative counters (tallies of events), plus the in-flight level.

    Attempts in flight = ``sent - attempts``; the integral of that level from 0 to T is
    ``inflight_acc + (sent - attempts) * T``.
    """

    __slots__ = (
        "attempts",
        "baseline",
        "billed",
        "failed_attempts",
        "inflight_acc",
        "latencies",
        "ok_input_tokens",
        "ok_output_tokens",
        "outcomes",
        "quality_failures",
        "requests",
        "retries",
        "sent",
        "status",
        "tpots",
        "ttfts",
        "useful",
        "wasted",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.sent = 0
        self.retries = 0
        self.attempts = 0
        self.failed_attempts = 0
        self.billed = 0.0
        self.useful = 0.0
        self.wasted = 0.0
        self.baseline = 0.0
        self.ok_input_tokens = 0
        self.ok_output_tokens = 0
        self.latencies = array("d")
        # Per successful request, in the order of ``latencies``: its time to first token from
        # arrival, and its time per output token (NaN: fewer than two tokens).
        self.ttfts = array("d")
        self.tpots = array("d")
        self.outcomes: dict[str, int] = dict.fromkeys(REQUEST_OUTCOMES, 0)
        self.status: dict[str, int] = dict.fromkeys(ATTEMPT_STATUSES, 0)
        self.inflight_acc = 0.0
        # Successful requests whose answer a model cascade's last model still got wrong
        # (client/levers.py): they succeeded, but earn no value_per_success.
        self.quality_failures = 0

    @property
    def ok(self) -> int:
        """Requests that succeeded (by outcome: a cache hit has no attempt, and a cascade's
        escalated request has an ok attempt per model it asked)."""
        return self.outcomes[OK]

    @property
    def finished(self) -> int:
        """Requests that reached a terminal outcome."""
        return sum(self.outcomes.values())

    def counters(self) -> dict[str, float]:
        """The cumulative values behind each count and cost column of the time series."""
        out: dict[str, float] = {
            "arrivals": self.requests,
            "attempts": self.sent,
            "retries": self.retries,
            "requests_ok": self.ok,
            "requests_failed": self.finished - self.ok,
            "billed_cost": self.billed,
            "wasted_cost": self.wasted,
        }
        out.update(self.status)
        return out


class Bins:
    """Fixed-width time bins, grown by the ticks as the run goes on."""

    def __init__(self, width: float, expected_end: float) -> None:
        self.width = width
        self.inv = 1.0 / width
        n = math.ceil(expected_end * self.inv) + 2
        self.n = n
        self.counts: dict[str, list[float]] = {c: [0] * n for c in COUNT_COLUMNS}
        self.costs: dict[str, list[float]] = {c: [0.0] * n for c in COST_COLUMNS}
        self.levels: dict[str, list[float]] = {c: [0.0] * n for c in LEVEL_COLUMNS}
        self.samples: dict[str, list[float]] = {c: [math.nan] * n for c in SAMPLE_COLUMNS}
        # Per feature: FEATURE_COLUMNS (by the ticks) and ARRIVAL_COLUMNS (by the clients,
        # indexed by arrival bin). Per provider: the time-integral of its queue in each bin.
        self.by_feature: dict[str, dict[str, list[float]]] = {}
        self.arrived_by_feature: dict[str, dict[str, list[int]]] = {}
        # Per feature: the billed cost of its requests by arrival bin (steady-state projections
        # leave out the requests that arrived while an incident hit the feature).
        self.arrived_cost_by_feature: dict[str, list[float]] = {}
        self.queue_by_provider: dict[str, list[float]] = {}

    def feature(self, name: str) -> dict[str, list[float]]:
        """The per-feature count and cost columns of ``name`` (created empty on first use)."""
        cols = self.by_feature.get(name)
        if cols is None:
            cols = self.by_feature[name] = {c: [0] * self.n for c in FEATURE_COLUMNS}
        return cols

    def arrived_of(self, name: str) -> dict[str, list[int]]:
        """Feature ``name``'s requests that failed / were left unfinished, by arrival bin: the
        lists its client bumps (created empty on first use)."""
        cols = self.arrived_by_feature.get(name)
        if cols is None:
            cols = self.arrived_by_feature[name] = {c: [0] * self.n for c in ARRIVAL_COLUMNS}
        return cols

    def arrived_cost_of(self, name: str) -> list[float]:
        """Feature ``name``'s billed cost by the arrival bin of the request it was billed to:
        the list its client adds to (created empty on first use)."""
        col = self.arrived_cost_by_feature.get(name)
        if col is None:
            col = self.arrived_cost_by_feature[name] = [0.0] * self.n
        return col

    def queue_of(self, provider: str) -> list[float]:
        """Provider ``provider``'s queue-length integral per bin (created empty on first use)."""
        col = self.queue_by_provider.get(provider)
        if col is None:
            col = self.queue_by_provider[provider] = [0.0] * self.n
        return col

    @property
    def arrived(self) -> dict[str, list[int]]:
        """ARRIVAL_COLUMNS summed over the features (a copy: clients write per feature)."""
        out = {c: [0] * self.n for c in ARRIVAL_COLUMNS}
        for cols in self.arrived_by_feature.values():
            for c, lst in cols.items():
                total = out[c]
                for i, v in enumerate(lst):
                    if v:
                        total[i] += v
        return out

    def ensure(self, index: int) -> None:
        """Make sure bin ``index`` exists (growing by half again, so growth is rare)."""
        if index < self.n:
            return
        extra = max(index + 1 - self.n, self.n // 2 + 1)
        # Lists grow in place: clients hold references to their arrival columns.
        groups: list[Mapping[str, list[float]] | Mapping[str, list[int]]] = [
            self.counts,
            self.costs,
            self.levels,
            self.queue_by_provider,
            *self.by_feature.values(),
            *self.arrived_by_feature.values(),
        ]
        for d in groups:
            for lst in d.values():
                lst.extend([0] * extra)
        for cost in self.arrived_cost_by_feature.values():
            cost.extend([0.0] * extra)  # floats: the compiled client adds to them as floats
        for lst in self.samples.values():
            lst.extend([math.nan] * extra)
        self.n += extra

    def arrived_ok_done(self, n: int) -> tuple[list[int], list[int]]:
        """Per arrival bin: requests that succeeded, and requests that reached an outcome."""
        arrived = self.arrived
        arrivals = self.counts["arrivals"][:n]
        failed = arrived["arrived_failed"][:n]
        unfinished = arrived["arrived_unfinished"][:n]
        done = [int(a) - u for a, u in zip(arrivals, unfinished, strict=True)]
        return [d - f for d, f in zip(done, failed, strict=True)], done

    def add_interval(self, column: list[float], start: float, end: float) -> None:
        """Add the overlap of [start, end) with each bin to a level column (time-weighted)."""
        inv = self.inv
        b0 = int(start * inv)
        b1 = int(end * inv)
        self.ensure(b1)
        if b0 == b1:
            column[b0] += end - start
            return
        w = self.width
        column[b0] += (b0 + 1) * w - start
        for b in range(b0 + 1, b1):
            column[b] += w
        column[b1] += end - b1 * w


def _columns(rows: list[tuple[Any, ...]], schema: pa.Schema) -> list[pa.Array]:
    """Row tuples to one Arrow array per field of ``schema``.

    Arrow reads the tuples as structs in C++; a Python transpose (``zip(*rows)``) took two
    and a half times as long on rows scattered over the heap, as a run leaves them.
    """
    return pa.array(rows, type=pa.struct(schema)).flatten()  # type: ignore[no-any-return]


class Recorder:
    """Row buffers, bins and tallies of one run; the engine's components report to it."""

    def __init__(
        self,
        sink: RecordSink | None,
        keep_rows: bool,
        keep_timeseries: bool,
        bin_width: float,
        expected_end: float,
        features: list[str],
    ) -> None:
        self.sink = sink
        self.keep_rows = keep_rows and sink is not None
        self.keep_timeseries = keep_timeseries and sink is not None
        self.requests: list[tuple[Any, ...]] | None = [] if self.keep_rows else None
        self.attempts: list[tuple[Any, ...]] | None = [] if self.keep_rows else None
        # Requests that succeeded on their first attempt: one row (SIMPLE) for both tables.
        self.simple: list[tuple[Any, ...]] | None = [] if self.keep_rows else None
        self.events: list[tuple[Any, ...]] = []
        self.bins = Bins(bin_width, expected_end)
        self.tallies = {f: Tally() for f in features}
        self.integrals: dict[str, Integral] = {}
        self.queue_integrals: dict[str, Integral] = {}
        """Per provider: the integral of its queue length (for the incident metrics)."""
        self._last_counters: dict[str, float] = {}
        self._last_feature: dict[str, dict[str, float]] = {}
        self._last_integrals: dict[str, float] = {}
        self._last_queue: dict[str, float] = {}
        self._sampled_until = 0

    # Time series ------------------------------------------------------------------------------

    def sample(self, now: float, bin_index: int) -> None:
        """Close bin ``bin_index`` at time ``now`` (its end, or the end of the run)."""
        bins = self.bins
        bins.ensure(bin_index + 2)
        totals: dict[str, float] = {}
        for name, tally in self.tallies.items():
            counters = tally.counters()
            for k, v in counters.items():
                totals[k] = totals.get(k, 0) + v
            before = self._last_feature.get(name, {})
            columns = bins.feature(name)
            for k in FEATURE_COLUMNS:
                columns[k][bin_index] += counters[k] - before.get(k, 0)
            self._last_feature[name] = counters
        last = self._last_counters
        for k, v in totals.items():
            column = bins.costs[k] if k in bins.costs else bins.counts[k]
            column[bin_index] += v - last.get(k, 0)
        self._last_counters = totals
        for k, integral in self.integrals.items():
            value = integral(now)
            bins.levels[k][bin_index] += value - self._last_integrals.get(k, 0.0)
            self._last_integrals[k] = value
        for provider, integral in self.queue_integrals.items():
            value = integral(now)
            bins.queue_of(provider)[bin_index] += value - self._last_queue.get(provider, 0.0)
            self._last_queue[provider] = value
        self._sampled_until = bin_index + 1

    def final_sample(self, end: float) -> None:
        """Close the run at ``end``: always sample, so that what happened after the last tick
        (requests ended at ``end``, those cut off as unfinished) is counted.

        When the last tick closed its bin at ``end`` itself, the sample adds to that bin;
        otherwise it opens the partial bin that holds ``end``, however short it is. (A rule
        that skipped the sample when ``end`` was within 1e-9 of a bin edge lost the requests
        that ended in that sliver: 3 of 5 with a run of 30.000000000000004 s.)
        """
        last = self._sampled_until
        b = last if last == 0 or end > last * self.bins.width else last - 1
        self.sample(end, b)

    # Rows -------------------------------------------------------------------------------------

    def flush_if_full(self) -> None:
        """Flush row buffers that reached the batch size."""
        if self.requests is not None and len(self.requests) >= FLUSH_ROWS:
            self._flush("requests", self.requests, REQUESTS)
        if self.attempts is not None and len(self.attempts) >= FLUSH_ROWS:
            self._flush("attempts", self.attempts, ATTEMPTS)
        if self.simple is not None and len(self.simple) >= FLUSH_ROWS:
            self._flush_simple()

    def _flush_simple(self) -> None:
        """Split the combined rows into a requests batch and an attempts batch, by columns."""
        rows = self.simple
        if not rows or self.sink is None:
            if rows is not None:
                rows.clear()
            return
        c = dict(zip(SIMPLE.names, _columns(rows, SIMPLE), strict=True))
        n = len(rows)
        rows.clear()
        arrival, start, end, cost = c["arrival"], c["start"], c["end"], c["cost"]
        requests = [
            c["request_id"], c["feature"], arrival, end, pa.repeat(pa.scalar("ok"), n),
            pa.repeat(pa.scalar(1, pa.int32()), n), c["provider"], c["model"],
            c["input_tokens"], c["output_tokens"], cost, cost, c["baseline"],
            pc.subtract(end, arrival),
        ]  # fmt: skip
        attempts = [
            c["request_id"], pa.repeat(pa.scalar(0, pa.int32()), n), c["feature"],
            c["provider"], c["model"], arrival, start, end, pa.repeat(pa.scalar("ok"), n),
            pa.repeat(pa.scalar(200, pa.int32()), n), pa.repeat(pa.scalar(math.nan), n),
            pc.subtract(start, arrival), c["input_tokens"], c["output_tokens"], cost,
            pa.repeat(pa.scalar(0.0), n), c["ttft"], c["tpot"],
        ]  # fmt: skip
        self.sink.write("requests", pa.RecordBatch.from_arrays(requests, schema=REQUESTS))
        self.sink.write("attempts", pa.RecordBatch.from_arrays(attempts, schema=ATTEMPTS))

    def event(
        self, time: float, kind: str, feature: str, provider: str, detail: str, value: float
    ) -> None:
        """Record an event row (breaker transition, incident start or end, budget state)."""
        self.events.append((time, kind, feature, provider, detail, value))

    def _flush(self, table: str, rows: list[tuple[Any, ...]], schema: pa.Schema) -> None:
        if not rows or self.sink is None:
            rows.clear()
            return
        self.sink.write(table, pa.RecordBatch.from_arrays(_columns(rows, schema), schema=schema))
        rows.clear()

    def close(self, end_time: float) -> None:
        """Flush every buffer and write the time series; call once, after the last sample."""
        if self.requests is not None:
            self._flush("requests", self.requests, REQUESTS)
        if self.attempts is not None:
            self._flush("attempts", self.attempts, ATTEMPTS)
        self._flush_simple()
        if self.sink is None:
            return
        if self.keep_timeseries:
            self.events.sort(key=lambda r: r[0])
            self._flush("events", list(self.events), EVENTS)
            self.sink.write("timeseries", self.timeseries_batch(end_time))
        self.sink.close()

    def used_bins(self) -> int:
        """Bins sampled so far (every bin up to the end of the run, once it is over)."""
        return self._sampled_until

    def timeseries_batch(self, end_time: float) -> pa.RecordBatch:
        """The time series as one record batch, levels as time-weighted means."""
        bins = self.bins
        n = self.used_bins()
        w = bins.width
        spans = [w] * n
        if n:
            # The last bin may be partial, however short (see final_sample).
            partial = end_time - (n - 1) * w
            spans[-1] = partial if partial > 0 else w
        cols: dict[str, Any] = {"time": [i * w for i in range(n)]}
        for d in (bins.counts, bins.costs, bins.samples):
            for k, v in d.items():
                cols[k] = v[:n]
        cols["arrived_ok"], cols["arrived_done"] = bins.arrived_ok_done(n)
        for k, v in bins.levels.items():
            cols[k] = [x / s for x, s in zip(v[:n], spans, strict=True)]
        arrays = [pa.array(cols[f.name], type=f.type) for f in TIMESERIES]
        return pa.RecordBatch.from_arrays(arrays, schema=TIMESERIES)
