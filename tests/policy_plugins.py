"""Policies defined outside llmtraffic, named in configs by import path (used by the tests)."""

from __future__ import annotations

from collections.abc import Iterator

import tenacity

from llmtraffic.client.retry import Decision
from llmtraffic.client.waits import RetryState
from llmtraffic.engine.entities import EXHAUSTED, NON_RETRYABLE


class FixedThenGiveUp:
    """Retry 429s only, after ``delay`` seconds, at most ``retries`` times."""

    def __init__(self, delay: float, retries: int) -> None:
        self.delay = delay
        self.retries = retries

    def decide(self, state: RetryState, uniforms: Iterator[float]) -> Decision:
        if state.status != "rate_limited":
            return Decision(None, NON_RETRYABLE)
        if state.retries >= self.retries:
            return Decision(None, EXHAUSTED)
        return Decision(self.delay)


class ReturnsNumbers:
    """A policy that answers with plain numbers (a wait) and None (give up)."""

    def decide(self, state: RetryState, uniforms: Iterator[float]) -> float | None:
        return None if state.attempt_number >= 3 else 0.25 * state.attempt_number


class NoDecide:
    """Not a policy: it has no decide method."""

    def __init__(self, x: int = 1) -> None:
        self.x = x


COOKBOOK = tenacity.Retrying(
    wait=tenacity.wait_random_exponential(min=1, max=60), stop=tenacity.stop_after_attempt(6)
)
"""The OpenAI Cookbook's recipe, as a team would have it in its code."""


def jittered_retrying() -> tenacity.Retrying:
    """A factory: exponential jitter, at most 30 s of retrying, only on rate limits."""
    from llmtraffic.client.tenacity_adapter import RateLimitedError

    return tenacity.Retrying(
        wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=10, jitter=1),
        stop=tenacity.stop_after_delay(30) | tenacity.stop_after_attempt(8),
        retry=tenacity.retry_if_exception_type(RateLimitedError),
    )


class FixedDecision:
    """Always retries after ``wait`` seconds, whatever ``wait`` is (a negative, infinite or NaN
    wait is a bug in a user's policy that the client must refuse)."""

    def __init__(self, wait: float) -> None:
        self.wait = wait

    def decide(self, state: RetryState, uniforms: Iterator[float]) -> Decision:
        return Decision(self.wait)


class TouchesOnImportOrBuild:
    """Stands for code a config must not run unasked: building it creates the file ``path``
    in the working folder (the corpus checks that ``validate`` never does)."""

    def __init__(self, path: str = "pwned") -> None:
        from pathlib import Path

        Path(path).touch()

    def decide(self, state: RetryState, uniforms: Iterator[float]) -> Decision:
        return Decision(None, EXHAUSTED)


def touches_and_returns_nothing() -> None:
    """A zero-argument function defined here that is not a tenacity factory: it creates
    ``pwned``; the adapter calls it only when the module is allowed, and refuses its result."""
    from pathlib import Path

    Path("pwned").touch()


class WaitsForRateLimitReset:
    """Retries a 429 when the requests limit resets, as a client reading
    ``x-ratelimit-reset-requests`` would; records what it read of every state it was given
    (now, status, remaining requests and tokens, reset of the requests limit)."""

    def __init__(self, retries: int = 3) -> None:
        self.retries = retries
        self.seen: list[tuple[float, str, float, float, float]] = []

    def decide(self, state: RetryState, uniforms: Iterator[float]) -> Decision:
        reset = state.ratelimit_reset_requests
        self.seen.append(
            (
                state.now,
                state.status,
                state.ratelimit_remaining_requests,
                state.ratelimit_remaining_tokens,
                reset,
            )
        )
        if state.status != "rate_limited" or state.retries >= self.retries:
            return Decision(None, EXHAUSTED)
        return Decision(reset)
