"""The run summary: every metric of docs/metrics.md, computed once, here, from the tallies and
time-series bins a run kept. docs/metrics.md gives each formula; keep the two in step."""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmtraffic.results.recorder import Bins, Tally

HOUR = 3600.0
DAY = 86400.0
MONTH = 30 * DAY
"""A month is 30 days in every projection (the article's $5,000/day -> $150,000/month)."""


@dataclass(frozen=True)
class IncidentSpan:
    """An incident as the summary needs it."""

    provider: str
    kind: str
    start: float
    end: float


def ratio(num: float, den: float) -> float:
    """The quotient, or NaN when ``den`` is 0 (reported as null: the metric is undefined)."""
    return num / den if den else math.nan


def tally_metrics(
    tallies: list[Tally], duration: float, values: list[float | None]
) -> dict[str, Any]:
    """Request, attempt, cost and latency metrics over the given tallies (a feature, or all)."""
    requests = sum(t.requests for t in tallies)
    ok = sum(t.ok for t in tallies)
    attempts = sum(t.attempts for t in tallies)
    failed = sum(t.failed_attempts for t in tallies)
    billed = sum(t.billed for t in tallies)
    useful = sum(t.useful for t in tallies)
    baseline = sum(t.baseline for t in tallies)
    lat = (
        np.concatenate([np.frombuffer(t.latencies, dtype=float) for t in tallies])
        if tallies
        else np.empty(0)
    )
    if lat.size:
        p50, p95, p99 = (float(x) for x in np.percentile(lat, [50, 95, 99]))
        lmax = float(lat.max())
        lmean = float(lat.mean())
    else:
        p50 = p95 = p99 = lmax = lmean = math.nan
    outcomes: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for t in tallies:
        for k, v in t.outcomes.items():
            if v:
                outcomes[k] = outcomes.get(k, 0) + v
        for k, v in t.status.items():
            if v:
                statuses[k] = statuses.get(k, 0) + v
    out: dict[str, Any] = {
        "requests": requests,
        "successes": ok,
        "attempts": attempts,
        "attempt_amplification": ratio(attempts, requests),
        "success_rate": ratio(ok, requests),
        "attempt_error_rate": ratio(failed, attempts),
        "billed_cost": billed,
        "useful_cost": useful,
        "wasted_cost": billed - useful,
        "cost_amplification": ratio(billed, useful),
        "baseline_cost": baseline,
        "cost_vs_baseline": ratio(billed, baseline),
        "latency_mean": lmean,
        "latency_p50": p50,
        "latency_p95": p95,
        "latency_p99": p99,
        "latency_max": lmax,
        "goodput_rps": ok / duration,
        "goodput_tokens_per_s": sum(t.ok_input_tokens + t.ok_output_tokens for t in tallies)
        / duration,
        "cost_per_success": ratio(billed, ok),
        "cost_per_hour": billed / duration * HOUR,
        "cost_per_day": billed / duration * DAY,
        "cost_per_month": billed / duration * MONTH,
        "outcomes": dict(sorted(outcomes.items())),
        "attempt_statuses": dict(sorted(statuses.items())),
    }
    if any(v is not None for v in values):
        value = sum(t.ok * (v or 0.0) for t, v in zip(tallies, values, strict=True))
        out["value"] = value
        out["roi"] = ratio(value - billed, billed)
    return out


def peak_attempt_rate_ratio(bins: Bins, n_bins: int, requests: int, duration: float) -> float:
    """Highest attempts per second in any bin, over the mean request arrival rate."""
    if requests == 0 or n_bins == 0:
        return math.nan
    peak = max(bins.counts["attempts"][:n_bins]) / bins.width
    return peak / (requests / duration)


INCIDENT_KEYS = (
    "provider",
    "kind",
    "start",
    "end",
    "success_rate_before",
    "success_rate_during",
    "attempt_amplification_during",
    "extra_cost",
    "recovery_time",
    "metastable",
)
"""The keys of ``incident_metrics``: one entry of summary.json's ``incidents`` list."""

RUN_KEYS = (
    "peak_attempt_rate_ratio",
    "retry_share",
    "scenario",
    "seed",
    "config_hash",
    "version",
    "schema_version",
    "duration",
    "sim_end_time",
    "event_count",
    "wall_time_s",
)
"""Keys of summary.json besides the metrics of ``tally_metrics``, ``features`` and
``incidents`` (written by ``llmtraffic.simulation``)."""


def tally_metric_keys(with_value: bool = True) -> list[str]:
    """The scalar keys ``tally_metrics`` writes (``value`` and ``roi`` only ``with_value``),
    without the count tables ``outcomes`` and ``attempt_statuses``."""
    keys = tally_metrics([Tally()], 1.0, [1.0 if with_value else None])
    return [k for k in keys if k not in ("outcomes", "attempt_statuses")]


def incident_metrics(
    inc: IncidentSpan,
    bins: Bins,
    duration: float,
    tolerance: float,
    window: float,
    baseline: float,
) -> dict[str, Any]:
    """Success rate and extra cost during an incident, recovery time and metastability.

    Success rates are those of requests by arrival bin. The level is the success rate of the
    requests that arrived in the ``baseline`` seconds before the start. Recovery is the first
    time t >= end such that the requests arriving in [t, t + window) succeed at a rate of at
    least level - tolerance; ``recovery_time`` = t - end. When windows fit after the incident
    but none recovers before the arrivals stop, the incident is ``metastable``; when not even
    one window fits (or there is no level), ``metastable`` is None: the run cannot tell.
    """
    w = bins.width
    arrived_ok, arrived_done = bins.arrived_ok_done(bins.n)
    ok = np.asarray(arrived_ok, dtype=float)
    done = np.asarray(arrived_done, dtype=float)
    cost = np.asarray(bins.costs["billed_cost"], dtype=float)
    attempts = np.asarray(bins.counts["attempts"], dtype=float)
    arrivals = np.asarray(bins.counts["arrivals"], dtype=float)
    last = min(len(ok), math.ceil(duration / w - 1e-9))  # bins that hold arrivals
    b_start = int(inc.start // w)
    b_end = math.ceil(inc.end / w - 1e-9)
    b_pre = max(0, int((inc.start - baseline) // w))

    def rate(a: int, b: int) -> float:
        return ratio(float(ok[a:b].sum()), float(done[a:b].sum()))

    level = rate(b_pre, b_start)
    during = rate(b_start, min(b_end, last))
    wb = max(1, math.ceil(window / w - 1e-9))
    recovery = math.nan
    metastable: bool | None = None
    # Judged only when at least one whole window of arrivals follows the incident; otherwise
    # the run is too short to say (null), not "did not recover".
    if not math.isnan(level) and b_end + wb <= last:
        metastable = True
        cum_ok = np.concatenate(([0.0], np.cumsum(ok[:last])))
        cum_done = np.concatenate(([0.0], np.cumsum(done[:last])))
        for k in range(b_end, last - wb + 1):
            d = cum_done[k + wb] - cum_done[k]
            if d and (cum_ok[k + wb] - cum_ok[k]) / d >= level - tolerance:
                recovery = max(0.0, k * w - inc.end)
                metastable = False
                break
    pre_span = (b_start - b_pre) * w
    pre_rate = ratio(float(cost[b_pre:b_start].sum()), pre_span)
    b_stop = b_end + (math.ceil(recovery / w) if not math.isnan(recovery) else 0)
    if metastable:
        b_stop = last
    b_stop = max(b_stop, b_end)
    span_cost = float(cost[b_start:b_stop].sum())
    extra = span_cost - pre_rate * (b_stop - b_start) * w if not math.isnan(pre_rate) else math.nan
    return {
        "provider": inc.provider,
        "kind": inc.kind,
        "start": inc.start,
        "end": inc.end,
        "success_rate_before": level,
        "success_rate_during": during,
        "attempt_amplification_during": ratio(
            float(attempts[b_start:b_end].sum()), float(arrivals[b_start:b_end].sum())
        ),
        "extra_cost": extra,
        "recovery_time": recovery,
        "metastable": metastable,
    }


def latencies_of(tallies: list[Tally]) -> array[float]:
    """All successful requests' latencies (for plots and tests)."""
    out = array("d")
    for t in tallies:
        out.extend(t.latencies)
    return out
