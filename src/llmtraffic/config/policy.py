"""Config of client resilience policies: timeouts, retries, circuit breaker, retry budget,
adaptive throttling, client-side rate limiting, a concurrency limit and fallbacks.

Presets (``config/policy_presets.py``) can stand for a whole policy (``preset = "openai-sdk"``),
a breaker (``breaker = "resilience4j"``) or a budget (``budget = "finagle"``); fields written
next to ``preset`` override the preset's.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from llmtraffic.client.plugins import check_params, check_reference
from llmtraffic.config import policy_presets
from llmtraffic.config.base import (
    Duration,
    FiniteDuration,
    FiniteDurationOrZero,
    Model,
    PositiveDuration,
)
from llmtraffic.config.route import Route
from llmtraffic.units import parse_duration

FailureKind = Literal[
    "rate_limited",
    "server_error",
    "overloaded",
    "timeout",
    "midstream_error",
    "quota_exhausted",
    "context_length_exceeded",
]
"""Failed attempt statuses, as they appear in the ``status`` column of the attempts table."""

INNER_LAYER = "sdk"
"""The name the policy's own retries (the innermost layer) have in the run summary."""

ALL_FAILURES: tuple[FailureKind, ...] = (
    "rate_limited",
    "server_error",
    "overloaded",
    "timeout",
    "midstream_error",
    "quota_exhausted",
    "context_length_exceeded",
)

NEVER_CLEARS: tuple[FailureKind, ...] = ("quota_exhausted", "context_length_exceeded")
"""Failures that the same attempt meets again however long it waits: an exhausted quota (until
its period resets) and a prompt too long for the model. A policy's default ``retryable``
leaves them out; the SDK presets retry the quota 429 anyway, as the SDKs do."""

TRANSIENT: tuple[FailureKind, ...] = tuple(f for f in ALL_FAILURES if f not in NEVER_CLEARS)


class _Retry(Model):
    max_retries: int = Field(3, ge=0, description="retries after the first attempt")
    honor_retry_after: bool = Field(
        True, description="wait what a 429's retry_after says instead of the computed wait"
    )
    retry_after_max: Duration = Field(
        60.0, description='largest retry_after honoured (the SDKs cap it; "inf": any)'
    )
    retry_after_beyond_max: Literal["backoff", "give_up"] = Field(
        "backoff", description="on a larger retry_after: fall back to the computed wait, or stop"
    )
    retry_after_jitter: FiniteDurationOrZero = Field(
        0.0,
        description="an honoured retry_after is lengthened by U(0, this) (LiteLLM adds 0.75 s)",
    )


class NoRetry(Model):
    """Never retry: one attempt per request."""

    kind: Literal["none"] = "none"


class NaiveRetry(_Retry):
    """Retry immediately, up to ``max_retries`` times (the retry-storm maker)."""

    kind: Literal["naive"] = "naive"
    honor_retry_after: bool = Field(
        False, description="wait what a 429's retry_after says (naive retries do not, by default)"
    )


class FixedRetry(_Retry):
    """Wait a fixed ``delay`` before each retry."""

    kind: Literal["fixed"] = "fixed"
    delay: FiniteDurationOrZero = Field(1.0, description="wait before each retry")


class ExponentialRetry(_Retry):
    """Exponential backoff ``w = min(cap, base * multiplier**n)`` with a jitter mode.

    ``n`` counts the retries made so far (0 before the first retry). Jitter modes (AWS
    Architecture Blog, "Exponential Backoff And Jitter", and the official SDKs): ``none`` = w;
    ``full`` = U(0, w); ``equal`` = w/2 + U(0, w/2); ``decorrelated`` =
    min(cap, U(base, 3 * previous wait)); ``proportional`` = w * (1 - jitter_fraction * U)
    (the OpenAI and Anthropic SDKs, with 0.25); ``additive`` = w + jitter_added * U (LiteLLM,
    with 0.75 s).
    """

    kind: Literal["exponential"] = "exponential"
    base: FiniteDuration = Field(0.5, description="wait before the first retry, before jitter")
    multiplier: float = Field(2.0, ge=1.0, description="growth of the wait per retry")
    cap: FiniteDurationOrZero = Field(60.0, description="longest wait, before jitter")
    jitter: Literal["none", "full", "equal", "decorrelated", "proportional", "additive"] = Field(
        "full", description="how the wait is randomised (the modes above)"
    )
    jitter_fraction: float = Field(
        0.25, ge=0, le=1, description="share of the wait jitter may take off (proportional)"
    )
    jitter_added: FiniteDurationOrZero = Field(
        0.75, description="upper end of the U(0, x) added to the wait (additive; LiteLLM's JITTER)"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.cap < self.base:
            raise ValueError(f"cap ({self.cap}) must be >= base ({self.base})")
        return self


class RandomExponentialRetry(_Retry):
    """tenacity's ``wait_random_exponential``: U(min, max(min, min(max, multiplier * 2**(k-1))))
    where k is the number of attempts made (1 before the first retry)."""

    kind: Literal["random_exponential"] = "random_exponential"
    multiplier: float = Field(1.0, gt=0, description="scale of the exponential, seconds")
    min: FiniteDurationOrZero = Field(0.0, description="shortest wait")
    max: FiniteDurationOrZero = Field(60.0, description="longest wait")
    exp_base: float = Field(2.0, gt=1.0, description="base of the exponential")


class CustomRetry(Model):
    """Your own policy class, named by import path (``"mypackage.policies:MyPolicy"``) and
    built with ``params``; it must have ``decide(state, uniforms) -> Decision`` (see
    docs/policies.md, "Your own policy").

    Validation checks the form of ``class`` and the TOML types of ``params`` only: it never
    imports the module. A run imports it when the module is allowed (``client.plugins``).
    """

    model_config = ConfigDict(populate_by_name=True)

    kind: Literal["custom"] = "custom"
    # "class" is a Python keyword: the field is ``class_`` in Python, ``class`` in configs.
    class_: str = Field(alias="class", description="module.path:ClassName")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments")

    @field_validator("class_")
    @classmethod
    def _reference(cls, value: str) -> str:
        return check_reference(value)

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_params(value)


class TenacityRetry(Model):
    """tenacity's own ``wait``, ``stop`` and ``retry`` strategies, run in simulated time.

    ``retrying`` names (by import path) a ``tenacity.Retrying`` object or a function defined
    in that module that takes no arguments and returns one: the exact configuration your
    application uses. Validation checks the form only; nothing is imported or called.
    """

    kind: Literal["tenacity"] = "tenacity"
    retrying: str = Field(description="module.path:name of a tenacity.Retrying or a factory")

    @field_validator("retrying")
    @classmethod
    def _reference(cls, value: str) -> str:
        return check_reference(value)


Retry = Annotated[
    NoRetry
    | NaiveRetry
    | FixedRetry
    | ExponentialRetry
    | RandomExponentialRetry
    | CustomRetry
    | TenacityRetry,
    Field(discriminator="kind"),
]


def _breaker_preset(value: object) -> object:
    return policy_presets.expand("breaker", policy_presets.BREAKERS, value)


class Breaker(Model):
    """Circuit breaker (closed / open / half-open); defaults are resilience4j's."""

    window: Literal["count", "time"] = Field(
        "count", description="sliding window over the last N calls, or the last N seconds"
    )
    window_size: int = Field(100, gt=0, description="calls (count window) or seconds (time)")
    minimum_calls: int = Field(100, gt=0, description="calls needed before rates are judged")
    failure_rate_threshold: float = Field(0.5, gt=0, le=1, description="opens at this share")
    failure_count_threshold: int | None = Field(
        None, gt=0, description="also opens at this many failures in the window (LiteLLM)"
    )
    slow_call_rate_threshold: float = Field(
        1.0, gt=0, le=1, description="opens at this share of slow calls (1: only all slow)"
    )
    slow_call_duration: Duration = Field(
        60.0, description='a call at least this slow is slow ("inf": no call is slow)'
    )
    open_duration: FiniteDurationOrZero = Field(60.0, description="time open before half-open")
    half_open_calls: int = Field(
        10, ge=0, description="trial calls when half-open; 0 closes after open_duration"
    )
    record: list[FailureKind] = Field(
        ["server_error", "overloaded", "timeout", "midstream_error"],
        description="attempt statuses that count as failures",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.window == "count" and self.minimum_calls > self.window_size:
            raise ValueError(
                f"minimum_calls ({self.minimum_calls}) is larger than the count window "
                f"({self.window_size}), so the breaker could never open; lower minimum_calls "
                "or widen window_size"
            )
        return self


class TokenBucketBudget(Model):
    """Retry budget as a token bucket: each request deposits ``ratio``, each retry takes one."""

    kind: Literal["token_bucket"] = "token_bucket"
    ratio: float = Field(0.1, gt=0, le=10, description="retries allowed per request, long run")
    max_tokens: float = Field(10.0, ge=1, description="bucket size: the burst of retries allowed")


class FinagleBudget(Model):
    """Finagle's RetryBudget: retries within ``percent`` of the requests of the last ``ttl``
    seconds (deposits expire), plus ``min_per_second`` retries per second."""

    kind: Literal["finagle"] = "finagle"
    percent: float = Field(
        0.2, ge=0, le=1, description="retries allowed per request of the last ttl seconds"
    )
    min_per_second: float = Field(10.0, ge=0, description="retries allowed per second anyway")
    ttl: FiniteDuration = Field(10.0, description="how long a request's deposit lasts")


class EnvoyBudget(Model):
    """Envoy's retry budget: retries in flight at most ``percent`` of requests in flight, and
    at least ``min_concurrency``."""

    kind: Literal["envoy"] = "envoy"
    percent: float = Field(
        0.2, ge=0, le=1, description="retries in flight allowed per request in flight"
    )
    min_concurrency: int = Field(3, ge=0, description="retries in flight allowed anyway")


def _budget_preset(value: object) -> object:
    value = policy_presets.expand("budget", policy_presets.BUDGETS, value)
    # The original form, { ratio = 0.1 }, is a token bucket.
    if isinstance(value, dict) and "kind" not in value:
        return {**value, "kind": "token_bucket"}
    return value


Budget = Annotated[
    TokenBucketBudget | FinagleBudget | EnvoyBudget,
    Field(discriminator="kind"),
    BeforeValidator(_budget_preset),
]
"""A policy's retry budget: a token bucket (the default kind), Finagle's or Envoy's, chosen by
``kind``; a preset name or a table without ``kind`` is expanded first (docs/policies.md)."""

_BUDGET_KINDS = ("token_bucket", "finagle", "envoy")


def _budget_paths(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Errors in a budget name the path the user wrote: pydantic puts the union tag in an
    error's location (``budget.token_bucket.ratio``), and the loader drops it only when the
    table says that ``kind`` (a budget without one, or a preset name, is a token bucket or
    the preset's kind, chosen by ``_budget_preset``)."""
    try:
        return handler(value)
    except ValidationError as exc:
        written = value.get("kind") if isinstance(value, dict) else None
        errors: list[Any] = []
        for err in exc.errors(include_url=False):
            loc = err["loc"]
            if loc and loc[0] in _BUDGET_KINDS and loc[0] != written:
                loc = loc[1:]
            item: dict[str, Any] = {"type": err["type"], "loc": loc, "input": err["input"]}
            if "ctx" in err:
                item["ctx"] = err["ctx"]
            errors.append(item)
        raise ValidationError.from_exception_data(exc.title, errors) from None


class Throttle(Model):
    """Adaptive client-side throttling (Google SRE book): an attempt is refused locally with
    probability max(0, (requests - k * accepts) / (requests + 1)) over the last ``window``."""

    k: float = Field(2.0, gt=0, description="the multiplier K (2 in the SRE book)")
    window: FiniteDuration = Field(120.0, description="span of the request and accept counts")
    rejections: list[FailureKind] = Field(
        ["rate_limited", "overloaded", "server_error", "timeout", "quota_exhausted"],
        description="statuses that mean the backend did not accept the attempt",
    )


class ClientRateLimit(Model):
    """Client-side pacing: attempts wait locally until these limits admit them."""

    rpm: float | None = Field(None, gt=0, description="attempts per minute")
    tpm: float | None = Field(
        None, gt=0, description="max(input, max_tokens) per minute, as the provider's tpm"
    )
    itpm: float | None = Field(None, gt=0, description="input tokens per minute")
    otpm: float | None = Field(
        None, gt=0, description="output tokens per minute, counted as max_tokens when sent"
    )
    max_wait: PositiveDuration = Field(
        5.0,
        description=(
            "refuse (rejected_throttle) rather than wait longer than this; 5 s is "
            "resilience4j's RateLimiterConfig timeoutDuration default. An unbounded wait "
            '("inf") under sustained overload builds a standing queue as deep as the deadline, '
            "and its attempts go out too late to finish"
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if all(v is None for v in (self.rpm, self.tpm, self.itpm, self.otpm)):
            raise ValueError("a client rate_limit needs at least one of rpm, tpm, itpm, otpm")
        return self


class Concurrency(Model):
    """At most ``limit`` attempts in flight; the others wait in a local FIFO queue."""

    limit: int = Field(gt=0, description="attempts in flight at most")
    queue_limit: int | None = Field(
        None, ge=0, description="waiting attempts beyond which requests are refused"
    )


_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")


def _hedge_delay(value: object) -> object:
    """A hedge delay: a duration (> 0, finite), or a percentile such as "p95" of the latencies
    of the successful attempts seen so far (0 < percentile < 100)."""
    if isinstance(value, str) and value.startswith("p"):
        match = _PERCENTILE.match(value)
        if match is None or not 0 < float(match.group(1)) < 100:
            raise ValueError(
                f'{value!r} is not a percentile: write "p" and a number between 0 and 100, '
                'such as "p95" or "p99.9", or give a duration such as "2s"'
            )
        return value
    seconds = parse_duration(value)
    if not 0 < seconds < math.inf:
        raise ValueError(f"must be > 0 and finite, got {seconds}")
    return seconds


class Hedge(Model):
    """Hedged requests (Dean & Barroso, "The Tail at Scale", CACM 2013): when an attempt has
    not answered ``delay`` after it was sent, send another attempt of the same request to
    the same provider; the first success ends the request and the others are cancelled
    (billed as the provider bills an attempt the client abandons)."""

    delay: Annotated[float | str, BeforeValidator(_hedge_delay)] = Field(
        description="wait after an attempt is sent before a hedge of it goes out: a duration, "
        "or a percentile (\"p95\": the paper's choice) of the latencies of this client's "
        "successful attempts seen so far"
    )
    max_hedges: int = Field(
        1, ge=1, le=10, description="hedges at most per attempt the retry policy sends"
    )
    samples: int = Field(
        1000,
        gt=0,
        description="a percentile delay: over the latencies of the last this many successful "
        "attempts",
    )
    min_samples: int = Field(
        20,
        gt=0,
        description="a percentile delay: no hedge until this many successful attempts were "
        "seen (a percentile of fewer says little)",
    )

    @property
    def percentile(self) -> float:
        """The percentile of a percentile delay, as a fraction (0: a fixed delay)."""
        if isinstance(self.delay, str):
            return float(self.delay[1:]) / 100
        return 0.0


class Fallback(Model):
    """Move a request to the next provider of ``providers`` (in order)."""

    providers: list[str] = Field(min_length=1, description="provider names, tried in order")
    after_failures: int | None = Field(
        None, gt=0, description="after this many failed attempts on one provider"
    )
    on_statuses: list[FailureKind] = Field(
        default_factory=list, description="at once on these statuses"
    )
    on_breaker_open: bool = Field(True, description="when the provider's breaker refuses")
    on_exhausted: bool = Field(True, description="when the retries on one provider run out")


class RetryableHttp(Model):
    """Which HTTP statuses of error responses may be retried, as the SDKs' ``_should_retry``:
    ``codes``, and every status >= ``at_least``. Timeouts and mid-stream failures have no
    error response and are judged by ``retryable`` alone."""

    codes: list[int] = Field(default_factory=list, description="statuses retried")
    at_least: int | None = Field(None, description="every status >= this is retried too")
    obey_should_retry: bool = Field(
        True,
        description="an x-should-retry header (true/false) on the response decides first, "
        "before the status rules, as the SDKs' _should_retry does",
    )


class Layer(Model):
    """A retry layer wrapped around the policy's own retries: an application loop, a
    framework (LangChain's ``with_retry``), a router or gateway (LiteLLM's Router), a
    ``tenacity`` decorator. Each failed call of the layer below (the last layer's: the
    policy's own retry loop, the SDK) is one failed call here, judged by this layer's own
    ``retryable`` and ``retry``; a retry here calls the layer below afresh, with fresh
    counters, so attempts multiply (docs/policies.md, "Retry layers").
    """

    name: str = Field(
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the layer's name in the run summary (letters, digits, _ and -)",
    )
    preset: str | None = Field(
        None, description="the layer preset this layer starts from (fields here override it)"
    )
    timeout: PositiveDuration = Field(
        math.inf,
        description=(
            "bounds each call this layer makes to the layer below, all of its attempts and "
            'waits included; a call cut short is a failed call with status timeout ("inf": '
            "none)"
        ),
    )
    retryable: list[FailureKind] = Field(
        list(ALL_FAILURES), description="statuses of a failed inner call this layer retries"
    )
    retryable_http: RetryableHttp | None = Field(
        None,
        description="also require a failed call's HTTP status to be one of these (none: any)",
    )
    retry: Retry = Field(
        default_factory=lambda: NoRetry(kind="none"),
        description="this layer's retries, waits and stop, as a policy's retry",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_preset(cls, data: Any) -> Any:
        # A string names a preset; a table with ``preset`` starts from one (fields override).
        if isinstance(data, str) or (isinstance(data, dict) and "preset" in data):
            name = data if isinstance(data, str) else data["preset"]
            merged = policy_presets.expand("layer", policy_presets.LAYERS, data)
            merged["preset"] = name
            return merged
        return data


class Policy(Model):
    """A client's resilience behaviour for one feature."""

    preset: str | None = Field(
        None, description="the preset this policy starts from (fields here override it)"
    )
    timeout: PositiveDuration = Field(
        600.0, description="per-attempt timeout (the SDKs' default is 600s)"
    )
    deadline: PositiveDuration = Field(
        float("inf"), description="per-request deadline: when the user gives up"
    )
    first_token_timeout: PositiveDuration = Field(
        float("inf"),
        description="per-attempt limit on the wait for the first token (a non-streamed "
        "call's first token is its whole answer)",
    )
    idle_timeout: PositiveDuration = Field(
        float("inf"),
        description="longest silence between chunks (httpx's read timeout, reset by each "
        "chunk while streaming; a non-streamed call is one read, so it bounds the whole call)",
    )
    retryable: list[FailureKind] = Field(
        list(TRANSIENT),
        description="attempt statuses that may be retried (default: all but quota_exhausted "
        "and context_length_exceeded, which waiting does not clear)",
    )
    retryable_http: RetryableHttp | None = Field(
        None,
        description="also require an error response's HTTP status to be one of these (none: any)",
    )
    retry: Retry = NoRetry(kind="none")
    breaker: Annotated[Breaker | None, BeforeValidator(_breaker_preset)] = None
    budget: Annotated[Budget | None, WrapValidator(_budget_paths)] = None
    throttle: Throttle | None = None
    rate_limit: ClientRateLimit | None = None
    concurrency: Concurrency | None = None
    fallback: Fallback | None = None
    max_attempts: int = Field(
        100, gt=0, description="hard cap on attempts per request (guards custom policies)"
    )
    hedge: Hedge | None = Field(
        None,
        description="send a second attempt when the first is slow, keep the first answer "
        '(docs/policies.md, "Hedged requests")',
    )
    layers: list[Layer] = Field(
        default_factory=list,
        description=(
            "retry layers around this policy's own retries, outermost first (application "
            "loop, framework, router); the policy itself is the innermost layer, named sdk"
        ),
    )
    route: Route | None = Field(
        None,
        description="send each attempt to one of several deployments of the model, picked "
        'by a strategy, with cooldown (docs/policies.md, "Routing across deployments")',
    )

    @model_validator(mode="before")
    @classmethod
    def _from_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("preset"), str):
            name = data["preset"]
            preset = policy_presets.POLICIES.get(name)
            if preset is None:
                raise ValueError(
                    f".preset: unknown policy preset {name!r}; presets: "
                    f"{', '.join(sorted(policy_presets.POLICIES))}"
                )
            merged = policy_presets.merge(preset.fragment(), data)
            merged["preset"] = name
            return merged
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        if math.isinf(self.deadline) and self.max_attempts > 10_000:
            raise ValueError("max_attempts above 10,000 needs a finite deadline")
        if self.layers:
            names = [layer.name for layer in self.layers]
            for name in names:
                if name == INNER_LAYER or names.count(name) > 1:
                    raise ValueError(
                        f"layers: the layer name {name!r} is used twice (the policy's own "
                        f"retries are the layer {INNER_LAYER!r}); give each layer its own name"
                    )
            if self.fallback is not None:
                raise ValueError(
                    "layers cannot be combined with a fallback (not modelled yet): drop "
                    "fallback, or model the fallback's retries without layers"
                )
        if self.hedge is not None:
            others = [
                name
                for name in (
                    "breaker",
                    "budget",
                    "throttle",
                    "rate_limit",
                    "concurrency",
                    "fallback",
                )
                if getattr(self, name) is not None
            ] + (["layers"] if self.layers else [])
            if others:
                raise ValueError(
                    f"hedge cannot be combined with {', '.join(others)} (not modelled yet): "
                    "drop hedge, or drop " + ", ".join(others)
                )
        if self.route is not None:
            # The route's cooldown is the per-deployment breaker; a fallback chain, hedges and
            # retry layers each pick their own provider or wrap the sending path.
            others = [
                name for name in ("breaker", "fallback", "hedge") if getattr(self, name) is not None
            ] + (["layers"] if self.layers else [])
            if others:
                raise ValueError(
                    f"route cannot be combined with {', '.join(others)} (not modelled yet; "
                    "the route's cooldown is its per-deployment breaker): drop route, or drop "
                    + ", ".join(others)
                )
        return self

    def attempt_bound(self) -> int:
        """The most attempts one request can make under this policy."""
        bound = self._retry_bound()
        if self.hedge is not None:
            # Each attempt the retry policy sends may be hedged; max_attempts caps them all.
            bound = min(self.max_attempts, bound * (1 + self.hedge.max_hedges))
        return bound

    def _retry_bound(self) -> int:
        """The most attempts the retry policy (and its layers) sends for one request."""
        providers = 1 + (len(self.fallback.providers) if self.fallback else 0)
        retry = self.retry
        if isinstance(retry, NoRetry):
            per_provider = 1
        elif isinstance(retry, CustomRetry | TenacityRetry):
            return self.max_attempts
        else:
            per_provider = retry.max_retries + 1
        bound = per_provider * providers
        for layer in self.layers:
            if isinstance(layer.retry, CustomRetry | TenacityRetry):
                return self.max_attempts
            # Each call of a layer runs the whole stack below it afresh.
            bound *= 1 if isinstance(layer.retry, NoRetry) else layer.retry.max_retries + 1
        return min(self.max_attempts, bound)


def policy_from_preset(name: str) -> Policy | None:
    """The policy a preset name stands for, or None."""
    if name not in policy_presets.POLICIES:
        return None
    return Policy.model_validate({"preset": name})
