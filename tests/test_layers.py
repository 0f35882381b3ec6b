"""Retry layers that stack (docs/policies.md, "Retry layers"), against hand-computed cases.

On a provider that always fails, every request makes exactly the product of its layers'
(retries + 1) attempts, and layer ``i`` makes the product of the layers above it and its own;
waits, and a layer's timeout bounding its whole inner call, give hand-computed send times;
through an outage every request ends once and every gate's books balance; the stack presets
multiply as their libraries do (LangChain over the OpenAI SDK: 3 x 3; tenacity over it:
6 x 3; LiteLLM's Router over an SDK it sets to max_retries=0: 3 x 1), and the tenacity-based
layer presets wait as tenacity does. Hypothesis scenarios with layers keep the invariants of
tests/test_invariants.py, and the engine matches the oracle (tests/oracle, which models the
layers) request by request on tests/test_oracle.py's deterministic scenarios with layers.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import tenacity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmtraffic import Simulation, scenario_from_dict
from llmtraffic.checks.columns import expected_columns
from llmtraffic.client.client import Client
from llmtraffic.client.layers import LayeredClient
from llmtraffic.client.retry import as_decision, controller_for
from llmtraffic.client.waits import RetryState
from llmtraffic.config.policy import ALL_FAILURES, Layer, policy_from_preset
from llmtraffic.engine.entities import REQUEST_OUTCOMES
from llmtraffic.experiment.analysis import flatten_summary
from llmtraffic.testing.strategies import scenarios
from tests.conftest import make_scenario
from tests.test_conformance_tenacity import E500, E529, R429, Outcome, draws, run_tenacity
from tests.test_gate_compositions import GATES, audit, scenario
from tests.test_invariants import (
    check_aggregates,
    check_attempt_bound,
    check_billing,
    check_costs,
    check_records_agree,
    check_time,
)
from tests.test_oracle import compare_exactly, exact_scenarios

FAILURES = list(ALL_FAILURES)

FAST = 0.05
"""How long a fast server error takes to come back (the endpoint's fixed error latency)."""


def always_failing(policy: dict[str, Any], rate: float = 2.0, duration: float = 20.0) -> Any:
    return make_scenario(
        **{
            "run.duration": duration,
            "providers.p.capacity": {"slots": 2000, "queue_limit": 0},
            "providers.p.service": {"kind": "deterministic", "value": 0.1},
            "providers.p.failures": {"error_rate": 1.0},
            "features.f.arrivals": {"kind": "poisson", "rate": rate},
            "policies": {"pol": policy},
        }
    )


def naive(n: int) -> dict[str, Any]:
    return {"kind": "naive", "max_retries": n}


@pytest.mark.parametrize(
    ("sdk", "outer"),
    [
        (2, [2]),  # LangChain's 3 over the SDK's 3: 9
        (2, [2, 2]),  # (N + 1)^L with N = 2, L = 3: 27
        (1, [3, 0, 2]),  # 4 * 1 * 3 * 2 = 24; a layer without retries multiplies by 1
        (0, [5]),  # an SDK with max_retries=0 under a layer: that layer's count
    ],
)
def test_attempts_multiply_to_the_product_of_the_layers(sdk: int, outer: list[int]) -> None:
    layers = [{"name": f"l{i}", "retry": naive(n)} for i, n in enumerate(outer)]
    sc = always_failing({"retry": naive(sdk), "layers": layers})
    result = Simulation(sc).run()
    requests = result.df("requests")
    bound = math.prod(n + 1 for n in [*outer, sdk])
    assert len(requests) > 10
    assert (requests.attempts == bound).all()
    assert set(requests.outcome) == {"exhausted"}
    f = result.summary["features"]["f"]
    assert f["attempt_bound"] == bound == sc.policy_of("f").attempt_bound()
    assert f["attempts_per_request_max"] == bound
    # Layer i makes the product of the (retries + 1) of itself and the layers above it.
    n = len(requests)
    made = 1
    names = [*(layer["name"] for layer in layers), "sdk"]
    for name, retries in zip(names, [*outer, sdk], strict=True):
        made *= retries + 1
        assert f["layers"][name]["calls"] == n * made
        assert f["layers"][name]["calls_per_request"] == made
        assert f["layers"][name]["calls_per_outer_call"] == retries + 1
    assert f["layers"]["sdk"]["calls"] == result.summary["attempts"]


def test_waits_follow_each_layer_hand_computed() -> None:
    # SDK: 1 retry after 0.5 s; the layer above: 1 retry after 3 s. Each attempt fails
    # 0.05 s after it is sent. Sends: t, t + 0.55; the SDK gives up at t + 0.6, the layer
    # waits 3 s and calls the SDK afresh (its counter at 0 again): t + 3.6, t + 4.15.
    sc = always_failing(
        {
            "retry": {"kind": "fixed", "max_retries": 1, "delay": 0.5},
            "layers": [{"name": "app", "retry": {"kind": "fixed", "max_retries": 1, "delay": 3}}],
        },
        rate=0.5,
    )
    att = Simulation(sc).run().df("attempts").sort_values(["request_id", "attempt"])
    for _, rows in att.groupby("request_id"):
        t = rows.send_time.iloc[0]
        offsets = [0.0, FAST + 0.5, 2 * FAST + 0.5 + 3.0, 3 * FAST + 2 * 0.5 + 3.0]
        assert rows.send_time.tolist() == pytest.approx([t + o for o in offsets], abs=1e-9)
        assert rows.wait_before.tolist() == [0.0, 0.5, 3.0, 0.5]


def test_a_layer_timeout_bounds_its_whole_inner_call() -> None:
    # The SDK would retry a fast error every 0.5 s up to 20 times; the layer above gives each
    # of its calls 2 s. Attempts go out at t + k * 0.55 while k * 0.55 < 2 (k = 0..3); the
    # wait after the 4th would end at t + 2.2 > t + 2, so the layer's call times out at
    # t + 2 and the layer (no retries) gives up: 4 attempts, the request ends at t + 2.
    sc = always_failing(
        {
            "retry": {"kind": "fixed", "max_retries": 20, "delay": 0.5},
            "layers": [{"name": "app", "timeout": 2.0}],
        },
        rate=0.5,
    )
    result = Simulation(sc).run()
    requests = result.df("requests")
    assert (requests.attempts == 4).all()
    assert (requests.outcome == "exhausted").all()
    assert requests.latency.to_numpy() == pytest.approx(2.0, abs=1e-9)


def test_a_layer_timeout_abandons_the_attempt_in_flight_and_retries_afresh() -> None:
    # Service takes 5 s; the SDK's own timeout is 600 s, but the layer above gives each call
    # 2 s and retries once after 1 s: attempt 1 is abandoned at t + 2 (status timeout), the
    # retry goes out at t + 3 and is abandoned at t + 5; the abandoned work keeps running at
    # the provider and is billed (the default billing of abandoned attempts).
    sc = make_scenario(
        **{
            "run.duration": 20.0,
            "providers.p.service": {"kind": "deterministic", "value": 5.0},
            "features.f.arrivals": {"kind": "poisson", "rate": 0.5},
            "policies": {
                "pol": {
                    "timeout": 600,
                    "retry": naive(2),
                    "layers": [
                        {
                            "name": "app",
                            "timeout": 2.0,
                            "retry": {"kind": "fixed", "max_retries": 1, "delay": 1.0},
                        }
                    ],
                }
            },
        }
    )
    result = Simulation(sc).run()
    att = result.df("attempts").sort_values(["request_id", "attempt"])
    assert set(att.status) == {"timeout"}
    for _, rows in att.groupby("request_id"):
        t = rows.send_time.iloc[0]
        assert rows.send_time.tolist() == pytest.approx([t, t + 3.0], abs=1e-9)
        assert rows.end_time.tolist() == pytest.approx([t + 2.0, t + 5.0], abs=1e-9)
    f = result.summary["features"]["f"]
    assert f["layers"]["app"]["calls_per_request"] == 2
    assert f["layers"]["sdk"]["calls_per_outer_call"] == 1  # the SDK never got to retry


def test_an_outer_layer_retries_what_the_sdk_does_not() -> None:
    # The SDK retries only timeouts; a 500 ends its call at once. The layer above retries
    # every status twice: 3 calls of 1 attempt each.
    sc = always_failing(
        {
            "retryable": ["timeout"],
            "retry": naive(5),
            "layers": [{"name": "app", "retry": naive(2)}],
        }
    )
    requests = Simulation(sc).run().df("requests")
    assert (requests.attempts == 3).all()
    # The outermost layer's verdict is the request's outcome.
    assert (requests.outcome == "exhausted").all()
    sc = always_failing({"retry": naive(5), "layers": [{"name": "app", "retryable": ["timeout"]}]})
    requests = Simulation(sc).run().df("requests")
    assert (requests.attempts == 6).all()
    assert (requests.outcome == "non_retryable").all()


@pytest.mark.parametrize(
    ("preset", "bound"),
    [("langchain-openai", 9), ("tenacity-openai-sdk", 18), ("litellm-router-sdk", 3)],
)
def test_stack_presets_multiply_as_their_libraries(preset: str, bound: int) -> None:
    policy = policy_from_preset(preset)
    assert policy is not None and policy.attempt_bound() == bound
    # Waits of up to 60 s (tenacity): a long enough drain for every request to end.
    sc = always_failing({"preset": preset}, rate=0.2, duration=30.0)
    result = Simulation(sc).run()
    requests = result.df("requests")
    assert len(requests) > 2
    assert (requests.attempts == bound).all()
    assert result.summary["features"]["f"]["attempts_per_request_max"] == bound


def test_langchain_waits_are_two_to_the_n_plus_up_to_one_second() -> None:
    # with_retry(): tenacity's wait_exponential_jitter(): 2**n + U(0, 1) between LangChain's
    # calls; inside each, the SDK's min(0.5 * 2**n, 8) * (1 - 0.25 U).
    sc = always_failing({"preset": "langchain-openai"}, rate=0.5, duration=40.0)
    att = Simulation(sc).run().df("attempts").sort_values(["request_id", "attempt"])
    waits = att.wait_before.to_numpy().reshape(-1, 9)
    sdk = [(0.375, 0.5), (0.75, 1.0)]
    outer = [(1.0, 2.0), (2.0, 3.0)]
    for k, (lo, hi) in enumerate([(0.0, 0.0), *sdk, outer[0], *sdk, outer[1], *sdk]):
        assert ((waits[:, k] >= lo) & (waits[:, k] <= hi)).all(), (k, waits[:, k])


def test_policies_without_layers_keep_todays_client() -> None:
    sim = Simulation(make_scenario(**{"policies": {"pol": {"retry": naive(2)}}}))
    sim.run()
    assert type(sim.clients["f"]) is Client
    sim = Simulation(always_failing({"preset": "langchain-openai"}, duration=1.0))
    result = sim.run()
    assert isinstance(sim.clients["f"], LayeredClient)
    assert not sim.clients["f"]._states  # every request's layer state is gone with it
    # The summary has no layer columns without layers, and every column it has with them is
    # one a check can name before the run.
    plain = flatten_summary(Simulation(make_scenario()).run().summary)
    assert not any(".layers." in k for k in plain)
    row = flatten_summary(result.summary)
    layered = {k for k in row if ".layers." in k or k.endswith("attempts_per_request_max")}
    assert layered and layered <= expected_columns([sim.scenario])


LAYER_GATES = [g for g in GATES if g != "fallback"]


@pytest.mark.parametrize("gate", LAYER_GATES)
def test_layers_through_an_outage_end_every_request_once_and_balance_the_books(gate: str) -> None:
    layers = [
        {"name": "app", "timeout": 40.0, "retry": {"kind": "fixed", "max_retries": 1, "delay": 5}},
        {"preset": "langchain-retry"},
    ]
    sim = Simulation(scenario({**GATES[gate], "layers": layers}))
    result = sim.run()
    audit(sim, result)
    client = sim.clients["f"]
    assert isinstance(client, LayeredClient)
    assert not client._states
    f = result.summary["features"]["f"]
    assert f["attempts_per_request_max"] <= f["attempt_bound"] == 2 * 3 * 4
    # Each outer layer's calls are at least the calls of the layer above it (the SDK's may be
    # fewer: a gate's refusal ends the request before an attempt goes out).
    calls = [v["calls"] for v in f["layers"].values()]
    assert calls[:-1] == sorted(calls[:-1]) and calls[0] >= f["requests"]
    assert calls[-1] == f["attempts"]
    requests = result.df("requests")
    late = requests[requests.arrival_time >= 720.0]
    assert (late.outcome == "ok").mean() >= 0.97


def test_a_layer_timeout_reached_while_waiting_for_pacing_gives_the_reservation_back() -> None:
    # The client paces attempts at 6 a minute while 2 requests arrive per second: pacing
    # waits grow past the layer's 3 s, and those calls time out at 3 s, before their attempt
    # goes out, without keeping a share of the pace. Every attempt takes 5 s, so no call
    # succeeds within 3 s: every request ends exactly 3 s after it arrived (or is refused
    # by the pacer's max_wait).
    sc = make_scenario(
        **{
            "run.duration": 60.0,
            "providers.p.service": {"kind": "deterministic", "value": 5.0},
            "features.f.arrivals": {"kind": "poisson", "rate": 2.0},
            "policies": {
                "pol": {
                    "timeout": 600,
                    "rate_limit": {"rpm": 6, "max_wait": 600},
                    "layers": [{"name": "app", "timeout": 3.0}],
                }
            },
        }
    )
    sim = Simulation(sc)
    result = sim.run()
    requests = result.df("requests")
    cut = requests[requests.attempts == 0]
    assert len(cut) > 10  # calls cut before their attempt went out
    assert (cut.outcome == "exhausted").all()
    assert cut.latency.to_numpy() == pytest.approx(3.0, abs=1e-9)
    # (A wait beyond the pacer's max_wait is refused at once.)
    assert set(requests.outcome) <= {"exhausted", "rejected_throttle"}
    client = sim.clients["f"]
    assert isinstance(client, LayeredClient) and not client._states
    assert client.pacer is not None and client.pacer.reserved == client.tally.sent
    assert len(requests) == client.tally.requests == result.summary["requests"]


def test_a_layer_timeout_reached_in_the_concurrency_queue_ends_the_call_there() -> None:
    # One attempt in flight at a time; half the attempts fail fast, the others take 5 s. The
    # SDK retries a fast failure after 0.1 s, at the back of the local queue, while the
    # layer's 3 s for the whole call keeps running: calls are cut in flight or while queued,
    # always at exactly 3 s (no attempt can succeed within 3 s).
    sc = make_scenario(
        **{
            "run.duration": 120.0,
            "providers.p.service": {"kind": "deterministic", "value": 5.0},
            "providers.p.failures": {"error_rate": 0.5},
            "features.f.arrivals": {"kind": "poisson", "rate": 0.5},
            "policies": {
                "pol": {
                    "timeout": 600,
                    "retry": {"kind": "fixed", "max_retries": 5, "delay": 0.1},
                    "concurrency": {"limit": 1},
                    "layers": [{"name": "app", "timeout": 3.0}],
                }
            },
        }
    )
    sim = Simulation(sc)
    result = sim.run()
    requests = result.df("requests")
    att = result.df("attempts")
    assert (requests.outcome == "exhausted").all()
    assert requests.latency.to_numpy() == pytest.approx(3.0, abs=1e-9)
    # Cut while queued: the request's last attempt had ended before its call ran out.
    last_end = att.groupby("request_id").end_time.max()
    ends = requests.set_index("request_id").end_time
    queued_cut = (last_end.reindex(ends.index, fill_value=0.0) < ends - 1e-9).sum()
    assert queued_cut > 3
    client = sim.clients["f"]
    assert isinstance(client, LayeredClient) and not client._states
    assert not client.local_queue and not client._queued_deadlines


# Conformance: the layer presets built on tenacity against tenacity itself ------------------


def layer_waits(preset: str, outcomes: list[Outcome]) -> tuple[int, list[float]]:
    """Calls made and waits decided by a layer preset's controller, as the client drives it
    (``run_adapter``'s loop, with the same draws)."""
    layer = Layer.model_validate({"preset": preset})
    controller = controller_for(layer)
    u = iter(draws(1))
    t, prev = 0.0, 0.0
    waits: list[float] = []
    for number, (status, code, retry_after, duration) in enumerate(outcomes, start=1):
        t += duration
        state = RetryState(number, status, code, retry_after, t, prev, t, number, "p")
        decision = as_decision(controller.decide(state, u))
        if decision.wait is None:
            return number, waits
        waits.append(decision.wait)
        prev = decision.wait
        t += decision.wait
    raise AssertionError("the sequence ran out before the layer stopped")


@pytest.mark.parametrize(
    ("preset", "retrying"),
    [
        # langchain_core/runnables/retry.py RunnableRetry._kwargs_retrying with the defaults
        # of Runnable.with_retry() (langchain-core 1.8.4).
        (
            "langchain-retry",
            lambda: tenacity.Retrying(
                stop=tenacity.stop_after_attempt(3),
                wait=tenacity.wait_exponential_jitter(),
                retry=tenacity.retry_if_exception_type((Exception,)),
            ),
        ),
        # The OpenAI Cookbook's decorator.
        (
            "tenacity-cookbook",
            lambda: tenacity.Retrying(
                wait=tenacity.wait_random_exponential(min=1, max=60),
                stop=tenacity.stop_after_attempt(6),
            ),
        ),
    ],
)
def test_tenacity_layer_presets_equal_tenacity(
    monkeypatch: pytest.MonkeyPatch, preset: str, retrying: Any
) -> None:
    for outcomes in ([E500] * 8, [R429] * 8, [E500, E529, R429, E500, E500, E500, E500]):
        theirs = run_tenacity(monkeypatch, retrying(), outcomes)
        ours = layer_waits(preset, outcomes)
        assert ours[0] == theirs[0], (preset, ours, theirs)
        assert ours[1] == pytest.approx(theirs[1], abs=1e-12), (preset, ours, theirs)


# Properties: the invariants of tests/test_invariants.py with layers -------------------------


@st.composite
def layer_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One to three retry layers: a retry rule with few retries, maybe a timeout, maybe a
    subset of statuses."""
    out = []
    for i in range(draw(st.integers(1, 3))):
        retry = draw(
            st.sampled_from(
                [
                    {"kind": "none"},
                    {"kind": "naive", "max_retries": draw(st.integers(0, 2))},
                    {"kind": "fixed", "max_retries": draw(st.integers(0, 2)), "delay": 0.5},
                    {"kind": "exponential", "max_retries": draw(st.integers(0, 2)), "base": 0.2},
                ]
            )
        )
        layer: dict[str, Any] = {"name": f"l{i}", "retry": retry}
        if draw(st.booleans()):
            layer["timeout"] = draw(st.floats(0.05, 30.0))
        if draw(st.booleans()):
            layer["retryable"] = draw(st.lists(st.sampled_from(FAILURES), unique=True))
        out.append(layer)
    return out


def with_layers(raw: dict[str, Any], layers: list[dict[str, Any]]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    policies = raw["policies"] or {"pol0": {}}
    for policy in policies.values():
        policy["layers"] = copy.deepcopy(layers)
    raw["policies"] = policies
    return raw


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), layer_lists())
def test_layered_runs_keep_every_invariant(
    raw: dict[str, Any], layers: list[dict[str, Any]]
) -> None:
    sc = scenario_from_dict(with_layers(raw, layers))
    sim = Simulation(sc)
    result = sim.run()
    req, att = result.df("requests"), result.df("attempts")
    # Every request ends exactly once, with one terminal outcome.
    assert req.request_id.is_unique and len(req) == result.summary["requests"]
    assert set(req.outcome) <= set(REQUEST_OUTCOMES)
    assert sum(result.summary["outcomes"].values()) == len(req)
    for client in sim.clients.values():
        assert isinstance(client, LayeredClient) and not client._states
        for breaker in client.breakers:
            assert breaker is None or breaker.trials_out == 0
        if client.pacer is not None:
            assert client.pacer.reserved == client.tally.sent
    for check in (
        check_attempt_bound,  # the product of the layers
        check_costs,
        check_billing,
        check_records_agree,
        check_time,
        check_aggregates,
    ):
        check(sc, result)
    # Layer calls: each outer layer calls at least once per request, and the SDK's calls are
    # the attempts sent.
    for name, f in result.summary["features"].items():
        calls = [v["calls"] for v in f["layers"].values()]
        assert calls[0] >= f["requests"]
        assert calls[:-1] == sorted(calls[:-1])
        assert calls[-1] == req.attempts[req.feature == name].sum()
        assert f["attempts_per_request_max"] <= f["attempt_bound"]
    assert len(att) <= req.attempts.sum()


# The engine against the oracle (tests/oracle), request by request --------------------------


@st.composite
def exact_layered_scenarios(draw: st.DrawFn, issue11_rules: bool) -> dict[str, Any]:
    """tests/test_oracle.py's deterministic scenarios (no fallback: layers refuse it) with one
    or two retry layers around the policy: deterministic waits and timeouts chosen off the
    grid of the scenario's other times, so that two events meet only by construction."""
    raw = draw(exact_scenarios(issue11_rules=issue11_rules))
    policy = raw["policies"]["x"]
    if policy.pop("fallback", None) is not None:
        del raw["providers"]["q"]
    layers = []
    for i in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["none", "naive", "fixed", "exponential"]))
        retry: dict[str, Any] = {"kind": kind}
        if kind != "none":
            retry["max_retries"] = draw(st.integers(0, 2))
            retry["honor_retry_after"] = draw(st.booleans())
        if kind == "fixed":
            retry["delay"] = draw(st.sampled_from([0.61, 2.17]))
        if kind == "exponential":
            retry.update(base=0.47, multiplier=2.0, cap=3.0, jitter="none")
        layer: dict[str, Any] = {"name": f"l{i}", "retry": retry}
        timeout = draw(st.sampled_from([None, 1.93, 5.81]))
        if timeout is not None:
            layer["timeout"] = timeout
        if draw(st.booleans()):
            layer["retryable"] = draw(
                st.sampled_from([["server_error", "timeout"], ["rate_limited", "overloaded"]])
            )
        layers.append(layer)
    policy["layers"] = layers
    return raw


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(exact_layered_scenarios(issue11_rules=False))
def test_layered_engine_matches_oracle_request_by_request(raw: dict[str, Any]) -> None:
    compare_exactly(raw)


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(exact_layered_scenarios(issue11_rules=True))
def test_layered_engine_matches_oracle_request_by_request_issue11_rules(
    raw: dict[str, Any],
) -> None:
    compare_exactly(raw)


def test_a_layer_timeout_bounds_a_streamed_attempt_past_its_first_token() -> None:
    # A streamed call's first token comes after 0.5 s (within the 1 s first-token limit),
    # so the SDK then holds it to its total timeout alone (none here); the layer's 3 s still
    # cut the 10 s stream at 3 s.
    sc = make_scenario(
        **{
            "run.duration": 20.0,
            "providers.p.service": {"kind": "tokens", "ttft": 0.5, "decode_tps": 5.0},
            "features.f.stream": True,
            "features.f.arrivals": {"kind": "poisson", "rate": 0.5},
            "policies": {
                "pol": {
                    "timeout": "inf",
                    "first_token_timeout": 1.0,
                    "layers": [{"name": "app", "timeout": 3.0}],
                }
            },
        }
    )
    result = Simulation(sc).run()
    att = result.df("attempts")
    assert len(att) > 3 and set(att.status) == {"timeout"}
    assert (att.end_time - att.send_time).to_numpy() == pytest.approx(3.0, abs=1e-9)
