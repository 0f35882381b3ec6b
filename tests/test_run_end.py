"""The end of a run: the time series takes its final sample wherever the end falls, and the
suite's Hypothesis profiles are fixed in CI and exploring on demand."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtraffic import Simulation
from tests.conftest import hypothesis_profile, make_scenario

ARRIVALS = [1.0, 5.0, 12.0, 25.0, 29.5]


def cut_run(duration: float, **extra: Any) -> tuple[Any, Any]:
    """Five requests of 5 s each, cut off at ``duration`` (no drain): the one that arrives at
    29.5 s is unfinished, the one that arrives at 25 s ends at 30 s."""
    overrides: dict[str, Any] = {
        "run.duration": duration,
        "run.drain": 0.0,
        "features.f.arrivals": {"kind": "times", "at": ARRIVALS},
        "providers.p.service": {"kind": "deterministic", "value": 5.0},
    }
    overrides.update(extra)
    r = Simulation(make_scenario(**overrides)).run()
    return r.df("timeseries"), r.df("requests")


@pytest.mark.parametrize(
    "duration",
    [30.000000000000004, 30.0, 30.5, 35.0],
    ids=["1ulp-past-an-edge", "on-an-edge", "mid-bin", "5s-past"],
)
def test_the_time_series_counts_every_request_whatever_the_end(duration: float) -> None:
    ts, req = cut_run(duration)
    assert len(req) == 5
    assert ts.arrivals.sum() == 5
    ended = ts.requests_ok.sum() + ts.requests_failed.sum()
    assert ended == 5, ts  # 4 ok (the last at 30 s) + 1 unfinished, on f8966f2 only 3
    assert ts.requests_ok.sum() == (req.outcome == "ok").sum()
    # By arrival: the unfinished one is not done; every other one is.
    assert ts.arrived_done.sum() == (req.outcome != "unfinished").sum()
    # No bin past the end, and a bin for the instant the run ends in (if it is past an edge).
    assert ts.time.iloc[-1] < duration
    assert len(ts) == -(-duration // 10)


def test_a_run_ending_on_a_bin_edge_adds_no_empty_bin() -> None:
    ts, _ = cut_run(30.0)
    assert list(ts.time) == [0.0, 10.0, 20.0]
    # Levels stay time-weighted means over full 10 s bins: at most 2 requests were in flight.
    assert (ts.in_flight <= 2 + 1e-9).all()


def test_a_sliver_bin_holds_a_time_weighted_level() -> None:
    """The bin [30, 30.000000000000004) is 4e-15 s wide; its level is a mean over that span,
    not an integral divided by a floor of 1e-12 s (which read ~0 for a level of 1)."""
    ts, _ = cut_run(30.000000000000004)
    assert len(ts) == 4
    assert ts.in_flight.iloc[-1] == pytest.approx(1.0, rel=1e-6)


# --- Hypothesis profiles -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "profile"),
    [
        ({}, "fixed"),
        ({"CI": "true"}, "fixed"),
        ({"CI": "true", "LLMTRAFFIC_HYPOTHESIS": "explore"}, "fixed"),
        ({"LLMTRAFFIC_HYPOTHESIS": "explore"}, "explore"),
        ({"HYPOTHESIS_PROFILE": "explore"}, "explore"),
    ],
)
def test_the_profile_is_fixed_in_ci_and_explores_on_demand(
    env: dict[str, str], profile: str
) -> None:
    assert hypothesis_profile(env) == profile


def test_an_unknown_profile_is_an_error() -> None:
    with pytest.raises(pytest.UsageError, match="fixed, explore"):
        hypothesis_profile({"LLMTRAFFIC_HYPOTHESIS": "deep"})


def test_profiles_are_registered_as_documented() -> None:
    fixed = settings.get_profile("fixed")
    assert fixed.derandomize and fixed.database is None
    explore = settings.get_profile("explore")
    assert not explore.derandomize and explore.max_examples == 1000


SEEN: list[list[int]] = []


@settings(max_examples=15)
@given(st.lists(st.integers(0, 10**9), min_size=3, max_size=3))
def _draws(xs: list[int]) -> None:
    SEEN[-1].append(sum(xs))


@pytest.mark.skipif(
    hypothesis_profile(os.environ) != "fixed", reason="the explore profile draws at random"
)
def test_the_fixed_profile_draws_the_same_examples_every_time() -> None:
    runs = []
    for _ in range(2):
        SEEN.append([])
        _draws()
        runs.append(SEEN[-1])
    assert runs[0] == runs[1] and len(set(runs[0])) > 3
