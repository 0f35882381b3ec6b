"""The circuit breaker state machine, driven step by step with a controlled clock."""

from __future__ import annotations

import pytest

from llmtraffic import Simulation
from llmtraffic.client.breaker import CLOSED, HALF_OPEN, OPEN, TRANSITIONS, CircuitBreaker
from llmtraffic.config.policy import Breaker
from tests.conftest import make_scenario


def make(**kw: object) -> tuple[CircuitBreaker, list[tuple[float, str, str]]]:
    log: list[tuple[float, str, str]] = []
    cfg = Breaker(
        **{  # type: ignore[arg-type]
            "window_size": 10,
            "minimum_calls": 4,
            "open_duration": 5.0,
            "half_open_calls": 2,
            **kw,
        }
    )
    return CircuitBreaker(cfg, lambda t, a, b: log.append((t, a, b))), log


def test_opens_at_the_failure_rate_threshold_then_probes() -> None:
    br, log = make()
    for t, failed in [(0.0, False), (1.0, True), (2.0, True)]:
        assert br.allow(t)
        br.record(t, br.epoch, failed, 0.1)
    assert br.state == CLOSED  # 2 of 3 failed, but fewer than minimum_calls (4) recorded
    br.record(3.0, br.epoch, False, 0.1)
    assert br.state == OPEN  # 2 of 4 = 50% >= threshold
    assert log == [(3.0, CLOSED, OPEN)]
    assert not br.allow(4.0)  # still open: 1 s of 5 elapsed
    assert not br.allow(7.9)  # still open: 4.9 s elapsed
    assert br.allow(8.0)  # 5 s elapsed: half-open, first trial call
    assert br.state == HALF_OPEN
    assert br.allow(8.1)  # second trial call
    assert not br.allow(8.2)  # only two trials while half-open
    br.record(9.0, br.epoch, False, 0.1)
    assert br.state == HALF_OPEN  # one trial reported
    br.record(9.5, br.epoch, False, 0.1)
    assert br.state == CLOSED  # both trials succeeded
    assert [(a, b) for _, a, b in log] == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_failed_trial_reopens() -> None:
    br, _ = make(minimum_calls=1, window_size=1)
    br.record(0.0, br.epoch, True, 0.1)
    assert br.state == OPEN
    assert br.allow(5.0) and br.allow(5.0)
    br.record(5.5, br.epoch, True, 0.1)
    br.record(5.6, br.epoch, False, 0.1)
    assert br.state == OPEN  # 1 of 2 trials failed: 50% >= threshold
    assert br.opened_at == 5.6
    assert not br.allow(10.0)  # open again for 5 s from 5.6


def test_late_answers_from_an_earlier_state_are_ignored() -> None:
    br, _ = make()
    old_epoch = br.epoch
    for t in range(4):
        br.record(float(t), br.epoch, True, 0.1)
    assert br.state == OPEN
    br.allow(10.0)
    assert br.state == HALF_OPEN
    br.record(10.1, old_epoch, False, 0.1)  # sent while closed: must not count as a trial
    br.record(10.2, old_epoch, False, 0.1)
    assert br.state == HALF_OPEN


def test_slow_calls_open_the_breaker() -> None:
    br, _ = make(slow_call_rate_threshold=0.5, slow_call_duration=2.0)
    for t in range(4):
        br.record(float(t), br.epoch, False, 3.0 if t % 2 else 0.5)
    assert br.state == OPEN  # no failures, but half of the calls were slow


def test_count_window_forgets_old_calls() -> None:
    br, _ = make(window_size=4, minimum_calls=4)
    for t, failed in enumerate([True, False, False, False, False, True]):
        br.record(float(t), br.epoch, failed, 0.1)
    # The window holds the last 4: F F F T = 25% failures, below 50%.
    assert br.state == CLOSED


def test_time_window_forgets_old_seconds() -> None:
    br, _ = make(window="time", window_size=10, minimum_calls=4)
    for second in range(3):
        br.record(float(second), br.epoch, True, 0.1)  # three failures at 0, 1, 2 s
    br.record(20.0, br.epoch, False, 0.1)  # at 20 s they are out of the 10 s window
    assert br.state == CLOSED
    for t in (20.5, 21.0, 21.5):
        br.record(t, br.epoch, False, 0.1)
    assert br.state == CLOSED


def test_only_declared_transitions_exist() -> None:
    expected = {
        CLOSED: frozenset({OPEN}),
        OPEN: frozenset({HALF_OPEN, CLOSED}),
        HALF_OPEN: frozenset({OPEN, CLOSED}),
    }
    assert expected == TRANSITIONS
    br, _ = make()
    with pytest.raises(RuntimeError, match="illegal breaker transition"):
        br._transition(HALF_OPEN, 0.0)


def test_cooldown_breaker_closes_without_trials() -> None:
    """half_open_calls = 0 (LiteLLM's cooldown): back to closed once open_duration is over."""
    br, log = make(
        half_open_calls=0, window="time", window_size=60, minimum_calls=5, failure_count_threshold=4
    )
    for t in (0.0, 1.0, 2.0):
        br.record(t, br.epoch, True, 0.1)
    assert br.state == CLOSED  # 3 failures: LiteLLM allows 3
    br.record(3.0, br.epoch, True, 0.1)
    assert br.state == OPEN  # the 4th failure in a minute: cooldown
    assert not br.allow(7.9)  # still cooling down: 4.9 s of 5
    assert br.allow(8.0)  # 5 s: in service again, no trial calls
    assert br.state == CLOSED
    assert [(a, b) for _, a, b in log] == [(CLOSED, OPEN), (OPEN, CLOSED)]


def test_unrecorded_trial_gives_its_permit_back() -> None:
    br, _ = make(minimum_calls=1, window_size=1, half_open_calls=1)
    br.record(0.0, br.epoch, True, 0.1)
    assert br.allow(5.0)  # the one trial
    assert not br.allow(5.1)
    br.ignore(br.epoch)  # it ended in a 429, which this breaker does not record
    assert br.allow(5.2)  # another trial may go


def test_breaker_in_a_run_rejects_during_an_outage_and_recloses() -> None:
    sc = make_scenario(
        **{
            "run.duration": 300.0,
            "providers.p.incidents": [{"kind": "outage", "start": 100.0, "duration": 60.0}],
            "features.f.arrivals": {"kind": "poisson", "rate": 10.0},
            "policies": {
                "pol": {
                    "breaker": {
                        "window_size": 20,
                        "minimum_calls": 10,
                        "open_duration": 10.0,
                        "half_open_calls": 3,
                    }
                }
            },
        }
    )
    r = Simulation(sc).run()
    ev = r.df("events")
    transitions = ev[ev.kind == "breaker"]
    assert transitions.iloc[0].detail == "closed->open"
    assert 100.0 <= transitions.iloc[0].time < 105.0
    assert transitions.iloc[-1].detail == "half_open->closed"
    assert 160.0 <= transitions.iloc[-1].time < 185.0
    req = r.df("requests")
    rejected = req[req.outcome == "rejected_breaker"]
    assert len(rejected) > 0
    assert (rejected.attempts == 0).all()
    assert rejected.arrival_time.between(100.0, 185.0).all()
    ts = r.df("timeseries")
    # Time-weighted: open most of the outage (half-open probes in between), never before.
    assert ts[(ts.time >= 100) & (ts.time < 160)].breakers_open.mean() > 0.5
    assert ts[ts.time < 100].breakers_open.sum() == 0.0
