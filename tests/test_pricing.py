"""Prices as providers charge them (docs/billing.md): the prompt cache against hand-computed
bills and the Poisson closed form, service tiers, the long-context tier, reasoning tokens,
and the bill's parts adding up."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from llmtraffic.config.loader import scenario_from_dict
from llmtraffic.engine.entities import Attempt, Request
from llmtraffic.errors import ConfigError
from llmtraffic.presets import builtin_models
from llmtraffic.provider.caching import PromptCacheState
from llmtraffic.provider.pricing import PricedEndpoint
from llmtraffic.simulation import Simulation

SONNET_IN = 3e-6  # claude-sonnet-4-5, USD per token (litellm 1.110.2)
SONNET_OUT = 15e-6
EXTRA = Path(__file__).parent / "data" / "litellm_prices_extra.json"


def scenario(
    at: list[float],
    *,
    provider: dict[str, Any] | None = None,
    inp: int = 100,
    out: int = 10,
    system: int = 2000,
    feature: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    prov = {"model": "anthropic/claude-sonnet-4-5", "prompt_cache": {"ttl": "5m"}}
    prov.update(provider or {})
    feat: dict[str, Any] = {
        "provider": "p",
        "arrivals": {"kind": "times", "at": at},
        "input_tokens": {"kind": "fixed", "value": inp},
        "output_tokens": {"kind": "fixed", "value": out},
        "system_prompt_tokens": system,
    }
    feat.update(feature or {})
    raw: dict[str, Any] = {
        "run": {"duration": max(at) + 60.0, "seed": 3},
        "providers": {"p": prov},
        "features": {"f": feat},
    }
    if policy is not None:
        raw["policies"] = {"pol": policy}
    return raw


def costs(raw: dict[str, Any]) -> tuple[list[float], dict[str, Any]]:
    result = Simulation(scenario_from_dict(raw)).run()
    reqs = result.tables["requests"].to_pandas().sort_values("arrival_time")
    return list(reqs["billed_cost"]), result.summary


# Anthropic: writes at 1.25x (5 min) or 2x (1 h), reads at 0.1x, TTL refreshed on hits ----------


def test_anthropic_two_requests_a_minute_apart_write_then_read() -> None:
    billed, summary = costs(scenario([0.0, 60.0]))
    rest = 100 * SONNET_IN + 10 * SONNET_OUT
    assert billed[0] == pytest.approx(2000 * 1.25 * SONNET_IN + rest, rel=1e-12)
    assert billed[1] == pytest.approx(2000 * 0.1 * SONNET_IN + rest, rel=1e-12)
    stats = summary["pricing"]["p"]
    assert (stats["cache_hits"], stats["cache_write_tokens"], stats["cache_read_tokens"]) == (
        1,
        2000,
        2000,
    )


def test_anthropic_six_minutes_apart_writes_twice() -> None:
    billed, _ = costs(scenario([0.0, 360.0]))
    write = 2000 * 1.25 * SONNET_IN + 100 * SONNET_IN + 10 * SONNET_OUT
    assert billed == pytest.approx([write, write], rel=1e-12)


def test_a_hit_refreshes_the_ttl() -> None:
    # 0 writes, 240 hits (and renews to 540), 480 hits: without the refresh it would expire at 300.
    billed, _ = costs(scenario([0.0, 240.0, 480.0]))
    read = 2000 * 0.1 * SONNET_IN + 100 * SONNET_IN + 10 * SONNET_OUT
    assert billed[1:] == pytest.approx([read, read], rel=1e-12)


def test_anthropic_one_hour_ttl_writes_at_twice_the_input_price() -> None:
    billed, _ = costs(scenario([0.0, 1800.0], provider={"prompt_cache": {"ttl": "1h"}}))
    rest = 100 * SONNET_IN + 10 * SONNET_OUT
    assert billed[0] == pytest.approx(2000 * 2.0 * SONNET_IN + rest, rel=1e-12)
    assert billed[1] == pytest.approx(2000 * 0.1 * SONNET_IN + rest, rel=1e-12)


def test_a_prefix_under_the_models_minimum_is_not_cached() -> None:
    # claude-haiku-4-5: prompt_cache_min_tokens = 4,096 (litellm 1.110.2).
    raw = scenario([0.0, 60.0], provider={"model": "anthropic/claude-haiku-4-5"})
    billed, summary = costs(raw)
    plain = 2100 * 1e-6 + 10 * 5e-6
    assert billed == pytest.approx([plain, plain], rel=1e-12)
    assert summary["pricing"]["p"]["cache_hits"] == 0


# OpenAI: automatic, 1,024 tokens and up in 128-token increments, no write premium ---------------


def test_openai_matches_whole_128_token_increments_above_1024() -> None:
    raw = scenario([0.0, 60.0], provider={"model": "openai/gpt-4o-mini", "prompt_cache": {}})
    raw["features"]["f"]["system_prompt_tokens"] = 1500
    billed, summary = costs(raw)
    p_in, p_cached, p_out = 0.15e-6, 0.075e-6, 0.6e-6
    assert billed[0] == pytest.approx(1600 * p_in + 10 * p_out, rel=1e-12)  # no write premium
    assert billed[1] == pytest.approx(
        (1600 - 1408) * p_in + 1408 * p_cached + 10 * p_out, rel=1e-12
    )
    assert summary["pricing"]["p"]["cache_read_tokens"] == 1408


def test_usable_tokens_follow_the_increment_rule() -> None:
    cache = PromptCacheState(300.0, 1024, 128)
    assert [cache.usable(n) for n in (1023, 1024, 1151, 1152, 1500)] == [0, 1024, 1024, 1152, 1408]


# Sessions: the previous turn's prompt is the cached prefix ---------------------------------------


def test_a_session_turn_reads_the_previous_turns_prompt_and_writes_the_rest() -> None:
    sc = scenario_from_dict(scenario([0.0]))
    sim = Simulation(sc)
    sim.run()
    ep = sim.endpoints["p"]
    assert isinstance(ep, PricedEndpoint)
    client = sim.clients["f"]

    def turn(t: float, inp: int, prefix: int) -> Attempt:
        req = Request(10_000 + int(t), t, inp, 0, 10, math.inf, 0.0)
        req.session, req.prefix_tokens = 7, prefix
        att = Attempt(req, client, 0, ep, t, math.inf, 0.0, 0)
        ep.submit(att, t)
        return att

    ep.kernel.now = 1000.0
    first = turn(1000.0, 3000, 0)  # a first turn: writes its whole prompt
    second = turn(1030.0, 5000, 3400)  # repeats turn 1's prompt (3,000) + its answer (400)
    third = turn(1400.0, 6000, 5500)  # more than 5 minutes later: expired
    assert (first.cached, first.cache_write) == (0, 3000)
    assert (second.cached, second.cache_write) == (3000, 2000)
    assert (third.cached, third.cache_write) == (0, 6000)
    assert ep._priced_cost(second, 10) == pytest.approx(
        3000 * 0.1 * SONNET_IN + 2000 * 1.25 * SONNET_IN + 10 * SONNET_OUT, rel=1e-12
    )


# The hit rate follows from the traffic: Poisson arrivals, TTL refreshed on every hit -------------


@pytest.mark.parametrize("rate_per_min", [0.1, 0.3])
def test_poisson_hit_probability_is_one_minus_exp_minus_rate_times_ttl(
    rate_per_min: float,
) -> None:
    raw = scenario([0.0], inp=10, out=1)
    raw["features"]["f"]["arrivals"] = {"kind": "poisson", "rate": f"{rate_per_min}/min"}
    raw["run"]["duration"] = "100h"
    raw["run"]["records"] = "summary"
    summary = Simulation(scenario_from_dict(raw)).run().summary
    stats = summary["pricing"]["p"]
    n = stats["cache_lookups"]
    expected = 1 - math.exp(-rate_per_min * 5)  # r T, T = 5 min
    sd = math.sqrt(expected * (1 - expected) / n)
    assert n > 500
    assert abs(stats["cache_hit_rate"] - expected) < 4 * sd


# Money adds up --------------------------------------------------------------------------------


def test_the_parts_add_up_to_the_bill_and_the_baseline_with_failures() -> None:
    raw = scenario([0.0], inp=500, out=200, policy={"max_attempts": 4, "timeout": "8s"})
    raw["features"]["f"]["arrivals"] = {"kind": "poisson", "rate": "2/min"}
    raw["features"]["f"]["reasoning_tokens"] = {"kind": "uniform", "low": 0, "high": 300}
    raw["run"]["duration"] = "3h"
    raw["providers"]["p"]["failures"] = {"error_rate": 0.2, "midstream_rate": 0.2}
    raw["providers"]["p"]["service"] = {"kind": "tokens", "ttft": 0.5, "decode_tps": 60}
    result = Simulation(scenario_from_dict(raw)).run()
    s = result.summary
    stats = s["pricing"]["p"]
    parts = sum(stats[f"{k}_cost"] for k in ("input", "cache_write", "cache_read", "output"))
    assert parts + stats["reasoning_cost"] == pytest.approx(s["billed_cost"], rel=1e-9)
    attempts = result.tables["attempts"].to_pandas()
    requests = result.tables["requests"].to_pandas()
    assert attempts["cost"].sum() + _first_try_costs(requests, attempts) == pytest.approx(
        s["billed_cost"], rel=1e-9
    )
    assert s["useful_cost"] + s["wasted_cost"] == pytest.approx(s["billed_cost"], rel=1e-9)
    assert requests["baseline_cost"].sum() == pytest.approx(s["baseline_cost"], rel=1e-9)
    assert stats["reasoning_cost"] > 0 and stats["cache_read_cost"] > 0


def _first_try_costs(requests: Any, attempts: Any) -> float:
    """Requests that succeeded on a first attempt sent at arrival have no attempts row."""
    with_rows = set(attempts["request_id"])
    return float(requests.loc[~requests["request_id"].isin(with_rows), "billed_cost"].sum())


def test_without_failures_the_bill_is_the_baseline() -> None:
    raw = scenario([0.0])
    raw["features"]["f"]["arrivals"] = {"kind": "poisson", "rate": "0.4/min"}
    raw["run"]["duration"] = "5h"
    s = Simulation(scenario_from_dict(raw)).run().summary
    assert s["pricing"]["p"]["cache_hits"] > 0
    assert s["billed_cost"] == pytest.approx(s["baseline_cost"], rel=1e-9)


# Tiers, long context, reasoning --------------------------------------------------------------


def test_batch_bills_half_and_completes_within_the_day() -> None:
    raw = scenario(
        [float(i) for i in range(200)],
        system=0,
        provider={"service_tier": "batch", "prompt_cache": None},
        policy={"timeout": "24h", "deadline": "24h"},
    )
    raw["run"]["drain"] = "inf"
    result = Simulation(scenario_from_dict(raw)).run()
    reqs = result.tables["requests"].to_pandas()
    standard = 100 * SONNET_IN + 10 * SONNET_OUT
    assert reqs["billed_cost"].to_list() == pytest.approx([standard / 2] * 200, rel=1e-12)
    latency = reqs["latency"]
    assert (latency < 86_400).all()
    # Lognormal, median 30 min: the sample median within a loose band.
    assert 1200 < latency.median() < 2700


def test_batch_without_a_day_long_timeout_is_refused() -> None:
    raw = scenario([0.0], provider={"service_tier": "batch", "prompt_cache": None})
    with pytest.raises(ConfigError, match="batch provider"):
        scenario_from_dict(raw)


@pytest.mark.parametrize(
    ("tier", "p_in", "p_out"), [("flex", 0.625e-6, 5e-6), ("priority", 2.5e-6, 20e-6)]
)
def test_flex_and_priority_bill_their_prices(tier: str, p_in: float, p_out: float) -> None:
    raw = scenario([0.0], system=0, provider={"model": "openai/gpt-5", "prompt_cache": None})
    raw["providers"]["p"]["service_tier"] = tier
    billed, _ = costs(raw)
    assert billed == pytest.approx([100 * p_in + 10 * p_out], rel=1e-12)


def test_long_context_bills_the_whole_request_at_the_higher_rate() -> None:
    # gemini-2.5-pro: 1.25 / 10 USD per Mtok up to 200k input tokens, 2.5 / 15 above.
    raw = scenario([0.0, 1.0], system=0, provider={"model": "google/gemini-2.5-pro"})
    del raw["providers"]["p"]["prompt_cache"]
    raw["features"]["f"]["input_tokens"] = {"kind": "uniform", "low": 200_000, "high": 200_001}
    result = Simulation(scenario_from_dict(raw)).run()
    reqs = result.tables["requests"].to_pandas()
    for inp, cost in zip(reqs["input_tokens"], reqs["billed_cost"], strict=True):
        if inp > 200_000:
            assert cost == pytest.approx(inp * 2.5e-6 + 10 * 15e-6, rel=1e-12)
        else:
            assert cost == pytest.approx(inp * 1.25e-6 + 10 * 10e-6, rel=1e-12)


def test_reasoning_tokens_bill_as_output_and_take_decode_time() -> None:
    raw = scenario([0.0], system=0, provider={"prompt_cache": None})
    raw["features"]["f"]["reasoning_tokens"] = {"kind": "fixed", "value": 300}
    raw["providers"]["p"]["service"] = {
        "kind": "tokens",
        "ttft": 0.5,
        "decode_tps": 100,
        "noise_sigma": 0,
    }
    result = Simulation(scenario_from_dict(raw)).run()
    req = result.tables["requests"].to_pandas().iloc[0]
    assert req["billed_cost"] == pytest.approx(100 * SONNET_IN + 310 * SONNET_OUT, rel=1e-12)
    assert req["latency"] == pytest.approx(0.5 + 310 / 100, rel=1e-9)
    stats = result.summary["pricing"]["p"]
    assert stats["reasoning_cost"] == pytest.approx(300 * SONNET_OUT, rel=1e-12)
    assert stats["output_cost"] == pytest.approx(10 * SONNET_OUT, rel=1e-12)


# Config ---------------------------------------------------------------------------------------


def test_cached_fraction_and_a_prompt_cache_are_refused_together() -> None:
    raw = scenario([0.0], feature={"cached_fraction": 0.5})
    with pytest.raises(ConfigError, match="cached_fraction"):
        scenario_from_dict(raw)


def test_cached_fraction_still_works_without_a_prompt_cache() -> None:
    raw = scenario(
        [0.0], system=0, provider={"prompt_cache": None}, feature={"cached_fraction": 0.5}
    )
    billed, _ = costs(raw)
    assert billed == pytest.approx([50 * SONNET_IN + 50 * 0.1 * SONNET_IN + 10 * SONNET_OUT])


def test_anthropic_ttls_are_five_minutes_or_an_hour() -> None:
    with pytest.raises(ConfigError, match='"5m" or "1h"'):
        scenario_from_dict(scenario([0.0], provider={"prompt_cache": {"ttl": "10m"}}))


def test_presets_carry_the_litellm_fields() -> None:
    extra = json.loads(EXTRA.read_text())
    models = builtin_models()
    for name, preset in models.items():
        provider, _, model = name.partition("/")
        entry = extra["gemini/" + model if provider == "google" else model]
        prices = preset.prices()
        pairs = [
            ("cache_write", "cache_creation_input_token_cost"),
            ("cache_write_1h", "cache_creation_input_token_cost_above_1hr"),
        ]
        for key, field in pairs:
            if field in entry:
                assert prices[key] == pytest.approx(entry[field] * 1e6, rel=1e-12), (name, key)
        for tier, suffix in (("batch", "batches"), ("flex", "flex"), ("priority", "priority")):
            if f"output_cost_per_token_{suffix}" in entry:
                assert prices[tier]["input"] == pytest.approx(
                    entry[f"input_cost_per_token_{suffix}"] * 1e6, rel=1e-12
                )
                assert prices[tier]["output"] == pytest.approx(
                    entry[f"output_cost_per_token_{suffix}"] * 1e6, rel=1e-12
                )
        assert preset.cache_min_tokens == entry.get("prompt_cache_min_tokens")
        # Reasoning is billed at the output price: where litellm prices it, it is that price.
        if "output_cost_per_reasoning_token" in entry:
            assert entry["output_cost_per_reasoning_token"] == entry["output_cost_per_token"]
        # Anthropic's write premiums: 1.25x (5 min) and 2x (1 h) the input price.
        if provider == "anthropic":
            assert prices["cache_write"] == pytest.approx(1.25 * preset.input, rel=1e-12)
            assert prices["cache_write_1h"] == pytest.approx(2 * preset.input, rel=1e-12)


def test_the_terminal_summary_shows_the_bills_parts_and_the_hit_rate() -> None:
    from llmtraffic.report_table import pricing_lines

    _, summary = costs(scenario([0.0, 60.0]))
    (line,) = pricing_lines(summary)
    assert line.startswith("p: billed $0.0090 = input $0.0006 + cache writes $0.0075")
    assert "prompt cache hit 50.00% of 2 prompts (2,000 tokens read, 2,000 written)" in line


def test_a_session_baseline_follows_the_shadow_cache() -> None:
    sim = Simulation(scenario_from_dict(scenario([0.0])))
    sim.run()
    ep = sim.endpoints["p"]
    assert isinstance(ep, PricedEndpoint)
    first = ep.baseline_cost("f", 1000.0, 3000, 0, 10, session=9, prefix=0)
    second = ep.baseline_cost("f", 1030.0, 5000, 0, 10, session=9, prefix=3400)
    assert first == pytest.approx(3000 * 1.25 * SONNET_IN + 10 * SONNET_OUT, rel=1e-12)
    assert second == pytest.approx(
        3000 * 0.1 * SONNET_IN + 2000 * 1.25 * SONNET_IN + 10 * SONNET_OUT, rel=1e-12
    )


def test_sessions_read_the_shared_system_prompt_and_their_own_transcript() -> None:
    """Two sessions of 3 turns (100 new tokens, 50 out, 5 s think time, 2 s service) on a
    1,500-token system prompt, Anthropic 5-minute TTL: session A's first turn writes its
    1,600-token prompt; B's first turn, a second later, reads A's system prompt (1,500) and
    writes its 100 new tokens; each later turn reads its previous prompt (1,600, then 1,750)
    and writes the 150 tokens after it (the previous answer and its new tokens)."""
    raw: dict[str, Any] = {
        "run": {"duration": 30.0, "seed": 1},
        "providers": {
            "p": {
                "model": "anthropic/claude-sonnet-4-5",
                "prompt_cache": {"ttl": "5m"},
                "service": {"kind": "deterministic", "value": 2.0},
            }
        },
        "features": {
            "f": {
                "provider": "p",
                "arrivals": {"kind": "times", "at": [0.0, 1.0]},
                "input_tokens": {"kind": "fixed", "value": 100},
                "output_tokens": {"kind": "fixed", "value": 50},
                "session": {
                    "turns": {"kind": "fixed", "value": 3},
                    "think_time": {"kind": "fixed", "value": 5.0},
                    "system_tokens": 1500,
                },
            }
        },
    }
    billed, summary = costs(raw)
    out = 50 * SONNET_OUT
    w, r = 1.25 * SONNET_IN, 0.1 * SONNET_IN
    expected = [
        1600 * w + out,  # A1 at 0 s
        1500 * r + 100 * w + out,  # B1 at 1 s: the system prompt A1 wrote
        1600 * r + 150 * w + out,  # A2 at 7 s (1,750 tokens)
        1600 * r + 150 * w + out,  # B2 at 8 s
        1750 * r + 150 * w + out,  # A3 at 14 s (1,900 tokens)
        1750 * r + 150 * w + out,  # B3 at 15 s
    ]
    assert billed == pytest.approx(expected, rel=1e-12)
    assert summary["baseline_cost"] == pytest.approx(summary["billed_cost"], rel=1e-12)
    assert summary["pricing"]["p"]["cache_hits"] == 5


def test_a_conversations_system_prompt_is_its_own_key() -> None:
    raw = scenario([0.0])
    raw["features"]["f"]["session"] = {
        "turns": {"kind": "fixed", "value": 2},
        "think_time": {"kind": "fixed", "value": 1.0},
    }
    with pytest.raises(ConfigError, match=r"session\.system_tokens"):
        scenario_from_dict(raw)
    raw["features"]["f"]["system_prompt_tokens"] = 0
    raw["features"]["f"]["reasoning_tokens"] = {"kind": "fixed", "value": 10}
    with pytest.raises(ConfigError, match="reasoning_tokens: not modelled for session"):
        scenario_from_dict(raw)
