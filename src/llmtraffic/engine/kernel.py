"""A thin layer over SimPy's environment that schedules plain callbacks.

A generator process per request costs about three times what a scheduled callback does, and
the engine's per-request path is hot; so the engine schedules light events that SimPy's own
``Environment.step`` runs: objects with ``callbacks``, ``_ok`` and ``_value``, the protocol
SimPy's events follow. The environment is still a normal ``simpy.Environment``: ordinary
SimPy processes can run in it beside the engine's callbacks, in one time order.

The kernel is the only module that touches SimPy's internals (its queue, id counter and clock).
It runs the event loop itself, doing what ``Environment.step`` does, so that it can keep the
current time in a plain attribute, ``Kernel.now``, which the hot path reads as cheaply as it
would read SimPy's private ``_now``.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

import simpy
from simpy.core import StopSimulation
from simpy.events import URGENT

Callback = Callable[["Call"], None]

NORMAL = 1
"""SimPy's priority of ordinary events (``simpy.events.NORMAL``)."""


class Call:
    """A scheduled callback: a minimal SimPy-compatible event carrying one payload.

    The handler receives the event and reads its payload from ``_value``.
    """

    __slots__ = ("_defused", "_ok", "_value", "callbacks")

    def __init__(self, fn: Callback, payload: Any) -> None:
        self.callbacks: list[Callback] = [fn]
        self._ok = True
        self._value = payload


class Kernel:
    """Owns the SimPy environment, schedules callbacks on it and runs its event loop.

    ``now`` is the current simulated time in seconds, kept by ``run``: run the environment
    through ``Kernel.run``, never through ``env.run``, or ``now`` falls behind.
    """

    __slots__ = ("eid", "env", "now", "queue")

    def __init__(self) -> None:
        self.env = simpy.Environment()
        self.now = 0.0
        # What ``Environment.schedule`` does, without its call overhead: push onto SimPy's
        # own queue with SimPy's own id counter, so SimPy's ordering rules hold unchanged.
        # Hot paths push ``(time, NORMAL, next(eid), event)`` onto ``queue`` themselves.
        self.queue: list[Any] = self.env._queue
        self.eid = self.env._eid

    def call_in(self, delay: float, fn: Callback, payload: Any = None) -> Call:
        """Run ``fn(event)`` after ``delay`` seconds; ``event._value`` is ``payload``."""
        if not delay >= 0.0:  # also refuses NaN; SimPy's own Timeout refuses negative delays
            raise ValueError(f"negative or NaN delay {delay!r}: time cannot move backwards")
        ev = Call(fn, payload)
        heappush(self.queue, (self.now + delay, NORMAL, next(self.eid), ev))
        return ev

    def call_at(self, time: float, fn: Callback, urgent: bool = False) -> Call:
        """Run ``fn(event)`` at the absolute ``time`` (>= now). An ``urgent`` call runs before
        the ordinary events of the same instant (SimPy's URGENT priority): a bin-closing tick
        at t = k * width then counts what happens at exactly t in the next bin, [t, t + width),
        as ``int(t / width)`` does."""
        if not time >= self.now:
            raise ValueError(f"time {time!r} is before now ({self.now}): time cannot go back")
        ev = Call(fn, None)
        heappush(self.queue, (time, URGENT if urgent else NORMAL, next(self.eid), ev))
        return ev

    def schedule(self, event: Any, delay: float, fn: Callable[[Any], None]) -> None:
        """Run ``fn(event)`` after ``delay``; ``event`` is an object with a ``callbacks`` slot
        and ``_ok = True`` (a request or an attempt, scheduled as its own next step)."""
        if not delay >= 0.0:
            raise ValueError(f"negative or NaN delay {delay!r}: time cannot move backwards")
        event.callbacks = [fn]
        heappush(self.queue, (self.now + delay, NORMAL, next(self.eid), event))

    @staticmethod
    def cancel(ev: Call) -> None:
        """Make a scheduled call a no-op (it stays in the queue and fires empty)."""
        ev.callbacks.clear()

    def events_scheduled(self) -> int:
        """How many events have been scheduled so far; call once, after the run.

        Reads SimPy's id counter by drawing the next id (itertools.count has no peek).
        """
        return int(next(self.eid))

    def run(self, until: float | None = None) -> None:
        """Process events until the queue is empty or ``until`` is reached (then ``now`` is
        ``until``), in SimPy's order and with its rules: what ``Environment.run`` and
        ``Environment.step`` do, inlined, plus keeping ``now``."""
        env = self.env
        queue = self.queue
        if until is not None:
            if not until > self.now:
                raise ValueError(f"until ({until}) must be later than the current time {self.now}")
            # As SimPy does: an urgent event at ``until`` that stops the loop.
            stop = simpy.Event(env)
            stop._ok = True
            stop._value = None
            stop.callbacks.append(StopSimulation.callback)
            heappush(queue, (float(until), URGENT, next(self.eid), stop))
        try:
            while queue:
                now, _, _, event = heappop(queue)
                env._now = now  # SimPy processes beside the engine read env.now
                self.now = now
                callbacks, event.callbacks = event.callbacks, None
                for callback in callbacks:
                    callback(event)
                if not event._ok and not hasattr(event, "_defused"):
                    # A failed SimPy event nobody handled: crash as SimPy does.
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    raise exc
        except StopSimulation:
            return
