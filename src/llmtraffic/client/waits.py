"""Wait strategies: how long to sleep before a retry.

Small callables of the retry state and a source of U[0, 1) draws, composable with ``+`` as
tenacity's are. They never sleep: the simulation carries the wait out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmtraffic.provider.ratelimit import RateLimiter

__all__ = [
    "RetryState",
    "Wait",
    "WaitExponential",
    "WaitFixed",
    "WaitNone",
    "WaitRandomExponential",
    "WaitSum",
]


@dataclass(frozen=True, slots=True)
class RetryState:
    """What a policy may look at after a failed attempt.

    ``attempt_number`` counts the attempts made so far on the current provider (1 after the
    first failure; a fallback to another provider starts again at 1); ``retries`` =
    attempt_number - 1 is the number of retries already made there. ``total_attempts``
    counts every attempt of the request. ``elapsed`` is the time since the request arrived
    and ``prev_wait`` the wait before the attempt that just failed (0 for the first).

    The ``ratelimit_*`` properties are what OpenAI's ``x-ratelimit-remaining-requests``,
    ``-remaining-tokens``, ``-reset-requests`` and ``-reset-tokens`` headers would carry,
    read from the provider's limits at ``now``, when the client sees the failure: whole
    requests and tokens left, and seconds until each limit is back to full (for a fixed
    window, until it resets). Of several limits of a kind (rpm and rpd; tpm, tpd, itpm and
    otpm) they report the binding one, the one with the fewest left. NaN when the provider
    has no such limit. Read them in ``decide``: they are computed when read, from the
    limits as they are then.

    ``should_retry`` is the response's ``x-should-retry`` header (None: not sent).
    """

    attempt_number: int
    status: str
    http_status: int
    retry_after: float
    elapsed: float
    prev_wait: float
    now: float
    total_attempts: int = 0
    provider: str = ""
    limits: RateLimiter | None = field(default=None, compare=False, repr=False)
    """The rate limits of the provider that failed the attempt (None: it has none)."""
    should_retry: bool | None = None

    @property
    def retries(self) -> int:
        """Retries made so far."""
        return self.attempt_number - 1

    @property
    def ratelimit_remaining_requests(self) -> float:
        """``x-ratelimit-remaining-requests``: whole requests the provider would admit now."""
        return self._header(0)

    @property
    def ratelimit_remaining_tokens(self) -> float:
        """``x-ratelimit-remaining-tokens``: whole tokens left now."""
        return self._header(1)

    @property
    def ratelimit_reset_requests(self) -> float:
        """``x-ratelimit-reset-requests``: seconds until the requests limit is full again."""
        return self._header(2)

    @property
    def ratelimit_reset_tokens(self) -> float:
        """``x-ratelimit-reset-tokens``: seconds until the tokens limit is full again."""
        return self._header(3)

    def _header(self, i: int) -> float:
        # Computed when read, not when the state is built: most policies never read them,
        # and a 429 storm builds a state per failure. ``decide`` runs at ``now``, before
        # anything else happens, so the limiter is still as the failure left it.
        limits = self.limits
        return math.nan if limits is None else limits.headers(self.now)[i]


class Wait:
    """Base of wait strategies; ``a + b`` waits the sum of both."""

    def __call__(self, state: RetryState, u: Iterator[float]) -> float:
        """Seconds to wait before the next attempt."""
        raise NotImplementedError

    def __add__(self, other: Wait) -> Wait:
        return WaitSum((self, other))

    def mean(self, state: RetryState) -> float:
        """Expected wait for ``state`` (over the jitter), for tests and docs."""
        raise NotImplementedError


@dataclass(frozen=True)
class WaitSum(Wait):
    """The sum of several waits."""

    parts: tuple[Wait, ...]

    def __call__(self, state: RetryState, u: Iterator[float]) -> float:
        """Sum of the parts' waits."""
        return sum(p(state, u) for p in self.parts)

    def __add__(self, other: Wait) -> Wait:
        return WaitSum((*self.parts, other))

    def mean(self, state: RetryState) -> float:
        """Sum of the parts' means."""
        return sum(p.mean(state) for p in self.parts)


@dataclass(frozen=True)
class WaitNone(Wait):
    """Retry at once (the naive policy)."""

    def __call__(self, state: RetryState, u: Iterator[float]) -> float:
        """Zero."""
        return 0.0

    def mean(self, state: RetryState) -> float:
        """Zero."""
        return 0.0


@dataclass(frozen=True)
class WaitFixed(Wait):
    """Always the same delay; use when the failure clears on a known schedule."""

    delay: float

    def __call__(self, state: RetryState, u: Iterator[float]) -> float:
        """The delay."""
        return self.delay

    def mean(self, state: RetryState) -> float:
        """The delay."""
        return self.delay


@dataclass(frozen=True)
class WaitExponential(Wait):
    """Exponential backoff ``w = min(cap, base * multiplier**retries)`` with jitter.

    - ``none``: w. Synchronised clients retry together: avoid under shared load.
    - ``full``: U(0, w), mean w/2. The AWS recommendation: least total work.
    - ``equal``: w/2 + U(0, w/2), mean 3w/4. Never retries immediately.
    - ``decorrelated``: min(cap, U(base, 3 * previous wait)), previous starting at base.
    - ``proportional``: w * (1 - fraction * U): the OpenAI and Anthropic SDKs (fraction 0.25).
    - ``additive``: w + added * U: LiteLLM's ``calculate_retry_after`` (added = its
      ``JITTER``, 0.75 s), which never shortens the wait.
    """

    base: float
    multiplier: float
    cap: float
    jitter: str = "full"
    fraction: float = 0.25
    added: float = 0.75

    def ceiling(self, retries: int) -> float:
        """The un-jittered wait before retry number ``retries + 1``."""
        # A large multiplier overflows the power long before retries does (1e10 ** 31): past
        # the float range the wait is the cap anyway.
        try:
            grown = self.base * self.multiplier ** min(retries, 1000)
        except OverflowError:
            return self.cap
        return min(self.cap, grown)

    def __call__(self, state: RetryState, u: Iterator[float]) -> float:
        """A jittered wait."""
        jitter = self.jitter
        if jitter == "decorrelated":
            prev = state.prev_wait if state.prev_wait > 0 else self.base
            high = max(self.base, 3.0 * prev)
            return min(self.cap, self.base + (high - self.base) * next(u))
        w = self.ceiling(state.retries)
        if jitter == "full":
            return w * next(u)
        if jitter == "equal":
            return 0.5 * w + 0.5 * w * next(u)
        if jitter == "proportional":
            return w * (1.0 - self.fraction * next(u))
        if jitter == "additive":
            return w + self.added * next(u)
        return w

    def mean(self, state: RetryState) -> float:
        """Expected wait; for decorrelated jitter, ignoring the cap's truncation when it binds."""
        jitter = self.jitter
        if jitter == "decorrelated":
            prev = state.prev_wait if state.prev_wait > 0 else self.base
            high = max(self.base, 3.0 * prev)
            if high <= self.cap:
                return (self.base + high) / 2
            # E[min(cap, U(base, high))] for base <= cap < high.
            span = high - self.base
            below = (self.cap - self.base) / span
            return below * (self.base + self.cap) / 2 + (1 - below) * self.cap
        w = self.ceiling(state.retries)
        means = {
            "full": w / 2,
            "equal": 0.75 * w,
            "proportional": w * (1 - self.fraction / 2),
            "additive": w + self.added / 2,
        }
        return means.get(jitter, w)


@dataclass(frozen=True)
class WaitRandomExponential(Wait):
    """tenacity's ``wait_random_exponential``: U(min, high) with
    high = max(min, min(max, multiplier * exp_base**(attempt_number - 1))).

    The OpenAI Cookbook's rate-limit recipe uses it with min=1, max=60.
    """

    multiplier: float = 1.0
    min: float = 0.0
    max: float = 60.0
    exp_base: float = 2.0

    def high(self, attempt_number: int) -> float:
        """The upper end of the draw after ``attempt_number`` attempts."""
        try:
            exp = self.multiplier * self.exp_base ** (attempt_number - 1)
        except OverflowError:
            return self.max
        return max(self.min, min(exp, self.max))

    def __call__(self, state: RetryState, u: Iterator[float]) -> float:
        """A draw from U(min, high)."""
        high = self.high(state.attempt_number)
        return self.min + (high - self.min) * next(u)

    def mean(self, state: RetryState) -> float:
        """(min + high) / 2."""
        return (self.min + self.high(state.attempt_number)) / 2
