"""The resilience policy library: presets against their sources, composition, plugins,
tenacity, throttling, pacing, concurrency, budgets and fallbacks."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmtraffic import ConfigError, Simulation, load_config
from llmtraffic.client.predicates import RetryIfStatus
from llmtraffic.client.retry import Decision, RetryController, as_decision, controller_for
from llmtraffic.client.stops import StopAfterAttempt, StopAfterDelay
from llmtraffic.client.tenacity_adapter import TenacityPolicy
from llmtraffic.client.throttle import AdaptiveThrottle
from llmtraffic.client.waits import RetryState, WaitExponential, WaitFixed
from llmtraffic.config.policy import Policy
from tests import policy_plugins
from tests.conftest import make_scenario
from tests.stats import within


def state(
    attempt: int, status: str = "server_error", retry_after: float = math.nan, elapsed: float = 0.0
) -> RetryState:
    http = {"rate_limited": 429, "server_error": 500, "timeout": 0}.get(status, 529)
    return RetryState(attempt, status, http, retry_after, elapsed, 0.0, 100.0, attempt)


def decide(ctl: Any, s: RetryState, u: Any) -> Decision:
    return as_decision(ctl.decide(s, u))


def wait_of(ctl: Any, s: RetryState, u: Any) -> float:
    wait = decide(ctl, s, u).wait
    assert wait is not None
    return wait


def uniforms(seed: int) -> Any:
    rng = np.random.default_rng(seed)
    return iter(rng.random(1_000_000).tolist())


# Presets against their sources ---------------------------------------------------------------


@pytest.mark.parametrize(
    "preset", ["openai-sdk", "anthropic-sdk", "openai-sdk-stream", "anthropic-sdk-stream"]
)
def test_sdk_backoff_follows_the_source_formula(preset: str) -> None:
    """min(0.5 * 2^n, 8) * (1 - 0.25 U), n = retries so far: in (0.75 w, w], mean 0.875 w."""
    policy = Policy.model_validate({"preset": preset, "retry": {"max_retries": 10}})
    ctl = controller_for(policy)
    u = uniforms(1)
    for n in range(7):
        w = min(0.5 * 2**n, 8.0)
        waits = np.array([wait_of(ctl, state(n + 1), u) for _ in range(20_000)])
        assert waits.min() > 0.75 * w - 1e-12 and waits.max() <= w + 1e-12
        se = waits.std(ddof=1) / np.sqrt(len(waits))
        assert within(float(waits.mean()), 0.875 * w, se), (n, waits.mean(), 0.875 * w)


def test_litellm_backoff_adds_its_jitter() -> None:
    """clamp(0.5 * 2^n, 0, 8) + 0.75 U (litellm/utils.py calculate_retry_after): in
    [w, w + 0.75), mean w + 0.375; never shorter than w, unlike the SDKs'."""
    policy = Policy.model_validate({"preset": "litellm-router", "retry": {"max_retries": 10}})
    ctl = controller_for(policy)
    u = uniforms(11)
    for n in range(7):
        w = min(0.5 * 2**n, 8.0)
        waits = np.array([wait_of(ctl, state(n + 1), u) for _ in range(20_000)])
        assert waits.min() >= w and waits.max() < w + 0.75
        se = waits.std(ddof=1) / np.sqrt(len(waits))
        assert within(float(waits.mean()), w + 0.375, se), (n, waits.mean(), w + 0.375)


def test_sdk_presets_stop_after_two_retries() -> None:
    for preset in ("openai-sdk", "anthropic-sdk", "litellm-router"):
        ctl = controller_for(Policy.model_validate({"preset": preset}))
        u = uniforms(2)
        assert wait_of(ctl, state(1), u) is not None
        assert wait_of(ctl, state(2), u) is not None
        assert decide(ctl, state(3), u) == Decision(None, "exhausted")


def test_retry_after_rules_of_each_sdk() -> None:
    openai = controller_for(Policy.model_validate({"preset": "openai-sdk"}))
    anthropic = controller_for(Policy.model_validate({"preset": "anthropic-sdk"}))
    u = uniforms(3)
    # Both honour a reasonable retry-after exactly.
    assert decide(openai, state(1, "rate_limited", 7.0), u).wait == 7.0
    assert decide(anthropic, state(1, "rate_limited", 7.0), u).wait == 7.0
    # OpenAI honours up to 120 s and does not retry beyond; Anthropic (2.14-2.16) honours any
    # positive value: no 60 s cut-off.
    assert decide(openai, state(1, "rate_limited", 100.0), u).wait == 100.0
    assert decide(openai, state(1, "rate_limited", 150.0), u) == Decision(None, "exhausted")
    assert decide(anthropic, state(1, "rate_limited", 90.0), u).wait == 90.0
    assert decide(anthropic, state(1, "rate_limited", 200.0), u).wait == 200.0
    # A retry-after of 0 is not "positive": both back off.
    for ctl in (openai, anthropic):
        backoff = decide(ctl, state(1, "rate_limited", 0.0), u).wait
        assert backoff is not None and 0.375 <= backoff <= 0.5
    # LiteLLM: up to 60 s waited plus U(0, 0.75); beyond, its backoff (plus the same jitter).
    litellm = controller_for(Policy.model_validate({"preset": "litellm-router"}))
    honoured = decide(litellm, state(1, "rate_limited", 30.0), u).wait
    assert honoured is not None and 30.0 <= honoured < 30.75
    ignored = decide(litellm, state(1, "rate_limited", 61.0), u).wait
    assert ignored is not None and 0.5 <= ignored < 1.25


def test_anthropic_sdk_waits_long_retry_afters_in_a_run() -> None:
    """End to end: 1 RPM with rejected requests counted puts the 429s' retry-after at 117-120 s;
    the Anthropic SDK (2.16.0) waits it out. f8966f2's preset backed off 0.4-1 s instead."""
    sc = make_scenario(
        **{
            "run.duration": 1200.0,
            "providers.p.rate_limit": {"rpm": 1, "count_rejected": True},
            "features.f.arrivals": {"kind": "poisson", "rate": 0.05},
            "features.f.policy": "anthropic-sdk",
        }
    )
    att = Simulation(sc).run().df("attempts").sort_values(["request_id", "attempt"])
    before = att.groupby("request_id").shift(1)
    after_429 = (before["status"] == "rate_limited") & (before["retry_after"] > 60)
    assert after_429.sum() >= 20
    assert np.allclose(att.loc[after_429, "wait_before"], before.loc[after_429, "retry_after"])


@pytest.mark.parametrize("preset", ["openai-sdk", "anthropic-sdk"])
def test_sdk_presets_retry_by_http_status(preset: str) -> None:
    """408, 409, 429 and >= 500 are retried; a 424 or 400 sent as a server error is not; a
    timeout or a broken-off body (connection errors to the SDK) is."""
    ctl = controller_for(Policy.model_validate({"preset": preset}))
    u = uniforms(12)
    for code in (408, 409, 500, 503, 529):
        s = RetryState(1, "server_error", code, math.nan, 0.0, 0.0, 100.0, 1)
        assert decide(ctl, s, u).wait is not None, code
    for code in (400, 424):
        s = RetryState(1, "server_error", code, math.nan, 0.0, 0.0, 100.0, 1)
        assert decide(ctl, s, u) == Decision(None, "non_retryable"), code
    assert decide(ctl, state(1, "timeout"), u).wait is not None
    assert decide(ctl, RetryState(1, "midstream_error", 200, math.nan, 0, 0, 100, 1), u).wait
    stream = controller_for(Policy.model_validate({"preset": f"{preset}-stream"}))
    broken = RetryState(1, "midstream_error", 200, math.nan, 0.0, 0.0, 100.0, 1)
    assert decide(stream, broken, u) == Decision(None, "non_retryable")


def test_cookbook_recipe_waits() -> None:
    """wait_random_exponential(min=1, max=60): U(1, max(1, min(2^(k-1), 60))), 6 attempts."""
    ctl = controller_for(Policy.model_validate({"preset": "openai-cookbook"}))
    u = uniforms(4)
    for k in range(1, 6):
        high = max(1.0, min(2.0 ** (k - 1), 60.0))
        waits = np.array([wait_of(ctl, state(k), u) for _ in range(20_000)])
        assert waits.min() >= 1.0 and waits.max() <= high
        se = waits.std(ddof=1) / np.sqrt(len(waits)) + 1e-12
        assert within(float(waits.mean()), (1.0 + high) / 2, se), (k, waits.mean())
    assert decide(ctl, state(6), u) == Decision(None, "exhausted")
    # tenacity reads no retry-after: a 429's header does not change the wait.
    assert wait_of(ctl, state(1, "rate_limited", 30.0), u) == 1.0


def test_breaker_and_budget_presets() -> None:
    p = Policy.model_validate({"breaker": "resilience4j", "budget": "finagle"})
    assert p.breaker is not None and p.breaker.window_size == 100
    assert p.breaker.minimum_calls == 100 and p.breaker.open_duration == 60.0
    assert p.breaker.half_open_calls == 10 and p.breaker.failure_rate_threshold == 0.5
    assert p.budget is not None and p.budget.kind == "finagle"
    pb = Policy.model_validate({"breaker": {"preset": "pybreaker", "open_duration": 30}})
    assert pb.breaker is not None and pb.breaker.window_size == 5
    assert pb.breaker.open_duration == 30.0  # overridden
    envoy = Policy.model_validate({"budget": "envoy"}).budget
    assert envoy is not None and envoy.kind == "envoy"


def test_a_policy_preset_with_overrides() -> None:
    p = Policy.model_validate(
        {"preset": "openai-sdk", "timeout": "20s", "retry": {"max_retries": 5}}
    )
    assert p.preset == "openai-sdk" and p.timeout == 20.0
    assert p.retry.kind == "exponential" and p.retry.max_retries == 5
    assert p.retry.jitter == "proportional"


# Composition ---------------------------------------------------------------------------------


def test_waits_stops_and_predicates_compose() -> None:
    wait = WaitFixed(1.0) + WaitExponential(0.5, 2.0, 8.0, "none")
    stop = StopAfterAttempt(4) | StopAfterDelay(10.0)
    retry_if = RetryIfStatus.of(["rate_limited"]) | RetryIfStatus.of(["overloaded"])
    ctl = RetryController(wait, stop, retry_if)
    u = uniforms(5)
    assert wait_of(ctl, state(1, "rate_limited"), u) == 1.5
    assert wait_of(ctl, state(3, "overloaded"), u) == 3.0
    assert decide(ctl, state(4, "overloaded"), u) == Decision(None, "exhausted")
    assert decide(ctl, state(1, "overloaded", elapsed=12.0), u) == Decision(None, "exhausted")
    assert decide(ctl, state(1, "server_error"), u) == Decision(None, "non_retryable")
    both = StopAfterAttempt(2) & StopAfterDelay(5.0)
    assert not both(state(3, elapsed=1.0)) and both(state(3, elapsed=6.0))


# tenacity ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "retrying",
    [policy_plugins.COOKBOOK, policy_plugins.jittered_retrying()],
    ids=["cookbook", "exponential-jitter"],
)
def test_tenacity_adapter_matches_tenacity(retrying: Any) -> None:
    """Same attempt states, same random numbers: the adapter's decisions are tenacity's."""
    adapter = TenacityPolicy(retrying)
    for seed in range(20):
        for k in range(1, 10):
            for status in ("rate_limited", "server_error"):
                s = state(k, status, elapsed=4.0 * k)
                rcs = adapter.call_state(s)
                retry = bool(retrying.retry(rcs))
                stop = bool(retrying.stop(rcs))
                random.seed(seed)
                expected = retrying.wait(rcs)
                rng = random.Random(seed)
                got = adapter.decide(s, iter(rng.random, None))
                if not retry:
                    assert got == Decision(None, "non_retryable")
                elif stop:
                    assert got == Decision(None, "exhausted")
                else:
                    assert got.wait == pytest.approx(expected, abs=1e-12), (seed, k, status)


# Plugins from config files -----------------------------------------------------------------------


def plugin_config(tmp_path: Path, retry: str, extra: str = "") -> Path:
    path = tmp_path / "plugin.toml"
    path.write_text(
        f"""
[run]
duration = 120
seed = 4
[providers.p]
model = "m"
prices = {{ input = 1, output = 2 }}
rate_limit = {{ rpm = 60, count_rejected = false }}
capacity = {{ slots = 50, queue_limit = 50 }}
service = {{ kind = "deterministic", value = 0.5 }}
failures = {{ error_rate = 0.1 }}
[features.f]
provider = "p"
arrivals = {{ kind = "poisson", rate = 2.0 }}
input_tokens = {{ kind = "fixed", value = 10 }}
output_tokens = {{ kind = "fixed", value = 10 }}
[policies.mine]
retry = {retry}
{extra}
""",
        encoding="utf-8",
    )
    return path


def test_a_plugin_policy_runs_from_a_config_file(tmp_path: Path) -> None:
    retry = (
        '{ kind = "custom", class = "tests.policy_plugins:FixedThenGiveUp", '
        "params = { delay = 2.0, retries = 3 } }"
    )
    result = Simulation(load_config(plugin_config(tmp_path, retry))).run()
    att = result.df("attempts").sort_values(["request_id", "attempt"])
    assert (att.loc[att.attempt > 0, "wait_before"] == 2.0).all()
    assert att.attempt.max() <= 3
    prev_status = att.groupby("request_id").status.shift(1)
    assert (prev_status[att.attempt > 0] == "rate_limited").all()  # only 429s were retried
    req = result.df("requests")
    assert {"non_retryable", "ok"} <= set(req.outcome)


def test_a_plugin_may_answer_with_numbers(tmp_path: Path) -> None:
    retry = '{ kind = "custom", class = "tests.policy_plugins:ReturnsNumbers" }'
    att = Simulation(load_config(plugin_config(tmp_path, retry))).run().df("attempts")
    waits = att.loc[att.attempt > 0].set_index("attempt").wait_before
    assert set(waits.loc[[1]]) <= {0.25} and set(waits.loc[[2]]) <= {0.5}
    assert att.attempt.max() <= 2


def test_tenacity_from_a_config_file(tmp_path: Path) -> None:
    retry = '{ kind = "tenacity", retrying = "tests.policy_plugins:COOKBOOK" }'
    result = Simulation(load_config(plugin_config(tmp_path, retry))).run()
    att = result.df("attempts")
    assert att.attempt.max() <= 5  # stop_after_attempt(6)
    retries = att[att.attempt > 0]
    assert len(retries) > 0
    assert (retries.wait_before >= 1.0).all()
    assert (retries.wait_before <= np.maximum(1.0, 2.0 ** (retries.attempt - 1)) + 1e-9).all()


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        ('{ kind = "custom", class = "nocolon" }', "module.path:Name"),
        ('{ kind = "custom", class = "a b:C" }', "module.path:Name"),
        ('{ kind = "custom", class = "os:" }', "module.path:Name"),
        ('{ kind = "custom" }', "class"),
        ('{ kind = "custom", class = "m:C", params = { "not ok" = 1 } }', "params.not ok"),
        ('{ kind = "tenacity", retrying = "m" }', "module.path:Name"),
    ],
)
def test_validation_checks_the_form_of_a_plugin(tmp_path: Path, retry: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(plugin_config(tmp_path, retry))
    text = str(info.value)
    assert "policies.mine.retry" in text, text
    assert message in text, text


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        ('{ kind = "custom", class = "no_such_module_xyz:P" }', "cannot import module"),
        ('{ kind = "custom", class = "tests.policy_plugins:Missing" }', "has no attribute"),
        ('{ kind = "custom", class = "tests.policy_plugins:NoDecide" }', "protocol"),
        ('{ kind = "custom", class = "tests.policy_plugins:FixedThenGiveUp" }', "params"),
        ('{ kind = "custom", class = "tests.policy_plugins:jittered_retrying" }', "not a class"),
        ('{ kind = "tenacity", retrying = "tests.policy_plugins:NoDecide" }', "tenacity.Retrying"),
    ],
)
def test_bad_plugins_are_reported_when_a_run_is_built(
    tmp_path: Path, retry: str, message: str
) -> None:
    """Validation imports nothing; building the run imports the plugin and names the field."""
    scenario = load_config(plugin_config(tmp_path, retry))
    with pytest.raises(ConfigError) as info:
        Simulation(scenario)
    text = str(info.value)
    assert "policies.mine.retry" in text, text
    assert message in text, text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('preset = "openai-sdk-v9"', "unknown policy preset 'openai-sdk-v9'"),
        ('breaker = "resilience5j"', "unknown breaker preset 'resilience5j'"),
        ('budget = "netflix"', "unknown budget preset 'netflix'"),
        ('fallback = { providers = ["nope"] }', "fallback.providers[0]: unknown provider"),
        ("throttle = { k = -1 }", "throttle.k"),
        ("concurrency = { queue_limit = 3 }", "concurrency.limit"),
    ],
)
def test_bad_policy_configs(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(plugin_config(tmp_path, '{ kind = "none" }', extra))
    assert message in str(info.value), str(info.value)


INF, NAN = math.inf, math.nan


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"retry": {"kind": "exponential", "base": INF, "cap": INF}}, "retry.base"),
        ({"retry": {"kind": "exponential", "cap": INF}}, "retry.cap"),
        ({"retry": {"kind": "exponential", "multiplier": INF}}, "retry.multiplier"),
        ({"retry": {"kind": "exponential", "jitter_added": INF}}, "retry.jitter_added"),
        ({"retry": {"kind": "exponential", "retry_after_jitter": INF}}, "retry.retry_after_jitter"),
        ({"retry": {"kind": "fixed", "delay": INF}}, "retry.delay"),
        ({"retry": {"kind": "random_exponential", "min": INF}}, "retry.min"),
        ({"retry": {"kind": "random_exponential", "max": INF}}, "retry.max"),
        ({"retry": {"kind": "random_exponential", "exp_base": INF}}, "retry.exp_base"),
        ({"retry": {"kind": "exponential", "retry_after_max": NAN}}, "retry.retry_after_max"),
        ({"breaker": {"open_duration": INF}}, "breaker.open_duration"),
        ({"breaker": {"failure_rate_threshold": NAN}}, "breaker.failure_rate_threshold"),
        ({"budget": {"ratio": NAN}}, "budget.ratio"),
        ({"budget": {"max_tokens": INF}}, "budget.max_tokens"),
        ({"budget": {"kind": "finagle", "ttl": INF}}, "budget.ttl"),
        ({"budget": {"kind": "finagle", "min_per_second": INF}}, "budget.min_per_second"),
        ({"throttle": {"k": INF}}, "throttle.k"),
        ({"throttle": {"window": INF}}, "throttle.window"),
        ({"rate_limit": {"rpm": INF}}, "rate_limit.rpm"),
        ({"timeout": NAN}, "timeout"),
    ],
)
def test_policy_numbers_are_finite_unless_inf_means_never(
    fields: dict[str, Any], path: str
) -> None:
    """On f8966f2 every one of these but the NaNs validated (an infinite wait or window)."""
    with pytest.raises(ConfigError) as info:
        make_scenario(policies={"pol": fields})
    text = str(info.value)
    assert f"policies.pol.{path}:" in text, text
    assert any(word in text.lower() for word in ("nan", "inf", "finite")), text
    assert "np.float64" not in text


@pytest.mark.parametrize(
    "fields",
    [
        {"timeout": INF},
        {"deadline": INF},
        {"retry": {"kind": "exponential", "retry_after_max": INF}},
        {"breaker": {"slow_call_duration": INF}},
        {"rate_limit": {"rpm": 60, "max_wait": INF}},
    ],
)
def test_inf_where_it_means_never_or_any(fields: dict[str, Any]) -> None:
    make_scenario(policies={"pol": fields})


@pytest.mark.parametrize(
    ("budget", "path"),
    [
        ({"ratio": 20}, "policies.pol.budget.ratio:"),
        ({"kind": "token_bucket", "ratio": 20}, "policies.pol.budget.ratio:"),
        ({"kind": "finagle", "percent": 2}, "policies.pol.budget.percent:"),
        ({"ratio": 0.1, "typo": 1}, "policies.pol.budget.typo:"),
    ],
)
def test_budget_errors_name_the_path_written(budget: dict[str, Any], path: str) -> None:
    """f8966f2 said policies.pol.budget.token_bucket.ratio for { ratio = ... }: a path the
    user never wrote (the union tag the default kind picked)."""
    with pytest.raises(ConfigError) as info:
        make_scenario(policies={"pol": {"budget": budget}})
    assert path in str(info.value)
    assert "token_bucket." not in str(info.value)


# Mechanisms in runs ------------------------------------------------------------------------------


def test_throttle_state_machine_step_by_step() -> None:
    th = AdaptiveThrottle(k=2.0, window=10.0)
    never = iter([0.999999] * 100)
    for t in range(10):  # 10 requests, all accepted
        assert th.allow(float(t) / 10, never)
        th.record(float(t) / 10, True)
    assert th.rejection_probability(1.0) == 0.0  # 10 requests, 10 accepts: 10 - 2 x 10 < 0
    for t in range(10):  # 10 more, none accepted: requests 20, accepts 10
        th.allow(1.0 + t / 10, never)
        th.record(1.0 + t / 10, False)
    assert th.rejection_probability(2.0) == pytest.approx(0.0)  # 20 - 2 x 10 = 0
    th.allow(2.0, never)  # 21 requests, 10 accepts
    assert th.rejection_probability(2.0) == pytest.approx(1 / 22)
    # At 11.5 s the counts of seconds 0 and 1 have left the 10 s window: 1 request, 0 accepts.
    assert th.rejection_probability(11.5) == pytest.approx(1 / 2)
    assert th.rejection_probability(30.0) == 0.0  # everything forgotten


def throttled_run(accept: float, seed: int) -> dict[str, Any]:
    sc = make_scenario(
        **{
            "run.duration": 2000.0,
            "run.seed": seed,
            "run.records": "summary",
            "providers.p.failures": {"error_rate": 1.0 - accept, "error_latency": 0.01},
            "providers.p.service": {"kind": "deterministic", "value": 0.1},
            "features.f.arrivals": {"kind": "poisson", "rate": 5.0},
            "policies": {"t": {"throttle": {"k": 2.0, "window": 20.0}}},
        }
    )
    return Simulation(sc).run().summary


@pytest.mark.parametrize("accept", [0.40, 0.45])
def test_adaptive_throttling_long_run_rejection_matches_the_formula(accept: float) -> None:
    """Steady state: requests r per window, accepts p (1 - P) r, and
    P = (r - K a) / (r + 1) give P = r (1 - K p) / (r (1 - K p) + 1)."""
    s = throttled_run(accept, seed=41)
    share = s["outcomes"].get("rejected_throttle", 0) / s["requests"]
    r = 5.0 * 20.0
    theory = r * (1 - 2 * accept) / (r * (1 - 2 * accept) + 1)
    assert share == pytest.approx(theory, abs=0.05), (share, theory)


def test_adaptive_throttling_leaves_a_healthy_backend_alone() -> None:
    s = throttled_run(0.8, seed=42)
    assert s["outcomes"].get("rejected_throttle", 0) / s["requests"] < 0.01


def test_finagle_budget_holds_retries_to_percent_plus_minimum() -> None:
    sc = make_scenario(
        **{
            "run.duration": 600.0,
            "run.records": "summary",
            "providers.p.failures": {"error_rate": 1.0},
            "features.f.arrivals": {"kind": "poisson", "rate": 10.0},
            "policies": {
                "b": {
                    "retry": {"kind": "naive", "max_retries": 3},
                    "budget": {
                        "kind": "finagle",
                        "percent": 0.2,
                        "min_per_second": 1.0,
                        "ttl": 10.0,
                    },
                }
            },
        }
    )
    s = Simulation(sc).run().summary
    retries_per_s = (s["attempts"] - s["requests"]) / 600.0
    # Within any 10 s: 1/s x 10 + 20% of ~100 requests = ~30 retries, i.e. ~3 per second.
    assert retries_per_s == pytest.approx(0.2 * s["requests"] / 600.0 + 1.0, rel=0.05)


def test_envoy_budget_caps_retries_in_flight() -> None:
    sc = make_scenario(
        **{
            "run.duration": 120.0,
            "providers.p.failures": {"midstream_rate": 1.0},
            "providers.p.service": {"kind": "deterministic", "value": 2.0},
            "features.f.arrivals": {"kind": "poisson", "rate": 5.0},
            "policies": {
                "b": {
                    "retry": {"kind": "naive", "max_retries": 2},
                    "budget": {"kind": "envoy", "percent": 0.0, "min_concurrency": 3},
                }
            },
        }
    )
    att = Simulation(sc).run().df("attempts")
    retries = att[att.attempt > 0]
    s, e = retries.send_time.to_numpy(), retries.end_time.to_numpy()
    in_flight = [int(((s <= t) & (e > t)).sum()) for t in s]
    assert max(in_flight) == 3


def test_client_pacing_avoids_429s() -> None:
    common: dict[str, Any] = {
        "run.duration": 300.0,
        "providers.p.rate_limit": {"rpm": 120},
        "features.f.arrivals": {"kind": "poisson", "rate": 3.0},
    }
    unpaced = Simulation(make_scenario(**common)).run().summary
    assert unpaced["attempt_statuses"].get("rate_limited", 0) > 0
    paced = Simulation(make_scenario(**common, policies={"p": {"rate_limit": {"rpm": 110}}})).run()
    s = paced.summary
    assert s["attempt_statuses"].get("rate_limited", 0) == 0
    sends = np.sort(paced.df("attempts").send_time.to_numpy())
    # Once the initial minute of credit is spent, attempts go out at 110 per minute.
    late = sends[(sends > 120) & (sends < 280)]
    assert len(late) / 160 == pytest.approx(110 / 60, rel=0.03)


def test_concurrency_limit_and_local_queue() -> None:
    sc = make_scenario(
        **{
            "run.duration": 60.0,
            "features.f.arrivals": {"kind": "poisson", "rate": 5.0},
            "policies": {"c": {"concurrency": {"limit": 3, "queue_limit": 5}}},
        }
    )
    r = Simulation(sc).run()
    att = r.df("attempts")
    s, e = att.send_time.to_numpy(), att.end_time.to_numpy()
    assert max(int(((s <= t) & (e > t)).sum()) for t in s) == 3
    outcomes = r.summary["outcomes"]
    assert outcomes.get("rejected_throttle", 0) > 0  # 5/s into 3 slots of 1 s: queue fills
    assert outcomes["ok"] == len(att)


def test_fallback_cost_is_exact() -> None:
    """The primary is down; each request fails there once (unbilled 503) and succeeds on the
    fallback, billed at the fallback's prices: 1000 x $10/M + 500 x $20/M = $0.02."""
    sc = make_scenario(
        **{
            "run.duration": 20.0,
            "providers.p.incidents": [{"kind": "outage", "start": 0.0, "duration": 100.0}],
            "providers.backup": {
                "model": "big",
                "prices": {"input": 10.0, "output": 20.0},
                "service": {"kind": "deterministic", "value": 1.0},
            },
            "features.f.arrivals": {"kind": "times", "at": [1.0, 2.0, 3.0]},
            "features.f.input_tokens": {"kind": "fixed", "value": 1000},
            "features.f.output_tokens": {"kind": "fixed", "value": 500},
            "policies": {
                "fb": {
                    "retry": {"kind": "naive", "max_retries": 0},
                    "fallback": {"providers": ["backup"]},
                }
            },
        }
    )
    r = Simulation(sc).run()
    req = r.df("requests")
    assert list(req.outcome) == ["ok"] * 3
    assert list(req.final_provider) == ["backup"] * 3
    assert np.allclose(req.billed_cost, 0.02)
    assert np.allclose(req.useful_cost, 0.02)
    assert np.allclose(req.baseline_cost, (1000 * 1.0 + 500 * 2.0) / 1e6)  # the primary's price
    assert r.summary["cost_vs_baseline"] == pytest.approx(0.02 / 0.002)
    att = r.df("attempts")
    assert list(att.groupby("request_id").provider.apply(list).iloc[0]) == ["p", "backup"]


def test_fallback_on_an_open_breaker_skips_the_primary() -> None:
    sc = make_scenario(
        **{
            "run.duration": 120.0,
            "providers.p.incidents": [{"kind": "outage", "start": 20.0, "duration": 60.0}],
            "providers.backup": {
                "model": "big",
                "prices": {"input": 10.0, "output": 20.0},
                "service": {"kind": "deterministic", "value": 1.0},
            },
            "features.f.arrivals": {"kind": "poisson", "rate": 5.0},
            "policies": {
                "fb": {
                    "retry": {"kind": "naive", "max_retries": 1},
                    "breaker": {
                        "window_size": 10,
                        "minimum_calls": 10,
                        "open_duration": 10.0,
                        "half_open_calls": 2,
                    },
                    "fallback": {"providers": ["backup"]},
                }
            },
        }
    )
    r = Simulation(sc).run()
    att = r.df("attempts")
    during = att[att.send_time.between(30.0, 75.0)]
    # While the primary's breaker is open, most attempts go straight to the backup.
    assert (during.provider == "backup").mean() > 0.8
    assert r.summary["outcomes"].get("rejected_breaker", 0) == 0
    assert r.summary["success_rate"] > 0.99


def test_a_huge_multiplier_waits_the_cap_instead_of_overflowing() -> None:
    """1e10 ** 31 is past the float range: the wait is the cap (it raised OverflowError)."""
    wait = WaitExponential(0.5, 1e10, 1.0, "none", 0.25)
    assert wait.ceiling(0) == 0.5
    assert wait.ceiling(1) == 1.0
    assert wait.ceiling(40) == 1.0
    sc = make_scenario(
        **{
            "run.duration": 60,
            "providers.p.incidents": [{"kind": "outage", "start": 0, "duration": 30}],
            "policies": {
                "x": {
                    "retry": {
                        "kind": "exponential",
                        "max_retries": 60,
                        "base": 0.5,
                        "multiplier": 1e10,
                        "cap": 1,
                        "jitter": "none",
                    }
                }
            },
        }
    )
    s = Simulation(sc).run().summary
    assert s["success_rate"] > 0.9 and s["attempts"] > 40 * 30
