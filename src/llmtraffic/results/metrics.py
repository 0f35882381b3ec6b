"""The run summary: every metric of docs/metrics.md, computed once, here, from the tallies and
time-series bins a run kept. docs/metrics.md gives each formula; keep the two in step."""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


@dataclass(frozen=True)
class SloBounds:
    """A feature's latency objectives in seconds (None: no bound), as ``tally_metrics`` reads
    them (config: ``features.NAME.slo``)."""

    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None


def _percentiles(values: np.ndarray, prefix: str) -> dict[str, float]:
    """p50, p95 and p99 of the defined (non-NaN) values; NaN when there are none."""
    defined = values[~np.isnan(values)]
    if not defined.size:
        return {f"{prefix}_p{q}": math.nan for q in (50, 95, 99)}
    p50, p95, p99 = (float(x) for x in np.percentile(defined, [50, 95, 99]))
    return {f"{prefix}_p50": p50, f"{prefix}_p95": p95, f"{prefix}_p99": p99}


def _ttfts(tally: Tally) -> array[float]:
    """The successful requests' times to first token: kept for a streamed feature; a
    non-streamed answer's first token is all of it, so its latency."""
    return tally.ttfts if len(tally.ttfts) == len(tally.latencies) else tally.latencies


def _within_slo(tally: Tally, slo: SloBounds) -> int:
    """Successful requests of ``tally`` that meet every bound of ``slo`` (an undefined time,
    such as no token at all, meets its bound; a tpot bound needs the token model, which the
    config checks)."""
    met = np.ones(len(tally.latencies), dtype=bool)
    for times, bound in (
        (_ttfts(tally), slo.ttft),
        (tally.tpots, slo.tpot),
        (tally.latencies, slo.e2e),
    ):
        if bound is not None and len(times) == len(met):
            met &= ~(np.frombuffer(times, dtype=float) > bound)
    return int(met.sum())


def tally_metrics(
    tallies: list[Tally],
    duration: float,
    values: list[float | None],
    steady: tuple[float, float] | None = None,
    slos: list[SloBounds | None] | None = None,
) -> dict[str, Any]:
    """Request, attempt, cost and latency metrics over the given tallies (a feature, or all).

    ``steady`` is (billed cost per second, seconds) of the steady state (``steady_cost_rate``):
    the projections per hour, day and month scale it. Without it they scale the whole run.
    ``slos``, one per tally, adds SLO attainment and goodput over the tallies that have one.
    """
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
    rate, seconds = steady if steady is not None else (billed / duration, duration)
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
        "cost_per_hour": rate * HOUR,
        "cost_per_day": rate * DAY,
        "cost_per_month": rate * MONTH,
        "projection_seconds": seconds,
        "outcomes": dict(sorted(outcomes.items())),
        "attempt_statuses": dict(sorted(statuses.items())),
    }

    def joined(arrays: list[array[float]]) -> np.ndarray:
        parts = [np.frombuffer(a, dtype=float) for a in arrays]
        return np.concatenate(parts) if parts else np.empty(0)

    out.update(_percentiles(joined([_ttfts(t) for t in tallies]), "ttft"))
    out.update(_percentiles(joined([t.tpots for t in tallies]), "tpot"))
    if any(v is not None for v in values):
        # A cascade's quality failure succeeded with an answer not good enough: no value.
        value = sum(
            (t.ok - t.quality_failures) * (v or 0.0) for t, v in zip(tallies, values, strict=True)
        )
        out["value"] = value
        out["roi"] = ratio(value - billed, billed)
        out["net_value"] = value - billed
        # The whole window scaled (incidents included), unlike the steady cost projections:
        # value has no steady-state split, and a lever's effect is on the whole window.
        out["net_value_per_month"] = (value - billed) / duration * MONTH
    if slos is not None and any(s is not None for s in slos):
        # GuideLLM's and inference-perf's rule: every request counts, a failed one misses.
        judged = [(t, s) for t, s in zip(tallies, slos, strict=True) if s is not None]
        met = sum(_within_slo(t, s) for t, s in judged)
        out["slo_attainment"] = ratio(met, sum(t.requests for t, _ in judged))
        out["slo_goodput_rps"] = met / duration
    return out


def steady_cost_rate(
    cost_by_arrival: Sequence[float],
    affected: Sequence[tuple[float, float]],
    duration: float,
    width: float,
) -> tuple[float, float]:
    """Billed cost per second of the steady state, and the seconds it is measured over.

    The steady state is the arrival span outside the ``affected`` spans (an incident's start
    to its recovery, or to the end of the arrivals when it did not recover): the cost billed
    to the requests that arrived in the whole bins outside them, over those bins' seconds. A
    run with no steady bin gives (nan, 0): no projection.
    """
    last = math.ceil(duration / width - 1e-9)
    cost = 0.0
    seconds = 0.0
    for k in range(last):
        lo, hi = k * width, min((k + 1) * width, duration)
        if any(a < hi and lo < b for a, b in affected):
            continue
        cost += cost_by_arrival[k] if k < len(cost_by_arrival) else 0.0
        seconds += hi - lo
    return (cost / seconds if seconds > 0 else math.nan), seconds


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
    "features",
    "success_rate_before",
    "success_rate_during",
    "attempt_amplification_during",
    "extra_cost",
    "unserved_requests",
    "unserved_cost",
    "affected_until",
    "recovery_time",
    "metastable",
    "metastable_reason",
    "horizon",
    "attempt_amplification_before",
    "attempt_amplification_after",
    "rate_limited_share_before",
    "rate_limited_share_after",
    "overloaded_share_before",
    "overloaded_share_after",
    "queue_length_before",
    "queue_length_after",
)
"""The keys of ``incident_metrics``: one entry of summary.json's ``incidents`` list."""

BINARY_KEYS = frozenset({"metastable"})
"""Summary keys whose value per run is a flag (true / false, 1 / 0 in summary.csv): checks
judge them as counts of runs (exact binomial intervals), not with t intervals."""

LIMIT_KINDS = ("rpm", "tpm", "itpm", "otpm", "rpd", "tpd")
"""A provider's rate limits, in the order ``RateLimiter.rejected`` counts its 429s: the
summary's ``rate_limited_by`` has one count per ``<provider>.<kind>`` that refused any."""

BATCHING_KEYS = ("mean_batch", "max_batch", "tpot_mean", "tpot_slowdown")
"""Keys of summary.json's ``batching.<provider>`` (providers with continuous batching)."""

LEVER_ROUTE_KEYS = (
    "requests",
    "attempts",
    "billed_cost",
    "answered",
    "latency_mean",
    "quality_failures",
    "escalated",
    "escalation_share",
)
"""Keys of a feature's ``routes.<provider>`` (a cascade or a split; client/levers.py)."""

CASCADE_KEYS = ("escalations", "escalation_cost", "quality_failures", "quality_failure_share")
"""Scalar keys a cascade adds to its feature (the run sums all but the share)."""

CACHE_KEYS = ("cache_hits", "cache_hit_rate", "cache_saved_cost")
"""Scalar keys a response cache adds to its feature (the run sums all but the rate)."""

CAPPED_KEYS = ("spend_cap_refused", "spend_cap_prevented_cost")
"""Scalar keys a feature under a spend cap gets (the run sums them)."""

SPEND_CAP_KEYS = ("usd", "period", "billed_cost", "refused", "prevented_cost", "tenants")
"""Scalar keys of summary.json's ``spend_caps.<name>`` (its ``tenants_refused`` is a list)."""

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


def tally_metric_keys(with_value: bool = True, with_slo: bool = True) -> list[str]:
    """The scalar keys ``tally_metrics`` writes (``value`` and ``roi`` only ``with_value``,
    the SLO metrics only ``with_slo``), without the count tables ``outcomes`` and
    ``attempt_statuses``."""
    slo = [SloBounds(e2e=1.0) if with_slo else None]
    keys = tally_metrics([Tally()], 1.0, [1.0 if with_value else None], slos=slo)
    return [k for k in keys if k not in ("outcomes", "attempt_statuses")]


LAYER_KEYS = ("calls", "calls_per_request", "calls_per_outer_call")
"""Keys of each layer's entry in a feature's ``layers`` (``layer_metrics``)."""

LAYERED_KEYS = ("attempts_per_request_max", "attempt_bound")
"""Scalar keys ``layer_metrics`` adds to a feature with retry layers."""


def layer_metrics(
    calls: dict[str, int], requests: int, most_attempts: int, bound: int
) -> dict[str, Any]:
    """Calls per retry layer of one feature (docs/metrics.md, "Retry layers").

    ``calls`` maps each layer, outermost first and ``sdk`` last, to the calls it made to the
    layer below (``sdk``'s are the attempts sent). ``calls_per_outer_call`` divides by the
    calls of the layer above (the requests, for the outermost): the product over the layers
    is attempts / requests. ``most_attempts`` is the most attempts one request made, ``bound``
    the most the policy allows (``Policy.attempt_bound``).
    """
    layers: dict[str, dict[str, float]] = {}
    outer = requests
    for name, n in calls.items():
        layers[name] = {
            "calls": n,
            "calls_per_request": ratio(n, requests),
            "calls_per_outer_call": ratio(n, outer),
        }
        outer = n
    return {"layers": layers, "attempts_per_request_max": most_attempts, "attempt_bound": bound}


def hedge_metrics(hedges: int, wins: int, cancelled: int, sent: int) -> dict[str, Any]:
    """Hedged requests of one feature (docs/metrics.md, "Hedged requests"): the hedge
    attempts sent, their share of all attempts sent (the spend hedging adds, in attempts),
    how many requests a hedge answered first, and the attempts cancelled because another
    of their request succeeded (recorded with status timeout)."""
    return {
        "hedges": hedges,
        "hedge_share": ratio(hedges, sent),
        "hedge_wins": wins,
        "hedges_cancelled": cancelled,
    }


ROUTE_KEYS = ("attempts", "share", "cooldowns", "cooldown_skips")
"""Per deployment of a route, under ``route.deployments.<name>`` (``route_metrics``)."""


def route_metrics(
    strategy: str, deployments: list[tuple[str, int, int, int]], rejected: int
) -> dict[str, Any]:
    """Routing across deployments for one feature (docs/metrics.md, "Routing"): per
    deployment, the attempts sent to it, their share of the attempts the route sent, the
    times it was cooled down and the picks it was left out of while cooling down; and the
    requests no deployment could take (``rejected_route``)."""
    sent = sum(attempts for _, attempts, _, _ in deployments)
    return {
        "route": {
            "strategy": strategy,
            "rejected_route": rejected,
            "deployments": {
                name: dict(
                    zip(
                        ROUTE_KEYS,
                        (attempts, ratio(attempts, sent), cooldowns, skipped),
                        strict=True,
                    )
                )
                for name, attempts, cooldowns, skipped in deployments
            },
        }
    }


@dataclass(frozen=True)
class RecoveryRule:
    """How recovery is judged (``run.recovery``; docs/metrics.md, "Recovery and metastability")."""

    tolerance: float = 0.02
    window: float = 60.0
    baseline: float = 300.0
    horizon: float = 600.0
    hold: float = 300.0


def _bins(seconds: float, width: float) -> int:
    """Whole bins that cover ``seconds`` (at least one)."""
    return max(1, math.ceil(seconds / width - 1e-9))


def incident_metrics(
    inc: IncidentSpan,
    bins: Bins,
    duration: float,
    rule: RecoveryRule,
    features: Sequence[str],
    stop: float = math.inf,
) -> dict[str, Any]:
    """Success rate and extra cost during an incident, recovery time and metastability, on the
    requests of ``features`` (those whose provider chain includes the incident's provider).

    Success rates are by arrival bin; windows start on bin edges. The *level* is the success
    rate of the requests that arrived in the ``rule.baseline`` seconds before the start. A
    window is *good* when its requests succeed at >= level - tolerance (or it has none).
    Windows are judged from the end of the incident up to the *judged end*: end + horizon +
    hold, or earlier when the arrivals stop or another incident on these features starts
    (``stop``). The *recovery* is the start r of the first window from which every window
    up to the judged end is good, provided r <= end + horizon and at least ``hold`` seconds
    of good windows follow it; ``recovery_time`` = r - end. Not recovered while the judged
    end reaches end + horizon + hold: ``metastable``. Otherwise the run is too short to tell
    (``metastable`` null, ``metastable_reason`` says why).
    """
    w = bins.width
    n = bins.n
    zero = np.zeros(n)

    def total(column: str) -> np.ndarray:
        out = zero.copy()
        for f in features:
            if f in bins.by_feature:
                out += np.asarray(bins.by_feature[f][column], dtype=float)
        return out

    def arrived(column: str) -> np.ndarray:
        out = zero.copy()
        for f in features:
            if f in bins.arrived_by_feature:
                out += np.asarray(bins.arrived_by_feature[f][column], dtype=float)
        return out

    arrived_cost = zero.copy()
    for f in features:
        col = bins.arrived_cost_by_feature.get(f)
        if col is not None:
            arrived_cost += np.asarray(col[:n], dtype=float)
    arrivals = total("arrivals")
    done = arrivals - arrived("arrived_unfinished")
    ok = done - arrived("arrived_failed")
    attempts = total("attempts")
    limited = total("rate_limited")
    overloaded = total("overloaded")
    cost = total("billed_cost")
    queue = np.asarray(bins.queue_by_provider.get(inc.provider, zero), dtype=float)

    last = min(n, math.ceil(duration / w - 1e-9))  # bins that hold arrivals
    b_start = int(inc.start // w)
    b_end = math.ceil(inc.end / w - 1e-9)
    b_pre = max(0, int((inc.start - rule.baseline) // w))
    wb = _bins(rule.window, w)
    hb = max(wb, _bins(rule.hold, w))
    k_horizon = b_end + math.ceil(rule.horizon / w - 1e-9)  # latest recovery start
    k_judged = k_horizon + hb  # a verdict needs good windows up to here
    k_stop = min(last, math.ceil(stop / w - 1e-9) if math.isfinite(stop) else last)
    k_end = max(b_end, min(k_judged, k_stop))

    def rate(num: np.ndarray, den: np.ndarray, a: int, b: int) -> float:
        return ratio(float(num[a:b].sum()), float(den[a:b].sum()))

    level = rate(ok, done, b_pre, b_start)
    k_rec = b_end
    recovery = math.nan
    metastable: bool | None = None
    reason: str
    if not features:
        reason = f"no feature sends to {inc.provider}"
    elif math.isnan(level):
        reason = "no request ended in the baseline span before the incident: no level"
    else:
        floor = level - rule.tolerance
        # Earliest window start from which every window up to k_end is good: one past the
        # last bad one.
        for k in range(b_end, k_end - wb + 1):
            d = float(done[k : k + wb].sum())
            if d and float(ok[k : k + wb].sum()) / d < floor:
                k_rec = k + 1
        if k_rec <= min(k_horizon, k_end - hb):
            recovery = max(0.0, k_rec * w - inc.end)
            metastable = False
            reason = (
                f"back to the level {recovery:g} s after the end and held for "
                f"{(k_end - k_rec) * w:g} s"
            )
        elif k_end >= k_judged:
            metastable = True
            reason = (
                f"not back to the level ({level:.4g} - {rule.tolerance:g}) for {hb * w:g} s "
                f"within {rule.horizon:g} s of the end"
            )
        elif inc.end >= duration:
            reason = "the incident lasts until the arrivals stop: nothing to recover into"
        else:
            seen = max(0.0, k_end * w - inc.end)
            why = "the arrivals stop" if k_stop == last else "another incident starts"
            reason = (
                f"{why} {seen:g} s after the end; a verdict needs "
                f"{(k_judged * w - inc.end):g} s (horizon {rule.horizon:g} s + hold "
                f"{hb * w:g} s)"
            )
    pre_rate = ratio(float(cost[b_pre:b_start].sum()), (b_start - b_pre) * w)
    # Extra cost runs to the recovery, or to the end of what was judged.
    b_stop = max(b_end, k_rec if metastable is False else k_end)
    span_cost = float(cost[b_start:b_stop].sum())
    extra = span_cost - pre_rate * (b_stop - b_start) * w if not math.isnan(pre_rate) else math.nan
    # Work not done: requests that arrived in the span and did not succeed, priced at the
    # cost per request that arrived before the incident (what serving them would have cost).
    unserved = float((arrivals - ok)[b_start : min(b_stop, last)].sum())
    per_request = ratio(
        float(arrived_cost[b_pre:b_start].sum()), float(arrivals[b_pre:b_start].sum())
    )
    # Until when the features are not in their steady state (projections leave it out).
    affected_until = min(duration, inc.end + recovery) if metastable is False else duration
    # Evidence of a loop that outlives the trigger: the last ``hold`` of the judged span.
    a_tail = max(b_end, k_end - hb)
    return {
        "provider": inc.provider,
        "kind": inc.kind,
        "start": inc.start,
        "end": inc.end,
        "features": ",".join(features),
        "success_rate_before": level,
        "success_rate_during": rate(ok, done, b_start, min(b_end, last)),
        "attempt_amplification_during": rate(attempts, arrivals, b_start, b_end),
        "extra_cost": extra,
        "unserved_requests": unserved,
        "unserved_cost": unserved * per_request,
        "affected_until": max(affected_until, inc.start),
        "recovery_time": recovery,
        "metastable": metastable,
        "metastable_reason": reason,
        "horizon": rule.horizon,
        "attempt_amplification_before": rate(attempts, arrivals, b_pre, b_start),
        "attempt_amplification_after": rate(attempts, arrivals, a_tail, k_end),
        "rate_limited_share_before": rate(limited, attempts, b_pre, b_start),
        "rate_limited_share_after": rate(limited, attempts, a_tail, k_end),
        "overloaded_share_before": rate(overloaded, attempts, b_pre, b_start),
        "overloaded_share_after": rate(overloaded, attempts, a_tail, k_end),
        "queue_length_before": ratio(float(queue[b_pre:b_start].sum()), (b_start - b_pre) * w),
        "queue_length_after": ratio(float(queue[a_tail:k_end].sum()), (k_end - a_tail) * w),
    }


def latencies_of(tallies: list[Tally]) -> array[float]:
    """All successful requests' latencies (for plots and tests)."""
    out = array("d")
    for t in tallies:
        out.extend(t.latencies)
    return out


class SessionCounts(Protocol):
    """What ``session_metrics`` reads of a feature's sessions (workload.sessions.SessionStats)."""

    started: int
    outcomes: dict[str, int]
    turns: int
    tokens: int
    duration: float
    ended: int
    cuts: int


def session_metrics(stats: SessionCounts, agent: bool, billed: float) -> dict[str, Any]:
    """Sessions (or agent tasks, when ``agent``) of one closed-loop feature (docs/metrics.md,
    "Sessions and agent tasks"). ``billed`` is the feature's billed cost: every request of a
    closed-loop feature is a turn of one of its sessions, so it is their cost."""
    s, turn = ("task", "call") if agent else ("session", "turn")
    done = "succeeded" if agent else "completed"
    n = stats.started
    out = stats.outcomes
    metrics: dict[str, Any] = {
        f"{s}s": n,
        f"{s}s_{done}": out["completed"],
        f"{s}s_abandoned": out["abandoned"],
        f"{s}s_unfinished": out["unfinished"],
    }
    if not agent:
        metrics["sessions_partial"] = out["partial"]
    metrics.update(
        {
            f"{s}_success_rate": ratio(out["completed"], n),
            f"{turn}s_per_{s}": ratio(stats.turns, n),
            f"tokens_per_{s}": ratio(stats.tokens, n),
            f"cost_per_{s}": ratio(billed, n),
            f"cost_per_{done}_{s}": ratio(billed, out["completed"]),
            f"{s}_duration_mean": ratio(stats.duration, stats.ended),
            "context_cuts": stats.cuts,
        }
    )
    return metrics


def session_metric_keys(agent: bool) -> list[str]:
    """The keys ``session_metrics`` gives a chat (or, with ``agent``, an agent) feature: what
    ``llmtraffic check`` may name before any run (checks.columns)."""

    class _Empty:
        started = turns = tokens = ended = cuts = 0
        duration = 0.0
        outcomes = dict.fromkeys(("completed", "partial", "abandoned", "unfinished"), 0)

    return list(session_metrics(_Empty(), agent, 0.0))
