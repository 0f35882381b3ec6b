"""Conformance: whether the policy the simulator runs for a client behaves as its code does.

Compare what a real client did against ``llmtraffic serve`` with simulations of the same
scenario, whose policy is the one the simulator runs for it (an SDK preset, a tenacity adapter).

A served session is one realisation of the scenario; simulated replications (other seeds)
give the run-to-run distribution of each statistic. The real session's value passes when it
lies in the 99.9% prediction interval for one more run, ``mean +- t * sd * sqrt(1 + 1/k)``
over the ``k`` simulated runs: a statistic of a whole run, so requests that share a storm
need not be independent. Statistics, per feature and per phase (the requests that arrived in
a time window, e.g. during an incident):

- ``attempts_per_request``: attempts / requests;
- ``max_attempts``: the most attempts any request made (a client's bound shows here when a
  mean, which the storm's timing spreads, cannot tell 3 from 6 attempts);
- ``billed_per_request``: billed cost / requests (USD);
- ``wait_before_retry``: the mean wait between an attempt's outcome and the next attempt;
- ``retried``: the statuses after which the client tried again (a set, compared exactly).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

NUMERIC = ("attempts_per_request", "max_attempts", "billed_per_request", "wait_before_retry")
LEVEL = 0.999
SLACK = {"wait_before_retry": 0.1}
"""The real wait between attempts, as the server measures it (from sending a response to
receiving the next request), includes the network round trip and the client's own
processing, which the simulation has no term for: tens of milliseconds on a loaded machine
(measured 20 to 50 ms with the server and three clients in one process on 2 busy cores),
allowed for with 100 ms."""


@dataclass(frozen=True)
class Phase:
    """The requests of a feature that arrived in ``[start, end)`` simulated seconds."""

    name: str
    start: float
    end: float


@dataclass(frozen=True)
class PhaseStats:
    """The statistics of one feature's requests in one phase of one run."""

    requests: int
    attempts_per_request: float
    max_attempts: float
    billed_per_request: float
    wait_before_retry: float
    retried: frozenset[str]
    # Standard deviations over the requests (for the session's own 95% intervals).
    attempts_sd: float = math.nan
    billed_sd: float = math.nan

    def interval(self, statistic: str) -> tuple[float, float]:
        """The 95% interval of a per-request mean of this run, requests taken as independent
        (they are not quite: a storm couples them; the comparison does not rely on it)."""
        sd = {"attempts_per_request": self.attempts_sd, "billed_per_request": self.billed_sd}
        mean = getattr(self, statistic)
        if statistic not in sd or self.requests < 2:
            return (math.nan, math.nan)
        half = float(sps.t.ppf(0.975, self.requests - 1)) * sd[statistic] / self.requests**0.5
        return (mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    """One statistic of one feature and phase: the real session's value, the simulated runs'
    mean, the prediction interval for one more run, and whether the real value is in it."""

    feature: str
    phase: str
    statistic: str
    real: float
    sim_mean: float
    low: float
    high: float
    real_requests: int
    sim_runs: int
    real_low: float = math.nan
    real_high: float = math.nan

    @property
    def ok(self) -> bool:
        """Whether the real value lies in the interval (NaN on both sides: nothing to test)."""
        if math.isnan(self.real) and math.isnan(self.sim_mean):
            return True
        return self.low <= self.real <= self.high


def phase_stats(
    attempts: pd.DataFrame, requests: pd.DataFrame, feature: str, phase: Phase
) -> PhaseStats:
    """The statistics of ``feature``'s requests that arrived in ``phase`` (a run's or a
    served session's tables; ``llmtraffic.load(folder).attempts`` and ``.requests``)."""
    req = requests[
        (requests.feature == feature)
        & (requests.arrival_time >= phase.start)
        & (requests.arrival_time < phase.end)
    ]
    ids = set(req.request_id.tolist())
    att = attempts[(attempts.feature == feature) & attempts.request_id.isin(ids)]
    n = len(req)
    retries = att[att.attempt > 0]
    per_request = att.groupby("request_id").agg(
        attempts=("attempt", "size"), billed=("cost", "sum")
    )
    # The statuses of the attempts that another attempt of the same request followed.
    last = att.groupby("request_id").attempt.transform("max")
    retried = frozenset(att[att.attempt < last].status.astype(str).tolist())
    return PhaseStats(
        requests=n,
        attempts_per_request=len(att) / n if n else math.nan,
        max_attempts=float(att.groupby("request_id").size().max()) if n else math.nan,
        billed_per_request=float(att.cost.sum()) / n if n else math.nan,
        wait_before_retry=float(retries.wait_before.mean()) if len(retries) else math.nan,
        retried=retried,
        attempts_sd=float(per_request.attempts.std(ddof=1)) if n > 1 else math.nan,
        billed_sd=float(per_request.billed.std(ddof=1)) if n > 1 else math.nan,
    )


def prediction_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The interval that holds one more run's value with probability ``level``, from
    ``values`` of k runs (normal approximation with Student's t: mean +- t sd sqrt(1 + 1/k))."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    k = len(x)
    if k < 2:
        return (math.nan, math.nan)
    t = float(sps.t.ppf(0.5 + level / 2, k - 1))
    half = t * float(x.std(ddof=1)) * math.sqrt(1 + 1 / k)
    mean = float(x.mean())
    return (mean - half, mean + half)


def compare(
    real: Mapping[tuple[str, str], PhaseStats],
    sims: Sequence[Mapping[tuple[str, str], PhaseStats]],
    level: float = LEVEL,
    slack: Mapping[str, float] = SLACK,
) -> list[Comparison]:
    """Each numeric statistic of each (feature, phase) of ``real`` against the simulated
    runs ``sims`` (the same keys); ``slack`` widens a statistic's interval on both sides by
    what the real session adds that the model has no term for."""
    out = []
    for key, r in real.items():
        feature, phase = key
        for name in NUMERIC:
            values = [getattr(s[key], name) for s in sims]
            low, high = prediction_interval(values, level)
            low, high = low - slack.get(name, 0.0), high + slack.get(name, 0.0)
            real_low, real_high = r.interval(name)
            finite = [v for v in values if not math.isnan(v)]
            out.append(
                Comparison(
                    feature,
                    phase,
                    name,
                    getattr(r, name),
                    float(np.mean(finite)) if finite else math.nan,
                    low,
                    high,
                    r.requests,
                    len(sims),
                    real_low,
                    real_high,
                )
            )
    return out


def retried_differences(
    real: Mapping[tuple[str, str], PhaseStats],
    sims: Sequence[Mapping[tuple[str, str], PhaseStats]],
) -> dict[tuple[str, str], tuple[frozenset[str], frozenset[str]]]:
    """Per (feature, phase), the statuses the real client retried that no simulated run did,
    and those every simulated run retried that the real client did not (empty: agree)."""
    out = {}
    for key, r in real.items():
        union = frozenset().union(*(s[key].retried for s in sims))
        common = frozenset.intersection(*(s[key].retried for s in sims)) if sims else frozenset()
        extra, missing = r.retried - union, common - r.retried
        if extra or missing:
            out[key] = (extra, missing)
    return out


def table(rows: Sequence[Comparison]) -> str:
    """The comparisons as a plain-text table (for test output and the docs)."""
    lines = [
        f"{'feature':<8} {'phase':<9} {'statistic':<20} {'real':>9} {'real 95% CI':>22} "
        f"{'sim mean':>9} {'sim 99.9% PI, a run':>22} ok"
    ]
    for c in rows:
        ci = f"[{c.real_low:.4g}, {c.real_high:.4g}]" if c.real_low == c.real_low else "-"
        lines.append(
            f"{c.feature:<8} {c.phase:<9} {c.statistic:<20} {c.real:>9.4g} {ci:>22} "
            f"{c.sim_mean:>9.4g} {f'[{c.low:.4g}, {c.high:.4g}]':>22} "
            f"{'yes' if c.ok else 'NO'}"
        )
    return "\n".join(lines)
