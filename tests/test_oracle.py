"""The engine against an independent reference implementation (issue 11, section 6).

``tests/oracle`` simulates the same ``Scenario`` with plain SimPy processes (one per request,
one per attempt in service); a disagreement is a bug in one of them. Four kinds of check:

1. The oracle itself against hand-computed cases (so that it is worth comparing with).
2. Exact, request by request: Hypothesis draws deterministic scenarios (arrivals at listed
   times, fixed tokens, deterministic or noiseless token service, error rates 0 or 1, no
   jitter, no throttle coins) combining rate limits, capacity, incidents, billing rules and
   the gates; both must give every request the same outcome, number of attempts, end time and
   billed cost. Both see the same traffic; nothing else is random. Arrival times are drawn on
   a fine irregular grid, and service times, timeouts, latencies and waits are chosen so that
   two events meet at the same instant only by construction (ties are ordered by SimPy's
   event ids, which two implementations need not share). One test leaves out the
   combinations issue 11 changed (sections 1-2), the other draws them.
3. Statistical, on random scenarios (Poisson arrivals, uniform tokens, error and mid-stream
   rates, jittered backoff, the throttle's coins): both draw the same traffic (the engine's
   documented named streams) but their own provider and client randomness. Over 8
   replications, the difference of the means of success rate, attempts per request, billed
   cost per request and the p50 and p90 latency of successes must be within 4.5 standard
   errors (Welch's, unpaired: conservative, see the test) plus a small absolute slack for
   metrics that are nearly constant. By the CLT the difference is about normal; with Student
   tails at ~14 degrees of freedom P(|t| > 4.5) is about 5e-4 per metric, and the examples
   are derandomized, so a passing set stays passing until the engine changes.
4. The scenarios issue 11 names, scaled down (``test_issue11_...``), and retry waits against
   a closed form: engine and oracle must both show the expected figure.
"""

from __future__ import annotations

import copy
import math
import os
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from llmtraffic import Scenario, Simulation, scenario_from_dict
from tests.oracle import Oracle, OracleResult

# ORACLE_SHRINK=0 skips Hypothesis's shrinking (minutes on these scenarios) while debugging.
PHASES = (
    tuple(Phase)
    if os.environ.get("ORACLE_SHRINK", "1") != "0"
    else (Phase.explicit, Phase.reuse, Phase.generate)
)
EXACT = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
STATISTICAL = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TIME_TOL = 1e-7
"""Seconds: the two add the same waits in different orders."""


# Running both ---------------------------------------------------------------------------------


Row = tuple[str, int, float, str, int, float, float]
"""(feature, index in the feature, arrival, outcome, attempts, end, billed)."""


def engine_rows(sc: Scenario, seed: int | None = None) -> tuple[list[Row], dict[str, Any]]:
    """The engine's requests, in (feature, arrival) order, and its summary."""
    result = Simulation(sc, seed=seed).run()
    df = result.df("requests").sort_values(["feature", "arrival_time", "request_id"])
    rows: list[Row] = []
    index: Counter[str] = Counter()
    for r in df.itertuples():
        feature = str(r.feature)
        rows.append(
            (
                feature,
                index[feature],
                float(r.arrival_time),
                str(r.outcome),
                int(r.attempts),
                float(r.end_time),
                float(r.billed_cost),
            )
        )
        index[feature] += 1
    return rows, result.summary


def oracle_rows(result: OracleResult) -> list[Row]:
    """The oracle's requests, in the same order and form."""
    rows = [
        (r.feature, r.index, r.arrival, r.outcome, len(r.attempts), r.end, r.billed)
        for r in result.requests
    ]
    return sorted(rows, key=lambda row: (row[0], row[2], row[1]))


def assert_same_requests(engine: list[Row], oracle: list[Row]) -> None:
    """Request by request: the same outcome, attempts, end time and billed cost."""
    assert len(engine) == len(oracle)
    for e, o in zip(engine, oracle, strict=True):
        where = f"request {e[1]} of {e[0]} arriving at {e[2]:.6f}: engine {e}, oracle {o}"
        assert e[0] == o[0] and e[2] == o[2], where
        assert e[3] == o[3], where
        assert e[4] == o[4], where
        assert math.isclose(e[5], o[5], abs_tol=TIME_TOL), where
        assert math.isclose(e[6], o[6], rel_tol=1e-9, abs_tol=1e-15), where


# 1. The oracle against hand-computed cases ----------------------------------------------------


def _one_provider(**provider: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "prices": {"input": 1.0, "output": 2.0},
        "capacity": {"slots": 1, "queue_limit": 1},
        "service": {"kind": "deterministic", "value": 1.0},
        **provider,
    }


def _scenario(
    at: list[float], policy: dict[str, Any] | None = None, duration: float = 60.0, **provider: Any
) -> Scenario:
    raw: dict[str, Any] = {
        "run": {"duration": duration, "seed": 3},
        "providers": {"p": _one_provider(**provider)},
        "features": {
            "f": {
                "provider": "p",
                "arrivals": {"kind": "times", "at": at},
                "input_tokens": {"kind": "fixed", "value": 1000},
                "output_tokens": {"kind": "fixed", "value": 500},
            }
        },
    }
    if policy is not None:
        raw["policies"] = {"x": policy}
    return scenario_from_dict(raw)


PRICE_OK = 1000 * 1e-6 + 500 * 2e-6  # 0.002 USD: input at $1/M plus output at $2/M


def test_oracle_one_slot_one_queue_place_sheds_the_third() -> None:
    # Three requests at once on 1 slot + 1 queue place: served at 0-1, queued then 1-2, shed.
    res = Oracle(_scenario([0.0, 0.0, 0.0])).run()
    assert [r.outcome for r in res.requests] == ["ok", "ok", "exhausted"]
    assert [r.end for r in res.requests] == [1.0, 2.0, 0.05]  # shed after error_latency
    assert [a.status for a in res.requests[2].attempts] == ["overloaded"]
    assert res.billed == pytest.approx(2 * PRICE_OK)


def test_oracle_rate_limit_retry_after_and_honoured_retry() -> None:
    # rpm 1: the second request at t=10 finds the bucket 10/60 full; the 429's retry_after is
    # the 50 s until it is full again; honoured, the retry at t=60 passes.
    policy = {"retry": {"kind": "fixed", "delay": 1.0, "max_retries": 1}}
    sc = _scenario([0.0, 10.0], policy, rate_limit={"rpm": 1, "count_rejected": False})
    second = Oracle(sc).run().requests[1]
    assert [a.status for a in second.attempts] == ["rate_limited", "ok"]
    assert second.attempts[0].retry_after == 50.0
    assert second.attempts[1].send == pytest.approx(10.05 + 50.0)
    assert second.billed == pytest.approx(PRICE_OK)


def test_issue11_partial_billing_counts_generated_tokens_only() -> None:
    # Token service: ttft 1 s then 500 tokens at 100/s (5 s). A 3 s timeout on a provider that
    # stops at the disconnect has generated 2 s x 100 = 200 tokens; a 0.5 s timeout none
    # (issue 11, section 2; f8966f2 billed 3/6 x 500 = 250 and 41 tokens: time to first token
    # counted as generation). Oracle and engine alike.
    service = {"kind": "tokens", "ttft": 1.0, "decode_tps": 100.0, "noise_sigma": 0.0}
    billing = {"timeout": "partial", "abandoned_keeps_running": False}
    for timeout, tokens in ((3.0, 200), (0.5, 0)):
        sc = _scenario([0.0], {"timeout": timeout}, service=service, billing=billing)
        req = Oracle(sc).run().requests[0]
        assert req.outcome == "exhausted"
        assert req.billed == pytest.approx(1000 * 1e-6 + tokens * 2e-6)
        engine, _ = engine_rows(sc)
        assert engine[0][6] == pytest.approx(1000 * 1e-6 + tokens * 2e-6)


def _two_features(
    policy_f: dict[str, Any],
    policy_g: dict[str, Any],
    at_f: list[float],
    at_g: list[float],
    **provider: Any,
) -> Scenario:
    """Features f and g on one provider, each with its own policy."""

    def feature(policy: str, at: list[float]) -> dict[str, Any]:
        return {
            "provider": "p",
            "policy": policy,
            "arrivals": {"kind": "times", "at": at},
            "input_tokens": {"kind": "fixed", "value": 1000},
            "output_tokens": {"kind": "fixed", "value": 500},
        }

    return scenario_from_dict(
        {
            "run": {"duration": 60.0, "seed": 3},
            "providers": {"p": _one_provider(**provider)},
            "features": {"f": feature("pf", at_f), "g": feature("pg", at_g)},
            "policies": {"pf": policy_f, "pg": policy_g},
        }
    )


def test_oracle_abandoned_in_queue_is_billed_for_what_the_provider_runs() -> None:
    # f's request holds the one slot 0-1; g's request (0.5 s timeout) waits in the queue from
    # 0.1 and is abandoned at 0.6. The provider does not know: it serves it 1-2 in full, and
    # bills it in full (issue 11, section 2), while the client saw a timeout at 0.6.
    sc = _two_features({}, {"timeout": 0.5}, [0.0], [0.1])
    g = next(r for r in Oracle(sc).run().requests if r.feature == "g")
    assert [a.status for a in g.attempts] == ["timeout"]
    assert g.end == pytest.approx(0.6)
    assert g.billed == pytest.approx(PRICE_OK)
    # A provider that drops abandoned work never starts it: nothing to bill.
    stopped = _two_features(
        {}, {"timeout": 0.5}, [0.0], [0.1], billing={"abandoned_keeps_running": False}
    )
    g = next(r for r in Oracle(stopped).run().requests if r.feature == "g")
    assert g.billed == 0.0


def test_oracle_half_open_permit_given_back_when_pacing_refuses() -> None:
    # Breaker: opens on 1 failure in a window of 1, open 5 s, 1 half-open trial. Pacing: 1
    # request per minute, wait at most 1 s. An outage from 0 to 6 s.
    # A (t=0) goes out (the pacer is full), fails: the breaker opens at 0.05.
    # B (t=5.1): 5.05 s open, so half-open, and B takes the one trial permit; the pacer has
    # nothing until t=60 (A took the whole minute): over max_wait, refused. The permit must
    # come back (issue 11, section 1), so C (t=61, pacer full again, outage over) is the
    # trial, succeeds and closes the breaker. Were the permit lost, C would be refused.
    policy = {
        "breaker": {
            "window_size": 1,
            "minimum_calls": 1,
            "open_duration": 5.0,
            "half_open_calls": 1,
        },
        "rate_limit": {"rpm": 1, "max_wait": 1.0},
    }
    outage = [{"kind": "outage", "start": 0.0, "duration": 6.0}]
    sc = _scenario([0.0, 5.1, 61.0], policy, duration=70.0, incidents=outage)
    a, b, c = Oracle(sc).run().requests
    assert (a.outcome, b.outcome, c.outcome) == ("exhausted", "rejected_throttle", "ok")
    assert (len(a.attempts), len(b.attempts), len(c.attempts)) == (1, 0, 1)


# 2. Exact differential on deterministic scenarios --------------------------------------------


SERVICE_TIMES = (0.37, 0.83, 1.71, 4.13)
"""Service times, timeouts, latencies and waits are chosen so that no small sum of one kind
equals a sum of another (0.5 s + 0.3 s would meet a 0.8 s service at the same instant)."""


@st.composite
def exact_scenarios(
    draw: st.DrawFn, issue11_rules: bool = False, prices: bool = False
) -> dict[str, Any]:
    """A small deterministic scenario as a config dict.

    With ``prices``, the primary provider may have a prompt cache (Anthropic or OpenAI rules),
    a long-context tier within reach and a service tier, and the features a system prompt
    and reasoning tokens (docs/billing.md, "Prices as providers charge them").

    With ``issue11_rules`` false, combinations whose result issue 11 changes are left out:
    a gate that may refuse after one that holds something (a half-open permit, a retry from
    the budget, a pacing reservation), and abandoned work that keeps running billed partially.
    """
    duration = float(draw(st.sampled_from([40, 90, 150])))
    n = draw(st.integers(3, 40))
    ticks = draw(st.lists(st.integers(0, 10**9 - 1), min_size=n, max_size=n, unique=True))
    at = sorted(duration * 0.9 * t / 1e9 for t in ticks)

    def provider(primary: bool) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "model": "m",
            "prices": {
                "input": draw(st.sampled_from([0.5, 1.0, 3.0])),
                "output": draw(st.sampled_from([2.0, 4.0, 15.0])),
            },
            "capacity": draw(
                st.sampled_from([None, None, None, None, None])
                | st.fixed_dictionaries(
                    {
                        "slots": st.integers(1, 4),
                        "queue_limit": st.sampled_from([0, 1, 3, "unbounded"]),
                    }
                )
            ),
            "service": draw(
                st.sampled_from(
                    [{"kind": "deterministic", "value": v} for v in SERVICE_TIMES]
                    + [{"kind": "tokens", "ttft": 0.37, "decode_tps": 97.0, "noise_sigma": 0.0}]
                )
            ),
            "failures": {
                "error_rate": draw(st.sampled_from([0.0, 0.0, 1.0])) if not primary else 0.0,
                "error_latency": draw(st.sampled_from([0.051, 0.31])),
                "error_status": draw(st.sampled_from([500, 424])),
            },
        }
        if draw(st.booleans()):
            limit: dict[str, Any] = {
                "refill": draw(st.sampled_from(["continuous", "window"])),
                "count_rejected": draw(st.booleans()),
            }
            what = draw(st.sampled_from(["rpm", "tpm", "itpm", "otpm"]))
            per_minute = draw(st.sampled_from([6, 20, 45]))
            # Token limits: about that many requests a minute (tokens are 50-700 each).
            limit[what] = per_minute if what == "rpm" else per_minute * 300
            # Enforced over a shorter window (at least one request's worth of 6 a minute),
            # the rpm over its own (Azure), tokens as Azure counts them, and a daily limit
            # that binds within the run, refilled or reset (at a reset inside the run).
            limit["window"] = draw(st.sampled_from([60.0, 60.0, 20.0, 10.0]))
            if what == "rpm" and draw(st.booleans()):
                limit["rpm_window"] = draw(st.sampled_from([10.0, 30.0]))
            if what == "tpm":
                limit["tpm_counts"] = draw(st.sampled_from(["max", "sum"]))
            if draw(st.booleans()):
                daily = draw(st.sampled_from(["rpd", "tpd"] if what == "tpm" else ["rpd"]))
                limit[daily] = draw(st.sampled_from([4, 15])) * (1 if daily == "rpd" else 300)
                limit["daily_refill"] = draw(st.sampled_from(["continuous", "window"]))
                if limit["daily_refill"] == "window":
                    limit["day_starts_at"] = draw(st.sampled_from([0.0, 40.0]))
            cfg["rate_limit"] = limit
        keeps = draw(st.booleans())
        timeout_rule = draw(st.sampled_from(["partial", "full", "none"]))
        if keeps:
            # "none" would bill less than the work the provider keeps doing: refused. Of the
            # others, "full" is the only one f8966f2 and issue 11 agree on.
            timeout_rule = "full" if not issue11_rules or timeout_rule == "none" else timeout_rule
        cfg["billing"] = {"timeout": timeout_rule, "abandoned_keeps_running": keeps}
        incidents = []
        for kind in draw(
            st.lists(
                st.sampled_from(
                    ["outage", "brownout", "capacity_drop", "latency_spike", "rate_limit_change"]
                ),
                max_size=2,
                unique=True,
            )
        ):
            inc: dict[str, Any] = {
                "kind": kind,
                "start": float(draw(st.integers(0, int(duration * 0.7)))) + 0.123,
                "duration": float(draw(st.sampled_from([3, 10, 25]))),
            }
            if kind == "brownout":
                inc["error_rate"] = 1.0
                inc["status"] = draw(st.sampled_from([500, 424]))
            elif kind == "capacity_drop":
                inc["remaining"] = 0.5
            elif kind in ("latency_spike", "rate_limit_change"):
                inc["factor"] = draw(st.sampled_from([0.5, 3.0]))
            incidents.append(inc)
        cfg["incidents"] = incidents
        if cfg["capacity"] is None:
            # Not capacity-limited (no capacity table): nothing for a capacity drop to drop.
            del cfg["capacity"]
            cfg["incidents"] = [i for i in incidents if i["kind"] != "capacity_drop"]
        return cfg

    providers = {"p": provider(True)}
    policy: dict[str, Any] = {
        "timeout": draw(st.sampled_from([0.53, 1.07, 2.59, 600.0])),
        "deadline": draw(st.sampled_from([math.inf, math.inf, 3.1, 9.7])),
    }
    kind = draw(st.sampled_from(["none", "naive", "fixed", "exponential"]))
    retry: dict[str, Any] = {"kind": kind}
    if kind != "none":
        retry["max_retries"] = draw(st.integers(0, 3))
        retry["honor_retry_after"] = draw(st.booleans())
        retry["retry_after_max"] = draw(st.sampled_from([5.0, 60.0]))
    if kind == "fixed":
        retry["delay"] = draw(st.sampled_from([0.23, 1.13]))
    if kind == "exponential":
        retry.update(base=0.29, multiplier=2.0, cap=5.0, jitter="none")
    policy["retry"] = retry
    if draw(st.booleans()):
        # The SDKs' rule: error responses retried only for these statuses (not a 424).
        policy["retryable_http"] = {"codes": [408, 409, 429], "at_least": 500}
    policy["retryable"] = draw(
        st.sampled_from(
            [
                ["rate_limited", "server_error", "overloaded", "timeout", "midstream_error"],
                ["rate_limited", "overloaded"],
            ]
        )
    )
    # Each gate independently, so that pairs and triples of gates meet often.
    gates = [
        g
        for g in ("breaker", "budget", "pacing", "concurrency", "fallback")
        if draw(st.integers(0, 2)) == 0
    ]
    if "breaker" in gates:
        size = draw(st.integers(1, 5))
        policy["breaker"] = {
            "window": draw(st.sampled_from(["count", "time"])),
            "window_size": size,
            "minimum_calls": draw(st.integers(1, size)),
            "failure_rate_threshold": draw(st.sampled_from([0.5, 1.0])),
            "open_duration": draw(st.sampled_from([2.3, 7.9])),
            "half_open_calls": draw(st.integers(0, 2)),
        }
    # Before issue 11, what a gate gave an attempt was kept when a later gate refused it or
    # its request ended while it waited (and a breaker's epoch was read when the attempt went
    # out, not when it passed the breaker): left out of the settled scenarios.
    settled = not issue11_rules
    if settled and "breaker" in gates:
        gates = [g for g in gates if g not in ("budget", "pacing", "concurrency")]
    if "budget" in gates:
        policy["budget"] = {
            "kind": "token_bucket",
            "ratio": draw(st.sampled_from([0.2, 1.0])),
            "max_tokens": draw(st.sampled_from([1.0, 3.0])),
        }
    if "pacing" in gates:
        pacing: dict[str, Any] = {"rpm": draw(st.sampled_from([6, 20, 40]))}
        if settled:
            # A paced attempt is never refused nor abandoned.
            policy["deadline"] = math.inf
            pacing["max_wait"] = math.inf
        else:
            pacing["max_wait"] = draw(st.sampled_from([math.inf, 2.0, 5.0]))
        policy["rate_limit"] = pacing
    if "concurrency" in gates:
        conc: dict[str, Any] = {"limit": draw(st.integers(1, 3))}
        if settled and ("pacing" in gates or "budget" in gates):
            policy["deadline"] = math.inf  # what they gave is never dropped in the queue
        else:
            conc["queue_limit"] = draw(st.sampled_from([None, 0, 2]))
        policy["concurrency"] = conc
    if "fallback" in gates:
        providers["q"] = provider(False)
        policy["fallback"] = {
            "providers": ["q"],
            "after_failures": draw(st.sampled_from([None, 1, 2])),
            "on_statuses": draw(st.sampled_from([[], ["rate_limited"], ["server_error"]])),
            "on_breaker_open": draw(st.booleans()),
            "on_exhausted": draw(st.booleans()),
        }

    def feature(at: list[float], policy: str) -> dict[str, Any]:
        return {
            "provider": "p",
            "policy": policy,
            "arrivals": {"kind": "times", "at": at},
            "input_tokens": {"kind": "fixed", "value": draw(st.sampled_from([100, 700]))},
            "output_tokens": {"kind": "fixed", "value": draw(st.sampled_from([50, 400]))},
            "cached_fraction": draw(st.sampled_from([0.0, 0.5])),
            "max_tokens": draw(st.sampled_from([1024, 300])),
        }

    features = {"f": feature(at, "x")}
    policies: dict[str, Any] = {"x": policy}
    if draw(st.booleans()):
        # A second feature with no retries shares the provider, its limits and its slots.
        m = draw(st.integers(1, 20))
        ticks_g = draw(st.lists(st.integers(0, 10**9 - 1), min_size=m, max_size=m, unique=True))
        features["g"] = feature(sorted(duration * 0.9 * t / 1e9 + 1e-4 for t in ticks_g), "y")
        policies["y"] = {"timeout": draw(st.sampled_from([1.07, 600.0]))}
    if prices:
        p = providers["p"]
        rules = draw(st.sampled_from([None, "anthropic", "openai"]))
        if rules is not None:
            p["prompt_cache"] = {
                "rules": rules,
                "ttl": draw(
                    st.sampled_from([300.0, 3600.0] if rules == "anthropic" else [5.0, 300.0])
                ),
            }
            for feat in features.values():
                feat["cached_fraction"] = 0.0
        if draw(st.booleans()):
            p["prices"]["long_context"] = {"above": 1500, "input": 7.0, "output": 20.0}
        if draw(st.booleans()):
            # A tier's prices (batch would need day-long timeouts: its prices are the same rule).
            p["service_tier"] = "priority"
            p["prices"]["priority"] = {"input": p["prices"]["input"] * 1.7, "output": 1.0}
        for feat in features.values():
            feat["system_prompt_tokens"] = draw(st.sampled_from([0, 1100, 2000]))
            think = draw(st.sampled_from([None, 30, 200]))
            if think is not None:
                feat["reasoning_tokens"] = {"kind": "fixed", "value": think}
    return {
        "run": {"duration": duration, "seed": 0},
        "providers": providers,
        "features": features,
        "policies": policies,
    }


def compare_exactly(raw: dict[str, Any]) -> None:
    sc = scenario_from_dict(copy.deepcopy(raw))
    engine, summary = engine_rows(sc)
    oracle = Oracle(sc).run()
    assert_same_requests(engine, oracle_rows(oracle))
    assert math.isclose(summary["billed_cost"], oracle.billed, rel_tol=1e-9, abs_tol=1e-15)


@EXACT
@given(exact_scenarios())
def test_engine_matches_oracle_request_by_request(raw: dict[str, Any]) -> None:
    compare_exactly(raw)


@EXACT
@given(exact_scenarios(issue11_rules=True))
def test_engine_matches_oracle_request_by_request_issue11_rules(raw: dict[str, Any]) -> None:
    compare_exactly(raw)


@EXACT
@given(exact_scenarios(issue11_rules=True, prices=True))
def test_engine_matches_oracle_request_by_request_with_provider_prices(
    raw: dict[str, Any],
) -> None:
    compare_exactly(raw)


# 3. Statistical differential on random scenarios ---------------------------------------------


@st.composite
def random_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """A small random scenario: Poisson traffic, uniform tokens, random failures and timing."""
    duration = float(draw(st.sampled_from([60, 120])))
    rate = draw(st.sampled_from([1.0, 2.5, 4.0]))
    provider: dict[str, Any] = {
        "model": "m",
        "prices": {"input": 1.0, "output": 4.0},
        "capacity": {
            "slots": draw(st.integers(2, 8)),
            "queue_limit": draw(st.sampled_from([2, 10, "unbounded"])),
        },
        "service": draw(
            st.sampled_from(
                [
                    {"kind": "exponential", "mean": 1.0},
                    {"kind": "uniform", "low": 0.3, "high": 2.0},
                    {"kind": "tokens", "ttft": 0.3, "decode_tps": 200.0, "noise_sigma": 0.3},
                ]
            )
        ),
        "failures": {
            "error_rate": draw(st.sampled_from([0.0, 0.1, 0.3])),
            "midstream_rate": draw(st.sampled_from([0.0, 0.1])),
        },
        "billing": {
            "abandoned_keeps_running": draw(st.booleans()),
            "timeout": draw(st.sampled_from(["partial", "full"])),
            "midstream": draw(st.sampled_from(["partial", "full", "none"])),
        },
    }
    if draw(st.booleans()):
        provider["rate_limit"] = {
            "rpm": rate * 60 * draw(st.sampled_from([0.8, 1.5])),
            "count_rejected": False,
        }
    if draw(st.booleans()):
        kind = draw(
            st.sampled_from(
                ["outage", "brownout", "capacity_drop", "latency_spike", "rate_limit_change"]
            )
        )
        inc: dict[str, Any] = {"kind": kind, "start": duration / 4, "duration": duration / 4}
        if kind == "brownout":
            inc["error_rate"] = 0.4
            inc["midstream_rate"] = 0.3
        if kind == "capacity_drop":
            inc["remaining"] = 0.3
        if kind == "latency_spike":
            inc["factor"] = 3.0
        if kind == "rate_limit_change":
            inc["factor"] = 0.5
        provider["incidents"] = [inc]
    policy: dict[str, Any] = {
        "timeout": draw(st.sampled_from([2.0, 5.0, 600.0])),
        "retry": {
            "kind": "exponential",
            "max_retries": draw(st.integers(0, 3)),
            "base": 0.5,
            "cap": 8.0,
            "jitter": draw(
                st.sampled_from(["full", "equal", "decorrelated", "proportional", "additive"])
            ),
            "retry_after_jitter": draw(st.sampled_from([0.0, 0.75])),
        },
    }
    # Any combination of the gates (each with probability 1/3).
    gates = {
        g
        for g in ("breaker", "throttle", "budget", "concurrency", "pacing", "deadline")
        if draw(st.integers(0, 2)) == 0
    }
    if "breaker" in gates:
        policy["breaker"] = {
            "window_size": 20,
            "minimum_calls": 10,
            "open_duration": 5.0,
            "half_open_calls": draw(st.sampled_from([1, 3])),
        }
    if "throttle" in gates:
        policy["throttle"] = {"k": 1.5, "window": 30.0}
    if "budget" in gates:
        policy["budget"] = draw(
            st.sampled_from(
                [
                    {"kind": "token_bucket", "ratio": 0.2, "max_tokens": 5.0},
                    {"kind": "finagle", "percent": 0.1, "min_per_second": 0.5, "ttl": 10.0},
                    {"kind": "envoy", "percent": 0.2, "min_concurrency": 1},
                ]
            )
        )
    if "concurrency" in gates:
        policy["concurrency"] = {"limit": 4, "queue_limit": 5}
    if "pacing" in gates:
        policy["rate_limit"] = {"rpm": rate * 60 * 0.9, "max_wait": 3.0}
    if "deadline" in gates:
        policy["deadline"] = 6.0
    return {
        "run": {"duration": duration, "seed": 0},
        "providers": {"p": provider},
        "features": {
            "f": {
                "provider": "p",
                "arrivals": {"kind": "poisson", "rate": rate},
                "input_tokens": {"kind": "uniform", "low": 50, "high": 500},
                "output_tokens": {"kind": "uniform", "low": 20, "high": 300},
            }
        },
        "policies": {"x": policy},
    }


def metrics(
    outcomes: list[str], attempts: list[int], billed: list[float], latencies: list[float]
) -> np.ndarray:
    """Success rate, attempts per request, billed per request, and the median and 90th
    percentile latency of the successes."""
    n = len(outcomes)
    ok = [lat for o, lat in zip(outcomes, latencies, strict=True) if o == "ok"]
    return np.array(
        [
            sum(o == "ok" for o in outcomes) / n,
            sum(attempts) / n,
            sum(billed) / n,
            float(np.quantile(ok, 0.5)) if ok else 0.0,
            float(np.quantile(ok, 0.9)) if ok else 0.0,
        ]
    )


REPLICATIONS = 8
SLACK = np.array([0.01, 0.01, 1e-6, 0.02, 0.05])
"""Absolute slack per metric, for metrics that barely vary across replications (a success
rate of 1 in every run has standard error 0)."""


@STATISTICAL
@given(random_scenarios())
def test_engine_matches_oracle_statistically(raw: dict[str, Any]) -> None:
    sc = scenario_from_dict(copy.deepcopy(raw))
    engine, oracle = [], []
    for seed in range(REPLICATIONS):
        e, _ = engine_rows(sc, seed)
        o = Oracle(sc, seed).run().requests
        engine.append(
            metrics(
                [r[3] for r in e], [r[4] for r in e], [r[6] for r in e], [r[5] - r[2] for r in e]
            )
        )
        oracle.append(
            metrics(
                [r.outcome for r in o],
                [len(r.attempts) for r in o],
                [r.billed for r in o],
                [r.latency for r in o],
            )
        )
    e_m, o_m = np.array(engine), np.array(oracle)
    diff = e_m.mean(axis=0) - o_m.mean(axis=0)
    # The unpaired (Welch) standard error: the pairs share their traffic, which correlates
    # them positively, so this overstates the error of the difference (a conservative test);
    # the paired one, estimated from 8 pairs, can come out small by chance.
    se = np.sqrt(e_m.var(axis=0, ddof=1) / REPLICATIONS + o_m.var(axis=0, ddof=1) / REPLICATIONS)
    names = ["success rate", "attempts/request", "billed/request", "p50 latency", "p90 latency"]
    for i, name in enumerate(names):
        assert abs(diff[i]) <= 4.5 * se[i] + SLACK[i], (
            f"{name}: engine - oracle = {diff[i]:.4g} +- {se[i]:.2g} "
            f"(engine {e_m[:, i]}, oracle {o_m[:, i]})"
        )


# 4. The scenarios issue 11 names, scaled down: engine, oracle and the expected figure -------


def _issue_scenario(
    policy: dict[str, Any],
    duration: float,
    rate: float,
    incidents: list[dict[str, Any]] | None = None,
) -> Scenario:
    return scenario_from_dict(
        {
            "run": {"duration": duration, "seed": 0},
            "providers": {
                "p": {
                    "model": "m",
                    "prices": {"input": 1.0, "output": 2.0},
                    "service": {"kind": "deterministic", "value": 0.5},
                    "incidents": incidents or [],
                }
            },
            "features": {
                "f": {
                    "provider": "p",
                    "arrivals": {"kind": "poisson", "rate": rate},
                    "input_tokens": {"kind": "fixed", "value": 100},
                    "output_tokens": {"kind": "fixed", "value": 50},
                }
            },
            "policies": {"x": policy},
        }
    )


def _ok_between(rows: list[Row], start: float, end: float) -> tuple[int, int]:
    """(successes, requests) among the requests that arrived in [start, end)."""
    inside = [r for r in rows if start <= r[2] < end]
    return sum(r[3] == "ok" for r in inside), len(inside)


def test_issue11_pacing_sustains_the_pace_limit_engine_and_oracle() -> None:
    # Issue 11, section 1: 12/s offered against a 10/s client pace limit (max_wait 5 s). On
    # f8966f2 goodput fell to 0 after ~325 s: refused requests kept their reservations. Only
    # attempts sent reserve: sustained goodput is the pace limit, 10/s. Nothing is random
    # once the (shared) Poisson arrivals are drawn, so engine and oracle agree request by
    # request; over the last 300 s of a 900 s run, 10/s x 300 s = 3000 successes expected
    # (the pacer's minute of burst is long spent; 2% covers the bucket's edges).
    sc = _issue_scenario({"rate_limit": {"rpm": 600, "max_wait": 5.0}}, 900.0, 12.0)
    engine, _ = engine_rows(sc)
    oracle = oracle_rows(Oracle(sc).run())
    assert_same_requests(engine, oracle)
    for rows in (engine, oracle):
        ok, _ = _ok_between(rows, 600.0, 900.0)
        assert ok == pytest.approx(3000, rel=0.02)


def test_issue11_breaker_and_throttle_recover_after_an_outage() -> None:
    # Issue 11, section 1: the resilience4j breaker plus the SRE throttle through an outage.
    # On f8966f2 the breaker stayed half-open from t~423 s to the end (8% success): each trial
    # permit taken by an attempt the throttle then refused was lost. Here a 10-minute outage
    # at 5 minutes of a 30-minute run. After it the breaker may stay half-open a while (its
    # trials are mostly refused by the throttle, whose 2-minute window still holds the
    # outage), may open once more on trials that failed during the outage, then closes; both
    # implementations were back at full success from 1300 s on in the run seen. The last
    # 5 minutes must all succeed (the provider has no other failure). The throttle's coins
    # differ between engine and oracle, so only the figures are compared.
    policy = {
        "timeout": 30.0,
        "retry": {"kind": "exponential", "max_retries": 2, "jitter": "full"},
        "breaker": "resilience4j",
        "throttle": {"k": 2.0, "window": 120.0},
    }
    outage = [{"kind": "outage", "start": 300.0, "duration": 600.0}]
    sc = _issue_scenario(policy, 1800.0, 5.0, outage)
    engine, _ = engine_rows(sc)
    oracle = oracle_rows(Oracle(sc).run())
    for name, rows in (("engine", engine), ("oracle", oracle)):
        ok, n = _ok_between(rows, 1500.0, 1800.0)
        assert ok == n, f"{name}: {ok} of {n} succeeded in the last 5 minutes"


def test_issue11_abandoned_queued_work_is_billed_engine_and_oracle() -> None:
    # Issue 11, section 2: with the default billing (timeout "partial", abandoned work keeps
    # running) a storm's attempts abandoned in the queue were billed 0 on f8966f2, although
    # the provider served every one of them (cost amplification 1.00, against 8.83 with
    # timeout "full"). 4/s offered to 2 slots of 1 s, a 3 s timeout, 3 immediate retries: the
    # queue grows without end, most attempts are abandoned in it and served later. Every
    # abandoned attempt runs to completion, so "partial" bills it in full, as "full" does.
    # Nothing is random once the Poisson arrivals are drawn: engine and oracle agree request
    # by request.
    def storm(timeout_rule: str) -> Scenario:
        raw: dict[str, Any] = {
            "run": {"duration": 120.0, "seed": 0},
            "providers": {
                "p": {
                    "model": "m",
                    "prices": {"input": 1.0, "output": 2.0},
                    "capacity": {"slots": 2, "queue_limit": "unbounded"},
                    "service": {"kind": "deterministic", "value": 1.0},
                    "billing": {"timeout": timeout_rule},
                }
            },
            "features": {
                "f": {
                    "provider": "p",
                    "arrivals": {"kind": "poisson", "rate": 4.0},
                    "input_tokens": {"kind": "fixed", "value": 100},
                    "output_tokens": {"kind": "fixed", "value": 50},
                }
            },
            "policies": {"x": {"timeout": 3.0, "retry": {"kind": "naive", "max_retries": 3}}},
        }
        return scenario_from_dict(raw)

    partial, full = storm("partial"), storm("full")
    engine, summary = engine_rows(partial)
    assert_same_requests(engine, oracle_rows(Oracle(partial).run()))
    _, summary_full = engine_rows(full)
    assert summary["billed_cost"] == pytest.approx(summary_full["billed_cost"], rel=1e-9)
    # Every attempt is served in full, successful or not: billed = attempts x one price.
    attempts = sum(r[4] for r in engine)
    assert summary["billed_cost"] == pytest.approx(attempts * (100e-6 + 50 * 2e-6), rel=1e-9)
    assert summary["cost_amplification"] > 2.0


@pytest.mark.parametrize("jitter", ["none", "full", "equal", "proportional"])
def test_retry_waits_engine_oracle_and_closed_form(jitter: str) -> None:
    # Fast errors with probability 1/2 (seen after 0.05 s), no capacity limit, 0.2 s service,
    # exponential backoff base 1 s x 2^n with up to 3 retries. A request that succeeds on
    # attempt k (probability 2^-k, k = 1..4) has latency 0.2 + 0.05 (k - 1) + the sum of the
    # k - 1 waits, whose means are w_n = 2^n times 1 (none), 1/2 (full), 3/4 (equal) or
    # 7/8 (proportional, fraction 1/4). The mean latency of successes must match that closed
    # form within 5 standard errors (the errors and the jitter are independent draws, so the
    # latencies of successes are i.i.d.) in the engine and in the oracle.
    factor = {"none": 1.0, "full": 0.5, "equal": 0.75, "proportional": 0.875}[jitter]
    p_k = [0.5**k for k in range(1, 5)]
    lat_k = [0.2 + 0.05 * (k - 1) + factor * sum(2.0**n for n in range(k - 1)) for k in range(1, 5)]
    expected = sum(p * lat for p, lat in zip(p_k, lat_k, strict=True)) / sum(p_k)
    sc = scenario_from_dict(
        {
            "run": {"duration": 400.0, "seed": 5},
            "providers": {
                "p": {
                    "model": "m",
                    "prices": {"input": 1.0, "output": 2.0},
                    "service": {"kind": "deterministic", "value": 0.2},
                    "failures": {"error_rate": 0.5},
                }
            },
            "features": {
                "f": {
                    "provider": "p",
                    "arrivals": {"kind": "poisson", "rate": 5.0},
                    "input_tokens": {"kind": "fixed", "value": 100},
                    "output_tokens": {"kind": "fixed", "value": 50},
                }
            },
            "policies": {
                "x": {
                    "retry": {
                        "kind": "exponential",
                        "max_retries": 3,
                        "base": 1.0,
                        "multiplier": 2.0,
                        "cap": 60.0,
                        "jitter": jitter,
                    }
                }
            },
        }
    )
    engine, _ = engine_rows(sc)
    oracle = Oracle(sc).run().requests
    for name, lat in (
        ("engine", [r[5] - r[2] for r in engine if r[3] == "ok"]),
        ("oracle", [r.latency for r in oracle if r.outcome == "ok"]),
    ):
        se = float(np.std(lat, ddof=1)) / math.sqrt(len(lat)) + 1e-9
        assert abs(float(np.mean(lat)) - expected) <= 5 * se, (name, np.mean(lat), expected, se)
