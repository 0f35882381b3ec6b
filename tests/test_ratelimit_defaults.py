"""Rate limits as users observe them: the defaults, the strict rule, Anthropic's token rules,
the tier data's rules, and hosted providers without a hidden capacity limit (issue 11, part 3).

Each expectation is a closed form or a hand computation, with a tolerance for Poisson noise.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

from llmtraffic import Simulation, presets, scenario_from_dict
from llmtraffic.config.provider import RateLimit
from llmtraffic.errors import ConfigError

RPM = 600.0  # 10 per second: a bucket of 600 refilled at 10/s
REFILL = RPM / 60.0


def raw_scenario(rate_limit: dict[str, Any], rate: float, duration: float) -> dict[str, Any]:
    """Open-loop Poisson traffic, no retries, ample capacity: only the rate limit refuses."""
    return {
        "run": {"duration": duration, "seed": 11, "timeseries_bin": 60, "records": "timeseries"},
        "providers": {
            "p": {
                "model": "m",
                "prices": {"input": 1.0, "output": 2.0},
                "rate_limit": rate_limit,
                "service": {"kind": "deterministic", "value": 0.05},
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
    }


def per_bin(raw: dict[str, Any]) -> Any:
    """The run's time series (one row a minute): attempts and 429s per bin."""
    return Simulation(scenario_from_dict(raw)).run().df("timeseries")


def admitted(ts: Any, start: float = 0.0, end: float = math.inf) -> float:
    """Attempts admitted in [start, end): with no failures and no capacity limit, every
    admitted attempt comes back ok (50 ms later)."""
    rows = ts[(ts.time >= start) & (ts.time < end)]
    return float(rows.ok.sum())


# --- 1. Defaults that don't lock out ---------------------------------------------------------


def test_the_default_rule_admits_the_limit_under_sustained_overload() -> None:
    """10.5/s offered against RPM 600 with the defaults: min(offered, limit) = 10/s admitted,
    for the whole hour (f8966f2 admitted none from minute 21)."""
    offered, duration = 10.5, 3600.0
    assert RateLimit(rpm=RPM).count_rejected is False
    ts = per_bin(raw_scenario({"rpm": RPM}, offered, duration))
    # The bucket starts full: one minute's worth is a one-off burst on top of the rate.
    rate = (admitted(ts) - RPM) / duration
    assert rate == pytest.approx(min(offered, REFILL), rel=0.02)
    late = admitted(ts, 1800.0, duration) / 1800.0
    assert late == pytest.approx(min(offered, REFILL), rel=0.02)
    assert ts.ok.min() > 0.9 * REFILL * 60  # not one locked minute


def test_the_strict_rule_locks_out_a_continuous_bucket_and_a_window_bounds_it() -> None:
    """count_rejected = true, as documented: with continuous refill the level falls at
    offered - refill = 0.5/s from 600, so everything is admitted until t* = 600 / 0.5 =
    1200 s, and nothing after; with fixed windows each minute still admits its 600."""
    offered, duration = 10.5, 3600.0
    strict = per_bin(raw_scenario({"rpm": RPM, "count_rejected": True}, offered, duration))
    t_star = RPM / (offered - REFILL)
    # Arrivals up to t*, give or take the random walk's spread (sd of t* about 220 s).
    assert admitted(strict) == pytest.approx(offered * t_star, rel=0.25)
    assert admitted(strict, 1800.0, duration) == 0.0
    window = per_bin(
        raw_scenario({"rpm": RPM, "count_rejected": True, "refill": "window"}, offered, duration)
    )
    assert admitted(window) / duration == pytest.approx(min(offered, REFILL), rel=0.02)


def burst_run(rate_limit: dict[str, Any]) -> Any:
    """Base load at 80% of the limit (8/s) for 20 min, plus 1,800 requests spread over
    600-660 s (30/s more): the bucket is empty, and in debt when 429s count, at 660 s."""
    raw = raw_scenario(rate_limit, 0.8 * REFILL, 1200.0)
    raw["run"]["timeseries_bin"] = 10
    times = np.sort(np.random.default_rng(5).uniform(600.0, 660.0, 1800)).tolist()
    raw["features"]["b"] = copy.deepcopy(raw["features"]["f"])
    raw["features"]["b"]["arrivals"] = {"kind": "times", "at": times}
    return per_bin(raw)


def rejected_share(ts: Any, start: float, end: float) -> float:
    rows = ts[(ts.time >= start) & (ts.time < end)]
    return float(rows.rate_limited.sum() / rows.attempts.sum())


def test_a_burst_clears_within_a_minute_by_default() -> None:
    """After the burst the bucket refills at 10 - 8 = 2/s net: 429s stop at once (f8966f2:
    all rejected for 288 s, the debt of 600 repaid at 2/s)."""
    ts = burst_run({"rpm": RPM})
    assert rejected_share(ts, 600.0, 660.0) > 0.3  # the burst did hit the limit
    assert rejected_share(ts, 670.0, 1200.0) < 0.005


def test_after_a_burst_the_strict_rule_repays_a_minute_of_debt() -> None:
    """count_rejected = true: the burst drives the bucket to its floor (-600), repaid at the
    net 2/s: every attempt is rejected for 600 / 2 = 300 s after the burst, then none."""
    ts = burst_run({"rpm": RPM, "count_rejected": True})
    assert rejected_share(ts, 670.0, 900.0) > 0.98
    assert rejected_share(ts, 1020.0, 1200.0) < 0.005


# --- 2. and 3. Anthropic's input and output token rules --------------------------------------


def anthropic(
    cached_fraction: float, error_rate: float, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    """Claude Sonnet 4.5 at Anthropic tier 1 (50 RPM, 30,000 ITPM, 8,000 OTPM), 0.5/s."""
    raw = raw_scenario({"tier": "anthropic/tier-1"}, 0.5, 3600.0)
    p = raw["providers"]["p"]
    p["model"] = "anthropic/claude-sonnet-4-5"
    del p["prices"]
    p["failures"] = {"error_rate": error_rate}
    f = raw["features"]["f"]
    f["input_tokens"]["value"] = input_tokens
    f["output_tokens"]["value"] = output_tokens
    f["cached_fraction"] = cached_fraction
    f["max_tokens"] = 1000
    raw["run"]["records"] = "summary"
    return raw


def share_429(raw: dict[str, Any]) -> float:
    s = Simulation(scenario_from_dict(raw)).run().summary
    return float(s["attempt_statuses"].get("rate_limited", 0) / s["attempts"])


def test_anthropic_input_limits_leave_out_cache_reads() -> None:
    """2,000 input tokens at 30 a minute = 60,000 ITPM offered against 30,000: without cache,
    half is rejected (min(offered, limit)); with 90% cache reads only 6,000 count: none is.
    (f8966f2: 0.99 and 0.99; 0.51 and 0.51 even with count_rejected = false.)"""
    assert share_429(anthropic(0.0, 0.0, 2000, 100)) == pytest.approx(0.5, abs=0.04)
    assert share_429(anthropic(0.9, 0.0, 2000, 100)) < 0.005


def test_anthropic_output_limits_count_only_what_was_generated() -> None:
    """30% fast errors, 200 output tokens, max_tokens 1,000: 0.7 * 30 * 200 = 4,200 output
    tokens a minute are generated, under the 8,000 OTPM: nothing is rejected. (f8966f2
    charged max_tokens and never gave it back for the errors: 99% 429s with the tier's
    inherited count_rejected, 44% without it.)"""
    assert share_429(anthropic(0.0, 0.3, 500, 200)) < 0.005


def test_shed_attempts_cost_no_output_tokens() -> None:
    """Two slots of 10 s and no queue serve at most 0.2/s of the 0.5/s offered; the rest are
    shed with 529s, generating nothing. Served output: at most 0.2 * 60 * 200 = 2,400 a
    minute, under the 8,000 OTPM: no 429 at all. (f8966f2 charged max_tokens = 1,000 for
    every admitted attempt and never gave back a shed one's: 30,000 a minute, mostly 429s.)"""
    raw = anthropic(0.0, 0.0, 500, 200)
    raw["providers"]["p"]["capacity"] = {"slots": 2, "queue_limit": 0}
    raw["providers"]["p"]["service"] = {"kind": "deterministic", "value": 10.0}
    raw["providers"]["p"]["rate_limit"]["count_rejected"] = False  # isolate the output rule
    s = Simulation(scenario_from_dict(raw)).run().summary
    assert s["attempt_statuses"].get("rate_limited", 0) == 0
    assert s["attempt_statuses"]["overloaded"] > 0.5 * s["attempts"]  # the queue did shed


def test_anthropic_output_limits_admit_the_limit_when_output_exceeds_it() -> None:
    """400 output tokens at 30 a minute = 12,000 OTPM generated against 8,000: the long-run
    admitted share is 8,000 / 12,000, so a third of the attempts get 429s."""
    assert share_429(anthropic(0.0, 0.0, 500, 400)) == pytest.approx(1 / 3, abs=0.04)


def test_openai_token_limits_charge_the_larger_of_input_and_max_tokens() -> None:
    """1,000 input tokens and max_tokens 3,000 at 1/s: max = 3,000 a request, 180,000 a minute
    against TPM 120,000: two thirds admitted, a third rejected (the sum, 4,000, would give
    a half)."""
    raw = raw_scenario({"tpm": 120_000}, 1.0, 3600.0)
    raw["features"]["f"]["input_tokens"]["value"] = 1000
    raw["features"]["f"]["max_tokens"] = 3000
    raw["run"]["records"] = "summary"
    assert share_429(raw) == pytest.approx(1 / 3, abs=0.03)


# --- 4. One rule each, in the tier data, with the config's key names -------------------------


def test_every_tier_states_its_rules_with_the_configs_key_names() -> None:
    fields = set(RateLimit.model_fields)
    for name, tier in presets.builtin_tiers().items():
        rules = tier.rules()
        assert set(rules) <= fields, name
        assert {"refill", "count_rejected"} <= set(rules), name
        assert rules["count_rejected"] is False, name  # docs/providers.md: our reading
        if tier.counting == "anthropic":
            assert rules["cache_reads_count"] is False, name  # Claude 4.x: no dagger
        for limits in tier.limits.values():
            assert set(limits.as_dict()) <= fields


def test_a_misspelt_rule_in_tier_data_is_an_error() -> None:
    raw = {"tiers": {"x/tier-1": {"provider": "x", "counting": "openai", "rejected_count": True}}}
    with pytest.raises(ValueError, match="rejected_count"):
        presets.parse_tiers(raw)
    raw = {
        "tiers": {"x/tier-1": {"provider": "x", "counting": "openai", "limits": {"m": {"rp": 1}}}}
    }
    with pytest.raises(ValueError, match="'rp'"):
        presets.parse_tiers(raw)


def test_an_anthropic_tier_does_not_count_rejected_requests() -> None:
    sc = scenario_from_dict(anthropic(0.0, 0.0, 2000, 100))
    rl = sc.providers["p"].rate_limit
    assert rl is not None
    assert (rl.count_rejected, rl.cache_reads_count, rl.refill) == (False, False, "continuous")


# --- 5. Hosted providers are not capacity-limited by a hidden default ------------------------


def dau_scenario(**provider: Any) -> dict[str, Any]:
    """The article's 1M daily users x 5 requests (57.9/s) on gpt-4o-mini at OpenAI tier 5."""
    return {
        "run": {"duration": 600, "seed": 3, "records": "summary"},
        "providers": {
            "p": {"model": "openai/gpt-4o-mini", "rate_limit": {"tier": "openai/tier-5"}} | provider
        },
        "features": {
            "f": {
                "provider": "p",
                "arrivals": {"kind": "dau", "users": 1e6, "requests_per_user": 5},
                "input_tokens": {"kind": "fixed", "value": 1000},
                "output_tokens": {"kind": "fixed", "value": 500},
            }
        },
    }


def test_a_hosted_model_is_not_capacity_limited_unless_configured() -> None:
    """57.9/s well inside tier 5 (30,000 RPM; 1,000 tokens x 3,472/min << 150M TPM), and no
    failures: every request succeeds (f8966f2: 20%, the rest shed by 100 hidden slots)."""
    s = Simulation(scenario_from_dict(dau_scenario())).run().summary
    assert s["requests"] == pytest.approx(1e6 * 5 / 86400 * 600, rel=0.03)
    assert s["success_rate"] == 1.0
    assert s["attempt_statuses"].get("overloaded", 0) == 0


def test_capacity_applies_when_the_config_sets_it() -> None:
    """100 slots of ~8.8 s each serve ~11.4/s of the 57.9/s offered: most are shed."""
    raw = dau_scenario(capacity={"slots": 100, "queue_limit": 200})
    s = Simulation(scenario_from_dict(raw)).run().summary
    assert s["success_rate"] < 0.3
    assert s["attempt_statuses"]["overloaded"] > 0


def test_capacity_needs_slots_and_a_capacity_drop_needs_capacity() -> None:
    raw = dau_scenario(incidents=[{"kind": "capacity_drop", "start": 10, "duration": 10,
                                   "remaining": 0.5}])  # fmt: skip
    with pytest.raises(ConfigError, match=r"providers\.p.*capacity_drop.*capacity\.slots"):
        scenario_from_dict(raw)
    with pytest.raises(ConfigError, match=r"providers\.p\.capacity\.slots"):
        scenario_from_dict(dau_scenario(capacity={"queue_limit": 10}))
