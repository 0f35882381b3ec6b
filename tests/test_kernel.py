"""The kernel's own event loop keeps SimPy's semantics: time order, ties in scheduling order,
``until``, SimPy processes beside the engine's callbacks, and crashes on unhandled failures.

The kernel runs the loop itself (instead of ``Environment.run``) so that the hot path reads the
time from ``Kernel.now``; these cases pin that nothing else changed, against plain SimPy where
SimPy defines the answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import simpy

from llmtraffic.engine.kernel import Call, Kernel

SRC = Path(__file__).resolve().parents[1] / "src" / "llmtraffic"


def test_callbacks_run_in_time_order_and_ties_in_scheduling_order() -> None:
    kernel = Kernel()
    seen: list[tuple[float, str]] = []

    def note(ev: Call) -> None:
        seen.append((kernel.now, ev._value))

    for delay, tag in [(2.0, "b"), (1.0, "a"), (2.0, "c"), (0.0, "z"), (1.0, "a2")]:
        kernel.call_in(delay, note, tag)
    kernel.run()
    assert seen == [(0.0, "z"), (1.0, "a"), (1.0, "a2"), (2.0, "b"), (2.0, "c")]
    assert kernel.now == 2.0


def test_until_stops_before_later_events_and_sets_the_clock() -> None:
    kernel = Kernel()
    seen: list[float] = []
    for t in (1.0, 5.0, 10.0):
        kernel.call_in(t, lambda _ev: seen.append(kernel.now))
    kernel.run(until=5.0)
    # SimPy's until event is urgent: an ordinary event at exactly ``until`` does not run.
    assert seen == [1.0]
    assert kernel.now == 5.0 == kernel.env.now
    kernel.run()  # the rest is still queued
    assert seen == [1.0, 5.0, 10.0]


def test_until_must_be_in_the_future() -> None:
    kernel = Kernel()
    kernel.call_in(3.0, lambda _ev: None)
    kernel.run()
    with pytest.raises(ValueError, match="later than the current time"):
        kernel.run(until=3.0)


def _mixed(env: simpy.Environment, log: list[tuple[str, float]]) -> Any:
    def proc() -> Any:
        for _ in range(3):
            yield env.timeout(1.5)
            log.append(("proc", env.now))

    return proc()


def test_simpy_processes_run_beside_callbacks_as_under_plain_simpy() -> None:
    # The same process under plain SimPy and in the kernel's loop, interleaved with callbacks.
    plain = simpy.Environment()
    expected: list[tuple[str, float]] = []
    plain.process(_mixed(plain, expected))
    plain.run(until=4.0)

    kernel = Kernel()
    log: list[tuple[str, float]] = []
    kernel.env.process(_mixed(kernel.env, log))
    kernel.call_in(2.0, lambda _ev: log.append(("call", kernel.now)))
    kernel.run(until=4.0)
    assert [x for x in log if x[0] == "proc"] == expected == [("proc", 1.5), ("proc", 3.0)]
    assert ("call", 2.0) in log


def test_an_unhandled_failed_event_crashes_the_run_as_in_simpy() -> None:
    kernel = Kernel()
    env = kernel.env

    def boom() -> Any:
        yield env.timeout(1.0)
        raise RuntimeError("plugin failed")

    env.process(boom())
    with pytest.raises(RuntimeError, match="plugin failed"):
        kernel.run()


def test_a_cancelled_call_fires_empty() -> None:
    kernel = Kernel()
    seen: list[float] = []
    ev = kernel.call_in(1.0, lambda _ev: seen.append(kernel.now))
    kernel.call_in(2.0, lambda _ev: seen.append(kernel.now))
    Kernel.cancel(ev)
    kernel.run()
    assert seen == [2.0]


def test_only_the_kernel_touches_simpys_internals() -> None:
    # Layering (issue 11): everything above engine/kernel.py reads time from Kernel.now.
    offenders = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        if path.name != "kernel.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "._now" in line or "env._queue" in line or "env._eid" in line
    ]
    assert offenders == []


def test_an_urgent_call_at_runs_before_ordinary_events_of_the_same_instant() -> None:
    kernel = Kernel()
    seen: list[str] = []
    kernel.call_in(10.0, lambda _ev: seen.append("arrival"))
    kernel.call_at(10.0, lambda _ev: seen.append("tick"), urgent=True)
    kernel.call_at(10.0, lambda _ev: seen.append("ordinary"))
    kernel.run()
    assert seen == ["tick", "arrival", "ordinary"]
    with pytest.raises(ValueError, match="before now"):
        kernel.call_at(5.0, lambda _ev: None)
