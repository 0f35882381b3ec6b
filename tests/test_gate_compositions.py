"""Gates that compose: every pair of the client's gates (breaker, throttle, budget, pacing,
concurrency limit, fallback, deadline) through an outage, with recovery and conservation.

Conservation: every request ends exactly once; the attempts table agrees with the requests
table; money adds up (attempt costs = request bills = the summary's billed cost); and every
gate's books balance at the end: no half-open trial permit out, the throttle counted exactly
the attempts sent plus its own refusals, no retry of the budget in flight, the pacer holds a
reservation for exactly the attempts sent, no request left in the local queue.

The focused cases reproduce the issue's defects (each failed on f8966f2): a half-open permit
lost to a later gate left the breaker half-open for the rest of the run; pacing kept the
reservations of requests it refused, and goodput fell to 0; a policy's negative wait sent
retries back in time.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import numpy as np
import pytest

from llmtraffic import Simulation, scenario_from_dict
from llmtraffic.client.breaker import CLOSED, HALF_OPEN
from llmtraffic.client.budget import EnvoyRetryBudget, FinagleRetryBudget, TokenBucketRetryBudget
from llmtraffic.client.client import Client
from llmtraffic.client.pacing import ClientPacer
from llmtraffic.client.throttle import AdaptiveThrottle
from llmtraffic.engine.entities import REQUEST_OUTCOMES, UNFINISHED
from llmtraffic.engine.kernel import Kernel
from llmtraffic.errors import PolicyError
from tests.conftest import make_scenario

OUTAGE_START, OUTAGE_END, DURATION = 300.0, 420.0, 1200.0

GATES: dict[str, dict[str, Any]] = {
    "breaker": {"breaker": "resilience4j"},
    "throttle": {"throttle": {"k": 2.0, "window": 60}},
    "budget": {"budget": "envoy"},
    "pacing": {"rate_limit": {"rpm": 360, "max_wait": 5}},
    "concurrency": {"concurrency": {"limit": 20, "queue_limit": 50}},
    "fallback": {"fallback": {"providers": ["q"], "after_failures": 2}},
    "deadline": {"deadline": 20},
}


def provider(**extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "prices": {"input": 1.0, "output": 2.0},
        "capacity": {"slots": 40, "queue_limit": 80},
        "service": {"kind": "exponential", "mean": 1.0},
        "failures": {"error_rate": 0.01},
        **extra,
    }


def scenario(
    policy: dict[str, Any],
    seed: int = 1,
    duration: float = DURATION,
    outage: tuple[float, float] = (OUTAGE_START, OUTAGE_END),
    priced: bool = False,
) -> Any:
    raw: dict[str, Any] = {
        "run": {"duration": duration, "seed": seed, "timeseries_bin": 10},
        "providers": {
            "p": provider(
                incidents=[
                    {"kind": "outage", "start": outage[0], "duration": outage[1] - outage[0]}
                ]
            ),
            "q": provider(),
        },
        "features": {
            "f": {
                "provider": "p",
                "arrivals": {"kind": "poisson", "rate": 5.0},
                "input_tokens": {"kind": "fixed", "value": 100},
                "output_tokens": {"kind": "fixed", "value": 50},
                "policy": "pol",
            }
        },
        "policies": {
            "pol": {
                "timeout": 30,
                "retry": {
                    "kind": "exponential",
                    "max_retries": 3,
                    "base": 0.5,
                    "cap": 8,
                    "jitter": "full",
                },
                **copy.deepcopy(policy),
            }
        },
    }
    if priced:
        # Provider prices (docs/billing.md): a prompt cache on each provider, a long-context
        # tier some prompts reach, a shared system prompt and reasoning tokens.
        for prov in raw["providers"].values():
            prov["prompt_cache"] = {"rules": "anthropic", "ttl": 300, "min_tokens": 1024}
            prov["prices"]["long_context"] = {"above": 1500, "input": 2.0, "output": 3.0}
        feat = raw["features"]["f"]
        feat["system_prompt_tokens"] = 1200
        feat["input_tokens"] = {"kind": "uniform", "low": 100, "high": 600}
        feat["reasoning_tokens"] = {"kind": "uniform", "low": 0, "high": 100}
    return scenario_from_dict(raw)


def audit(sim: Simulation, result: Any) -> None:
    """Conservation: requests, attempts, money and every gate's books."""
    summary = result.summary
    requests = result.df("requests")
    attempts = result.df("attempts")
    client: Client = sim.clients["f"]
    tally = client.tally
    # Every request ends exactly once, with one terminal outcome.
    assert requests["request_id"].is_unique
    assert len(requests) == tally.requests == summary["requests"]
    assert set(requests["outcome"]) <= set(REQUEST_OUTCOMES) - {UNFINISHED}
    # The attempts table agrees with the requests table.
    per_request = attempts.groupby("request_id").size()
    counted = requests.set_index("request_id")["attempts"]
    assert (per_request.reindex(counted.index, fill_value=0) == counted).all()
    assert len(attempts) == tally.sent == tally.attempts
    # Money adds up.
    assert math.isclose(attempts["cost"].sum(), summary["billed_cost"], rel_tol=1e-9)
    assert math.isclose(requests["billed_cost"].sum(), summary["billed_cost"], rel_tol=1e-9)
    assert (requests["useful_cost"] <= requests["billed_cost"] + 1e-12).all()
    # Every gate's books balance.
    for breaker in client.breakers:
        if breaker is not None:
            assert breaker.trials_out == 0
    if client.throttle is not None:
        th = client.throttle
        assert th.counted - th.uncounted == tally.sent + th.refused
    if isinstance(client.budget, EnvoyRetryBudget):
        assert client.budget.in_flight == 0
    if client.pacer is not None:
        assert client.pacer.reserved == tally.sent
    assert not client.local_queue
    assert not client._queued_deadlines


def success_after(result: Any, start: float) -> float:
    req = result.df("requests")
    late = req[req["arrival_time"] >= start]
    return float((late["outcome"] == "ok").mean())


PAIRS = list(itertools.combinations(GATES, 2))


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=[f"{a}+{b}" for a, b in PAIRS])
def test_every_pair_of_gates_recovers_after_an_outage_and_balances_its_books(
    a: str, b: str
) -> None:
    policy = {**GATES[a], **GATES[b]}
    sim = Simulation(scenario(policy))
    result = sim.run()
    audit(sim, result)
    # Recovery: the outage ends at 420 s. The slowest gate to come back is the SRE throttle:
    # from a rejection probability near 1, accepts grow e-fold every window / k = 30 s
    # (dA/dt = rate * k * A / (rate * window)), so from 1 to the rate * window / k = 150
    # accepts that bring the probability to 0 takes about ln(150) * 30 s = 150 s; the breaker
    # adds its 60 s open duration. From 720 s on, the 1% error rate is all that is left.
    assert success_after(result, 720.0) >= 0.97
    for breaker in sim.clients["f"].breakers:
        if breaker is not None:
            assert breaker.state == CLOSED


@pytest.mark.parametrize("gate", list(GATES))
def test_each_gate_with_provider_prices_balances_its_books(gate: str) -> None:
    """The same books with a prompt cache, a long-context tier and reasoning: and each
    provider's bill is the sum of its parts over its attempts."""
    sim = Simulation(scenario(GATES[gate], priced=True))
    result = sim.run()
    audit(sim, result)
    attempts = result.df("attempts")
    for name, stats in result.summary["pricing"].items():
        parts = ("input", "cache_write", "cache_read", "output", "reasoning")
        assert math.isclose(
            sum(stats[f"{k}_cost"] for k in parts), stats["billed_cost"], rel_tol=1e-9
        )
        mine = attempts.loc[attempts["provider"] == name, "cost"].sum()
        assert math.isclose(mine, stats["billed_cost"], rel_tol=1e-9, abs_tol=1e-12)
    p = result.summary["pricing"]["p"]
    # 5 requests a second renew the entry long before its 5 minutes run out, and the
    # 2-minute outage (nothing accepted, nothing renewed) is shorter than them: the first
    # prompt writes the system prompt, every later accepted one reads it.
    assert p["cache_hits"] == p["cache_lookups"] - 1
    assert p["cache_write_tokens"] == 1200
    assert p["long_context_attempts"] > 0 and p["reasoning_cost"] > 0


def test_half_open_permit_refused_by_the_throttle_is_given_back() -> None:
    """resilience4j's breaker with an SRE throttle through a 10-minute outage: on f8966f2 the
    breaker stayed half-open from t = 423 s to the end of the hour (16% success, metastable in
    3 of 3 seeds), because trials refused by the throttle never returned their permits."""
    policy = {**GATES["breaker"], "throttle": {"k": 2.0, "window": 120}}
    sc = scenario(policy, duration=3600, outage=(600.0, 1200.0))
    for seed in (1, 2, 3):
        sim = Simulation(sc, seed=seed)
        result = sim.run()
        audit(sim, result)
        breaker = sim.clients["f"].breakers[0]
        assert breaker is not None and breaker.state == CLOSED
        # The throttle recovers within a few e-folds of window / k = 60 s after the outage.
        assert success_after(result, 1200.0 + 900.0) >= 0.97
        assert result.summary["success_rate"] > 0.6


def test_breaker_trial_permits_are_given_back_unit() -> None:
    """A trial permit taken, then given back, lets the next call take it."""
    from llmtraffic.client.breaker import CircuitBreaker
    from llmtraffic.config.policy import Breaker

    br = CircuitBreaker(
        Breaker(window_size=2, minimum_calls=2, open_duration=1.0, half_open_calls=1)
    )
    br.record(0.0, 0, True, 0.1)
    br.record(0.0, 0, True, 0.1)
    assert br.state != CLOSED
    assert br.allow(2.0) and br.state == HALF_OPEN
    assert not br.allow(2.0)  # the one permit is out
    assert br.trials_out == 1
    br.ignore(br.epoch)  # refused by a later gate: given back
    assert br.trials_out == 0
    assert br.allow(2.0)


def pacing_goodput(policy: dict[str, Any], seed: int = 1) -> np.ndarray:
    sc = make_scenario(
        **{
            "run.duration": 1200,
            "run.seed": seed,
            "run.timeseries_bin": 60,
            "providers.p.capacity": {"slots": 100, "queue_limit": 100},
            "features.f.arrivals": {"kind": "poisson", "rate": 12.0},
            "features.f.policy": "pol",
            "policies": {"pol": {"retry": {"kind": "none"}, **policy}},
        }
    )
    sim = Simulation(sc)
    result = sim.run()
    pacer = sim.clients["f"].pacer
    assert pacer is not None and pacer.reserved == sim.clients["f"].tally.sent
    return np.asarray(result.df("timeseries")["ok"], dtype=float) / 60.0


@pytest.mark.parametrize(
    "policy",
    [
        {"rate_limit": {"rpm": 600, "max_wait": 5}},  # on f8966f2: 0 ok/s from ~325 s
        {"rate_limit": {"rpm": 600}, "deadline": 10},  # on f8966f2: 0 ok/s from ~400 s
    ],
    ids=["max_wait", "deadline"],
)
def test_pacing_keeps_goodput_at_its_limit_under_sustained_overload(
    policy: dict[str, Any],
) -> None:
    """12/s offered against a 10/s pace: the pacer's 60 s burst is spent after about
    600 / (12 - 10) = 300 s; from then on goodput is the pace limit, 10/s, for good."""
    per_minute = pacing_goodput(policy)
    steady = per_minute[7:19]  # minutes 7-18 (the last bin holds the drain)
    assert np.all(np.abs(steady - 10.0) <= 0.3), steady


def test_a_client_paced_at_its_tiers_tpm_sends_what_the_tier_admits() -> None:
    """Input 1,000 and max_tokens 1,000 under a 60,000 TPM tier admit 60 requests a minute
    (the provider counts max(input, max_tokens)). A client pacer at the same TPM must send those
    60 (counting input + max_tokens it sent 30) and draw no 429."""
    common: dict[str, Any] = {
        "run.duration": 600,
        "run.timeseries_bin": 60,
        "providers.p.rate_limit": {"tpm": 60_000},
        "features.f.arrivals": {"kind": "poisson", "rate": 2.0},
        "features.f.input_tokens": {"kind": "fixed", "value": 1000},
        "features.f.max_tokens": 1000,
        "features.f.policy": "pol",
    }
    paced = make_scenario(
        **common, policies={"pol": {"retry": {"kind": "none"}, "rate_limit": {"tpm": 60_000}}}
    )
    result = Simulation(paced).run()
    assert result.summary["attempt_statuses"].get("rate_limited", 0) == 0
    ok_per_minute = np.asarray(result.df("timeseries")["ok"], dtype=float)
    assert np.all(np.abs(ok_per_minute[2:9] - 60.0) <= 2.0), ok_per_minute


def test_pacer_releases_reservations_unit() -> None:
    """earliest() reserves nothing; commit() and release() balance (hand-computed GCRA)."""
    pacer = ClientPacer(rpm=60, tpm=None, itpm=None, otpm=None)  # 1 s per request
    for _ in range(60):  # a full minute's burst at t = 0
        pacer.commit(pacer.earliest(0.0, 1, 1), 1, 1)
    assert pacer.earliest(0.0, 1, 1) == pytest.approx(1.0)
    assert pacer.earliest(0.0, 1, 1) == pytest.approx(1.0)  # asking twice reserves nothing
    pacer.release(1, 1)
    assert pacer.earliest(0.0, 1, 1) == pytest.approx(0.0)
    assert pacer.reserved == 59


def test_throttle_uncount_and_budget_refunds_unit() -> None:
    th = AdaptiveThrottle(2.0, 60.0)
    always = iter([0.0] * 10)
    assert th.allow(5.2, always)
    th.uncount(5.2)
    assert th.requests == 0.0 and th.counted - th.uncounted == 0
    tb = TokenBucketRetryBudget(0.1, 2.0)
    assert tb.try_retry(0.0, 1) and tb.try_retry(0.0, 1) and not tb.try_retry(0.0, 1)
    tb.refund(0.0)
    assert tb.try_retry(0.0, 1)
    fin = FinagleRetryBudget(0.0, 0.1, 10.0)  # a reserve of exactly one retry per 10 s
    assert fin.try_retry(3.0, 1) and not fin.try_retry(3.5, 1)
    fin.refund(3.0)
    assert fin.try_retry(3.5, 1)
    env = EnvoyRetryBudget(0.2, 1)
    assert env.try_retry(0.0, 1) and not env.try_retry(0.0, 1)
    env.refund(0.0)
    assert env.in_flight == 0 and env.try_retry(0.0, 1)


@pytest.mark.parametrize("wait", [-5.0, math.nan, math.inf])
def test_a_policy_cannot_move_time_backwards(wait: float) -> None:
    """On f8966f2 Decision(-5.0) went through: 87 of 87 retries left before the previous
    attempt ended. Every wait is now checked, and the error names the policy class."""
    retry = {"kind": "custom", "class": "tests.policy_plugins:FixedDecision"}
    sc = scenario({"retry": {**retry, "params": {"wait": wait}}}, duration=60, outage=(10, 20))
    with pytest.raises(PolicyError, match=r"FixedDecision.*finite number of seconds >= 0"):
        Simulation(sc).run()


def test_the_kernel_refuses_negative_delays() -> None:
    kernel = Kernel()
    with pytest.raises(ValueError, match="backwards"):
        kernel.call_in(-1.0, lambda ev: None)
    with pytest.raises(ValueError, match="backwards"):
        kernel.call_in(math.nan, lambda ev: None)
