"""Error kinds, each with its billing and retry rule (docs/providers.md, "Error kinds").

Hand-computed cases: a spend cap reached after a known number of requests of known cost, then
every attempt refused and none billed (and the cap's period resetting it); a quota incident;
the context-length 400 from the workload, never retried and billed nothing under every SDK
preset; the x-should-retry header obeyed by the SDK presets; a mix of error kinds drawn at
their rates (binomial tolerance). A composition through a quota incident checks conservation,
and a property runs the engine's invariants (tests/test_invariants.py) on random scenarios
with these features added (the oracle's generated scenarios leave them out).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtraffic import ConfigError, Simulation, scenario_from_dict
from llmtraffic.client.tenacity_adapter import EXCEPTIONS, QuotaExhaustedError, RateLimitedError
from llmtraffic.config.policy import Policy
from llmtraffic.config.policy_presets import POLICIES
from llmtraffic.provider.endpoint import Endpoint
from llmtraffic.provider.errors import ErrorEndpoint, longest_request
from llmtraffic.provider.quota import SpendMeter
from llmtraffic.testing.strategies import scenarios
from tests import test_invariants as inv
from tests.test_gate_compositions import audit

# One request: 1,000 input tokens at $1/M + 500 output tokens at $2/M = $0.002, served in
# 0.5 s, one request a second.
COST = 0.002
TIMES = [float(t) for t in range(10)]


def raw_scenario(
    provider: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    times: list[float] | None = None,
    input_tokens: int = 1000,
    max_tokens: int = 1024,
) -> dict[str, Any]:
    return {
        "run": {"duration": 30.0, "seed": 1, "timeseries_bin": 1.0},
        "providers": {
            "p": {
                "model": "m",
                "prices": {"input": 1.0, "output": 2.0},
                "service": {"kind": "deterministic", "value": 0.5},
                **(provider or {}),
            }
        },
        "features": {
            "f": {
                "provider": "p",
                "arrivals": {"kind": "times", "at": TIMES if times is None else times},
                "input_tokens": {"kind": "fixed", "value": input_tokens},
                "output_tokens": {"kind": "fixed", "value": 500},
                "max_tokens": max_tokens,
                "policy": "pol",
            }
        },
        "policies": {"pol": policy or {}},
    }


def run(raw: dict[str, Any]) -> tuple[Simulation, Any]:
    sim = Simulation(scenario_from_dict(copy.deepcopy(raw)))
    return sim, sim.run()


# Quota: a spend cap ---------------------------------------------------------------------------


def test_a_spend_cap_refuses_every_attempt_once_reached_and_bills_none_of_them() -> None:
    """Cap $0.0055: the third request's $0.002 (done at 2.5 s) takes the spend to $0.006, so
    the 7 requests sent from 3 s on are refused with a 429 quota_exhausted, no retry-after,
    billed $0 (the default policy does not retry it)."""
    sim, result = run(raw_scenario({"quota": {"spend_cap": 0.0055}}))
    att = result.df("attempts")
    s = result.summary
    assert isinstance(sim.endpoints["p"], ErrorEndpoint)
    refused = att[att.status == "quota_exhausted"]
    assert list(refused.send_time) == TIMES[3:]
    assert (refused.http_status == 429).all() and refused.retry_after.isna().all()
    assert (refused.cost == 0).all() and (refused.output_tokens == 0).all()
    assert math.isclose(s["billed_cost"], 3 * COST)
    assert s["quota_exhausted_by"] == {"p.spend_cap": 7}
    assert s["attempt_statuses"]["quota_exhausted"] == 7
    assert s["outcomes"]["non_retryable"] == 7 and s["outcomes"]["ok"] == 3
    ev = result.df("events")
    reached = ev[ev.kind == "quota_exhausted"]
    assert list(reached.time) == [2.5] and math.isclose(reached.value.iloc[0], 3 * COST)
    ts = result.df("timeseries")
    assert ts.quota_exhausted.sum() == 7


def test_a_spend_cap_resets_at_each_period() -> None:
    """Period 5 s: refused at 3 and 4 s; the period from 5 s admits 5, 6 and 7 s (the cap is
    reached again at 7.5 s), then refuses 8 and 9 s: 6 billed, 4 refused."""
    _, result = run(raw_scenario({"quota": {"spend_cap": 0.0055, "period": "5s"}}))
    att = result.df("attempts")
    assert list(att[att.status == "quota_exhausted"].send_time) == [3.0, 4.0, 8.0, 9.0]
    assert math.isclose(result.summary["billed_cost"], 6 * COST)
    ev = result.df("events")
    quota = ev[ev.kind.str.startswith("quota_")]
    assert list(zip(quota.kind, quota.time, strict=True)) == [
        ("quota_exhausted", 2.5),
        ("quota_reset", 5.0),
        ("quota_exhausted", 7.5),
    ]


def test_the_sdk_presets_retry_a_quota_429_that_never_clears() -> None:
    """The SDKs cannot tell insufficient_quota from a rate limit: openai-sdk retries it twice
    (3 attempts per refused request, all refused); "recommended" and the default policy do
    not retry it (1 attempt)."""
    provider = {"quota": {"spend_cap": 0.0055}}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"preset": "openai-sdk"}, 3, "exhausted"),
        ({"preset": "anthropic-sdk"}, 3, "exhausted"),
        ({"preset": "litellm-router"}, 3, "exhausted"),
        ({"preset": "recommended"}, 1, "non_retryable"),
        ({"retry": {"kind": "exponential"}}, 1, "non_retryable"),
    ]
    for policy, per_request, outcome in cases:
        _, result = run(raw_scenario(provider, policy))
        req = result.df("requests")
        late = req[req.arrival_time >= 3.0]
        assert (late.attempts == per_request).all(), policy
        assert (late.outcome == outcome).all(), policy
        assert (late.billed_cost == 0).all(), policy
        assert result.summary["quota_exhausted_by"] == {"p.spend_cap": 7 * per_request}


def test_providers_of_one_account_share_its_spend_cap() -> None:
    """p and q bill one account capped at $0.0055; f sends to p at 0, 2, 4, 6, 8 s and g to q
    at 1, 3, 5, 7, 9 s: the third bill (p's, done at 2.5 s) reaches the cap, so everything
    sent from 3 s on is refused, 3 attempts on p and 4 on q; one event names the account."""
    raw = raw_scenario({"quota": {"spend_cap": 0.0055, "account": "org"}}, times=TIMES[0::2])
    raw["providers"]["q"] = copy.deepcopy(raw["providers"]["p"])
    raw["features"]["g"] = {
        **copy.deepcopy(raw["features"]["f"]),
        "provider": "q",
        "arrivals": {"kind": "times", "at": TIMES[1::2]},
    }
    sim, result = run(raw)
    assert sim.endpoints["p"].meter is sim.endpoints["q"].meter  # type: ignore[attr-defined]
    s = result.summary
    assert s["quota_exhausted_by"] == {"p.spend_cap": 3, "q.spend_cap": 4}
    assert math.isclose(s["billed_cost"], 3 * COST)
    ev = result.df("events")
    assert list(zip(ev.kind, ev.provider, ev.time, strict=True)) == [
        ("quota_exhausted", "org", 2.5)
    ]
    raw["providers"]["q"]["quota"] = {"spend_cap": 1.0, "account": "org"}
    with pytest.raises(ConfigError, match=r"providers\.q\.quota: account 'org' has spend_cap 1"):
        scenario_from_dict(raw)


def test_spend_meter_unit() -> None:
    """Reached at exactly the cap; a period later it resets, dated at the period's start."""
    seen: list[tuple[str, float, float]] = []
    meter = SpendMeter(
        1.0,
        10.0,
        lambda t, s: seen.append(("reached", t, s)),
        lambda t, s: seen.append(("reset", t, s)),
    )
    meter.add(0.6, 1.0)
    assert not meter.exhausted(2.0)
    meter.add(0.4, 3.0)  # exactly the cap: reached
    assert meter.exhausted(3.0) and meter.exhausted(9.99)
    assert not meter.exhausted(25.0)  # two periods later: reset, dated at 20 s
    assert seen == [("reached", 3.0, 1.0), ("reset", 20.0, 1.0)]
    assert meter.period_end == 30.0 and meter.spent == 0.0


# Quota: an incident ---------------------------------------------------------------------------


def test_a_quota_incident_refuses_every_attempt_while_it_lasts() -> None:
    """Quota exhausted from 2 s to 6 s: the requests sent at 2, 3, 4, 5 s are refused; the
    others succeed; the incident is reported like any other."""
    incident = {"kind": "quota_exhausted", "start": 2.0, "duration": 4.0}
    _, result = run(raw_scenario({"incidents": [incident]}))
    att = result.df("attempts")
    assert list(att[att.status == "quota_exhausted"].send_time) == [2.0, 3.0, 4.0, 5.0]
    s = result.summary
    assert s["quota_exhausted_by"] == {"p.incident": 4}
    assert math.isclose(s["billed_cost"], 6 * COST)
    assert [i["kind"] for i in s["incidents"]] == ["quota_exhausted"]


# Context length ---------------------------------------------------------------------------------

SDK_PRESETS = [
    "openai-sdk",
    "openai-sdk-stream",
    "anthropic-sdk",
    "anthropic-sdk-stream",
    "litellm-router",
    "recommended",
]


@pytest.mark.parametrize("preset", SDK_PRESETS)
def test_a_context_length_400_is_never_retried_and_billed_nothing(preset: str) -> None:
    """gpt-4o's window is 128,000 tokens (the model preset): 127,000 input + 1,024 max_tokens
    = 128,024 is refused with a 400 at every attempt, never retried, billed $0."""
    raw = raw_scenario({"model": "openai/gpt-4o"}, {"preset": preset}, input_tokens=127_000)
    sim, result = run(raw)
    assert isinstance(sim.endpoints["p"], ErrorEndpoint)
    req, att = result.df("requests"), result.df("attempts")
    assert (att.status == "context_length_exceeded").all() and (att.http_status == 400).all()
    assert (req.attempts == 1).all() and (req.outcome == "non_retryable").all()
    assert result.summary["billed_cost"] == 0.0


def test_the_cookbook_recipe_retries_a_400_as_tenacity_does() -> None:
    """The OpenAI Cookbook's tenacity recipe retries every exception: 6 attempts, all 400s,
    still billed nothing (the waits are random, so only 2 requests, far apart)."""
    raw = raw_scenario(
        {"model": "openai/gpt-4o"},
        {"preset": "openai-cookbook"},
        times=[0.0, 1000.0],
        input_tokens=127_000,
    )
    raw["run"]["duration"] = 1001.0
    _, result = run(raw)
    req = result.df("requests")
    assert (req.attempts == 6).all() and (req.outcome == "exhausted").all()
    assert result.summary["billed_cost"] == 0.0


def test_the_context_window_boundary_and_its_switches() -> None:
    """input + max_tokens equal to the window passes; "none" turns the check off; an explicit
    window replaces the preset's; a fallback with a larger window serves the request."""
    fits = raw_scenario({"model": "openai/gpt-4o"}, input_tokens=126_976)  # + 1,024 = 128,000
    sim, result = run(fits)
    assert result.summary["attempt_statuses"].get("context_length_exceeded", 0) == 0
    # Fixed sizes that always fit: no check is needed, and the plain endpoint runs.
    assert type(sim.endpoints["p"]) is Endpoint
    off = raw_scenario({"model": "openai/gpt-4o", "context_window": "none"}, input_tokens=200_000)
    assert run(off)[1].summary["outcomes"]["ok"] == len(TIMES)
    small = raw_scenario({"context_window": 1500})  # 1,000 + 1,024 > 1,500
    assert run(small)[1].summary["attempt_statuses"]["context_length_exceeded"] == len(TIMES)
    chain = raw_scenario(
        {"model": "openai/gpt-4o"},
        {"fallback": {"providers": ["big"], "on_statuses": ["context_length_exceeded"]}},
        input_tokens=200_000,
    )
    chain["providers"]["big"] = {**chain["providers"]["p"], "model": "openai/gpt-4.1"}
    _, result = run(chain)
    req = result.df("requests")
    assert (req.outcome == "ok").all() and (req.attempts == 2).all()
    assert (req.final_provider == "big").all()


def test_longest_request_bounds() -> None:
    """Bounded sizes give their largest request; a lognormal one is unbounded."""
    sc = scenario_from_dict(raw_scenario())
    assert longest_request(sc.features.values()) == 1000 + 1024
    raw = raw_scenario()
    raw["features"]["f"]["input_tokens"] = {"kind": "uniform", "low": 1, "high": 7000}
    raw["features"]["f"]["rag_tokens"] = {"kind": "empirical", "quantiles": [10, 20, 30.5]}
    sc = scenario_from_dict(raw)
    assert longest_request(sc.features.values()) == 7000 + 31 + 1024
    raw["features"]["f"]["input_tokens"] = {"kind": "lognormal", "median": 100, "p99": 900}
    assert math.isinf(longest_request(scenario_from_dict(raw).features.values()))


# x-should-retry --------------------------------------------------------------------------------


def errors_provider(status: int, should_retry: bool | None) -> dict[str, Any]:
    kind: dict[str, Any] = {"status": status, "rate": 1.0}
    if should_retry is not None:
        kind["should_retry"] = should_retry
    return {"failures": {"errors": [kind]}}


@pytest.mark.parametrize("preset", ["openai-sdk", "anthropic-sdk"])
@pytest.mark.parametrize(
    ("status", "header", "attempts"),
    [
        (500, None, 3),  # >= 500: retried twice
        (500, False, 1),  # x-should-retry: false stops it on a 500
        (400, True, 3),  # x-should-retry: true retries even a 400
        (400, None, 1),
        (504, True, 3),
    ],
)
def test_sdk_presets_obey_x_should_retry(
    preset: str, status: int, header: bool | None, attempts: int
) -> None:
    _, result = run(raw_scenario(errors_provider(status, header), {"preset": preset}))
    req = result.df("requests")
    assert (req.attempts == attempts).all(), (preset, status, header)
    att = result.df("attempts")
    assert (att.http_status == status).all() and (att.status == "server_error").all()


def test_a_policy_without_the_sdk_rule_ignores_the_header() -> None:
    """x-should-retry is an SDK rule (retryable_http): a plain policy retries by status, and
    one with ``obey_should_retry = false`` reads the status only."""
    provider = errors_provider(500, False)
    plain = {"retry": {"kind": "fixed", "delay": 0.1, "max_retries": 2}}
    _, result = run(raw_scenario(provider, plain))
    assert (result.df("requests").attempts == 3).all()
    deaf = {
        "preset": "openai-sdk",
        "retryable_http": {"codes": [429], "at_least": 500, "obey_should_retry": False},
    }
    _, result = run(raw_scenario(provider, deaf))
    assert (result.df("requests").attempts == 3).all()


def test_the_base_error_kind_sends_its_header_and_a_brownout_does_not() -> None:
    """failures.error_should_retry = false stops openai-sdk on every 500 outside the brownout;
    during it (5xx of its own status, no header) the SDK retries."""
    provider = {
        "failures": {"error_rate": 1.0, "error_status": 500, "error_should_retry": False},
        "incidents": [{"kind": "brownout", "start": 4.0, "duration": 3.0, "error_rate": 1.0}],
    }
    _, result = run(raw_scenario(provider, {"preset": "openai-sdk"}))
    req = result.df("requests").set_index("request_id").sort_values("arrival_time")
    inside = (req.arrival_time >= 4.0) & (req.arrival_time < 7.0)
    assert (req.attempts[~inside] == 1).all()
    # A retry of a request that arrived in the brownout may land after it (and stop there).
    assert (req.attempts[inside] >= 2).all()


# A mix of error kinds ---------------------------------------------------------------------------


def test_error_kinds_are_drawn_at_their_rates() -> None:
    """error_rate 0.1 (500) and kinds 503 at 0.05, 529 at 0.1, 408 at 0.05 on one draw each:
    observed shares within 5 binomial standard deviations of the rates; the rest succeed."""
    n = 20_000
    provider = {
        "failures": {
            "error_rate": 0.1,
            "errors": [
                {"status": 503, "rate": 0.05},
                {"status": 529, "rate": 0.1},
                {"status": 408, "rate": 0.05},
            ],
        }
    }
    raw = raw_scenario(provider)
    raw["features"]["f"]["arrivals"] = {"kind": "poisson", "rate": n / 30.0}
    _, result = run(raw)
    att = result.df("attempts")
    total = len(att)
    assert abs(total - n) < 5 * math.sqrt(n)
    for code, rate in [(500, 0.1), (503, 0.05), (529, 0.1), (408, 0.05), (200, 0.7)]:
        share = (att.http_status == code).mean()
        sd = math.sqrt(rate * (1 - rate) / total)
        assert abs(share - rate) < 5 * sd, (code, share, rate)
    assert set(att.status) == {"ok", "server_error"}
    assert (att.cost[att.status == "server_error"] == 0).all()


# Composition through an incident, with conservation ----------------------------------------------


def test_a_quota_incident_through_the_gates_with_fallback_conserves_everything() -> None:
    """A quota incident on p with a breaker recording quota_exhausted, a retry budget and a
    fallback to q: requests move to q during it; every request ends once, money adds up, and
    every gate's books balance (tests/test_gate_compositions.py audit)."""
    base = {
        "model": "m",
        "prices": {"input": 1.0, "output": 2.0},
        "capacity": {"slots": 40, "queue_limit": 80},
        "service": {"kind": "exponential", "mean": 1.0},
        "failures": {"errors": [{"status": 503, "rate": 0.02, "should_retry": True}]},
    }
    raw = {
        "run": {"duration": 600.0, "seed": 4, "timeseries_bin": 10},
        "providers": {
            "p": {
                **base,
                "quota": {"spend_cap": 50.0},
                "incidents": [{"kind": "quota_exhausted", "start": 200, "duration": 120}],
            },
            "q": base,
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
                "preset": "openai-sdk",
                "timeout": 30,
                "breaker": {
                    "window": "count",
                    "window_size": 20,
                    "minimum_calls": 20,
                    "open_duration": 10,
                    "half_open_calls": 3,
                    "record": ["server_error", "quota_exhausted"],
                },
                "budget": "sre",
                "fallback": {"providers": ["q"], "on_statuses": ["quota_exhausted"]},
            }
        },
    }
    sim, result = run(raw)
    audit(sim, result)
    s = result.summary
    assert s["quota_exhausted_by"]["p.incident"] > 0
    req = result.df("requests")
    during = req[(req.arrival_time >= 210) & (req.arrival_time < 310)]
    assert (during.final_provider == "q").mean() > 0.95
    assert (during.outcome == "ok").mean() > 0.95
    sc = scenario_from_dict(copy.deepcopy(raw))
    # (check_records_agree assumes no fallback: the generated scenarios have none.)
    for check in (
        inv.check_terminal_outcomes,
        inv.check_costs,
        inv.check_billing,
        inv.check_events,
        inv.check_statuses,
        inv.check_aggregates,
    ):
        check(sc, result)


# The engine's invariants with these features added to random scenarios --------------------------


@st.composite
def with_error_kinds(draw: st.DrawFn) -> dict[str, Any]:
    """A generated scenario whose first provider gets a spend cap, a mix of error kinds with
    headers, a context window and maybe a quota incident."""
    raw = draw(scenarios())
    name = sorted(raw["providers"])[0]
    p = raw["providers"][name]
    failures = p.setdefault("failures", {})
    room = 1.0 - max(
        [failures.get("error_rate", 0.0)]
        + [i.get("error_rate", 0.0) for i in p.get("incidents", []) if i["kind"] == "brownout"]
    )
    rate = draw(st.floats(0.0, 0.3)) * room
    if rate / 2 > 0:  # a rate must be > 0: a subnormal one halves to 0.0
        failures["errors"] = [
            {"status": 503, "rate": rate / 2, "should_retry": draw(st.booleans())},
            {"status": 400, "rate": rate / 2},
        ]
    p["quota"] = {"spend_cap": draw(st.floats(1e-4, 0.05)), "period": draw(st.floats(5, 100))}
    others = sorted(raw["providers"])[1:]
    share = draw(st.booleans())
    if others and share:
        # A cap shared with another provider of the same account.
        p["quota"]["account"] = "org"
        raw["providers"][others[0]]["quota"] = dict(p["quota"])
    p["context_window"] = draw(st.integers(500, 6000))
    kinds = {i["kind"] for i in p.get("incidents", [])}
    if draw(st.booleans()) and "quota_exhausted" not in kinds:
        start = draw(st.floats(0, raw["run"]["duration"] * 0.8))
        p.setdefault("incidents", []).append(
            {"kind": "quota_exhausted", "start": start, "duration": draw(st.floats(1, 60))}
        )
    return raw


@settings(inv.PROPERTY, max_examples=40)
@given(with_error_kinds())
def test_invariants_hold_with_error_kinds(raw: dict[str, Any]) -> None:
    sc, result = inv.run(raw)
    inv.check_terminal_outcomes(sc, result)
    inv.check_attempt_bound(sc, result)
    inv.check_costs(sc, result)
    inv.check_billing(sc, result)
    inv.check_time(sc, result)
    inv.check_records_agree(sc, result)
    inv.check_events(sc, result)
    inv.check_statuses(sc, result)
    inv.check_waits(sc, result)
    inv.check_aggregates(sc, result)


# Policies and presets ---------------------------------------------------------------------------


def test_policy_defaults_and_presets_tell_the_kinds_apart() -> None:
    default = Policy()
    assert "quota_exhausted" not in default.retryable
    assert "context_length_exceeded" not in default.retryable
    for name in ("openai-sdk", "anthropic-sdk", "openai-cookbook"):
        assert "quota_exhausted" in Policy.model_validate({"preset": name}).retryable
    rec = Policy.model_validate({"preset": "recommended"}).retryable
    assert "quota_exhausted" not in rec and "context_length_exceeded" not in rec
    assert "context_length_exceeded" not in POLICIES["litellm-router"].config["retryable"]
    cooldown = Policy.model_validate({"preset": "litellm-router"}).breaker
    assert cooldown is not None and "context_length_exceeded" not in cooldown.record


def test_tenacity_sees_a_quota_429_as_a_rate_limit_error() -> None:
    assert issubclass(EXCEPTIONS["quota_exhausted"], RateLimitedError)
    assert EXCEPTIONS["quota_exhausted"] is QuotaExhaustedError
    assert not issubclass(EXCEPTIONS["context_length_exceeded"], RateLimitedError)


def test_a_scenario_without_the_new_features_runs_the_plain_endpoint() -> None:
    raw = raw_scenario({"failures": {"error_rate": 0.1}})
    sim, _ = run(raw)
    assert type(sim.endpoints["p"]) is Endpoint
    # ... and so does a preset model whose requests always fit its window.
    sim, _ = run(raw_scenario({"model": "openai/gpt-4o-mini"}))
    assert type(sim.endpoints["p"]) is Endpoint
    np.testing.assert_equal(len(sim.endpoints), 1)


def test_the_failure_table_breaks_quota_refusals_down_by_cause() -> None:
    """The terminal summary's failure table says which quota refused the quota 429s."""
    from rich.console import Console

    from llmtraffic.report_table import failures_table

    _, result = run(
        raw_scenario(
            {
                "quota": {"spend_cap": 0.0055},
                "incidents": [{"kind": "quota_exhausted", "start": 0.5, "duration": 1.0}],
            }
        )
    )
    s = result.summary
    assert s["quota_exhausted_by"] == {"p.incident": 1, "p.spend_cap": 6}
    table = failures_table(s)
    assert table is not None
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "429 quota exhausted" in text
    assert "by p's spend cap" in text and "by p's quota incident" in text


def test_the_spend_cap_counts_every_bill_stalls_and_timeouts_included() -> None:
    """The meter sees every cost the provider bills: successes, mid-stream failures, work the
    client abandoned on timeout (billed when it leaves) and stalled streams its timeout cuts.
    With a cap never reached, the meter's spend equals the run's billed cost."""
    for failures, timeout in [
        ({"stall_rate": 0.5}, 2.0),
        ({"midstream_rate": 0.5}, 600.0),
        ({}, 0.3),  # every attempt abandoned at 0.3 s of its 0.5 s: billed in full
    ]:
        raw = raw_scenario(
            {"failures": failures, "quota": {"spend_cap": 100.0}}, {"timeout": timeout}
        )
        sim, result = run(raw)
        meter = sim.endpoints["p"].meter  # type: ignore[attr-defined]
        billed = result.summary["billed_cost"]
        assert billed > 0 and math.isclose(meter.spent, billed, rel_tol=1e-9), failures
        assert math.isclose(result.df("attempts").cost.sum(), billed, rel_tol=1e-9)
        assert set(result.df("attempts").status) != {"ok"}, failures
