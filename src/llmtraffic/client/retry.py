"""The retry controller: after a failed attempt it returns a decision (retry after N seconds,
or give up with a reason); the client carries it out. Decisions never touch the clock.

A controller is a wait, a stop condition and a retry predicate, composed as tenacity's are,
plus the retry-after rules of the SDKs. Anything with ``decide(state, uniforms)`` can stand
in its place (``RetryPolicy``): a user's own class, or tenacity run by the adapter.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from llmtraffic.client import predicates
from llmtraffic.client.predicates import RetryIf
from llmtraffic.client.stops import Stop, StopAfterAttempt
from llmtraffic.client.waits import (
    RetryState,
    Wait,
    WaitExponential,
    WaitFixed,
    WaitNone,
    WaitRandomExponential,
)
from llmtraffic.config.policy import (
    CustomRetry,
    ExponentialRetry,
    FixedRetry,
    Layer,
    NaiveRetry,
    NoRetry,
    Policy,
    RandomExponentialRetry,
    TenacityRetry,
)
from llmtraffic.engine.entities import EXHAUSTED, NON_RETRYABLE, RATE_LIMITED

__all__ = [
    "Decision",
    "RetryController",
    "RetryPolicy",
    "RetryState",
    "as_decision",
    "controller_for",
]


@dataclass(frozen=True, slots=True)
class Decision:
    """Retry after ``wait`` seconds, or (``wait`` is None) give up with request ``outcome``."""

    wait: float | None
    outcome: str = ""


@runtime_checkable
class RetryPolicy(Protocol):
    """What the client asks after every failed attempt.

    ``decide`` gets the state of the request and an iterator of U[0, 1) draws (use it for any
    randomness, so runs stay reproducible) and returns a ``Decision``; a plain number is read
    as ``Decision(wait)`` and ``None`` as giving up (``exhausted``).
    """

    def decide(self, state: RetryState, uniforms: Iterator[float]) -> Decision | float | None:
        """What to do after the failed attempt described by ``state``."""
        ...


def as_decision(value: Decision | float | None) -> Decision:
    """Normalise what a policy returned."""
    if isinstance(value, Decision):
        return value
    if value is None:
        return Decision(None, EXHAUSTED)
    wait = float(value)
    if math.isnan(wait) or wait < 0:
        raise ValueError(f"a retry policy returned a wait of {value!r}; waits must be >= 0")
    return Decision(wait)


class RetryController:
    """Wait + stop + retry predicate, and how a 429's retry_after is honoured."""

    def __init__(
        self,
        wait: Wait,
        stop: Stop,
        retry_if: RetryIf,
        honor_retry_after: bool = False,
        retry_after_max: float = math.inf,
        give_up_beyond_max: bool = False,
        retry_after_jitter: float = 0.0,
    ) -> None:
        self.wait = wait
        self.stop = stop
        self.retry_if = retry_if
        self.honor_retry_after = honor_retry_after
        self.retry_after_max = retry_after_max
        self.give_up_beyond_max = give_up_beyond_max
        self.retry_after_jitter = retry_after_jitter

    def decide(self, state: RetryState, uniforms: Iterator[float]) -> Decision:
        """What to do after the failed attempt described by ``state``."""
        if not self.retry_if(state):
            return Decision(None, NON_RETRYABLE)
        if self.stop(state):
            return Decision(None, EXHAUSTED)
        ra = state.retry_after
        # The SDKs honour only a positive retry-after (``0 < retry_after``); NaN (no header)
        # fails the comparison too.
        if self.honor_retry_after and state.status == RATE_LIMITED and ra > 0:
            if ra <= self.retry_after_max:
                if self.retry_after_jitter:
                    return Decision(ra + self.retry_after_jitter * next(uniforms))
                return Decision(ra)
            if self.give_up_beyond_max:
                return Decision(None, EXHAUSTED)
        return Decision(self.wait(state, uniforms))


def controller_for(policy: Policy | Layer) -> RetryPolicy:
    """The retry policy a config (a policy, or one of its layers) describes (a fresh object:
    policies may keep state)."""
    r = policy.retry
    retry_if = predicates.for_policy(policy)
    if isinstance(r, NoRetry):
        return RetryController(WaitNone(), StopAfterAttempt(1), retry_if)
    if isinstance(r, CustomRetry):
        from llmtraffic.client.plugins import build_custom

        custom: RetryPolicy = build_custom(r)
        return custom
    if isinstance(r, TenacityRetry):
        from llmtraffic.client.tenacity_adapter import TenacityPolicy

        return TenacityPolicy.from_config(r, retry_if)
    wait: Wait
    if isinstance(r, NaiveRetry):
        wait = WaitNone()
    elif isinstance(r, FixedRetry):
        wait = WaitFixed(r.delay)
    elif isinstance(r, ExponentialRetry):
        wait = WaitExponential(
            r.base, r.multiplier, r.cap, r.jitter, r.jitter_fraction, r.jitter_added
        )
    elif isinstance(r, RandomExponentialRetry):
        wait = WaitRandomExponential(r.multiplier, r.min, r.max, r.exp_base)
    else:  # pragma: no cover - the config union is exhaustive
        raise TypeError(f"unknown retry config {r!r}")
    return RetryController(
        wait,
        StopAfterAttempt(r.max_retries + 1),
        retry_if,
        r.honor_retry_after,
        r.retry_after_max,
        r.retry_after_beyond_max == "give_up",
        r.retry_after_jitter,
    )
