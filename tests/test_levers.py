"""Cost levers against hand-computed cases and closed forms: a model cascade, a split by prompt
size, a response cache (fixed hit rate, and Zipf keys with a TTL), spend caps per key and per
user; with the books they must keep (every request ends once, money adds up).

Prices: provider ``p`` (the small model) $1 / $2 per million input / output tokens, so a
request of 100 + 50 tokens costs C1 = $0.0002; provider ``big`` 10x that, C2 = $0.002.
"""

from __future__ import annotations

import math
from itertools import islice
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtraffic import Simulation
from llmtraffic.client.client import Client
from llmtraffic.client.levers import LeversClient, ranks, zipf_cdf
from llmtraffic.engine.streams import Streams
from llmtraffic.errors import ConfigError
from tests.conftest import make_scenario

C1 = 100 * 1e-6 + 50 * 2e-6
C2 = 10 * C1
BIG = {
    "model": "big-model",
    "prices": {"input": 10.0, "output": 20.0},
    "capacity": {"slots": 50, "queue_limit": 100},
    "service": {"kind": "deterministic", "value": 1.0},
}


def binomial_ok(count: float, n: int, p: float, z: float = 4.0) -> bool:
    """``count`` is within z standard deviations of Binomial(n, p)'s mean."""
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p)) + 1e-9


def run(**overrides: Any) -> Any:
    return Simulation(make_scenario(**overrides)).run()


# Model cascade --------------------------------------------------------------------------------


def cascade(q1: float, q2: float, **more: Any) -> Any:
    return run(
        **{
            "providers.big": BIG,
            "features.f.arrivals": {"kind": "poisson", "rate": 20.0},
            "features.f.cascade": {"models": ["p", "big"], "quality_failure": [q1, q2]},
            "features.f.value_per_success": 0.01,
            **more,
        }
    )


def test_cascade_cost_is_c1_plus_q1_c2_and_quality_failures_q1_q2() -> None:
    q1, q2 = 0.3, 0.2
    r = cascade(q1, q2)
    s = r.summary
    f = s["features"]["f"]
    n = s["requests"]
    esc = f["escalations"]
    # Every request is billed C1, each escalated one C2 more: on average C1 + q1 C2.
    assert binomial_ok(esc, n, q1)
    assert s["billed_cost"] == pytest.approx(n * C1 + esc * C2)
    assert s["billed_cost"] / n == pytest.approx(C1 + q1 * C2, rel=0.05)
    assert f["escalation_cost"] == pytest.approx(esc * C1)
    # The last model still fails a q2 share of what reaches it: q1 q2 of all requests.
    assert binomial_ok(f["quality_failures"], n, q1 * q2)
    assert s["success_rate"] == 1.0
    # A quality failure earns no value: value counts the good answers only.
    assert s["value"] == pytest.approx((n - f["quality_failures"]) * 0.01)
    assert s["net_value"] == pytest.approx(s["value"] - s["billed_cost"])
    assert s["net_value_per_month"] == pytest.approx(s["net_value"] / 600 * 30 * 86400)
    assert f["net_value"] == pytest.approx(s["net_value"])  # one feature: the run's
    routes = f["routes"]
    assert routes["p"]["requests"] == n and routes["big"]["requests"] == esc
    assert routes["p"]["answered"] == n - esc and routes["big"]["answered"] == esc
    assert routes["p"]["escalation_share"] == pytest.approx(esc / n)
    assert routes["big"]["quality_failures"] == f["quality_failures"]
    # Deterministic 1 s services: an escalated request waited for both answers.
    assert routes["p"]["latency_mean"] == pytest.approx(1.0)
    assert routes["big"]["latency_mean"] == pytest.approx(2.0)
    req = r.requests
    assert (req.attempts == 1).sum() == n - esc and (req.attempts == 2).sum() == esc
    assert req.billed_cost.sum() == pytest.approx(s["billed_cost"])
    att = r.attempts
    # An escalated request has two ok answers, both billed.
    assert (att.status == "ok").sum() == n + esc
    two = att[att.request_id.isin(req.request_id[req.attempts == 2])]
    assert len(two) == 2 * esc and np.allclose(two.groupby("request_id").cost.sum(), C1 + C2)


def test_cascade_escalates_through_an_outage_of_the_cheap_model() -> None:
    """Requests at 0..9 s; the cheap model is down over [3, 6) s (503 after 0.05 s); one retry
    0.5 s later. Requests at 3, 4 and 5 s fail twice and escalate: 3 -> 3.05, retry at 3.55
    -> 3.60, big model 3.60 -> 4.60: latency 1.6 s. The others are answered in 1 s."""
    overrides: dict[str, Any] = {
        "run.duration": 20,
        "providers.big": BIG,
        "providers.p.failures": {"error_latency": 0.05},
        "providers.p.incidents": [{"kind": "outage", "start": 3.0, "duration": 3.0}],
        "features.f.arrivals": {"kind": "times", "at": [float(t) for t in range(10)]},
        "features.f.cascade": {"models": ["p", "big"], "quality_failure": [0.0, 0.0]},
        "policies": {"x": {"retry": {"kind": "fixed", "max_retries": 1, "delay": 0.5}}},
    }
    r = run(**overrides)
    routes = r.summary["features"]["f"]["routes"]
    assert routes["big"]["requests"] == 3 and routes["p"]["answered"] == 7
    assert r.summary["success_rate"] == 1.0
    req = r.requests.set_index("arrival_time")
    assert list(req.loc[[3.0, 4.0, 5.0], "final_model"]) == ["big-model"] * 3
    assert np.allclose(req.loc[[3.0, 4.0, 5.0], "latency"], 1.6)
    assert np.allclose(req.drop(index=[3.0, 4.0, 5.0]).latency, 1.0)
    assert r.summary["billed_cost"] == pytest.approx(7 * C1 + 3 * C2)
    # Without escalation on errors the three exhaust their retries and fail.
    overrides["features.f.cascade"] = {
        "models": ["p", "big"],
        "quality_failure": [0.0, 0.0],
        "escalate_on_error": False,
    }
    r = run(**overrides)
    assert r.summary["outcomes"] == {"exhausted": 3, "ok": 7}


# Split by prompt size ---------------------------------------------------------------------------


def test_split_sends_small_prompts_to_their_model() -> None:
    """Prompts uniform on 1..200 tokens; below 51 go to p, the others to big: a quarter go to
    p. The baseline of each request is its own route's first-try cost."""
    r = run(
        **{
            "providers.big": BIG,
            "features.f.provider": "big",
            "features.f.input_tokens": {"kind": "uniform", "low": 1, "high": 200},
            "features.f.split": {"below": 51, "provider": "p"},
        }
    )
    s = r.summary
    routes = s["features"]["f"]["routes"]
    n = s["requests"]
    assert binomial_ok(routes["p"]["requests"], n, 50 / 200)
    assert routes["p"]["requests"] + routes["big"]["requests"] == n
    req = r.requests
    small = req.input_tokens < 51
    assert (req.final_model[small] == "test-model").all() and (
        req.final_model[~small] == "big-model"
    ).all()
    assert s["cost_vs_baseline"] == pytest.approx(1.0)
    assert routes["p"]["billed_cost"] == pytest.approx(req.billed_cost[small].sum())


# Response cache -------------------------------------------------------------------------------


def test_fixed_hit_rate_cache() -> None:
    h = 0.25
    r = run(**{"features.f.response_cache": {"hit_rate": h, "latency": 0.005}})
    s = r.summary
    n, hits = s["requests"], s["cache_hits"]
    assert binomial_ok(hits, n, h)
    assert s["attempts"] == n - hits  # the provider sees only the misses
    assert s["billed_cost"] == pytest.approx((n - hits) * C1)
    assert s["cache_saved_cost"] == pytest.approx(hits * C1)
    assert s["baseline_cost"] == pytest.approx(n * C1)
    assert s["success_rate"] == 1.0
    req = r.requests
    hit = req.attempts == 0
    assert hit.sum() == hits and np.allclose(req.latency[hit], 0.005)
    assert (req.billed_cost[hit] == 0).all()


def test_zipf_keys_with_a_ttl_small_case() -> None:
    """One key: at 0 a miss (stored 0.5 -> 5.5), 1 and 2 hit, 6 misses (stored 6.5 -> 11.5),
    7 hits, 12 misses: 3 hits; a failed miss would store nothing."""
    r = run(
        **{
            "run.duration": 20,
            "providers.p.service": {"kind": "deterministic", "value": 0.5},
            "features.f.arrivals": {"kind": "times", "at": [0.0, 1.0, 2.0, 6.0, 7.0, 12.0]},
            "features.f.response_cache": {"keys": 1, "ttl": 5.0},
        }
    )
    assert r.summary["cache_hits"] == 3
    assert list(r.requests.sort_values("arrival_time").attempts) == [1, 0, 0, 1, 0, 1]


def test_zipf_keys_with_a_ttl_against_the_closed_form() -> None:
    """Key k is asked at rate mu_k = lambda p_k (Poisson); a miss stores the answer for T, and
    the first request after it misses again: mu_k T hits per miss, a hit ratio of
    mu_k T / (1 + mu_k T) for key k, weighted by p_k (answers take 1 ms: negligible)."""
    lam, keys, s_exp, ttl = 2.0, 10, 1.0, 5.0
    r = run(
        **{
            "run.duration": 3000,
            "providers.p.service": {"kind": "deterministic", "value": 0.001},
            "features.f.arrivals": {"kind": "poisson", "rate": lam},
            "features.f.response_cache": {"keys": keys, "zipf": s_exp, "ttl": ttl},
        }
    )
    cdf = zipf_cdf(keys, s_exp)
    p = np.diff(np.concatenate([[0.0], cdf]))
    mu_t = lam * p * ttl
    expected = float((p * mu_t / (1 + mu_t)).sum())
    n = r.summary["requests"]
    assert binomial_ok(r.summary["cache_hits"], n, expected)


# Spend caps -----------------------------------------------------------------------------------


def capped(per: str, usd: float, **more: Any) -> Any:
    return run(
        **{
            "run.duration": 180,
            "providers.p.service": {"kind": "deterministic", "value": 0.01},
            "features.f.arrivals": {"kind": "times", "at": [float(t) for t in range(180)]},
            "spend_caps": {"cap": {"usd": usd, "period": "minute", "features": ["f"], "per": per}},
            **more,
        }
    )


def test_per_key_cap_per_minute_with_constant_traffic() -> None:
    """One request a second, each billed C1 0.01 s later; cap 10.5 C1 a minute: the first 11
    of each minute are served (the 11th brings the spend to 11 C1 >= the cap), the other 49
    refused with a 429 quota_exhausted, unbilled; the cap resets each minute."""
    r = capped("key", 10.5 * C1)
    s = r.summary
    assert s["successes"] == 33 and s["spend_cap_refused"] == 147
    assert s["outcomes"] == {"non_retryable": 147, "ok": 33}
    assert s["billed_cost"] == pytest.approx(33 * C1)
    assert s["spend_cap_prevented_cost"] == pytest.approx(147 * C1)
    cap = s["spend_caps"]["cap"]
    assert cap["refused"] == 147 and cap["prevented_cost"] == pytest.approx(147 * C1)
    att = r.attempts
    refused = att[att.status == "quota_exhausted"]
    assert len(refused) == 147 and (refused.http_status == 429).all()
    assert (refused.cost == 0).all()  # prevented spend is not billed
    ok = r.requests[r.requests.outcome == "ok"].arrival_time % 60
    assert sorted(set(ok)) == [float(t) for t in range(11)]


def test_per_user_caps_with_two_users() -> None:
    """Two users share the traffic at random (about 30 requests each a minute); each may spend
    5.5 C1 a minute, so each gets 6 answers a minute: 36 in 3 minutes, 144 refused, each user's
    refusals being its requests less 18."""
    r = capped("user", 5.5 * C1, **{"features.f.users": {"count": 2}})
    s = r.summary
    assert s["successes"] == 36 and s["spend_cap_refused"] == 144
    tenants = {t["tenant"]: t for t in s["spend_caps"]["cap"]["tenants_refused"]}
    assert set(tenants) == {"f/user-0", "f/user-1"}
    assert sum(t["refused"] for t in tenants.values()) == 144
    assert s["spend_caps"]["cap"]["tenants"] == 2
    # By hand, per user: the requests of each minute beyond its first 6. The users are the
    # draws of the feature's own stream, in arrival order (the same seed, the same draws).
    users = list(islice(ranks(zipf_cdf(2, 0.0), Streams(1).generator("feature/f/users")), 180))
    for u in (0, 1):
        per_minute = [sum(1 for t in range(m * 60, m * 60 + 60) if users[t] == u) for m in range(3)]
        assert tenants[f"f/user-{u}"]["refused"] == sum(max(0, n - 6) for n in per_minute)
    assert s["spend_cap_prevented_cost"] == pytest.approx(144 * C1)


# Books ------------------------------------------------------------------------------------------


def test_books_balance_with_every_lever_and_failures() -> None:
    r = run(
        **{
            "providers.big": {**BIG, "failures": {"error_rate": 0.1, "midstream_rate": 0.1}},
            "providers.p.failures": {"error_rate": 0.2, "midstream_rate": 0.1},
            "features.f.cascade": {"models": ["p", "big"], "quality_failure": [0.3, 0.1]},
            "features.f.response_cache": {"keys": 50, "ttl": "30s"},
            "features.f.users": {"count": 3, "assignment": "zipf"},
            "features.f.value_per_success": 0.001,
            "spend_caps": {
                "k": {"usd": 0.01, "period": "minute", "features": ["f"]},
                "u": {"usd": 0.004, "period": "minute", "features": ["f"], "per": "user"},
            },
            "policies": {
                "x": {
                    "retry": {"kind": "exponential", "max_retries": 2, "base": 0.1},
                    "breaker": {},
                }
            },
        }
    )
    s, req, att = r.summary, r.requests, r.attempts
    f = s["features"]["f"]
    # Every request ends exactly once.
    assert len(req) == s["requests"] == sum(s["outcomes"].values())
    assert req.request_id.is_unique
    # Money adds up: attempts, requests, routes and the caps' meters all see the same bill.
    assert att.cost.sum() == pytest.approx(s["billed_cost"])
    assert req.billed_cost.sum() == pytest.approx(s["billed_cost"])
    assert sum(x["billed_cost"] for x in f["routes"].values()) == pytest.approx(s["billed_cost"])
    assert s["spend_caps"]["k"]["billed_cost"] == pytest.approx(s["billed_cost"])
    assert s["billed_cost"] >= s["useful_cost"]
    assert req.useful_cost[req.outcome == "ok"].sum() == pytest.approx(s["useful_cost"])
    # Refusals are never billed; cache hits neither.
    assert (att.cost[att.status == "quota_exhausted"] == 0).all()
    assert (req.billed_cost[req.attempts == 0] == 0).all()
    assert (req.attempts == 0).sum() == s["cache_hits"]
    assert s["spend_cap_refused"] > 0 and s["escalations"] > 0 and s["cache_hits"] > 0
    routes = f["routes"]
    assert routes["p"]["requests"] == s["requests"] - s["cache_hits"]
    assert routes["big"]["requests"] == routes["p"]["escalated"]
    assert sum(x["attempts"] for x in routes.values()) == s["attempts"]


def test_a_feature_without_levers_runs_the_plain_client() -> None:
    sim = Simulation(make_scenario())
    sim.run()
    assert type(sim.clients["f"]) is Client
    sim = Simulation(make_scenario(**{"features.f.response_cache": {"hit_rate": 0.1}}))
    sim.run()
    assert type(sim.clients["f"]) is LeversClient


@pytest.mark.parametrize(
    ("overrides", "phrase"),
    [
        (
            {"features.f.cascade": {"models": ["p", "nope"], "quality_failure": [0.1, 0.1]}},
            "features.f.cascade.models[1]: unknown provider 'nope'",
        ),
        (
            {
                "providers.big": BIG,
                "features.f.cascade": {"models": ["big", "p"], "quality_failure": [0.1, 0.1]},
            },
            "features.f.cascade.models[0]: must be the feature's provider",
        ),
        (
            {"features.f.cascade": {"models": ["p", "p"], "quality_failure": [0.1]}},
            "give one probability per model",
        ),
        (
            {"features.f.response_cache": {"hit_rate": 0.1, "keys": 3}},
            "give either hit_rate",
        ),
        (
            {"spend_caps": {"c": {"usd": 1, "period": "hour", "features": ["f"], "per": "user"}}},
            "features.f.users = { count = N }",
        ),
        (
            {"spend_caps": {"c": {"usd": 1, "period": "hour", "features": ["g"]}}},
            "spend_caps.c.features[0]: unknown feature 'g'",
        ),
        (
            {
                "features.f.response_cache": {"hit_rate": 0.1},
                "policies": {"x": {"hedge": {"delay": 1.0}}},
            },
            "does not combine with the hedging",
        ),
        (
            {
                "providers.big": BIG,
                "features.f.split": {"below": 10, "provider": "big"},
                "policies": {"x": {"fallback": {"providers": ["big"]}}},
            },
            "drop the policy's fallback",
        ),
    ],
)
def test_bad_lever_config_names_the_field(overrides: dict[str, Any], phrase: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_scenario(**overrides)
    assert phrase in str(err.value)


@settings(max_examples=15)
@given(
    q1=st.floats(0.0, 1.0),
    q2=st.floats(0.0, 1.0),
    hit=st.floats(0.0, 0.9),
    usd=st.floats(0.001, 0.05),
    per=st.sampled_from(["key", "user"]),
    error_rate=st.floats(0.0, 0.5),
    retryable_quota=st.booleans(),
)
def test_books_balance_for_any_levers(
    q1: float, q2: float, hit: float, usd: float, per: str, error_rate: float, retryable_quota: bool
) -> None:
    """Property: whatever the levers' settings, every request ends exactly once, the bills of
    attempts, requests, routes and caps agree, refusals and hits are never billed, and the
    prevented spend is the baseline of the refused requests."""
    retryable = ["rate_limited", "server_error", "overloaded", "timeout", "midstream_error"]
    if retryable_quota:
        retryable.append("quota_exhausted")
    r = run(
        **{
            "run.duration": 120,
            "providers.big": {**BIG, "failures": {"error_rate": error_rate}},
            "providers.p.failures": {"error_rate": error_rate, "midstream_rate": 0.05},
            "features.f.cascade": {"models": ["p", "big"], "quality_failure": [q1, q2]},
            "features.f.response_cache": {"hit_rate": hit},
            "features.f.users": {"count": 3},
            "spend_caps": {"c": {"usd": usd, "period": "30s", "features": ["f"], "per": per}},
            "policies": {
                "x": {
                    "retry": {"kind": "fixed", "max_retries": 2, "delay": 0.2},
                    "retryable": retryable,
                }
            },
        }
    )
    s, req, att = r.summary, r.requests, r.attempts
    assert len(req) == s["requests"] == sum(s["outcomes"].values())
    assert req.request_id.is_unique
    assert att.cost.sum() == pytest.approx(s["billed_cost"])
    assert req.billed_cost.sum() == pytest.approx(s["billed_cost"])
    routes = s["features"]["f"]["routes"]
    assert sum(x["billed_cost"] for x in routes.values()) == pytest.approx(s["billed_cost"])
    assert s["spend_caps"]["c"]["billed_cost"] == pytest.approx(s["billed_cost"])
    assert (att.cost[att.status == "quota_exhausted"] == 0).all()
    assert (req.attempts == 0).sum() == s["cache_hits"]
    assert s["billed_cost"] >= s["useful_cost"] - 1e-12
    refused_ids = set(att.request_id[att.status == "quota_exhausted"])
    failed = req[req.request_id.isin(refused_ids) & ~req.outcome.isin(["ok", "unfinished"])]
    assert len(failed) == s["spend_cap_refused"]
    assert failed.baseline_cost.sum() == pytest.approx(s["spend_cap_prevented_cost"])
    assert (req.attempts <= 2 * 3).all()  # (max_retries + 1) per model of the cascade


def test_the_lever_columns_are_known_before_the_run() -> None:
    """``llmtraffic check`` knows every lever column from the config (checks.columns): the
    flattened summary has exactly those (the zero counts aside)."""
    from llmtraffic.checks.columns import expected_columns, is_count_column
    from llmtraffic.experiment.analysis import flatten_summary

    sc = make_scenario(
        **{
            "providers.big": BIG,
            "features.f.cascade": {"models": ["p", "big"], "quality_failure": [0.3, 0.1]},
            "features.f.response_cache": {"hit_rate": 0.2},
            "features.f.users": {"count": 3},
            "features.g": {
                "provider": "big",
                "arrivals": {"kind": "poisson", "rate": 1.0},
                "input_tokens": {"kind": "uniform", "low": 1, "high": 200},
                "output_tokens": {"kind": "fixed", "value": 10},
                "split": {"below": 100, "provider": "p"},
            },
            "spend_caps": {
                "k": {"usd": 0.01, "period": "minute", "features": ["f", "g"]},
                "u": {"usd": 0.004, "period": "minute", "features": ["f"], "per": "user"},
            },
        }
    )
    real = set(flatten_summary(Simulation(sc).run().summary))
    expected = expected_columns([sc])
    assert real - expected == set()
    assert {c for c in expected - real if not is_count_column(c)} == set()
    assert "feature.f.routes.big.escalation_share" in real and "spend_caps.u.refused" in real
