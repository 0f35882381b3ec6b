"""Retry budgets: caps on retries that act across all the requests of a client.

- ``TokenBucketBudget``: each request deposits ``ratio`` tokens (up to ``max_tokens``), each
  retry takes one: over a long run retries stay at ``ratio`` per request (Google SRE book).
- ``FinagleBudget``: deposits expire after ``ttl`` seconds; a retry may go when
  ``min_per_second * ttl + percent * requests(last ttl) - retries(last ttl) >= 1``.
- ``EnvoyBudget``: retries in flight at most ``max(min_concurrency, percent * requests in
  flight)``.

All take the time as an argument (no clock of their own).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

from llmtraffic.client.seconds import take_back
from llmtraffic.config.policy import Budget, EnvoyBudget, FinagleBudget, TokenBucketBudget


class RetryBudget(Protocol):
    """What the client needs of a budget."""

    exhausted: bool

    def on_request(self, now: float) -> None:
        """A request arrived."""

    def try_retry(self, now: float, active_requests: int) -> bool:
        """Whether a retry may go out now (and, if so, take it from the budget)."""

    def on_retry_done(self) -> None:
        """A retry came back (for budgets that count retries in flight)."""

    def refund(self, taken_at: float) -> None:
        """Give back a retry taken at ``taken_at`` that never went out (a later gate refused
        it, or its request ended while it waited): budgets count retries sent."""

    def level(self, now: float) -> float:
        """What is left, in retries, for the time series."""


class TokenBucketRetryBudget:
    """The token-bucket budget. Starts full, so a quiet client can retry a burst at once."""

    __slots__ = ("exhausted", "max_tokens", "ratio", "tokens")

    def __init__(self, ratio: float, max_tokens: float) -> None:
        self.ratio = ratio
        self.max_tokens = max_tokens
        self.tokens = max_tokens
        self.exhausted = False

    def on_request(self, now: float) -> None:
        """Deposit ``ratio``."""
        tokens = self.tokens + self.ratio
        self.tokens = tokens if tokens < self.max_tokens else self.max_tokens

    def try_retry(self, now: float, active_requests: int) -> bool:
        """Take one token, if there is one."""
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def on_retry_done(self) -> None:
        """Nothing to do."""

    def refund(self, taken_at: float) -> None:
        """Put the token back."""
        tokens = self.tokens + 1.0
        self.tokens = tokens if tokens < self.max_tokens else self.max_tokens

    def level(self, now: float) -> float:
        """Tokens left."""
        return self.tokens


class FinagleRetryBudget:
    """Finagle's RetryBudget: deposits and withdrawals counted per second over ``ttl``."""

    def __init__(self, percent: float, min_per_second: float, ttl: float) -> None:
        self.percent = percent
        self.reserve = min_per_second * ttl
        self.ttl = ttl
        self._seconds: deque[list[float]] = deque()  # [second, deposits, withdrawals]
        self._deposits = 0.0
        self._withdrawals = 0.0
        self.exhausted = False

    def _bucket(self, now: float) -> list[float]:
        sec = math.floor(now)
        oldest = sec - self.ttl
        seconds = self._seconds
        while seconds and seconds[0][0] <= oldest:
            _, d, w = seconds.popleft()
            self._deposits -= d
            self._withdrawals -= w
        if not seconds or seconds[-1][0] != sec:
            seconds.append([sec, 0.0, 0.0])
        return seconds[-1]

    def on_request(self, now: float) -> None:
        """Count a deposit of ``percent``."""
        self._bucket(now)[1] += self.percent
        self._deposits += self.percent

    def try_retry(self, now: float, active_requests: int) -> bool:
        """Withdraw one if the balance of the last ttl allows it."""
        bucket = self._bucket(now)
        if self.reserve + self._deposits - self._withdrawals >= 1.0:
            bucket[2] += 1.0
            self._withdrawals += 1.0
            return True
        return False

    def on_retry_done(self) -> None:
        """Nothing to do."""

    def refund(self, taken_at: float) -> None:
        """Undo the withdrawal, if its second is still in the window."""
        if take_back(self._seconds, taken_at, 2):
            self._withdrawals -= 1.0

    def level(self, now: float) -> float:
        """Balance of the last ttl."""
        self._bucket(now)
        return self.reserve + self._deposits - self._withdrawals


class EnvoyRetryBudget:
    """Envoy's budget: a cap on retries in flight relative to requests in flight."""

    __slots__ = ("exhausted", "in_flight", "min_concurrency", "percent")

    def __init__(self, percent: float, min_concurrency: int) -> None:
        self.percent = percent
        self.min_concurrency = min_concurrency
        self.in_flight = 0
        self.exhausted = False

    def on_request(self, now: float) -> None:
        """Nothing to deposit."""

    def try_retry(self, now: float, active_requests: int) -> bool:
        """Allowed while retries in flight stay under the cap."""
        cap = max(self.min_concurrency, self.percent * active_requests)
        if self.in_flight < cap:
            self.in_flight += 1
            return True
        return False

    def on_retry_done(self) -> None:
        """A retry in flight came back."""
        self.in_flight -= 1

    def refund(self, taken_at: float) -> None:
        """The retry never went out: it is no longer in flight."""
        self.in_flight -= 1

    def level(self, now: float) -> float:
        """Retries in flight (not a balance: a concurrency)."""
        return float(self.in_flight)


def make_budget(cfg: Budget) -> RetryBudget:
    """The runtime budget for a config."""
    if isinstance(cfg, TokenBucketBudget):
        return TokenBucketRetryBudget(cfg.ratio, cfg.max_tokens)
    if isinstance(cfg, FinagleBudget):
        return FinagleRetryBudget(cfg.percent, cfg.min_per_second, cfg.ttl)
    if isinstance(cfg, EnvoyBudget):
        return EnvoyRetryBudget(cfg.percent, cfg.min_concurrency)
    raise TypeError(f"unknown budget config {cfg!r}")  # pragma: no cover
