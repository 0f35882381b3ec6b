"""The tenacity adapter against tenacity's own ``Retrying`` on the same outcome sequences.

tenacity runs for real: a function fails (or succeeds) as the sequence says, each attempt
advancing a fake clock (tenacity reads ``time.monotonic`` through its module's ``time``) by
its duration, and ``sleep`` advancing it by the wait. The adapter sees the same failures as
the simulator's client would pass them (``RetryState`` with simulated times). Jitter comes
from the same draws on both sides. Attempt counts and every wait must be equal. Checked
against tenacity 9.2.1 (the dev extras).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import tenacity
from tenacity import (
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_before_delay,
    wait_chain,
    wait_exponential,
    wait_fixed,
    wait_incrementing,
    wait_random,
    wait_random_exponential,
)

from llmtraffic.client.retry import as_decision
from llmtraffic.client.tenacity_adapter import (
    EXCEPTIONS,
    RateLimitedError,
    SimulatedAPIError,
    TenacityPolicy,
    seeded_tenacity,
)
from llmtraffic.client.waits import RetryState

# An outcome: (status, HTTP status, retry_after, seconds the attempt takes); "ok" succeeds.
Outcome = tuple[str, int, float, float]
OK: Outcome = ("ok", 200, math.nan, 0.3)
E500: Outcome = ("server_error", 500, math.nan, 0.05)
E529: Outcome = ("overloaded", 529, math.nan, 0.2)
R429: Outcome = ("rate_limited", 429, 2.0, 0.01)
SLOW_TIMEOUT: Outcome = ("timeout", 0, math.nan, 0.7)
INSTANT: Outcome = ("server_error", 500, math.nan, 0.0)


def wait_on_idle(rs: Any) -> float:
    """A custom wait that reads ``idle_for``: 1 s more than everything slept so far."""
    return 1.0 + float(rs.idle_for)


CASES: dict[str, tuple[Callable[[], tenacity.Retrying], list[Outcome]]] = {
    # The case: tenacity asks wait before stop, so stop_before_delay sees the sleep.
    "stop_before_delay+wait_fixed": (
        lambda: tenacity.Retrying(stop=stop_before_delay(1), wait=wait_fixed(0.8)),
        [INSTANT] * 10,
    ),
    "stop_after_attempt+exponential": (
        lambda: tenacity.Retrying(
            stop=stop_after_attempt(4), wait=wait_exponential(multiplier=0.5, max=4)
        ),
        [E500] * 10,
    ),
    "random_exponential, delay or attempts": (
        lambda: tenacity.Retrying(
            stop=stop_after_delay(20) | stop_after_attempt(10),
            wait=wait_random_exponential(multiplier=1, min=1, max=10),
        ),
        [E529] * 20,
    ),
    "incrementing, stop before 10 s, slow timeouts": (
        lambda: tenacity.Retrying(
            stop=stop_before_delay(10), wait=wait_incrementing(start=1, increment=2)
        ),
        [SLOW_TIMEOUT] * 20,
    ),
    "retry only 429s": (
        lambda: tenacity.Retrying(
            retry=retry_if_exception_type(RateLimitedError),
            stop=stop_after_attempt(6),
            wait=wait_fixed(1),
        ),
        [R429, R429, E500, R429],
    ),
    "chain": (
        lambda: tenacity.Retrying(
            stop=stop_after_attempt(5), wait=wait_chain(wait_fixed(1), wait_fixed(1), wait_fixed(3))
        ),
        [E500] * 10,
    ),
    "fixed plus random, stop before 4 s": (
        lambda: tenacity.Retrying(
            stop=stop_before_delay(4), wait=wait_fixed(1) + wait_random(0, 1)
        ),
        [E500] * 10,
    ),
    "success on the third attempt": (
        lambda: tenacity.Retrying(stop=stop_after_attempt(5), wait=wait_fixed(0.5)),
        [E500, R429, OK],
    ),
    "idle_for read by the wait": (
        lambda: tenacity.Retrying(stop=stop_before_delay(30), wait=wait_on_idle),
        [E500] * 20,
    ),
}


def draws(seed: int) -> list[float]:
    return [float(x) for x in np.random.default_rng(seed).random(200)]


def run_tenacity(
    monkeypatch: pytest.MonkeyPatch, retrying: tenacity.Retrying, outcomes: list[Outcome]
) -> tuple[int, list[float]]:
    """Attempts made and waits slept by tenacity itself."""
    clock = SimpleNamespace(t=0.0)
    monkeypatch.setattr(tenacity, "time", SimpleNamespace(monotonic=lambda: clock.t))
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.t += seconds

    attempts = 0

    def call() -> str:
        nonlocal attempts
        status, code, retry_after, duration = outcomes[attempts]
        attempts += 1
        clock.t += duration
        if status == "ok":
            return status
        raise EXCEPTIONS[status](status, code, retry_after)

    gives_up = all(o[0] != "ok" for o in outcomes)
    expect = pytest.raises(SimulatedAPIError) if gives_up else contextlib.nullcontext()
    with seeded_tenacity(iter(draws(1))), expect:
        retrying.copy(sleep=sleep, reraise=True)(call)
    return attempts, waits


def run_adapter(retrying: tenacity.Retrying, outcomes: list[Outcome]) -> tuple[int, list[float]]:
    """Attempts made and waits decided by the adapter, driven as the client drives it."""
    policy = TenacityPolicy(retrying)
    u: Iterator[float] = iter(draws(1))
    t, prev_wait = 0.0, 0.0
    waits: list[float] = []
    for number, (status, code, retry_after, duration) in enumerate(outcomes, start=1):
        t += duration
        if status == "ok":
            return number, waits
        state = RetryState(number, status, code, retry_after, t, prev_wait, t, number, "p")
        decision = as_decision(policy.decide(state, u))
        if decision.wait is None:
            return number, waits
        waits.append(decision.wait)
        prev_wait = decision.wait
        t += decision.wait
    raise AssertionError("the sequence ran out before tenacity stopped")


@pytest.mark.parametrize("name", sorted(CASES))
def test_adapter_equals_tenacity(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    factory, outcomes = CASES[name]
    theirs = run_tenacity(monkeypatch, factory(), outcomes)
    ours = run_adapter(factory(), outcomes)
    assert ours[0] == theirs[0], (name, ours, theirs)
    assert ours[1] == pytest.approx(theirs[1], abs=1e-12), (name, ours, theirs)


def test_stop_before_delay_gives_two_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's figure: stop_before_delay(1) with wait_fixed(0.8): tenacity makes 2
    attempts (the second, at 0.8 s, would sleep until 1.6 s, past the 1 s), not 3."""
    factory, outcomes = CASES["stop_before_delay+wait_fixed"]
    assert run_tenacity(monkeypatch, factory(), outcomes) == (2, [0.8])
    assert run_adapter(factory(), outcomes) == (2, [0.8])


def test_idle_for_is_what_was_slept() -> None:
    """wait = 1 + idle_for doubles: 1, 2, 4, 8 (stop_before_delay(30) ends it)."""
    factory, outcomes = CASES["idle_for read by the wait"]
    attempts, waits = run_adapter(factory(), outcomes)
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0]
    assert attempts == len(waits) + 1


def idle_retrying() -> tenacity.Retrying:
    """For the run below: wait 1 s more than slept so far, stop before 30 s."""
    return tenacity.Retrying(stop=stop_before_delay(30), wait=wait_on_idle)


def test_idle_for_in_a_run() -> None:
    """Through the client: every request fails fast (0.05 s), so waits run 1, 2, 4, 8 and the
    next (16 s) would end past 30 s: 5 attempts each; f8966f2's adapter left idle_for at 0."""
    from llmtraffic import Simulation
    from tests.conftest import make_scenario

    sc = make_scenario(
        **{
            "run.duration": 100.0,
            "providers.p.failures": {"error_rate": 1.0, "error_latency": 0.05},
            "features.f.arrivals": {"kind": "poisson", "rate": 0.5},
            "features.f.policy": "t",
            "policies": {
                "t": {
                    "retry": {
                        "kind": "tenacity",
                        "retrying": "tests.test_conformance_tenacity:idle_retrying",
                    }
                }
            },
        }
    )
    result = Simulation(sc).run()
    att = result.df("attempts")
    waits = att[att["attempt"] > 0].groupby("request_id")["wait_before"].apply(list)
    assert len(waits) >= 20
    for w in waits:
        assert w == pytest.approx([1.0, 2.0, 4.0, 8.0][: len(w)])
    done = result.df("requests")
    done = done[done["outcome"] == "exhausted"]
    assert len(done) >= 20 and (done["attempts"] == 5).all()
