"""Adaptive client-side throttling (Google SRE book, "Handling Overload").

The client counts, over the last ``window`` seconds, the attempts it wanted to send
(``requests``, including those it refused itself) and those the backend accepted
(``accepts``), and refuses a new attempt locally with probability
``max(0, (requests - k * accepts) / (requests + 1))``. While the backend accepts everything
nothing is refused; when it accepts less than 1/k of what is sent, the client sheds the rest
itself instead of sending it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator

from llmtraffic.client.seconds import take_back


class AdaptiveThrottle:
    """One client's throttle; time and random draws are passed in."""

    def __init__(self, k: float, window: float) -> None:
        self.k = k
        self.window = window
        self._seconds: deque[list[float]] = deque()  # [second, requests, accepts]
        self.requests = 0.0
        self.accepts = 0.0
        # Running totals, for audits: counted - uncounted = attempts sent + refused here.
        self.counted = 0
        self.uncounted = 0
        self.refused = 0

    def _bucket(self, now: float) -> list[float]:
        sec = math.floor(now)
        oldest = sec - self.window
        seconds = self._seconds
        while seconds and seconds[0][0] <= oldest:
            _, r, a = seconds.popleft()
            self.requests -= r
            self.accepts -= a
        if not seconds or seconds[-1][0] != sec:
            seconds.append([sec, 0.0, 0.0])
        return seconds[-1]

    def rejection_probability(self, now: float) -> float:
        """The formula, on the counts of the last window."""
        self._bucket(now)
        return max(0.0, (self.requests - self.k * self.accepts) / (self.requests + 1.0))

    def allow(self, now: float, uniforms: Iterator[float]) -> bool:
        """Count a request; True to send it, False to refuse it locally."""
        p = self.rejection_probability(now)
        self._bucket(now)[1] += 1.0
        self.requests += 1.0
        self.counted += 1
        if p > 0.0 and next(uniforms) < p:
            self.refused += 1
            return False
        return True

    def uncount(self, at: float) -> None:
        """Take back the request counted at ``at`` by ``allow``: another gate refused it, or
        its request ended before it was sent, so the backend will never answer it (counting
        it would throttle the backend's traffic for a refusal that was not the backend's)."""
        self.uncounted += 1
        if take_back(self._seconds, at, 1):
            self.requests -= 1.0

    def record(self, now: float, accepted: bool) -> None:
        """The backend's answer to an attempt that was sent."""
        if accepted:
            self._bucket(now)[2] += 1.0
            self.accepts += 1.0
