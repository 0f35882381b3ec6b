"""Retry budget: a token bucket that caps retries at a share of requests over the long run.

Each request deposits ``ratio`` tokens (up to ``max_tokens``); each retry withdraws one and is
refused when less than one is left. In a storm where every attempt fails, retries settle at
``ratio`` per request instead of ``max_retries`` per request (the Google SRE book's 10% rule,
Finagle's RetryBudget, Envoy's retry budgets).
"""

from __future__ import annotations


class RetryBudget:
    """The budget of one client. Starts full, so a quiet client can retry a burst at once."""

    __slots__ = ("exhausted", "level", "max_tokens", "ratio")

    def __init__(self, ratio: float, max_tokens: float) -> None:
        self.ratio = ratio
        self.max_tokens = max_tokens
        self.level = max_tokens
        self.exhausted = False

    def deposit(self) -> None:
        """A request arrived."""
        level = self.level + self.ratio
        self.level = level if level < self.max_tokens else self.max_tokens

    def withdraw(self) -> bool:
        """Take one token for a retry; False (retry refused) when less than one is left."""
        if self.level >= 1.0:
            self.level -= 1.0
            return True
        return False
