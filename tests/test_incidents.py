"""Each incident kind changes the provider exactly in its window, and records its events."""

from __future__ import annotations

import math
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


# --- Incident metrics on real runs (docs/metrics.md, "Recovery and metastability") ----------


def two_features(outage_to: float) -> dict[str, Any]:
    """f (1/s, no retries) on p, g (20/s) on a healthy q; p's outage runs from 300 s to
    ``outage_to``."""
    return {
        "run.duration": 1800.0,
        "run.records": "summary",
        "providers.p.incidents": [
            {"kind": "outage", "start": 300.0, "duration": outage_to - 300.0}
        ],
        "providers.q": {
            "model": "test-model",
            "prices": {"input": 1.0, "output": 2.0},
            "capacity": {"slots": 50, "queue_limit": 100},
            "service": {"kind": "deterministic", "value": 1.0},
        },
        "features.f.arrivals": {"kind": "poisson", "rate": 1.0},
        "features.g": {
            "provider": "q",
            "arrivals": {"kind": "poisson", "rate": 20.0},
            "input_tokens": {"kind": "fixed", "value": 100},
            "output_tokens": {"kind": "fixed", "value": 50},
        },
    }


def test_an_incident_is_judged_on_the_features_it_hits() -> None:
    """The only feature on the failing provider fails for the rest of the run; a busier one
    elsewhere is fine. f8966f2 judged both together: success during 0.95 (g's), recovery 0,
    not metastable. On f alone: nothing succeeds, and it never comes back."""
    inc = Simulation(make_scenario(**two_features(1800.0))).run().summary["incidents"][0]
    assert inc["features"] == "f"
    assert inc["success_rate_before"] == 1.0
    assert inc["success_rate_during"] == 0.0
    assert math.isnan(inc["recovery_time"])
    # The outage lasts to the end of the arrivals: no window after it, no verdict.
    assert inc["metastable"] is None
    assert "lasts until the arrivals stop" in inc["metastable_reason"]


def test_a_fallback_brings_a_feature_into_the_scope() -> None:
    """g falls back to p: an incident on p concerns g too (its chain includes p)."""
    raw = two_features(600.0)
    raw["features.g"]["policy"] = "fb"
    raw["policies.fb"] = {"fallback": {"providers": ["p"]}}
    inc = Simulation(make_scenario(**raw)).run().summary["incidents"][0]
    assert inc["features"] == "f,g"


def capacity_drop(duration: float, seed: int) -> dict[str, Any]:
    """12.5/s on 20 one-second slots, cut to 5 slots from 300 to 600 s; no retries, a 10 s
    timeout; abandoned attempts keep their place (the default). The backlog at the end,
    (12.5 - 5) x 300 = 2,250, drains at 20 - 12.5 = 7.5/s; a new arrival is served in time
    once fewer than 10 s x 20 slots = 200 wait: (2,250 - 200) / 7.5 = 273 s after the end."""
    sc = make_scenario(
        **{
            "run.duration": duration,
            "run.seed": seed,
            "run.records": "summary",
            "providers.p.capacity": {"slots": 20, "queue_limit": 100_000},
            "providers.p.incidents": [
                {"kind": "capacity_drop", "start": 300.0, "duration": 300.0, "remaining": 0.25}
            ],
            "features.f.arrivals": {"kind": "poisson", "rate": 12.5},
            "features.f.policy": "plain",
            "policies.plain": {"timeout": 10.0},
        }
    )
    summary: dict[str, Any] = Simulation(sc).run().summary
    return summary["incidents"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("seed", [1, 2])
def test_a_drain_that_outlasts_the_run_is_undetermined_not_metastable(seed: int) -> None:
    """f8966f2 called this metastable in a 900 s run and recovered (270 s) in an 1800 s one."""
    short = capacity_drop(900.0, seed)
    assert short["metastable"] is None
    assert "a verdict needs 900 s (horizon 600 s + hold 300 s)" in short["metastable_reason"]
    long = capacity_drop(1800.0, seed)
    assert long["metastable"] is False
    # 273 s by the fluid estimate; the backlog's Poisson spread is ~61 requests (8 s), and
    # windows start on 10 s edges and span 60 s.
    assert 273 - 60 <= long["recovery_time"] <= 273 + 60
    # Once recovered, nothing sustains a failure: one attempt per arrival, the queue gone.
    assert long["attempt_amplification_after"] == pytest.approx(1.0)
    assert long["queue_length_after"] < 5


STORM: dict[str, Any] = {
    "run.duration": 1100.0,
    "run.records": "summary",
    "run.recovery": {"horizon": "5m", "hold": "2m"},
    "providers.p.capacity": {"slots": 20, "queue_limit": 100_000},
    "providers.p.incidents": [
        {"kind": "capacity_drop", "start": 300.0, "duration": 300.0, "remaining": 0.25}
    ],
    "features.f.arrivals": {"kind": "poisson", "rate": 12.5},
    "features.f.policy": "naive",
    "policies.naive": {"timeout": 10.0, "retry": {"kind": "naive", "max_retries": 10}},
}
"""The capacity drop above with 10 immediate retries: every timed-out attempt keeps its slot
and is sent again, so the load stays past capacity after the trigger ends."""


def test_retries_into_abandoned_work_are_metastable_with_their_loop_reported() -> None:
    """Not back within the horizon, and the summary shows why (several attempts per arrival,
    a long queue)."""
    inc = Simulation(make_scenario(**STORM)).run().summary["incidents"][0]
    assert inc["metastable"] is True
    assert "within 300 s of the end" in inc["metastable_reason"]
    assert inc["attempt_amplification_before"] == pytest.approx(1.0)
    assert inc["attempt_amplification_after"] > 2.0
    assert inc["queue_length_after"] > 100 * inc["queue_length_before"] + 100


def test_a_storm_on_one_feature_is_not_hidden_by_a_healthy_one() -> None:
    """The storm above on f, next to g (50/s) on a healthy provider. f8966f2, judging both
    together, read success during 0.80 (g's requests) and an extra cost of -1.9."""
    raw = dict(STORM)
    extra = two_features(600.0)
    raw["providers.q"] = extra["providers.q"]
    raw["features.g"] = {**extra["features.g"], "arrivals": {"kind": "poisson", "rate": 50.0}}
    inc = Simulation(make_scenario(**raw)).run().summary["incidents"][0]
    assert inc["features"] == "f"
    assert inc["success_rate_during"] < 0.2
    assert inc["metastable"] is True
