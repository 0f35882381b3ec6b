"""Rate limiters: token buckets refilled continuously, or fixed one-minute windows.

A limiter holds one bucket per limited quantity (requests, tokens, input tokens, output
tokens). An attempt is admitted only if every bucket can pay its cost; otherwise it gets a 429
whose ``retry_after`` is the time until every bucket could pay, rounded up as headers are.
What each bucket charges (docs/providers.md, "Rate limits", gives the sources):

- ``rpm``: one per attempt, at admission;
- ``tpm`` (OpenAI): ``max(input tokens, max_tokens)`` at admission ("the maximum of
  max_tokens and the estimated number of tokens based on the character count");
- ``itpm`` (Anthropic): the input tokens at admission, without the cache reads unless
  ``cache_reads_count`` (Claude 4.x: cache reads do not count);
- ``otpm`` (Anthropic): nothing at admission, which only needs the bucket out of debt; the
  output actually generated is charged when the attempt ends at the provider (OTPM is
  "evaluated in real time as output tokens are produced"; max_tokens "does not factor in").

Time is passed in (``now``): limiters hold no clock.
"""

from __future__ import annotations

import math
from typing import Protocol

WINDOW = 60.0


class TokenBucket:
    """A bucket of ``capacity`` refilled continuously at ``capacity / 60`` per second.

    Kept as one number, the time ``full_at`` at which the bucket is full again (the generic
    cell rate algorithm): the level at ``now`` is ``capacity - rate * max(0, full_at - now)``,
    charging ``c`` moves ``full_at`` by ``c / rate``, and no refill step is needed.
    The level may go below zero: when rejected attempts count (the attempt is charged), and
    for output tokens, charged after the fact. The debt is bounded at one window's worth, as
    a fixed window would bound it.
    """

    __slots__ = ("base_capacity", "capacity", "full_at", "inv_rate")

    def __init__(self, per_minute: float) -> None:
        self.base_capacity = per_minute
        self.capacity = per_minute
        self.inv_rate = WINDOW / per_minute  # seconds to refill one unit
        self.full_at = 0.0

    def refill(self, now: float) -> float:
        """The level at ``now`` (nothing to update: the state is ``full_at``)."""
        behind = self.full_at - now
        return self.capacity if behind <= 0 else self.capacity - behind / self.inv_rate

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until the level reaches ``cost``; inf if it never can."""
        if cost > self.capacity:
            return math.inf
        return max(0.0, self.full_at + cost * self.inv_rate - WINDOW - now)

    def charge(self, cost: float, now: float) -> None:
        """Take ``cost`` (the level may go negative, down to minus one capacity)."""
        full_at = max(self.full_at, now) + cost * self.inv_rate
        self.full_at = min(full_at, now + 2 * WINDOW)

    def scale(self, factor: float, now: float) -> None:
        """Multiply the limit by ``factor`` relative to the configured one (tier changes)."""
        level = min(self.refill(now), self.base_capacity * factor)
        self.capacity = self.base_capacity * factor
        self.inv_rate = WINDOW / self.capacity
        self.full_at = now + (self.capacity - level) * self.inv_rate

    def fraction(self, now: float) -> float:
        """Level as a fraction of capacity, at ``now``."""
        return self.refill(now) / self.capacity


class FixedWindow:
    """A counter of usage reset at every multiple of 60 s; admits while usage + cost <= limit."""

    __slots__ = ("base_capacity", "capacity", "used", "window")

    def __init__(self, per_minute: float) -> None:
        self.base_capacity = per_minute
        self.capacity = per_minute
        self.used = 0.0
        self.window = 0

    def refill(self, now: float) -> float:
        """Start a new window if ``now`` is past the current one; return what is left."""
        w = int(now // WINDOW)
        if w != self.window:
            self.window = w
            self.used = 0.0
        return self.capacity - self.used

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until the cost fits: 0 if it fits now, else until the next window."""
        if cost > self.capacity:
            return math.inf
        if self.used + cost <= self.capacity:
            return 0.0
        return (self.window + 1) * WINDOW - now

    def charge(self, cost: float, now: float) -> None:
        """Count ``cost`` in the window of ``now``."""
        self.refill(now)
        self.used += cost

    def scale(self, factor: float, now: float) -> None:
        """Multiply the limit by ``factor`` relative to the configured one."""
        self.refill(now)
        self.capacity = self.base_capacity * factor

    def fraction(self, now: float) -> float:
        """What is left as a fraction of the limit, at ``now``."""
        if int(now // WINDOW) != self.window:
            return 1.0
        return max(0.0, self.capacity - self.used) / self.capacity


class Bucket(Protocol):
    """What the limiter needs of a bucket or window."""

    capacity: float

    def refill(self, now: float) -> float: ...  # noqa: D102
    def wait_for(self, cost: float, now: float) -> float: ...  # noqa: D102
    def charge(self, cost: float, now: float) -> None: ...  # noqa: D102
    def scale(self, factor: float, now: float) -> None: ...  # noqa: D102
    def fraction(self, now: float) -> float: ...  # noqa: D102


# Kinds of bucket, as indices into the costs tuple of an attempt.
_REQUESTS, _TOKENS, _INPUT, _OUTPUT = 0, 1, 2, 3


class RateLimiter:
    """The limits of one provider account: requests, tokens, input tokens, output tokens.

    ``admit`` returns ``None`` when the attempt is admitted (and charged), or the
    ``retry_after`` in seconds (``nan`` when no wait would ever let it through: the attempt is
    larger than a whole minute's limit). ``count_rejected`` charges rejected attempts too
    (the strict reading of "unsuccessful requests contribute to your per-minute limit"): with
    continuous refill, any sustained load above a limit then locks every attempt out until
    the load falls below it and the debt is repaid.
    """

    __slots__ = (
        "_buckets",
        "_continuous",
        "_items",
        "cache_reads_count",
        "count_rejected",
        "otpm",
        "rejected",
        "resolution",
    )

    def __init__(
        self,
        rpm: float | None,
        tpm: float | None,
        itpm: float | None,
        otpm: float | None,
        refill: str,
        count_rejected: bool,
        resolution: float,
        cache_reads_count: bool = False,
    ) -> None:
        make: type[TokenBucket] | type[FixedWindow] = (
            FixedWindow if refill == "window" else TokenBucket
        )
        items: list[tuple[Bucket, int]] = []
        self.otpm: Bucket | None = None
        for limit, kind in ((rpm, _REQUESTS), (tpm, _TOKENS), (itpm, _INPUT), (otpm, _OUTPUT)):
            if limit:
                bucket = make(limit)
                items.append((bucket, kind))
                if kind == _OUTPUT:
                    self.otpm = bucket
        self._items = tuple(items)
        self._continuous = make is TokenBucket
        # Per kind, the continuous bucket or None: the unrolled fast path in ``admit``.
        by_kind: list[TokenBucket | None] = [None, None, None, None]
        for item, kind in items:
            if isinstance(item, TokenBucket):
                by_kind[kind] = item
        self._buckets = tuple(by_kind)
        self.count_rejected = count_rejected
        self.resolution = resolution
        self.cache_reads_count = cache_reads_count
        # 429s by the limit that refused (rpm, tpm, itpm, otpm): the one whose wait is the
        # longest, which the retry_after reports. The summary says which limit bound.
        self.rejected = [0, 0, 0, 0]

    def admit(
        self, now: float, input_tokens: int, cached_tokens: int, max_tokens: int
    ) -> float | None:
        """Admit and charge, or return the retry_after of the 429 (see the class docstring)."""
        if self._continuous:
            # TokenBucket's arithmetic unrolled: every attempt comes through here. Each bucket
            # is full again at max(full_at, now) + cost / rate; all must stay within a window.
            rpm, tpm, itpm, otpm = self._buckets
            limit = now + WINDOW
            if rpm is not None:
                r_at = (rpm.full_at if rpm.full_at > now else now) + rpm.inv_rate
                if r_at > limit:
                    return self._reject_tokens(now, input_tokens, cached_tokens, max_tokens)
            if tpm is not None:
                t_cost = input_tokens if input_tokens > max_tokens else max_tokens
                t_at = (tpm.full_at if tpm.full_at > now else now) + t_cost * tpm.inv_rate
                if t_at > limit:
                    return self._reject_tokens(now, input_tokens, cached_tokens, max_tokens)
            if itpm is not None:
                i_cost = input_tokens if self.cache_reads_count else input_tokens - cached_tokens
                i_at = (itpm.full_at if itpm.full_at > now else now) + i_cost * itpm.inv_rate
                if i_at > limit:
                    return self._reject_tokens(now, input_tokens, cached_tokens, max_tokens)
            # Output is charged when generated (charge_output); admission needs no debt.
            if otpm is not None and otpm.full_at > limit:
                return self._reject_tokens(now, input_tokens, cached_tokens, max_tokens)
            if rpm is not None:
                rpm.full_at = r_at
            if tpm is not None:
                tpm.full_at = t_at
            if itpm is not None:
                itpm.full_at = i_at
            return None
        costs = self._costs(input_tokens, cached_tokens, max_tokens)
        ok = True
        for bucket, kind in self._items:
            if bucket.refill(now) < costs[kind]:
                ok = False
        if ok:
            for bucket, kind in self._items:
                bucket.charge(costs[kind], now)
            return None
        return self._reject(now, costs)

    def _costs(
        self, input_tokens: int, cached_tokens: int, max_tokens: int
    ) -> tuple[float, float, float, float]:
        """What each kind of bucket charges at admission (requests, tokens, input, output)."""
        uncached = input_tokens if self.cache_reads_count else input_tokens - cached_tokens
        return (1.0, float(max(input_tokens, max_tokens)), float(uncached), 0.0)

    def _reject_tokens(
        self, now: float, input_tokens: int, cached_tokens: int, max_tokens: int
    ) -> float:
        return self._reject(now, self._costs(input_tokens, cached_tokens, max_tokens))

    def _reject(self, now: float, costs: tuple[float, float, float, float]) -> float:
        """The 429: charge it if rejected attempts count, and compute its retry_after."""
        if self.count_rejected:
            for bucket, kind in self._items:
                bucket.charge(costs[kind], now)
        wait = -1.0
        binding = 0
        for bucket, kind in self._items:
            w = bucket.wait_for(costs[kind], now)
            if w > wait:
                wait, binding = w, kind
        self.rejected[binding] += 1
        if math.isinf(wait):
            return math.nan
        res = self.resolution
        if res > 0:
            # Headers carry whole seconds (or ms): round up so that honouring it succeeds.
            wait = math.ceil(wait / res - 1e-9) * res
        return wait

    def charge_output(self, now: float, generated: int) -> None:
        """Charge the output tokens an attempt generated, when it ends at the provider."""
        if self.otpm is not None and generated > 0:
            self.otpm.charge(float(generated), now)

    def scale(self, factor: float, now: float) -> None:
        """Multiply every limit by ``factor`` (1 restores the configured limits)."""
        for bucket, _ in self._items:
            bucket.scale(factor, now)

    def headroom(self, now: float) -> float:
        """The smallest fraction left across the buckets (1 = all full), for the time series."""
        return min(bucket.fraction(now) for bucket, _ in self._items)
