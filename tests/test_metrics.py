"""Summary metrics on hand-built cases: recovery time, metastability, peak ratio, extra cost."""

from __future__ import annotations

import math
from typing import Any

import pytest

from llmtraffic.results.metrics import (
    IncidentSpan,
    RecoveryRule,
    incident_metrics,
    peak_attempt_rate_ratio,
    ratio,
)
from llmtraffic.results.recorder import Bins


def bins_with(
    success_by_bin: list[float], per_bin: int = 100, cost: float = 1.0, feature: str = "f"
) -> Bins:
    """10 s bins; each bin has ``per_bin`` arrivals of ``feature`` of which a share succeeded."""
    b = Bins(10.0, 10.0 * len(success_by_bin))
    add_feature(b, feature, success_by_bin, per_bin, cost)
    return b


def add_feature(
    b: Bins, feature: str, success_by_bin: list[float], per_bin: int = 100, cost: float = 1.0
) -> None:
    cols, arrived = b.feature(feature), b.arrived_of(feature)
    for i, share in enumerate(success_by_bin):
        arrived["arrived_failed"][i] = per_bin - round(per_bin * share)
        cols["arrivals"][i] = per_bin
        cols["attempts"][i] = per_bin
        cols["billed_cost"][i] = cost


def judge(
    b: Bins,
    inc: IncidentSpan,
    duration: float,
    window: float,
    features: tuple[str, ...] = ("f",),
    **rule: float,
) -> dict[str, Any]:
    """incident_metrics with the default tolerance (0.02) and a 100 s baseline."""
    params: dict[str, float] = {"tolerance": 0.02, "window": window, "baseline": 100.0}
    params.update(rule)
    return incident_metrics(inc, b, duration, RecoveryRule(**params), features)


def test_recovery_time_is_the_start_of_a_sustained_return() -> None:
    # Bins 0-9 good (100%), incident in bins 10-15, bins 16-19 still bad, then good.
    shares = [1.0] * 10 + [0.2] * 6 + [0.5] * 4 + [1.0] * 30
    b = bins_with(shares)
    inc = IncidentSpan("p", "brownout", 100.0, 160.0)
    m = judge(b, inc, 500.0, 20.0, horizon=100.0, hold=100.0)
    assert m["success_rate_before"] == pytest.approx(1.0)
    assert m["success_rate_during"] == pytest.approx(0.2)
    # Windows of two bins: [160,180) = 0.5, ..., [190, 210) = 0.75, [200, 220) = 1: 40 s.
    assert m["recovery_time"] == pytest.approx(40.0)
    assert m["metastable"] is False
    assert m["metastable_reason"].startswith("back to the level 40 s after the end")


def test_one_good_minute_is_not_a_recovery() -> None:
    """The issue's case: a good minute, then 10 minutes at 10% success (f8966f2: recovery 0,
    not metastable, extra cost 0). Horizon 600 s and hold 300 s (the defaults): judged to
    160 + 900 = 1060 s; never back for good, so metastable, and the extra cost runs to the
    judged end: 96 bins at 3 instead of 1."""
    shares = [1.0] * 10 + [0.0] * 6 + [1.0] * 6 + [0.1] * 88
    b = bins_with(shares)
    for i in range(10, len(shares)):
        b.feature("f")["billed_cost"][i] = 3.0
    inc = IncidentSpan("p", "outage", 100.0, 160.0)
    m = judge(b, inc, 1100.0, 60.0)
    assert m["metastable"] is True
    assert math.isnan(m["recovery_time"])
    assert m["extra_cost"] == pytest.approx(96 * (3.0 - 1.0))
    assert "within 600 s of the end" in m["metastable_reason"]


def test_a_return_after_a_relapse_counts_from_the_return() -> None:
    """A good minute, 5 minutes at 10%, then good for good: recovered when it came back for
    good (bin 52, 360 s after the end), not at the first good minute."""
    shares = [1.0] * 10 + [0.0] * 6 + [1.0] * 6 + [0.1] * 30 + [1.0] * 60
    b = bins_with(shares)
    m = judge(b, IncidentSpan("p", "outage", 100.0, 160.0), 1120.0, 60.0)
    assert m["metastable"] is False
    assert m["recovery_time"] == pytest.approx(360.0)


def test_not_back_within_the_horizon_is_metastable() -> None:
    shares = [0.99] * 10 + [0.1] * 30
    b = bins_with(shares)
    inc = IncidentSpan("p", "outage", 100.0, 150.0)
    # Judged to 150 + 100 + 100 = 350 s, before the arrivals stop at 400 s.
    m = judge(b, inc, 400.0, 30.0, horizon=100.0, hold=100.0)
    assert m["metastable"] is True
    assert math.isnan(m["recovery_time"])
    # Extra cost: the pre-incident rate (1 per bin) over the judged span: 0.
    assert m["extra_cost"] == pytest.approx(0.0)


def test_back_only_after_the_horizon_is_metastable() -> None:
    """Recovered 150 s after the end with a 100 s horizon: too late, metastable."""
    shares = [1.0] * 10 + [0.0] * 5 + [0.1] * 15 + [1.0] * 30
    b = bins_with(shares)
    m = judge(b, IncidentSpan("p", "outage", 100.0, 150.0), 600.0, 10.0, horizon=100, hold=50)
    assert m["metastable"] is True
    assert math.isnan(m["recovery_time"])
    # With a 200 s horizon the same run recovered, 150 s after the end.
    m = judge(b, IncidentSpan("p", "outage", 100.0, 150.0), 600.0, 10.0, horizon=200, hold=50)
    assert m["metastable"] is False and m["recovery_time"] == pytest.approx(150.0)


def test_within_tolerance_counts_as_recovered() -> None:
    shares = [0.95] * 10 + [0.0] * 5 + [0.94] * 25
    b = bins_with(shares)
    inc = IncidentSpan("p", "outage", 100.0, 150.0)
    m = judge(b, inc, 400.0, 10.0, horizon=100.0, hold=50.0)
    assert m["recovery_time"] == pytest.approx(0.0)


def test_extra_cost_during_a_storm() -> None:
    b = bins_with([1.0] * 10 + [0.5] * 3 + [1.0] * 10)
    for i in (10, 11, 12):
        b.feature("f")["billed_cost"][i] = 3.0  # retries triple the spend during the incident
    inc = IncidentSpan("p", "brownout", 100.0, 130.0)
    m = judge(b, inc, 230.0, 10.0, horizon=50.0, hold=50.0)
    assert m["recovery_time"] == pytest.approx(0.0)
    assert m["extra_cost"] == pytest.approx(3 * 3.0 - 3 * 1.0)


def test_only_the_features_the_incident_hits_count() -> None:
    """Feature f (10 requests a bin) is on the failing provider and never recovers; g (1,000
    a bin) is on another, healthy one. Over both, the incident reads 0.99 during and a
    recovery; over f alone, 0 during and metastable."""
    b = bins_with([1.0] * 10 + [0.0] * 100, per_bin=10)
    add_feature(b, "g", [1.0] * 110, per_bin=1000)
    inc = IncidentSpan("p", "outage", 100.0, 200.0)
    hit = judge(b, inc, 1100.0, 60.0)
    assert hit["features"] == "f"
    assert hit["success_rate_during"] == 0.0
    assert hit["metastable"] is True
    both = judge(b, inc, 1100.0, 60.0, features=("f", "g"))
    assert both["success_rate_during"] == pytest.approx(1000 / 1010)
    nobody = judge(b, inc, 1100.0, 60.0, features=())
    assert nobody["metastable"] is None and "no feature sends to p" in nobody["metastable_reason"]
    assert math.isnan(nobody["success_rate_during"])


def test_the_loop_that_sustains_it_is_reported() -> None:
    """After the trigger: 3 attempts per arrival, half of them 429s, a queue of 40 on the
    incident's provider, against 1, none and 0 before."""
    b = bins_with([1.0] * 10 + [0.1] * 100)
    cols = b.feature("f")
    queue = b.queue_of("p")
    for i in range(10, 110):
        cols["attempts"][i] = 300
        cols["rate_limited"][i] = 150
        queue[i] = 40 * 10.0  # the integral of a queue of 40 over a 10 s bin
    m = judge(b, IncidentSpan("p", "rate_limit_change", 100.0, 160.0), 1100.0, 60.0)
    assert m["metastable"] is True
    assert m["attempt_amplification_before"] == pytest.approx(1.0)
    assert m["attempt_amplification_after"] == pytest.approx(3.0)
    assert m["rate_limited_share_before"] == 0.0
    assert m["rate_limited_share_after"] == pytest.approx(0.5)
    assert m["queue_length_before"] == 0.0
    assert m["queue_length_after"] == pytest.approx(40.0)
    assert m["overloaded_share_after"] == 0.0


def test_peak_attempt_rate_ratio() -> None:
    b = bins_with([1.0] * 10)
    b.counts["attempts"][4] = 400  # 40/s in one bin; mean request rate 10/s
    assert peak_attempt_rate_ratio(b, 10, requests=1000, duration=100.0) == pytest.approx(4.0)


def test_ratio_is_nan_when_undefined() -> None:
    assert math.isnan(ratio(1.0, 0.0))
    assert ratio(3.0, 2.0) == 1.5


def test_too_short_a_run_cannot_tell() -> None:
    """The arrivals stop 10 s after the incident, less than one 30 s window: no verdict."""
    b = bins_with([1.0] * 10 + [0.1] * 10)
    inc = IncidentSpan("p", "outage", 100.0, 190.0)
    m = judge(b, inc, 200.0, 30.0)
    assert m["metastable"] is None
    assert math.isnan(m["recovery_time"])
    assert m["metastable_reason"].startswith("the arrivals stop 10 s after the end")


def test_a_return_not_held_long_enough_cannot_tell() -> None:
    """Back 240 s after the end, then 60 s of good windows before the arrivals stop: less
    than the 300 s hold, and short of the 600 s horizon: undetermined, not metastable (as
    f8966f2 said) and not recovered."""
    shares = [1.0] * 30 + [0.0] * 30 + [0.2] * 24 + [1.0] * 6
    b = bins_with(shares)
    m = judge(b, IncidentSpan("p", "capacity_drop", 300.0, 600.0), 900.0, 60.0)
    assert m["metastable"] is None and math.isnan(m["recovery_time"])
    assert "a verdict needs 900 s (horizon 600 s + hold 300 s)" in m["metastable_reason"]
    # The same return seen for long enough is a recovery at 240 s.
    b = bins_with([*shares, *[1.0] * 30])
    m = judge(b, IncidentSpan("p", "capacity_drop", 300.0, 600.0), 1200.0, 60.0)
    assert m["metastable"] is False and m["recovery_time"] == pytest.approx(240.0)


def test_the_next_incident_on_the_same_features_ends_the_judgement() -> None:
    shares = [1.0] * 10 + [0.0] * 6 + [1.0] * 100
    b = bins_with(shares)
    inc = IncidentSpan("p", "outage", 100.0, 160.0)
    rule = RecoveryRule(window=60.0, baseline=100.0)
    m = incident_metrics(inc, b, 1160.0, rule, ("f",), stop=220.0)
    assert m["metastable"] is None
    assert m["metastable_reason"].startswith("another incident starts 60 s after the end")
