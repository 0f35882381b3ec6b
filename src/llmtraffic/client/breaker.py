"""Circuit breaker as an explicit state machine: closed, open, half-open (resilience4j's model).

- closed: calls pass; outcomes go into a sliding window (last N calls, or last N seconds).
  Once ``minimum_calls`` are in the window, a failure rate or slow-call rate at or above its
  threshold opens the breaker; so does a failure count at ``failure_count_threshold``.
- open: calls are rejected until ``open_duration`` has passed; the next call attempt then moves
  the breaker to half-open (lazily, as resilience4j does by default), or straight to closed
  when ``half_open_calls`` is 0 (a cooldown).
- half-open: ``half_open_calls`` trial calls pass, the rest are rejected; when all trials have
  reported, the breaker closes, or opens again if their rates reach a threshold.

The clock is injected (``now`` is passed to every method). Every transition bumps ``epoch``
and calls ``on_transition``; outcomes of calls let through in an earlier epoch are ignored, so
late answers from before a transition cannot sway the new state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from llmtraffic.config.policy import Breaker

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

TRANSITIONS: dict[str, frozenset[str]] = {
    CLOSED: frozenset({OPEN}),
    OPEN: frozenset({HALF_OPEN, CLOSED}),
    HALF_OPEN: frozenset({OPEN, CLOSED}),
}
"""The legal transitions; anything else is a bug and raises. Open goes straight to closed
only when ``half_open_calls`` is 0 (a cooldown, as LiteLLM's, with no trial calls)."""

TransitionHook = Callable[[float, str, str], None]


class CountWindow:
    """Outcomes of the last ``size`` calls.

    Keeps the number of calls so far and the positions of the failed and slow ones, so that a
    call that succeeded fast only moves a counter.
    """

    __slots__ = ("_fails", "_slows", "calls", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls = 0
        self._fails: deque[int] = deque()
        self._slows: deque[int] = deque()

    def add(self, now: float, failed: bool, slow: bool) -> None:
        """Record one call."""
        self.calls += 1
        if failed:
            self._fails.append(self.calls)
        if slow:
            self._slows.append(self.calls)

    def totals(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the window."""
        oldest = self.calls - self.size  # calls at or before this position have left
        fails, slows = self._fails, self._slows
        while fails and fails[0] <= oldest:
            fails.popleft()
        while slows and slows[0] <= oldest:
            slows.popleft()
        return min(self.calls, self.size), len(fails), len(slows)


class TimeWindow:
    """Outcomes of the calls of the last ``size`` seconds, in one-second buckets."""

    __slots__ = ("_buckets", "calls", "fails", "size", "slows")

    def __init__(self, size: int) -> None:
        self.size = size
        self._buckets: deque[list[int]] = deque()
        self.calls = 0
        self.fails = 0
        self.slows = 0

    def _evict(self, now: float) -> None:
        oldest = int(now) - self.size
        buckets = self._buckets
        while buckets and buckets[0][0] <= oldest:
            _, c, f, s = buckets.popleft()
            self.calls -= c
            self.fails -= f
            self.slows -= s

    def add(self, now: float, failed: bool, slow: bool) -> None:
        """Record one call at ``now``."""
        self._evict(now)
        sec = int(now)
        buckets = self._buckets
        if not buckets or buckets[-1][0] != sec:
            buckets.append([sec, 0, 0, 0])
        b = buckets[-1]
        b[1] += 1
        b[2] += failed
        b[3] += slow
        self.calls += 1
        self.fails += failed
        self.slows += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the last ``size`` seconds."""
        self._evict(now)
        return self.calls, self.fails, self.slows


class CircuitBreaker:
    """One breaker (per client and endpoint); see the module docstring."""

    def __init__(self, cfg: Breaker, on_transition: TransitionHook | None = None) -> None:
        self.cfg = cfg
        self.state = CLOSED
        self.epoch = 0
        self.opened_at = 0.0
        self.on_transition = on_transition
        self._window = self._new_window()
        self._trials_allowed = 0
        self._trials = CountWindow(cfg.half_open_calls)
        self.failure_threshold = cfg.failure_rate_threshold
        self.slow_threshold = cfg.slow_call_rate_threshold
        self.slow_duration = cfg.slow_call_duration
        self.minimum_calls = cfg.minimum_calls
        self.failure_count_threshold = cfg.failure_count_threshold
        self._judge_every_call = cfg.window == "time"

    def _new_window(self) -> CountWindow | TimeWindow:
        if self.cfg.window == "count":
            return CountWindow(self.cfg.window_size)
        return TimeWindow(self.cfg.window_size)

    def allow(self, now: float) -> bool:
        """Whether a call may go out at ``now`` (may move open to half-open)."""
        state = self.state
        if state is CLOSED:
            return True
        if state is OPEN:
            if now - self.opened_at < self.cfg.open_duration:
                return False
            if self.cfg.half_open_calls == 0:
                self._transition(CLOSED, now)
                return True
            self._transition(HALF_OPEN, now)
        if self._trials_allowed < self.cfg.half_open_calls:
            self._trials_allowed += 1
            return True
        return False

    def record(self, now: float, epoch: int, failed: bool, duration: float) -> None:
        """Report the outcome of a call let through in ``epoch``."""
        if epoch != self.epoch:
            return
        slow = duration >= self.slow_duration
        if self.state is CLOSED:
            window = self._window
            if failed or slow or self._judge_every_call:
                window.add(now, failed, slow)
            else:
                # A fast success in a count window cannot raise either rate: count it, and
                # judge only when it brings the window to minimum_calls. (A time window also
                # forgets old calls, which can raise a rate, so it judges every call.)
                window.calls += 1
                if window.calls != self.minimum_calls:
                    return
            calls, fails, slows = window.totals(now)
            count = self.failure_count_threshold
            if (calls >= self.minimum_calls and self._tripped(calls, fails, slows)) or (
                count is not None and fails >= count
            ):
                self._transition(OPEN, now)
        elif self.state is HALF_OPEN:
            trials = self._trials
            trials.add(now, failed, slow)
            if trials.calls >= self.cfg.half_open_calls:
                tripped = self._tripped(*trials.totals(now))
                self._transition(OPEN if tripped else CLOSED, now)

    def ignore(self, epoch: int) -> None:
        """A call let through in ``epoch`` ended with a status the breaker does not record,
        or never went out (another gate refused it, or its request ended while it waited).

        A half-open trial that ends so gives its permit back (resilience4j's
        ``releasePermission``); otherwise the breaker could wait forever for trials.
        """
        if epoch == self.epoch and self.state is HALF_OPEN and self._trials_allowed > 0:
            self._trials_allowed -= 1

    @property
    def trials_out(self) -> int:
        """Half-open trial permits given and not yet reported or given back."""
        if self.state is not HALF_OPEN:
            return 0
        return self._trials_allowed - self._trials.calls

    def _tripped(self, calls: int, fails: int, slows: int) -> bool:
        return fails >= self.failure_threshold * calls or slows >= self.slow_threshold * calls

    def _transition(self, to: str, now: float) -> None:
        frm = self.state
        if to not in TRANSITIONS[frm]:
            raise RuntimeError(f"illegal breaker transition {frm} -> {to}")
        self.state = to
        self.epoch += 1
        if to is OPEN:
            self.opened_at = now
        elif to is HALF_OPEN:
            self._trials_allowed = 0
            self._trials = CountWindow(self.cfg.half_open_calls)
        else:
            self._window = self._new_window()
        if self.on_transition is not None:
            self.on_transition(now, frm, to)
