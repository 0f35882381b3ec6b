"""A provider's spend cap: the cost it billed in the current period, and whether the cap is
reached (every attempt is then refused with a 429 ``quota_exhausted`` until the period ends).

Periods are fixed, from the start of the run: ``[k * period, (k + 1) * period)``. The cap is
judged at admission on the cost billed so far, so attempts already in flight when it is
reached still finish and are billed (the spend may overshoot the cap by them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

QuotaHook = Callable[[float, float], None]
"""Called with (time, USD spent in the period) when the cap is reached (time: now) or the
period it was reached in is over (time: the start of the new period)."""


class SpendMeter:
    """The cost billed in the current period against ``cap`` (USD)."""

    def __init__(
        self,
        cap: float,
        period: float,
        on_reached: QuotaHook | None = None,
        on_reset: QuotaHook | None = None,
    ) -> None:
        self.cap = cap
        self.period = period
        self.spent = 0.0
        self.period_end = period  # inf: one period, the whole run
        self.reached = False
        self.on_reached = on_reached
        self.on_reset = on_reset

    def _roll(self, now: float) -> None:
        """Start the period ``now`` falls in, when the current one is over."""
        if now < self.period_end:
            return
        spent = self.spent
        start = math.floor(now / self.period) * self.period
        self.period_end = start + self.period
        self.spent = 0.0
        if self.reached:
            self.reached = False
            if self.on_reset is not None:
                # Dated at the start of the new period: it is noticed lazily, at the first
                # attempt or bill after it (no timer keeps a finished run going).
                self.on_reset(start, spent)

    def add(self, cost: float, now: float) -> None:
        """The provider billed ``cost`` at ``now``."""
        self._roll(now)
        self.spent += cost
        if not self.reached and self.spent >= self.cap:
            self.reached = True
            if self.on_reached is not None:
                self.on_reached(now, self.spent)

    def exhausted(self, now: float) -> bool:
        """Whether an attempt sent at ``now`` is refused."""
        if now >= self.period_end:
            self._roll(now)
        return self.reached
