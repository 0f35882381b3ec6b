"""Conformance: the real OpenAI and Anthropic SDKs and a tenacity loop, run against
``llmtraffic serve`` through a 429 storm and a brownout, behave as the simulator's presets of
them say (``openai-sdk``, ``anthropic-sdk``, the tenacity adapter with the same ``Retrying``).

One served session (about 17 s of wall time at speedup 1) drives the three clients at once,
each against its own provider with the same fault schedule; 30 simulated replications of
the same scenario give each statistic's run-to-run spread, and the real session's value must
lie in the 99.9% prediction interval for one more run (llmtraffic.serve.conformance). The
scenario runs at speedup 1 because the clients sleep in wall time: their backoff (0.5 s,
1 s; tenacity's up to 1 s) is not divided by a speedup, while the provider's times would be
(docs/serve.md, "Time"). A deliberately wrong preset fails the same comparison.

Arrivals are Poisson in the session (drawn here) and in each simulated run (drawn by the
simulator): the session is one more run of the scenario. With arrival times fixed instead,
the storm is deterministic in the simulation (fixed retry-after, fixed error latency) and a
few milliseconds of real latency tip it over; with Poisson arrivals the interval is that of
a run of the scenario, as a team's traffic would be.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import llmtraffic
from llmtraffic import Simulation
from llmtraffic.config.loader import scenario_from_dict
from llmtraffic.config.scenario import Scenario
from llmtraffic.serve.conformance import (
    Comparison,
    Phase,
    PhaseStats,
    compare,
    phase_stats,
    retried_differences,
    table,
)
from llmtraffic.serve.server import ServerThread
from tests.serve_apps import anthropic_app, drive, openai_app, tenacity_app

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

PHASES = (Phase("storm", 2.0, 6.0), Phase("brownout", 8.0, 12.0))
RATE = 6.0  # requests per second per client
SIM_RUNS = 30
POLICIES: dict[str, Any] = {
    "oa": "openai-sdk",
    "an": "anthropic-sdk",
    "tn": "tenacity-app",
}


DURATION = 14.0


def arrivals(seed: int = 2026) -> list[float]:
    """Poisson arrivals at RATE per second over the run's DURATION (the session's)."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1 / RATE, int(RATE * DURATION * 2)))
    return [float(t) for t in times if t < DURATION]


def provider() -> dict[str, Any]:
    return {
        "model": "openai/gpt-4o-mini",
        # 8 requests a second, enforced per second: no 429 at 6/s outside the storm.
        "rate_limit": {"rpm": 480, "window": "1s"},
        # Service times vary (lognormal noise): when attempts end, and so when their retries
        # come, is not a knife-edge that a few milliseconds of real latency would tip over.
        "service": {"kind": "tokens", "ttft": "0.1s", "decode_tps": 1000, "noise_sigma": 0.5},
        "incidents": [
            # The storm: the limit falls to 2 a second for 4 s (a 429 storm at 3x the limit).
            {"kind": "rate_limit_change", "start": "2s", "duration": "4s", "factor": 0.25},
            # The brownout: 30% fast 500s, and 20% of the rest break off mid-answer.
            {
                "kind": "brownout",
                "start": "8s",
                "duration": "4s",
                "error_rate": 0.3,
                "midstream_rate": 0.2,
            },
        ],
    }


TENACITY_POLICY = {"retry": {"kind": "tenacity", "retrying": "tests.serve_apps:RETRYING"}}


def scenario(policies: dict[str, Any] = POLICIES, tables: dict[str, Any] | None = None) -> Scenario:
    """The conformance scenario: one provider per client (``policies``: feature name to the
    policy the simulation runs for it), with the policy ``tables`` they name."""
    return scenario_from_dict(
        {
            "name": "serve-conformance",
            "run": {"duration": DURATION, "seed": 1},
            "providers": {name: provider() for name in policies},
            "features": {
                name: {
                    "provider": name,
                    "policy": policy,
                    "arrivals": {"kind": "poisson", "rate": RATE},
                    "input_tokens": {"kind": "fixed", "value": 200},
                    "output_tokens": {"kind": "fixed", "value": 100},
                    "max_tokens": 200,
                }
                for name, policy in policies.items()
            },
            "policies": tables if tables is not None else {"tenacity-app": TENACITY_POLICY},
        }
    )


Stats = dict[tuple[str, str], PhaseStats]


def stats_of(attempts: Any, requests: Any, features: list[str]) -> Stats:
    return {(f, p.name): phase_stats(attempts, requests, f, p) for f in features for p in PHASES}


def simulated(sc: Scenario, runs: int = SIM_RUNS) -> list[Stats]:
    out = []
    for seed in range(runs):
        result = Simulation(sc, seed=1000 + seed).run()
        out.append(stats_of(result.attempts, result.requests, list(sc.features)))
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stats, dict[str, list[str]]]:
    """One session: the three real clients at once, each on its own provider."""
    out: Path = tmp_path_factory.mktemp("serve") / "session"
    with ServerThread(scenario(), out, seed=7) as server:
        apps = {
            "oa": openai_app(server.base_url("oa")),
            "an": anthropic_app(server.base_url("an", "anthropic")),
            "tn": tenacity_app(server.base_url("tn")),
        }
        model = server.session.model  # type: ignore[union-attr]
        assert model is not None
        outcomes = asyncio.run(drive(apps, arrivals(), model.wall_at))
    run = llmtraffic.load(out)
    return stats_of(run.attempts, run.requests, list(POLICIES)), outcomes


@pytest.fixture(scope="module")
def sims() -> list[Stats]:
    return simulated(scenario())


def failed(rows: list[Comparison]) -> list[Comparison]:
    return [c for c in rows if not c.ok]


def test_the_session_saw_the_faults(served: tuple[Stats, dict[str, list[str]]]) -> None:
    """The faults took place: retries in both phases, 429s retried in the storm, 500s and
    broken-off bodies in the brownout; every request is in the log."""
    stats, outcomes = served
    n = len(arrivals())
    for name in POLICIES:
        assert len(outcomes[name]) == n
        storm, brown = stats[(name, "storm")], stats[(name, "brownout")]
        assert storm.attempts_per_request > 1.5
        assert "rate_limited" in storm.retried
        assert brown.attempts_per_request > 1.2
        assert "server_error" in brown.retried


def test_presets_match_the_real_clients(
    served: tuple[Stats, dict[str, list[str]]], sims: list[Stats]
) -> None:
    """Attempts per request, billed cost per request and the wait before a retry of each real
    client, in each phase, lie in the simulated runs' 99.9% prediction interval; the real
    clients retried the statuses the simulated ones did."""
    stats, _ = served
    rows = compare(stats, sims)
    print("\n" + table(rows))
    assert not failed(rows), table(failed(rows))
    assert not retried_differences(stats, sims)


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param({"preset": "openai-sdk", "retry": {"max_retries": 5}}, id="5-retries"),
        pytest.param(
            {"preset": "openai-sdk", "retry": {"honor_retry_after": False}}, id="no-retry-after"
        ),
    ],
)
def test_a_wrong_preset_fails_the_comparison(
    served: tuple[Stats, dict[str, list[str]]], wrong: dict[str, Any]
) -> None:
    """The OpenAI SDK's session compared with a preset that misstates it (more retries, or
    retry-after ignored): some statistic falls outside its interval."""
    stats, _ = served
    sc = scenario({"oa": "wrong"}, {"wrong": wrong})
    rows = compare({k: v for k, v in stats.items() if k[0] == "oa"}, simulated(sc, 20))
    print("\n" + table(rows))
    assert failed(rows)
