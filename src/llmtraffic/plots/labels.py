"""How metrics are named, scaled and given units on plot axes and in tables."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple


@dataclass(frozen=True)
class MetricLabel:
    """A metric's readable name, its unit and the factor from stored value to shown value."""

    title: str
    unit: str
    scale: float = 1.0
    share: bool = False
    """True for a share of requests, attempts or runs: its value lies in [0, 100] %."""
    signed: bool = False
    """True when the metric can be negative (ROI, extra cost); others are counts, costs,
    times and ratios, never below zero."""

    @property
    def axis(self) -> str:
        """An axis label: title and unit."""
        return f"{self.title} ({self.unit})" if self.unit else self.title


_LABELS = {
    "success_rate": MetricLabel("Request success rate", "%", 100.0, share=True),
    "attempt_error_rate": MetricLabel("Attempt error rate", "%", 100.0, share=True),
    "retry_share": MetricLabel("Retries among attempts", "%", 100.0, share=True),
    "attempt_amplification": MetricLabel("Attempts per request", "attempts / request"),
    "attempts": MetricLabel("Attempts", "count"),
    "requests": MetricLabel("Requests", "count"),
    "successes": MetricLabel("Successful requests", "count"),
    "billed_cost": MetricLabel("Billed cost", "USD"),
    "useful_cost": MetricLabel("Useful cost", "USD"),
    "wasted_cost": MetricLabel("Wasted cost", "USD"),
    "baseline_cost": MetricLabel("Baseline cost", "USD"),
    "cost_amplification": MetricLabel("Cost amplification", "billed / useful"),
    "cost_vs_baseline": MetricLabel("Cost vs baseline", "billed / baseline"),
    "cost_per_success": MetricLabel("Cost per successful request", "USD"),
    "cost_per_hour": MetricLabel("Projected cost per hour", "USD / hour"),
    "cost_per_day": MetricLabel("Projected cost per day", "USD / day"),
    "cost_per_month": MetricLabel("Projected cost per month", "USD / month"),
    "latency_mean": MetricLabel("Mean latency", "s"),
    "latency_p50": MetricLabel("Median latency", "s"),
    "latency_p95": MetricLabel("p95 latency", "s"),
    "latency_p99": MetricLabel("p99 latency", "s"),
    "latency_max": MetricLabel("Max latency", "s"),
    "goodput_rps": MetricLabel("Goodput", "requests / s"),
    "goodput_tokens_per_s": MetricLabel("Goodput", "tokens / s"),
    "peak_attempt_rate_ratio": MetricLabel("Peak attempt rate / mean request rate", "x"),
    "roi": MetricLabel("ROI", "%", 100.0, signed=True),
    "value": MetricLabel("Value", "USD"),
}

_INCIDENT = {
    "recovery_time": MetricLabel("Recovery time after incident {i}", "s"),
    "metastable": MetricLabel("Runs metastable after incident {i}", "%", 100.0, share=True),
    "success_rate_during": MetricLabel("Success rate during incident {i}", "%", 100.0, share=True),
    "success_rate_before": MetricLabel("Success rate before incident {i}", "%", 100.0, share=True),
    "attempt_amplification_during": MetricLabel(
        "Attempts per request during incident {i}", "attempts / request"
    ),
    "extra_cost": MetricLabel("Extra cost of incident {i}", "USD", signed=True),
}

_STATUS = {
    "rate_limited": "429 (rate limited)",
    "server_error": "5xx (server error)",
    "overloaded": "529 (overloaded)",
    "timeout": "timeout",
    "midstream_error": "mid-stream error",
    "quota_exhausted": "429 (quota exhausted)",
    "context_length_exceeded": "400 (context length)",
    "ok": "ok",
}


def metric_label(metric: str) -> MetricLabel:
    """The label of a summary-table column (``feature.chat.billed_cost``, ``incident.0.metastable``
    and ``attempt_statuses.rate_limited`` included)."""
    if metric in _LABELS:
        return _LABELS[metric]
    m = re.fullmatch(r"incident\.(\d+)\.(\w+)", metric)
    if m and m.group(2) in _INCIDENT:
        lab = _INCIDENT[m.group(2)]
        title = lab.title.format(i=int(m.group(1)) + 1)
        return MetricLabel(title, lab.unit, lab.scale, lab.share, lab.signed)
    m = re.fullmatch(r"feature\.([^.]+)\.(.+)", metric)
    if m:
        inner = metric_label(m.group(2))
        title = f"{inner.title} of {m.group(1)}"
        return MetricLabel(title, inner.unit, inner.scale, inner.share, inner.signed)
    m = re.fullmatch(r"attempt_statuses\.(\w+)", metric)
    if m:
        return MetricLabel(f"Attempts with status {_STATUS.get(m.group(1), m.group(1))}", "count")
    m = re.fullmatch(r"outcomes\.(\w+)", metric)
    if m:
        return MetricLabel(f"Requests ending {m.group(1)}", "count")
    return MetricLabel(metric.replace("_", " "), "", signed=True)  # unknown: assume nothing


def status_label(status: str) -> str:
    """A readable name of an attempt status."""
    return _STATUS.get(status, status)


def _norm(name: str) -> str:
    """A metric name as compared with what a user types: case, ``_``/``-`` and spacing aside."""
    return " ".join(re.sub(r"[_\-]+", " ", name.strip().lower()).split())


def metric_names(column: str, short_names: Mapping[str, str] = MappingProxyType({})) -> list[str]:
    """Every name a summary column answers to: the column itself, its label in tables
    (``short_names``: ``per month``) and its title on plots (``Projected cost per month``)."""
    names = [column, metric_label(column).title]
    if column in short_names:
        names.append(short_names[column])
    return names


class MetricMatch(NamedTuple):
    """What a metric name a user typed means (``resolve_metric``)."""

    column: str | None
    """The summary column, when exactly one fits."""
    several: list[str]
    """The columns it fits, when it fits more than one."""
    close: list[str]
    """When it fits none: the columns whose names or labels are closest to it, for a "did
    you mean" hint."""


def resolve_metric(
    name: str, columns: Sequence[str], short_names: Mapping[str, str] = MappingProxyType({})
) -> MetricMatch:
    """The column ``name`` means: a column name, or a label the tables or plots show for one
    (``success``, ``per month``, ``att/req``, ``p95 latency``, ``Request success rate``), in
    any case and with ``_`` or ``-`` for spaces; per feature or incident too
    (``feature.chat.per month``).

    A name that is a column is that column, even when a label of another reads the same.
    """
    import difflib

    if name in columns:
        return MetricMatch(name, [], [])
    wanted = _norm(name)
    matches: dict[str, None] = {}
    for column in columns:
        if any(_norm(n) == wanted for n in metric_names(column, short_names)):
            matches[column] = None
        # A per-feature or per-incident column by its prefix and the label of its metric.
        m = re.fullmatch(r"((?:feature\.[^.]+|incident\.\d+)\.)(.+)", column)
        if m and name.startswith(m.group(1)):
            inner = _norm(name[len(m.group(1)) :])
            if any(_norm(n) == inner for n in metric_names(m.group(2), short_names)):
                matches[column] = None
    if len(matches) == 1:
        return MetricMatch(next(iter(matches)), [], [])
    if matches:
        return MetricMatch(None, list(matches), [])
    known: dict[str, str] = {}  # every name, normalised -> its column
    for column in columns:
        for n in metric_names(column, short_names):
            known.setdefault(_norm(n), column)
    close = difflib.get_close_matches(wanted, list(known), n=4, cutoff=0.6)
    # A part of a name ("p95", "month") is a hint too, though too short to be "close".
    close += [k for k in known if f" {wanted} " in f" {k} " and k not in close]
    return MetricMatch(None, [], list(dict.fromkeys(known[c] for c in close))[:4])
