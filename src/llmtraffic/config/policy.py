"""Config of client resilience policies: timeouts, retries, circuit breaker, retry budget."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from llmtraffic.config.base import Duration, Model, PositiveDuration

FailureKind = Literal["rate_limited", "server_error", "overloaded", "timeout", "midstream_error"]
"""Failed attempt statuses, as they appear in the ``status`` column of the attempts table."""

ALL_FAILURES: tuple[FailureKind, ...] = (
    "rate_limited",
    "server_error",
    "overloaded",
    "timeout",
    "midstream_error",
)


class _Retry(Model):
    max_retries: int = Field(3, ge=0, description="retries after the first attempt")
    honor_retry_after: bool = Field(
        True, description="wait what a 429's retry_after says instead of the computed wait"
    )
    retry_after_max: Duration = Field(
        60.0, description="largest retry_after honoured (the SDKs cap it)"
    )
    retry_after_beyond_max: Literal["backoff", "give_up"] = Field(
        "backoff", description="on a larger retry_after: fall back to the computed wait, or stop"
    )


class NoRetry(Model):
    """Never retry: one attempt per request."""

    kind: Literal["none"] = "none"


class NaiveRetry(_Retry):
    """Retry immediately, up to ``max_retries`` times (the retry-storm maker)."""

    kind: Literal["naive"] = "naive"
    honor_retry_after: bool = False


class FixedRetry(_Retry):
    """Wait a fixed ``delay`` before each retry."""

    kind: Literal["fixed"] = "fixed"
    delay: Duration = 1.0


class ExponentialRetry(_Retry):
    """Exponential backoff ``min(cap, base * multiplier**n)`` with a jitter mode.

    ``n`` counts the retries made so far. Jitter modes (AWS Architecture Blog, "Exponential
    Backoff And Jitter"): ``none``; ``full`` = U(0, w); ``equal`` = w/2 + U(0, w/2);
    ``decorrelated`` = min(cap, U(base, 3 * previous wait)).
    """

    kind: Literal["exponential"] = "exponential"
    base: PositiveDuration = 0.5
    multiplier: float = Field(2.0, ge=1.0)
    cap: Duration = 60.0
    jitter: Literal["none", "full", "equal", "decorrelated"] = "full"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.cap < self.base:
            raise ValueError(f"cap ({self.cap}) must be >= base ({self.base})")
        return self


Retry = Annotated[NoRetry | NaiveRetry | FixedRetry | ExponentialRetry, Field(discriminator="kind")]


class Breaker(Model):
    """Circuit breaker (closed / open / half-open); defaults are resilience4j's."""

    window: Literal["count", "time"] = Field(
        "count", description="sliding window over the last N calls, or the last N seconds"
    )
    window_size: int = Field(100, gt=0, description="calls (count window) or seconds (time)")
    minimum_calls: int = Field(100, gt=0, description="calls needed before rates are judged")
    failure_rate_threshold: float = Field(0.5, gt=0, le=1, description="opens at this share")
    slow_call_rate_threshold: float = Field(1.0, gt=0, le=1)
    slow_call_duration: Duration = Field(60.0, description="a call at least this slow is slow")
    open_duration: Duration = Field(60.0, description="time open before half-open")
    half_open_calls: int = Field(10, gt=0, description="trial calls let through when half-open")
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


class Budget(Model):
    """Retry budget: a token bucket; each request deposits ``ratio``, each retry takes one."""

    ratio: float = Field(0.1, gt=0, le=10, description="retries allowed per request, long run")
    max_tokens: float = Field(10.0, ge=1, description="bucket size: the burst of retries allowed")


class Policy(Model):
    """A client's resilience behaviour for one feature."""

    timeout: PositiveDuration = Field(
        600.0, description="per-attempt timeout (the SDKs' default is 600s)"
    )
    deadline: PositiveDuration = Field(
        float("inf"), description="per-request deadline: when the user gives up"
    )
    retryable: list[FailureKind] = Field(
        list(ALL_FAILURES), description="attempt statuses that may be retried"
    )
    retry: Retry = NoRetry(kind="none")
    breaker: Breaker | None = None
    budget: Budget | None = None
