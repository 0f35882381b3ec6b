"""Summary metrics on hand-built cases: recovery time, metastability, peak ratio, extra cost."""

from __future__ import annotations

import math

import pytest

from llmtraffic.results.metrics import (
    IncidentSpan,
    incident_metrics,
    peak_attempt_rate_ratio,
    ratio,
)
from llmtraffic.results.recorder import Bins


def bins_with(success_by_bin: list[float], per_bin: int = 100, cost: float = 1.0) -> Bins:
    """10 s bins; each bin has ``per_bin`` arrivals of which a share succeeded."""
    b = Bins(10.0, 10.0 * len(success_by_bin))
    for i, share in enumerate(success_by_bin):
        b.arrived["arrived_failed"][i] = per_bin - round(per_bin * share)
        b.counts["arrivals"][i] = per_bin
        b.counts["attempts"][i] = per_bin
        b.costs["billed_cost"][i] = cost
    return b


def test_recovery_time_is_first_good_window_after_the_end() -> None:
    # Bins 0-9 good (100%), incident in bins 10-15 (60-..), bins 16-19 still bad, then good.
    shares = [1.0] * 10 + [0.2] * 6 + [0.5] * 4 + [1.0] * 20
    b = bins_with(shares)
    inc = IncidentSpan("p", "brownout", 100.0, 160.0)
    m = incident_metrics(inc, b, duration=400.0, tolerance=0.02, window=20.0, baseline=100.0)
    assert m["success_rate_before"] == pytest.approx(1.0)
    assert m["success_rate_during"] == pytest.approx(0.2)
    # Windows of two bins: [160,180) = 0.5, ..., first at [200, 220): recovery 40 s.
    assert m["recovery_time"] == pytest.approx(40.0)
    assert m["metastable"] is False


def test_no_recovery_before_the_end_is_metastable() -> None:
    shares = [0.99] * 10 + [0.1] * 30
    b = bins_with(shares)
    inc = IncidentSpan("p", "outage", 100.0, 150.0)
    m = incident_metrics(inc, b, duration=400.0, tolerance=0.02, window=30.0, baseline=100.0)
    assert m["metastable"] is True
    assert math.isnan(m["recovery_time"])
    # Extra cost: the pre-incident rate (1 per bin) over everything from the start to the
    # end of the run, since it never recovered: 30 bins billed 30, expected 30 -> 0.
    assert m["extra_cost"] == pytest.approx(0.0)


def test_within_tolerance_counts_as_recovered() -> None:
    shares = [0.95] * 10 + [0.0] * 5 + [0.94] * 25
    b = bins_with(shares)
    inc = IncidentSpan("p", "outage", 100.0, 150.0)
    m = incident_metrics(inc, b, duration=400.0, tolerance=0.02, window=10.0, baseline=100.0)
    assert m["recovery_time"] == pytest.approx(0.0)


def test_extra_cost_during_a_storm() -> None:
    b = bins_with([1.0] * 10 + [0.5] * 3 + [1.0] * 10)
    for i in (10, 11, 12):
        b.costs["billed_cost"][i] = 3.0  # retries triple the spend during the incident
    inc = IncidentSpan("p", "brownout", 100.0, 130.0)
    m = incident_metrics(inc, b, duration=230.0, tolerance=0.02, window=10.0, baseline=100.0)
    assert m["recovery_time"] == pytest.approx(0.0)
    assert m["extra_cost"] == pytest.approx(3 * 3.0 - 3 * 1.0)


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
    m = incident_metrics(inc, b, duration=200.0, tolerance=0.02, window=30.0, baseline=100.0)
    assert m["metastable"] is None
    assert math.isnan(m["recovery_time"])
