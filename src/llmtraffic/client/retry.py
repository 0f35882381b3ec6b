"""The retry controller: after a failed attempt it returns a decision (retry after N seconds,
or give up with a reason); the client carries it out. Decisions never touch the clock."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from llmtraffic.client.waits import RetryState, Wait, WaitExponential, WaitFixed, WaitNone
from llmtraffic.config.policy import (
    ExponentialRetry,
    FixedRetry,
    NaiveRetry,
    NoRetry,
    Policy,
)
from llmtraffic.engine.entities import EXHAUSTED, NON_RETRYABLE, RATE_LIMITED


@dataclass(frozen=True, slots=True)
class Decision:
    """Retry after ``wait`` seconds, or (``wait`` is None) give up with request ``outcome``."""

    wait: float | None
    outcome: str = ""


class RetryController:
    """Turns a policy's retry settings into decisions."""

    def __init__(
        self,
        wait: Wait,
        max_retries: int,
        retryable: frozenset[str],
        honor_retry_after: bool,
        retry_after_max: float,
        retry_after_beyond_max: str,
    ) -> None:
        self.wait = wait
        self.max_retries = max_retries
        self.retryable = retryable
        self.honor_retry_after = honor_retry_after
        self.retry_after_max = retry_after_max
        self.give_up_beyond_max = retry_after_beyond_max == "give_up"

    @classmethod
    def from_policy(cls, policy: Policy) -> RetryController:
        """Build the controller a policy config describes."""
        r = policy.retry
        wait: Wait
        if isinstance(r, NoRetry):
            return cls(WaitNone(), 0, frozenset(policy.retryable), False, 0.0, "backoff")
        if isinstance(r, NaiveRetry):
            wait = WaitNone()
        elif isinstance(r, FixedRetry):
            wait = WaitFixed(r.delay)
        elif isinstance(r, ExponentialRetry):
            wait = WaitExponential(r.base, r.multiplier, r.cap, r.jitter)
        else:  # pragma: no cover - the config union is exhaustive
            raise TypeError(f"unknown retry config {r!r}")
        return cls(
            wait,
            r.max_retries,
            frozenset(policy.retryable),
            r.honor_retry_after,
            r.retry_after_max,
            r.retry_after_beyond_max,
        )

    def decide(self, state: RetryState, u: Iterator[float]) -> Decision:
        """What to do after the failed attempt described by ``state``."""
        if state.status not in self.retryable:
            return Decision(None, NON_RETRYABLE)
        if state.retries >= self.max_retries:
            return Decision(None, EXHAUSTED)
        ra = state.retry_after
        if self.honor_retry_after and state.status == RATE_LIMITED and not math.isnan(ra):
            if ra <= self.retry_after_max:
                return Decision(ra)
            if self.give_up_beyond_max:
                return Decision(None, EXHAUSTED)
        return Decision(self.wait(state, u))
