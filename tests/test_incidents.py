"""Each incident kind changes the provider exactly in its window, and records its events."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from llmtraffic import RunResult, Simulation
from tests.conftest import make_scenario

START, END = 100.0, 160.0


def run_with(incident: dict[str, Any], **extra: Any) -> RunResult:
    overrides: dict[str, Any] = {
        "run.duration": 300.0,
        "providers.p.capacity": {"slots": 20, "queue_limit": 1000},
        "providers.p.incidents": [{"start": START, "duration": END - START, **incident}],
        "features.f.arrivals": {"kind": "poisson", "rate": 8.0},
    }
    overrides.update(extra)
    return Simulation(make_scenario(**overrides)).run()


def test_outage_fails_every_attempt_in_its_window_and_only_there() -> None:
    r = run_with({"kind": "outage", "status": 503})
    att = r.df("attempts")
    inside = att.send_time.between(START, END, inclusive="left")
    assert (att[inside].status == "server_error").all()
    assert (att[inside].http_status == 503).all()
    assert (att[~inside].status == "ok").all()
    assert (att[inside].cost == 0).all()
    ev = r.df("events")
    assert list(ev.kind) == ["incident_start", "incident_end"]
    assert list(ev.time) == [START, END]


def test_brownout_raises_the_error_rate() -> None:
    r = run_with({"kind": "brownout", "error_rate": 0.4})
    att = r.df("attempts")
    inside = att.send_time.between(START, END, inclusive="left")
    share = (att[inside].status == "server_error").mean()
    n = inside.sum()
    assert share == pytest.approx(0.4, abs=4 * np.sqrt(0.4 * 0.6 / n))
    assert (att[~inside].status == "ok").all()


def test_latency_spike_multiplies_service_times() -> None:
    r = run_with({"kind": "latency_spike", "factor": 3.0})
    att = r.df("attempts")
    service = att.end_time - att.start_time
    started_inside = att.start_time.between(START, END, inclusive="left")
    assert np.allclose(service[started_inside], 3.0)
    assert np.allclose(service[~started_inside], 1.0)


def test_capacity_drop_limits_concurrency() -> None:
    r = run_with({"kind": "capacity_drop", "remaining": 0.25})  # 20 slots -> 5
    att = r.df("attempts").dropna(subset=["start_time"])
    # Concurrency just after every service start inside the window (starts are where it grows).
    starts = att[att.start_time.between(START + 1.0, END, inclusive="left")].start_time
    s, e = att.start_time.to_numpy(), att.end_time.to_numpy()
    busy = [int(((s <= t) & (e > t)).sum()) for t in starts]
    assert max(busy) <= 5
    assert max(busy) == 5  # the load (8/s x 1 s) needs more than 5: the limit binds
    ts = r.df("timeseries")
    assert ts[(ts.time >= START + 10) & (ts.time < END)].queue_length.mean() > 10


def test_rate_limit_change_scales_the_limits() -> None:
    """Offered 12/s against 600 rpm: once the bucket's initial minute of credit is spent,
    10/s get through; halved limits from 400 s to 600 s let 5/s through."""
    sc = make_scenario(
        **{
            "run.duration": 900.0,
            "providers.p.capacity": {"slots": 20, "queue_limit": 1000},
            "providers.p.rate_limit": {"rpm": 600, "count_rejected": False},
            "providers.p.incidents": [
                {"kind": "rate_limit_change", "start": 400.0, "duration": 200.0, "factor": 0.5}
            ],
            "features.f.arrivals": {"kind": "poisson", "rate": 12.0},
        }
    )
    att = Simulation(sc).run().df("attempts")
    admitted = att[att.status != "rate_limited"].send_time
    assert admitted.between(500.0, 600.0, inclusive="left").sum() / 100 == pytest.approx(
        5, rel=0.03
    )
    assert admitted.between(800.0, 900.0, inclusive="left").sum() / 100 == pytest.approx(
        10, rel=0.03
    )
