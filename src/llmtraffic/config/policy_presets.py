"""Named policies, breakers and retry budgets that reproduce what production clients run.

Each preset is a config fragment in the same form a TOML file would give, with the source it
was taken from. ``docs/policies.md`` lists them; ``llmtraffic presets --kind policies`` too.
Use one as a feature's ``policy = "openai-sdk"``, or start from one and override fields:
``[policies.mine] preset = "openai-sdk"`` then ``timeout = "30s"``.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass
from typing import Any

ALL_STATUSES = [
    "rate_limited",
    "server_error",
    "overloaded",
    "timeout",
    "midstream_error",
    "quota_exhausted",
    "context_length_exceeded",
]
# The statuses that waiting clears; a quota 429 and a context-length 400 come back unchanged.
TRANSIENT_STATUSES = [
    s for s in ALL_STATUSES if s not in ("quota_exhausted", "context_length_exceeded")
]


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

# The SDKs' ``_should_retry``: an ``x-should-retry`` header decides first; else 408, 409, 429
# and >= 500 (a 424 or a 400 is not retried). Every status is in the SDK presets' ``retryable``:
# the HTTP rule alone decides, so a quota 429 is retried (the SDKs cannot tell it from a rate
# limit) and a context-length 400 is not.
_SDK_HTTP = {"codes": [408, 409, 429], "at_least": 500, "obey_should_retry": True}

# A streamed call returns once the 200's headers arrive; a failure while the caller reads the
# stream is not retried by the SDK. A non-streamed call reads the whole body inside the retry
# loop, so a body that breaks off is a connection error, and is retried.
_STREAMED = [s for s in ALL_STATUSES if s != "midstream_error"]

OPENAI_SOURCE = (
    "openai 3.57.0 on PyPI, openai/_base_client.py: _calculate_retry_timeout ('0 < "
    "retry_after <= MAX_RETRY_AFTER_DELAY', 120 s; else min(INITIAL_RETRY_DELAY * 2**n, "
    "MAX_RETRY_DELAY) * (1 - 0.25 * random())), _should_retry (retry-after above 120 s: no "
    "retry; 408, 409, 429, >= 500); openai/_constants.py (DEFAULT_MAX_RETRIES = 2, "
    "INITIAL_RETRY_DELAY = 0.5, MAX_RETRY_DELAY = 8.0, DEFAULT_TIMEOUT 600 s)"
)
ANTHROPIC_SOURCE = (
    "anthropic 2.16.0 on PyPI, anthropic/_base_client.py: _calculate_retry_timeout ('if "
    "retry_after is not None and retry_after > 0: return min(retry_after, 4_294_967.0)': any "
    "positive retry-after, no 60 s cut-off since 2.14), _should_retry (408, 409, 429, >= 500; "
    "not 424); anthropic/_constants.py (DEFAULT_MAX_RETRIES = 2, INITIAL_RETRY_DELAY = 0.5, "
    "MAX_RETRY_DELAY = 8.0, DEFAULT_TIMEOUT 600 s)"
)
LITELLM_SOURCE = (
    "litellm 1.110.2 on PyPI: litellm/utils.py calculate_retry_after (clamp(0.5 * 2**n, 0, "
    "8) + JITTER * random(); a retry-after with 0 < value <= 60 is waited plus the same "
    "jitter), litellm/constants.py (DEFAULT_MAX_RETRIES = 2, INITIAL_RETRY_DELAY = 0.5, "
    "MAX_RETRY_DELAY = 8.0, JITTER = 0.75); cooldown: see the litellm-cooldown breaker"
)


def _sdk(retry_after: dict[str, Any], retryable: list[str]) -> dict[str, Any]:
    # DEFAULT_TIMEOUT is httpx.Timeout(600, connect=5): a limit on each read, which a stream's
    # every chunk resets, not on the whole call. A non-streamed call is one read, so for it
    # the idle timeout bounds the whole call, as a 600 s timeout did.
    return {
        "timeout": math.inf,
        "idle_timeout": 600.0,
        "retryable": retryable,
        "retryable_http": _SDK_HTTP,
        "retry": {**_SDK_BACKOFF, **retry_after},
    }


_OPENAI_RETRY_AFTER = {"retry_after_max": 120.0, "retry_after_beyond_max": "give_up"}
# No cut-off: the SDK only clamps a retry-after to 4,294,967 s (49.7 days, time.sleep's limit
# on some platforms), far beyond any run.
_ANTHROPIC_RETRY_AFTER = {"retry_after_max": math.inf, "retry_after_beyond_max": "backoff"}

LANGCHAIN_SOURCE = (
    "langchain-core 1.8.4 on PyPI, langchain_core/runnables/base.py Runnable.with_retry "
    "(retry_if_exception_type=(Exception,), wait_exponential_jitter=True, "
    "stop_after_attempt=3) and langchain_core/runnables/retry.py RunnableRetry "
    "(stop_after_attempt(3), wait_exponential_jitter() with tenacity's defaults: initial 1, "
    "exp_base 2, jitter 1, max sys.maxsize / 2, so 2**n + U(0, 1) s); langchain-openai 1.8.1, "
    "langchain_openai/chat_models/base.py (max_retries None: the OpenAI client keeps its own "
    "default of 2; request_timeout None: the SDK's 600 s)"
)
LITELLM_ROUTER_SOURCE = (
    "litellm 1.110.2 on PyPI, litellm/router_rust/core.py (num_retries defaults to 2), "
    "litellm/router_rust/surface/settings.py default_litellm_params "
    "('params.setdefault(\"max_retries\", 0)': the provider SDK under the Router makes one "
    "attempt per Router call); waits as the litellm-router policy: " + LITELLM_SOURCE
)
CELERY_SOURCE = (
    "celery 5.7.0 on PyPI, celery/app/task.py (Task.max_retries = 3, "
    "Task.default_retry_delay = 3 * 60), celery/app/autoretry.py (autoretry_for without "
    "retry_backoff retries after default_retry_delay)"
)
TENACITY_COOKBOOK_SOURCE = (
    "openai-cookbook, examples/How_to_handle_rate_limits.ipynb: @retry(wait="
    "wait_random_exponential(min=1, max=60), stop=stop_after_attempt(6)) around "
    "client.chat.completions.create, whose SDK keeps its own 2 retries"
)

_LITELLM_ROUTER_RETRY = {
    "kind": "exponential",
    "max_retries": 2,
    "base": 0.5,
    "multiplier": 2.0,
    "cap": 8.0,
    "jitter": "additive",
    "jitter_added": 0.75,
    "honor_retry_after": True,
    "retry_after_max": 60.0,
    "retry_after_beyond_max": "backoff",
    "retry_after_jitter": 0.75,
}
_COOKBOOK_RETRY = {
    "kind": "random_exponential",
    "max_retries": 5,
    "multiplier": 1.0,
    "min": 1.0,
    "max": 60.0,
    "honor_retry_after": False,
}

LAYERS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "langchain-retry",
            "LangChain's Runnable.with_retry() defaults: 3 attempts of every exception, "
            "waits 2^n + U(0, 1) s (1-2 s, then 2-3 s), no retry-after.",
            LANGCHAIN_SOURCE,
            {
                "name": "langchain",
                "retryable": ALL_STATUSES,
                "retry": {
                    "kind": "exponential",
                    "max_retries": 2,
                    "base": 1.0,
                    "multiplier": 2.0,
                    # tenacity's MAX_WAIT: never reached in 3 attempts.
                    "cap": sys.maxsize / 2,
                    "jitter": "additive",
                    "jitter_added": 1.0,
                    "honor_retry_after": False,
                },
            },
        ),
        Preset(
            "litellm-router",
            "LiteLLM's Router retry loop: 2 retries, backoff min(0.5 * 2^n, 8) s plus "
            "U(0, 0.75) s, a retry-after of up to 60 s waited plus U(0, 0.75) s.",
            LITELLM_ROUTER_SOURCE,
            {"name": "router", "retryable": ALL_STATUSES, "retry": _LITELLM_ROUTER_RETRY},
        ),
        Preset(
            "tenacity-cookbook",
            "The OpenAI Cookbook's tenacity decorator: 6 attempts of every exception, "
            "wait_random_exponential(min=1, max=60), no retry-after.",
            TENACITY_COOKBOOK_SOURCE,
            {"name": "tenacity", "retryable": ALL_STATUSES, "retry": _COOKBOOK_RETRY},
        ),
        Preset(
            "celery-autoretry",
            "A Celery task with autoretry_for and the task defaults: 3 retries, each 180 s "
            "after the failure (the job queue around the application).",
            CELERY_SOURCE,
            {
                "name": "job",
                "retryable": ALL_STATUSES,
                "retry": {
                    "kind": "fixed",
                    "max_retries": 3,
                    "delay": 180.0,
                    "honor_retry_after": False,
                },
            },
        ),
    ]
}
"""Presets of retry layers (``layers = [{ preset = "langchain-retry" }]``): the libraries that
wrap an SDK call in a retry loop of their own."""

POLICIES: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "openai-sdk",
            "The official OpenAI Python SDK, non-streaming calls: 2 retries of 408, 409, 429, "
            ">= 500, timeouts and broken-off bodies; backoff min(0.5 * 2^n, 8) s shortened by "
            "up to 25%; a retry-after of up to 120 s honoured, a longer one not retried; 600 s "
            "read timeout (idle_timeout: the whole call when not streamed).",
            OPENAI_SOURCE,
            _sdk(_OPENAI_RETRY_AFTER, ALL_STATUSES),
        ),
        Preset(
            "openai-sdk-stream",
            "The OpenAI SDK with stream=True: as openai-sdk, but a failure mid-stream reaches "
            "the caller without a retry, and the 600 s read timeout is reset by every chunk.",
            OPENAI_SOURCE + "; streamed responses are returned before their body is read",
            _sdk(_OPENAI_RETRY_AFTER, _STREAMED),
        ),
        Preset(
            "anthropic-sdk",
            "The official Anthropic Python SDK, non-streaming calls: 2 retries of 408, 409, "
            "429, >= 500 (529 included, 424 not), timeouts and broken-off bodies; backoff "
            "min(0.5 * 2^n, 8) s shortened by up to 25%; any positive retry-after honoured "
            "(no cut-off); 600 s read timeout (idle_timeout: the whole call when not streamed).",
            ANTHROPIC_SOURCE,
            _sdk(_ANTHROPIC_RETRY_AFTER, ALL_STATUSES),
        ),
        Preset(
            "anthropic-sdk-stream",
            "The Anthropic SDK with stream=True: as anthropic-sdk, but a failure mid-stream "
            "reaches the caller without a retry, and the 600 s read timeout is reset by every "
            "chunk.",
            ANTHROPIC_SOURCE + "; streamed responses are returned before their body is read",
            _sdk(_ANTHROPIC_RETRY_AFTER, _STREAMED),
        ),
        Preset(
            "litellm-router",
            "LiteLLM's Router in front of one deployment per model: 2 retries, backoff "
            "min(0.5 * 2^n, 8) s plus U(0, 0.75) s; a retry-after of up to 60 s waited plus "
            "U(0, 0.75) s, a longer one ignored (backoff); the litellm-cooldown breaker; a "
            "context-length 400 is not retried.",
            LITELLM_SOURCE + "; not retried: a context-length 400 (the Python router's "
            "should_retry_this_error raises for a status litellm/utils.py should_retry refuses; "
            "1.110.2 decides in its compiled router core, so this follows the readable rule); "
            "a 429 is a RateLimitError, insufficient_quota included, and is retried",
            {
                "timeout": 600.0,
                "retryable": [s for s in ALL_STATUSES if s != "context_length_exceeded"],
                "retry": {
                    "kind": "exponential",
                    "max_retries": 2,
                    "base": 0.5,
                    "multiplier": 2.0,
                    "cap": 8.0,
                    "jitter": "additive",
                    "jitter_added": 0.75,
                    "honor_retry_after": True,
                    "retry_after_max": 60.0,
                    "retry_after_beyond_max": "backoff",
                    "retry_after_jitter": 0.75,
                },
                "breaker": {"preset": "litellm-cooldown"},
            },
        ),
        Preset(
            "recommended",
            "llmtraffic's recommended client policy: exponential backoff with full jitter "
            "(0.5 s doubling to 20 s, 3 retries), retry-after honoured up to 60 s, 30 s "
            "attempt timeout, 120 s deadline, a breaker that opens when half of the last 50 "
            "calls fail, and a 10% retry budget; a quota 429 or a context-length 400 is not "
            "retried.",
            "this project's studies (experiments/README.md): backoff alone turns a capacity "
            "drop into a metastable storm, a breaker or a retry budget recovers; full jitter "
            "after the AWS Architecture Blog; the budget after the Google SRE book",
            {
                "timeout": 30.0,
                "deadline": 120.0,
                # A quota 429 or a context-length 400 comes back however long one waits.
                "retryable": TRANSIENT_STATUSES,
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
            "langchain-openai",
            "LangChain's ChatOpenAI with .with_retry(): 3 LangChain attempts, each an OpenAI "
            "SDK call with its own 2 retries: up to 3 x 3 = 9 attempts per request.",
            LANGCHAIN_SOURCE + "; the SDK: " + OPENAI_SOURCE,
            {
                **_sdk(_OPENAI_RETRY_AFTER, ALL_STATUSES),
                "layers": [{"preset": "langchain-retry"}],
            },
        ),
        Preset(
            "litellm-router-sdk",
            "LiteLLM's Router over the OpenAI SDK as the Router sets it up: the SDK with "
            "max_retries=0 (one attempt per Router call, 600 s), the Router's 2 retries "
            "around it and its cooldown: up to 3 attempts per request.",
            LITELLM_ROUTER_SOURCE,
            {
                # LiteLLM hands the SDK completion()'s 600 s: httpx's read timeout, as the SDK
                # presets model it (idle_timeout).
                "timeout": math.inf,
                "idle_timeout": 600.0,
                "retryable": ALL_STATUSES,
                "retry": {"kind": "none"},
                "layers": [{"preset": "litellm-router"}],
                "breaker": {"preset": "litellm-cooldown"},
            },
        ),
        Preset(
            "tenacity-openai-sdk",
            "The OpenAI Cookbook's tenacity decorator around the OpenAI SDK, which keeps its "
            "own 2 retries: up to 6 x 3 = 18 attempts per request.",
            TENACITY_COOKBOOK_SOURCE + "; the SDK: " + OPENAI_SOURCE,
            {
                **_sdk(_OPENAI_RETRY_AFTER, ALL_STATUSES),
                "layers": [{"preset": "tenacity-cookbook"}],
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
                "retry": _COOKBOOK_RETRY,
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
            "LiteLLM's default deployment cooldown for a model group of one deployment (a "
            "provider here): out of service for 5 s once every one of at least 1,000 calls in "
            "the last minute failed; back in service without trial calls.",
            "litellm 1.110.2 on PyPI, litellm/router_utils/cooldown_handlers.py "
            "_should_cooldown_deployment (no allowed_fails set: a single-deployment group "
            "cools down when 'percent_fails == 1.0 and total_requests_this_minute >= "
            "SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD'; the 429 and '> 50% of >= 5' rules "
            "apply only to groups of several deployments); litellm/constants.py "
            "(SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD = 1000, DEFAULT_COOLDOWN_TIME_SECONDS "
            "= 5); failures of every kind count (router_api.py record_failure)",
            {
                "window": "time",
                "window_size": 60,
                "minimum_calls": 1000,
                "failure_rate_threshold": 1.0,
                # LiteLLM has no slow-call rule.
                "slow_call_duration": math.inf,
                "open_duration": 5.0,
                "half_open_calls": 0,
                # _is_cooldown_required: of the 4xx only 401, 402, 404, 408 and 429 count, so
                # a context-length 400 does not.
                "record": [s for s in ALL_STATUSES if s != "context_length_exceeded"],
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
