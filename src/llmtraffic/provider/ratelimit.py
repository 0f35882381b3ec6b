"""Rate limiters: token buckets refilled continuously, or fixed windows.

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

- ``rpd`` / ``tpd``: as ``rpm`` / ``tpm``, counted over a day.

A per-minute limit may be enforced over a shorter ``window`` (OpenAI: "60,000 requests/minute
may be enforced as 1,000 requests/second"; Azure OpenAI checks RPM over 1 s or 10 s): a
continuous bucket then holds ``limit * window / 60`` and refills at ``limit / 60`` per second;
fixed windows last ``window`` seconds and admit ``limit * window / 60`` each.

Time is passed in (``now``): limiters hold no clock.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llmtraffic.config.provider import RateLimit

WINDOW = 60.0
DAY = 86_400.0


def _per_window(per_minute: float, window: float) -> float:
    """What a window of ``window`` seconds holds of a per-minute limit (exactly the limit for
    a one-minute window: no rounding where nothing changed)."""
    return per_minute if window == WINDOW else per_minute * window / WINDOW


class TokenBucket:
    """A bucket that refills from empty to full in ``window`` seconds, at ``per_minute / 60``
    per second: it holds ``per_minute * window / 60`` (one minute's worth by default; a
    shorter window is a smaller burst at the same rate).

    Kept as one number, the time ``full_at`` at which the bucket is full again (the generic
    cell rate algorithm): the level at ``now`` is ``capacity - rate * max(0, full_at - now)``,
    charging ``c`` moves ``full_at`` by ``c / rate``, and no refill step is needed.
    The level may go below zero: when rejected attempts count (the attempt is charged), and
    for output tokens, charged after the fact. The debt is bounded at one window's worth, as
    a fixed window would bound it.
    """

    __slots__ = ("base_capacity", "capacity", "full_at", "inv_rate", "span")

    def __init__(self, per_minute: float, window: float = WINDOW, per_window: float = 0.0) -> None:
        self.span = window
        # ``per_window``: the capacity given exactly (a daily limit), not through the rate.
        self.base_capacity = per_window or _per_window(per_minute, window)
        self.capacity = self.base_capacity
        self.inv_rate = window / self.base_capacity  # seconds to refill one unit
        self.full_at = 0.0

    def refill(self, now: float) -> float:
        """The level at ``now`` (nothing to update: the state is ``full_at``)."""
        behind = self.full_at - now
        return self.capacity if behind <= 0 else self.capacity - behind / self.inv_rate

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until the level reaches ``cost``; inf if it never can."""
        if cost > self.capacity:
            return math.inf
        return max(0.0, self.full_at + cost * self.inv_rate - self.span - now)

    def charge(self, cost: float, now: float) -> None:
        """Take ``cost`` (the level may go negative, down to minus one capacity)."""
        full_at = max(self.full_at, now) + cost * self.inv_rate
        self.full_at = min(full_at, now + 2 * self.span)

    def scale(self, factor: float, now: float) -> None:
        """Multiply the limit by ``factor`` relative to the configured one (tier changes)."""
        level = min(self.refill(now), self.base_capacity * factor)
        self.capacity = self.base_capacity * factor
        self.inv_rate = self.span / self.capacity
        self.full_at = now + (self.capacity - level) * self.inv_rate

    def fits(self, cost: float, now: float) -> bool:
        """Whether ``cost`` can be paid now: the fast path's comparison, with its rounding
        (full again, after paying, within one window of now)."""
        full_at = self.full_at if self.full_at > now else now
        return full_at + cost * self.inv_rate <= now + self.span

    def reset_in(self, now: float) -> float:
        """Seconds until the bucket is full again (OpenAI's ``x-ratelimit-reset-*``)."""
        return max(0.0, self.full_at - now)

    def fraction(self, now: float) -> float:
        """Level as a fraction of capacity, at ``now``."""
        return self.refill(now) / self.capacity


class FixedWindow:
    """A counter of usage reset at ``start + k * window`` (every minute by default); admits
    while usage + cost <= ``per_minute * window / 60``.

    ``start`` (in ``[0, window)``) moves the boundaries: a daily window that resets at
    midnight of a run that starts at 08:00 has ``start`` = 16 h.
    """

    __slots__ = ("base_capacity", "capacity", "span", "start", "used", "window")

    def __init__(
        self, per_minute: float, window: float = WINDOW, start: float = 0.0, per_window: float = 0.0
    ) -> None:
        self.span = window
        self.start = start
        self.base_capacity = per_window or _per_window(per_minute, window)
        self.capacity = self.base_capacity
        self.used = 0.0
        self.window = self._index(0.0)

    def _index(self, now: float) -> int:
        return int((now - self.start) // self.span)

    def refill(self, now: float) -> float:
        """Start a new window if ``now`` is past the current one; return what is left."""
        w = self._index(now)
        if w != self.window:
            self.window = w
            self.used = 0.0
        return self.capacity - self.used

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until the cost fits: 0 if it fits now, else until the next window."""
        if cost > self.capacity:
            return math.inf
        if self.refill(now) >= cost:
            return 0.0
        return self.reset_in(now)

    def fits(self, cost: float, now: float) -> bool:
        """Whether ``cost`` fits in the window of ``now``."""
        return self.refill(now) >= cost

    def reset_in(self, now: float) -> float:
        """Seconds until the next window starts, when usage is counted from zero again."""
        self.refill(now)
        return self.start + (self.window + 1) * self.span - now

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
        if self._index(now) != self.window:
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
    def reset_in(self, now: float) -> float: ...  # noqa: D102
    def fits(self, cost: float, now: float) -> bool: ...  # noqa: D102


# Kinds of bucket, as indices into the costs tuple of an attempt (and into
# ``RateLimiter.rejected``, in the order of results.metrics.LIMIT_KINDS).
_REQUESTS, _TOKENS, _INPUT, _OUTPUT, _DAY_REQUESTS, _DAY_TOKENS = 0, 1, 2, 3, 4, 5
_REQUEST_KINDS = (_REQUESTS, _DAY_REQUESTS)


class RateLimiter:
    """The limits of one provider account: requests, tokens, input tokens, output tokens, per
    minute, and requests and tokens per day.

    ``admit`` returns ``None`` when the attempt is admitted (and charged), or the
    ``retry_after`` in seconds (``nan`` when no wait would ever let it through: the attempt is
    larger than a whole window's limit). ``count_rejected`` charges rejected attempts too
    (the strict reading of "unsuccessful requests contribute to your per-minute limit"): with
    continuous refill, any sustained load above a limit then locks every attempt out until
    the load falls below it and the debt is repaid.

    ``window`` (seconds, at most 60) is the span over which the per-minute limits are
    enforced, ``rpm_window`` the requests limit's own when it differs (Azure OpenAI: RPM over
    1 or 10 s, TPM over the minute). ``daily_refill`` and ``day_starts_at`` say how the daily
    limits refill: continuously over 24 h, or in fixed days whose first starts at
    ``day_starts_at`` seconds into the run.
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
        "tpm_sum",
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
        *,
        window: float = WINDOW,
        rpm_window: float | None = None,
        rpd: float | None = None,
        tpd: float | None = None,
        daily_refill: str = "continuous",
        day_starts_at: float = 0.0,
        tpm_counts: str = "max",
    ) -> None:
        windowed = refill == "window"
        items: list[tuple[Bucket, int]] = []
        self.otpm: Bucket | None = None
        for limit, kind in ((rpm, _REQUESTS), (tpm, _TOKENS), (itpm, _INPUT), (otpm, _OUTPUT)):
            if limit:
                span = rpm_window if kind == _REQUESTS and rpm_window is not None else window
                bucket: Bucket = FixedWindow(limit, span) if windowed else TokenBucket(limit, span)
                items.append((bucket, kind))
                if kind == _OUTPUT:
                    self.otpm = bucket
        for limit, kind in ((rpd, _DAY_REQUESTS), (tpd, _DAY_TOKENS)):
            if limit:
                per_minute = limit * WINDOW / DAY
                day: Bucket = (
                    FixedWindow(per_minute, DAY, day_starts_at, per_window=limit)
                    if daily_refill == "window"
                    else TokenBucket(per_minute, DAY, per_window=limit)
                )
                items.append((day, kind))
        self._items = tuple(items)
        # The unrolled fast path in ``admit`` knows only continuous one-minute buckets: the
        # configurations that existed before windows and daily limits take exactly it.
        self.tpm_sum = tpm_counts == "sum"
        self._continuous = not self.tpm_sum and all(
            isinstance(b, TokenBucket) and b.span == WINDOW and kind <= _OUTPUT for b, kind in items
        )
        # Per kind, the continuous bucket or None: the unrolled fast path in ``admit``.
        by_kind: list[TokenBucket | None] = [None, None, None, None]
        for item, kind in items:
            if isinstance(item, TokenBucket) and kind <= _OUTPUT:
                by_kind[kind] = item
        self._buckets = tuple(by_kind)
        self.count_rejected = count_rejected
        self.resolution = resolution
        self.cache_reads_count = cache_reads_count
        # 429s by the limit that refused (rpm, tpm, itpm, otpm, rpd, tpd): the one whose wait
        # is the longest, which the retry_after reports. The summary says which limit bound.
        self.rejected = [0, 0, 0, 0, 0, 0]

    @classmethod
    def from_config(cls, rl: RateLimit) -> RateLimiter:
        """The limiter of a provider's ``rate_limit`` table."""
        return cls(
            rl.rpm,
            rl.tpm,
            rl.itpm,
            rl.otpm,
            rl.refill,
            rl.count_rejected,
            rl.retry_after_resolution,
            rl.cache_reads_count,
            window=rl.window,
            rpm_window=rl.rpm_window,
            rpd=rl.rpd,
            tpd=rl.tpd,
            daily_refill=rl.daily_refill,
            day_starts_at=rl.day_starts_at,
            tpm_counts=rl.tpm_counts,
        )

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
            if not bucket.fits(costs[kind], now):
                ok = False
        if ok:
            for bucket, kind in self._items:
                bucket.charge(costs[kind], now)
            return None
        return self._reject(now, costs)

    def _costs(
        self, input_tokens: int, cached_tokens: int, max_tokens: int
    ) -> tuple[float, float, float, float, float, float]:
        """What each kind of bucket charges at admission (requests, tokens, input, output,
        requests per day, tokens per day: the daily ones count as the per-minute ones do)."""
        uncached = input_tokens if self.cache_reads_count else input_tokens - cached_tokens
        # Azure OpenAI's estimate adds max_tokens to the prompt; OpenAI takes the larger.
        tokens = float(input_tokens + max_tokens if self.tpm_sum else max(input_tokens, max_tokens))
        return (1.0, tokens, float(uncached), 0.0, 1.0, tokens)

    def _reject_tokens(
        self, now: float, input_tokens: int, cached_tokens: int, max_tokens: int
    ) -> float:
        return self._reject(now, self._costs(input_tokens, cached_tokens, max_tokens))

    def _reject(self, now: float, costs: tuple[float, ...]) -> float:
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

    def headers(self, now: float) -> tuple[float, float, float, float]:
        """What the ``x-ratelimit-*`` headers of a response at ``now`` would say: remaining
        requests, remaining tokens, seconds until the requests limit and the tokens limit
        are back to full (NaN when no such limit is set).

        Of several limits of one kind (rpm and rpd; tpm, tpd, itpm, otpm), the headers report
        the binding one: the fewest remaining, ties to the longest reset. Remaining is whole
        units, never below zero, as headers carry it.
        """
        nan = math.nan
        req = (nan, nan)
        tok = (nan, nan)
        for bucket, kind in self._items:
            left = max(0.0, math.floor(bucket.refill(now) + 1e-9))
            reset = bucket.reset_in(now)
            if kind in _REQUEST_KINDS:
                if not left >= req[0] or (left == req[0] and reset > req[1]):
                    req = (left, reset)
            elif not left >= tok[0] or (left == tok[0] and reset > tok[1]):
                tok = (left, reset)
        return (req[0], tok[0], req[1], tok[1])
