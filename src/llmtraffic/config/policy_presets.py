"""Named policies, breakers and retry budgets that reproduce what production clients run.

Each preset is a config fragment in the same form a TOML file would give, with the source it
was taken from. ``docs/policies.md`` lists them; ``llmtraffic presets --kind policies`` too.
Use one as a feature's ``policy = "openai-sdk"``, or start from one and override fields:
``[policies.mine] preset = "openai-sdk"`` then ``timeout = "30s"``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

ALL_STATUSES = ["rate_limited", "server_error", "overloaded", "timeout", "midstream_error"]


@dataclass(frozen=True)
class Preset:
    """A named config fragment, what it reproduces, and where its numbers come from."""

    name: str
    summary: str
    source: str
    config: dict[str, Any]

    def fragment(self) -> dict[str, Any]:
        """A copy of the config fragment, safe to modify."""
        return copy.deepcopy(self.config)


_SDK_BACKOFF = {
    "kind": "exponential",
    "max_retries": 2,
    "base": 0.5,
    "multiplier": 2.0,
    "cap": 8.0,
    "jitter": "proportional",
    "jitter_fraction": 0.25,
    "honor_retry_after": True,
}

POLICIES: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "openai-sdk",
            "The official OpenAI Python SDK: 2 retries, backoff min(0.5 * 2^n, 8) s shortened "
            "by up to 25%, retry-after honoured up to 120 s (beyond it, no retry), 600 s "
            "timeout.",
            "openai 3.57.0 on PyPI, openai/_base_client.py (DEFAULT_MAX_RETRIES, "
            "INITIAL_RETRY_DELAY, MAX_RETRY_DELAY, _calculate_retry_timeout, _should_retry: "
            "408, 409, 429, >= 500 and connection errors), as summarised in shared/data/README.md",
            {
                "timeout": 600.0,
                "retryable": ALL_STATUSES,
                "retry": {
                    **_SDK_BACKOFF,
                    "retry_after_max": 120.0,
                    "retry_after_beyond_max": "give_up",
                },
            },
        ),
        Preset(
            "anthropic-sdk",
            "The official Anthropic Python SDK: 2 retries, backoff min(0.5 * 2^n, 8) s "
            "shortened by up to 25%, retry-after honoured up to 60 s (beyond it, the backoff), "
            "600 s timeout.",
            "anthropic 2.14.0 on PyPI, anthropic/_base_client.py (_calculate_retry_timeout: "
            "'if retry_after is not None and 0 < retry_after <= 60'; _should_retry: 408, 409, "
            "424, 429, >= 500, including 529 overloaded)",
            {
                "timeout": 600.0,
                "retryable": ALL_STATUSES,
                "retry": {
                    **_SDK_BACKOFF,
                    "retry_after_max": 60.0,
                    "retry_after_beyond_max": "backoff",
                },
            },
        ),
        Preset(
            "litellm-router",
            "LiteLLM's Router: 2 retries with the SDK's backoff, and a deployment cooldown of "
            "5 s after more than 3 failures in a minute (or half of at least 5 calls failing).",
            "litellm/constants.py: DEFAULT_MAX_RETRIES = 2, DEFAULT_ALLOWED_FAILS = 3, "
            "DEFAULT_COOLDOWN_TIME_SECONDS = 5, DEFAULT_FAILURE_THRESHOLD_PERCENT = 0.5 (per "
            "minute); docs.litellm.ai/docs/router/learn/reliability",
            {
                "timeout": 600.0,
                "retryable": ALL_STATUSES,
                "retry": {
                    **_SDK_BACKOFF,
                    "retry_after_max": 60.0,
                    "retry_after_beyond_max": "backoff",
                },
                "breaker": {"preset": "litellm-cooldown"},
            },
        ),
        Preset(
            "recommended",
            "llmtraffic's recommended client policy: exponential backoff with full jitter "
            "(0.5 s doubling to 20 s, 3 retries), retry-after honoured up to 60 s, 30 s "
            "attempt timeout, 120 s deadline, a breaker that opens when half of the last 50 "
            "calls fail, and a 10% retry budget.",
            "this project's studies (experiments/README.md): backoff alone turns a capacity "
            "drop into a metastable storm, a breaker or a retry budget recovers; full jitter "
            "after the AWS Architecture Blog; the budget after the Google SRE book",
            {
                "timeout": 30.0,
                "deadline": 120.0,
                "retryable": ALL_STATUSES,
                "retry": {
                    "kind": "exponential",
                    "max_retries": 3,
                    "base": 0.5,
                    "multiplier": 2.0,
                    "cap": 20.0,
                    "jitter": "full",
                    "honor_retry_after": True,
                    "retry_after_max": 60.0,
                    "retry_after_beyond_max": "backoff",
                },
                "breaker": {
                    "window": "count",
                    "window_size": 50,
                    "minimum_calls": 50,
                    "failure_rate_threshold": 0.5,
                    "open_duration": 15.0,
                    "half_open_calls": 5,
                },
                "budget": {"kind": "token_bucket", "ratio": 0.1, "max_tokens": 10.0},
            },
        ),
        Preset(
            "openai-cookbook",
            "The OpenAI Cookbook's tenacity recipe: wait_random_exponential(min=1, max=60), "
            "stop_after_attempt(6); it retries every error and reads no retry-after.",
            "openai-cookbook, examples/How_to_handle_rate_limits.ipynb: "
            "@retry(wait=wait_random_exponential(min=1, max=60), stop=stop_after_attempt(6))",
            {
                "timeout": 600.0,
                "retryable": ALL_STATUSES,
                "retry": {
                    "kind": "random_exponential",
                    "max_retries": 5,
                    "multiplier": 1.0,
                    "min": 1.0,
                    "max": 60.0,
                    "honor_retry_after": False,
                },
            },
        ),
    ]
}

BREAKERS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "resilience4j",
            "resilience4j's CircuitBreakerConfig defaults: opens at 50% failures over the last "
            "100 calls (once 100 are recorded), waits 60 s, lets 10 trial calls through.",
            "resilience4j CircuitBreakerConfig: failureRateThreshold 50, slowCallRateThreshold "
            "100, slowCallDurationThreshold 60 s, permittedNumberOfCallsInHalfOpenState 10, "
            "slidingWindowType COUNT_BASED, slidingWindowSize 100, minimumNumberOfCalls 100, "
            "waitDurationInOpenState 60 s",
            {
                "window": "count",
                "window_size": 100,
                "minimum_calls": 100,
                "failure_rate_threshold": 0.5,
                "slow_call_rate_threshold": 1.0,
                "slow_call_duration": 60.0,
                "open_duration": 60.0,
                "half_open_calls": 10,
            },
        ),
        Preset(
            "pybreaker",
            "pybreaker's defaults: opens after 5 consecutive failures, resets after 60 s with "
            "one trial call.",
            "pybreaker CircuitBreaker(fail_max=5, reset_timeout=60); five consecutive failures "
            "are five failures in the last five calls",
            {
                "window": "count",
                "window_size": 5,
                "minimum_calls": 5,
                "failure_rate_threshold": 1.0,
                "open_duration": 60.0,
                "half_open_calls": 1,
            },
        ),
        Preset(
            "litellm-cooldown",
            "LiteLLM's deployment cooldown: out of service for 5 s after more than 3 failures "
            "in a minute, or when half of at least 5 calls in a minute failed; back in service "
            "without trial calls.",
            "litellm/constants.py: DEFAULT_ALLOWED_FAILS = 3, DEFAULT_COOLDOWN_TIME_SECONDS = 5, "
            "DEFAULT_FAILURE_THRESHOLD_PERCENT = 0.5, DEFAULT_FAILURE_THRESHOLD_MINIMUM_REQUESTS "
            "= 5",
            {
                "window": "time",
                "window_size": 60,
                "minimum_calls": 5,
                "failure_rate_threshold": 0.5,
                "failure_count_threshold": 4,
                "open_duration": 5.0,
                "half_open_calls": 0,
            },
        ),
    ]
}

BUDGETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "sre",
            "The Google SRE book's per-client retry budget: retries at most 10% of requests.",
            "Site Reliability Engineering (2016), ch. 22 'Addressing Cascading Failures': "
            "'implement a per-client retry budget ... only retry if this ratio is below 10%'",
            {"kind": "token_bucket", "ratio": 0.1, "max_tokens": 10.0},
        ),
        Preset(
            "finagle",
            "Finagle's RetryBudget defaults: 20% of the requests of the last 10 s, plus 10 "
            "retries per second.",
            "Finagle RetryBudget(ttl = 10.seconds, minRetriesPerSec = 10, percentCanRetry = "
            "0.2) (com.twitter.finagle.service.RetryBudget)",
            {"kind": "finagle", "percent": 0.2, "min_per_second": 10.0, "ttl": 10.0},
        ),
        Preset(
            "envoy",
            "Envoy's retry budget: retries in flight at most 20% of requests in flight, and "
            "at least 3.",
            "Envoy cluster circuit_breakers.thresholds.retry_budget: budget_percent 20.0, "
            "min_retry_concurrency 3",
            {"kind": "envoy", "percent": 0.2, "min_concurrency": 3},
        ),
    ]
}


def expand(kind: str, table: dict[str, Preset], value: Any) -> Any:
    """A string names a preset; a table with ``preset`` starts from one and overrides it.

    Unknown names raise ``ValueError`` listing the known ones (pydantic reports it at the
    field's path).
    """
    if isinstance(value, str):
        name, overrides = value, {}
    elif isinstance(value, dict) and "preset" in value:
        overrides = {k: v for k, v in value.items() if k != "preset"}
        name = value["preset"]
    else:
        return value
    preset = table.get(name) if isinstance(name, str) else None
    if preset is None:
        raise ValueError(f"unknown {kind} preset {name!r}; presets: {', '.join(sorted(table))}")
    return merge(preset.fragment(), overrides)


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; nested tables merge, other values replace."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "kind" not in value:
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
