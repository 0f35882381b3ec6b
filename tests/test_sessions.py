"""Closed-loop sessions and agent tasks (features.X.session, features.X.agent): hand-computed
cases with deterministic turns, pauses and service; the machine-repairman closed form; the
outage that ends sessions; conservation over generated scenarios; the config's checks."""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from llmtraffic import Simulation, scenario_from_dict
from llmtraffic.client.client import Client
from llmtraffic.client.session_client import SessionClient
from llmtraffic.config.sessions import MAX_CONTEXT
from llmtraffic.config.workload import MAX_TOKENS
from llmtraffic.engine.entities import Request
from llmtraffic.errors import ConfigError
from llmtraffic.limits import estimate
from llmtraffic.provider.errors import longest_request
from llmtraffic.results.load import RunResult
from llmtraffic.testing.strategies import scenarios
from llmtraffic.workload import sessions as sessions_module
from llmtraffic.workload.pauses import count_sampler, mean_count
from tests.test_invariants import check_billing, check_costs, check_terminal_outcomes, price

BASE: dict[str, Any] = {
    "name": "s",
    "run": {"duration": 30.0, "seed": 1, "timeseries_bin": 10.0},
    "providers": {
        "p": {
            "model": "m",
            "prices": {"input": 1.0, "output": 2.0},
            "service": {"kind": "deterministic", "value": 2.0},
            "failures": {"error_latency": 0.0},
        }
    },
    "features": {
        "f": {
            "provider": "p",
            "policy": "x",
            "arrivals": {"kind": "times", "at": [0.0]},
            "input_tokens": {"kind": "fixed", "value": 100},
            "output_tokens": {"kind": "fixed", "value": 50},
            "session": {
                "turns": {"kind": "fixed", "value": 3},
                "think_time": {"kind": "fixed", "value": 5.0},
            },
        }
    },
    "policies": {"x": {"timeout": 1000.0, "retry": {"kind": "none"}}},
}


def scenario(**changes: Any) -> Any:
    """BASE with dotted keys replaced: ``scenario(**{"features.f.session.turns": ...})``."""
    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        *head, last = path.split(".")
        node = raw
        for key in head:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return scenario_from_dict(raw)


class Recording(sessions_module.SessionDriver):
    """A session driver that keeps every turn request it saw end (tests only)."""

    seen: list[tuple[Request, str, float]]

    def ended(self, req: Request, outcome: str, now: float) -> None:
        if not hasattr(self, "seen"):
            self.seen = []
        if req.session in self.live and self.live[req.session].request is req:
            self.seen.append((req, outcome, now))
        super().ended(req, outcome, now)


def run(sc: Any, monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[Simulation, RunResult]:
    if monkeypatch is not None:
        monkeypatch.setattr("llmtraffic.simulation.SessionDriver", Recording)
    sim = Simulation(sc)
    return sim, sim.run()


def requests_of(result: RunResult) -> Any:
    return result.df("requests").sort_values("arrival_time").reset_index(drop=True)


# Hand-computed cases -----------------------------------------------------------------------------


def test_session_duration_is_its_pauses_plus_its_turn_latencies() -> None:
    # Two sessions (t = 0 and 10), 3 turns of 2 s, 5 s between: turns start at 0, 7, 14
    # (and 10, 17, 24); each session lasts 3 x 2 + 2 x 5 = 16 s.
    sim, res = run(scenario(**{"features.f.arrivals.at": [0.0, 10.0]}))
    req = requests_of(res)
    assert req.arrival_time.tolist() == [0.0, 7.0, 10.0, 14.0, 17.0, 24.0]
    assert (req.end_time - req.arrival_time).tolist() == [2.0] * 6
    f = res.summary["features"]["f"]
    assert f["sessions"] == f["sessions_completed"] == 2
    assert f["session_duration_mean"] == 16.0
    assert f["turns_per_session"] == 3.0
    assert f["requests"] == 6
    assert type(sim.clients["f"]) is SessionClient


def test_context_grows_by_each_turn_input_and_output() -> None:
    # Turn k's prompt = system (10) + every earlier turn's prompt and answer + 100 new tokens:
    # 10 + 100 = 110, 10 + 150 + 100 = 260, 10 + 300 + 100 = 410 (the transcript without the
    # system prompt grows by 100 + 50 per answered turn).
    _, res = run(scenario(**{"features.f.session.system_tokens": 10}))
    req = requests_of(res)
    assert req.input_tokens.tolist() == [110, 260, 410]
    f = res.summary["features"]["f"]
    assert f["tokens_per_session"] == 110 + 260 + 410 + 3 * 50
    # Billed at 1 USD/M input, 2 USD/M output: exact, and the baseline is the same.
    assert f["cost_per_session"] == pytest.approx((780 + 2 * 150) * 1e-6, rel=1e-12)
    assert res.summary["baseline_cost"] == pytest.approx(res.summary["billed_cost"], rel=1e-12)


def test_truncation_keeps_the_newest_tokens_that_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    # max_context 400, system 10, new 100: room for 290 transcript tokens. Transcripts:
    # 0, 150, 300 -> cut to 290 (prompt 400), then 290 + 150 = 440 -> 290 again (400).
    sc = scenario(
        **{
            "features.f.session.system_tokens": 10,
            "features.f.session.max_context": 400,
            "features.f.session.turns": {"kind": "fixed", "value": 5},
            "run.duration": 60.0,
        }
    )
    sim, res = run(sc, monkeypatch)
    assert requests_of(res).input_tokens.tolist() == [110, 260, 400, 400, 400]
    # What repeats the previous prompt after the system prompt: nothing once it is cut.
    seen = sim.drivers["f"].seen  # type: ignore[attr-defined]
    assert [r.prefix_tokens for r, _, _ in seen] == [0, 150, 0, 0, 0]
    assert all(r.session == 0 for r, _, _ in seen)
    assert res.summary["features"]["f"]["context_cuts"] == 3


def test_summarising_replaces_the_transcript(monkeypatch: pytest.MonkeyPatch) -> None:
    # As above, but an overflowing transcript becomes a 50-token summary: 0, 150, 300 -> 50
    # (prompt 160), 50 + 150 = 200 (310, kept whole: a cache may match it), 350 -> 50 (160).
    sc = scenario(
        **{
            "features.f.session.system_tokens": 10,
            "features.f.session.max_context": 400,
            "features.f.session.on_overflow": "summarize",
            "features.f.session.summary_tokens": 50,
            "features.f.session.turns": {"kind": "fixed", "value": 5},
            "run.duration": 60.0,
        }
    )
    sim, res = run(sc, monkeypatch)
    assert requests_of(res).input_tokens.tolist() == [110, 260, 160, 310, 160]
    seen = sim.drivers["f"].seen  # type: ignore[attr-defined]
    assert [r.prefix_tokens for r, _, _ in seen] == [0, 150, 0, 200, 0]


def test_a_failed_turn_ends_the_session_by_default() -> None:
    # Turns every 1 + 5 s: 0, 6, 12, 18 succeed; the one at 24 meets the outage (20-40 s) and
    # fails at once; the session is abandoned then, after 5 turns.
    sc = scenario(
        **{
            "features.f.session.turns": {"kind": "fixed", "value": 10},
            "providers.p.service": {"kind": "deterministic", "value": 1.0},
            "providers.p.incidents": [{"kind": "outage", "start": 20.0, "duration": 20.0}],
        }
    )
    _, res = run(sc)
    req = requests_of(res)
    assert req.arrival_time.tolist() == [0.0, 6.0, 12.0, 18.0, 24.0]
    assert req.outcome.tolist() == ["ok"] * 4 + ["exhausted"]
    f = res.summary["features"]["f"]
    assert (f["sessions"], f["sessions_abandoned"], f["sessions_completed"]) == (1, 1, 0)
    assert f["session_duration_mean"] == 24.0
    assert f["session_success_rate"] == 0.0


def test_without_abandonment_the_user_goes_on_and_the_failed_turn_is_forgotten() -> None:
    # Failed turns at 24, 29, 34, 39 (each 5 s after the previous failure); 44 and 50 succeed.
    # The transcript holds the 4 + 1 answered turns only: the turn at 50 sends
    # 5 x 150 + 100 = 850 tokens.
    sc = scenario(
        **{
            "features.f.session.turns": {"kind": "fixed", "value": 10},
            "features.f.session.abandon_on_failure": False,
            "providers.p.service": {"kind": "deterministic", "value": 1.0},
            "providers.p.incidents": [{"kind": "outage", "start": 20.0, "duration": 20.0}],
        }
    )
    _, res = run(sc)
    req = requests_of(res)
    assert req.arrival_time.tolist() == [0, 6, 12, 18, 24, 29, 34, 39, 44, 50]
    assert (req.outcome == "ok").tolist() == [True] * 4 + [False] * 4 + [True] * 2
    assert req.input_tokens.tolist()[-2:] == [700, 850]
    f = res.summary["features"]["f"]
    assert (f["sessions_partial"], f["sessions_completed"], f["sessions_abandoned"]) == (1, 0, 0)
    assert f["session_duration_mean"] == 51.0


def test_an_agent_task_chains_its_calls_through_its_tools() -> None:
    # 4 calls of 1 s with 2 s tools between: 4 + 3 x 2 = 10 s per task. The second task
    # (t = 15) has its third call (t = 21) in the outage (20-25 s): it fails there.
    agent = {"calls": {"kind": "fixed", "value": 4}, "tool_time": {"kind": "fixed", "value": 2.0}}
    sc = scenario(
        **{
            "features.f.session": None,
            "features.f.agent": agent,
            "features.f.arrivals.at": [0.0, 15.0],
            "providers.p.service": {"kind": "deterministic", "value": 1.0},
            "providers.p.incidents": [{"kind": "outage", "start": 20.0, "duration": 5.0}],
        }
    )
    _, res = run(sc)
    req = requests_of(res)
    assert req.arrival_time.tolist() == [0, 3, 6, 9, 15, 18, 21]
    f = res.summary["features"]["f"]
    assert (f["tasks"], f["tasks_succeeded"], f["tasks_abandoned"]) == (2, 1, 1)
    assert f["task_success_rate"] == 0.5
    assert f["calls_per_task"] == 3.5
    assert f["task_duration_mean"] == (10 + 6) / 2
    # Every call of both tasks is billed (the failed one is not: an outage bills nothing).
    assert f["cost_per_task"] == pytest.approx(res.summary["billed_cost"] / 2)
    assert f["cost_per_succeeded_task"] == pytest.approx(res.summary["billed_cost"])


def test_a_run_cut_by_its_drain_leaves_sessions_unfinished() -> None:
    # Drain 10 s after 30 s: the session of t = 0 ends at 16; the one of t = 25 has its turns at
    # 25 and 32 and is pausing at 40, the end: unfinished, as is the one in its turn at 40.
    sc = scenario(**{"features.f.arrivals.at": [0.0, 25.0, 29.0], "run.drain": 10.0})
    _, res = run(sc)
    f = res.summary["features"]["f"]
    assert (f["sessions"], f["sessions_completed"], f["sessions_unfinished"]) == (3, 1, 2)
    assert f["session_duration_mean"] == 16.0  # over the sessions that ended


# The closed form: a machine-repairman model ----------------------------------------------------


def repairman_throughput(n: int, service: float, think: float) -> float:
    """Throughput of N sessions with exponential think time Z and one exponential server of
    mean S (the machine-repairman model, M/M/1//N): X = (1 - p0) / S with
    1 / p0 = sum_k N! / (N - k)! (S / Z)^k."""
    r = service / think
    terms = [math.factorial(n) / math.factorial(n - k) * r**k for k in range(n + 1)]
    return (1 - 1 / sum(terms)) / service


@pytest.mark.parametrize(("n", "think"), [(3, 4.0), (8, 4.0)])
def test_closed_loop_throughput_is_the_machine_repairman_s(n: int, think: float) -> None:
    # N sessions start at once and never run out of turns; one slot, exponential service of
    # 1 s: the provider sees a closed network. Throughput X and, by Little's law, the
    # response time R = N / X - Z, within 4% over 4 replications of 5,000 s.
    horizon = 5_000.0
    x_sim, r_sim = [], []
    for seed in range(4):
        sc = scenario(
            **{
                "run.duration": 1.0,
                "run.drain": horizon,
                "run.seed": seed,
                "providers.p.service": {"kind": "exponential", "mean": 1.0},
                "providers.p.capacity": {"slots": 1},
                "features.f.arrivals.at": [0.0] * n,
                "features.f.session.turns": {"kind": "fixed", "value": 10_000},
                "features.f.session.think_time": {"kind": "exponential", "mean": think},
                "policies.x.timeout": 1e6,
            }
        )
        _, res = run(sc)
        req = res.df("requests")
        done = req[req.outcome == "ok"]
        x_sim.append(len(done) / horizon)
        r_sim.append(float((done.end_time - done.arrival_time).mean()))
    x = repairman_throughput(n, 1.0, think)
    assert np.mean(x_sim) == pytest.approx(x, rel=0.04)
    assert np.mean(r_sim) == pytest.approx(n / x - think, rel=0.06)


# Conservation over generated scenarios ---------------------------------------------------------


def with_sessions(raw: dict[str, Any], abandon: bool, agent: bool) -> dict[str, Any]:
    """Each of the scenario's features without a trace sends sessions (or agent tasks)."""
    raw = copy.deepcopy(raw)
    for feat in raw["features"].values():
        if "trace" in feat:
            continue
        pause = {"kind": "exponential", "mean": 2.0}
        turns = {"kind": "uniform", "low": 1, "high": 4}
        if agent:
            feat["agent"] = {"calls": turns, "tool_time": pause, "max_context": 20_000}
        else:
            feat["session"] = {
                "turns": turns,
                "think_time": pause,
                "abandon_on_failure": abandon,
                "system_tokens": 7,
            }
    return raw


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_every_turn_and_every_session_ends_once_and_money_adds_up(raw: dict[str, Any]) -> None:
    for abandon, agent in ((True, False), (False, False), (True, True)):
        sc = scenario_from_dict(with_sessions(raw, abandon, agent))
        sim = Simulation(sc)
        res = sim.run()
        check_terminal_outcomes(sc, res)
        check_costs(sc, res)
        check_billing(sc, res)
        for name, driver in sim.drivers.items():
            st = driver.stats
            f = res.summary["features"][name]
            assert sum(st.outcomes.values()) == st.started  # each session ended once
            assert not driver.live
            assert st.turns == f["requests"]  # every turn is one request, ended once
            assert not abandon or st.outcomes["partial"] == 0
            tally = sim.clients[name].tally
            assert tally.finished == tally.requests
        # The baseline: every turn that was sent, as if its first attempt on the feature's
        # primary provider succeeded.
        req = res.df("requests")
        if len(req):
            assert np.isclose(req.baseline_cost.sum(), res.summary["baseline_cost"], rtol=1e-9)
            expect = [
                price(sc, sc.features[f].provider, f, i, o)
                for f, i, o in zip(req.feature, req.input_tokens, req.output_tokens, strict=True)
            ]
            assert np.allclose(req.baseline_cost, expect, rtol=1e-9, atol=1e-15)


# The config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "phrase"),
    [
        (
            {
                "features.f.agent": {
                    "calls": {"kind": "fixed", "value": 2},
                    "tool_time": {"kind": "fixed", "value": 1},
                }
            },
            "features.f.agent: a feature is chat sessions or agent tasks, not both",
        ),
        (
            {"features.f.session.max_context": 10, "features.f.session.system_tokens": 10},
            "features.f.session.max_context: must be > system_tokens (10), got 10",
        ),
        (
            {"features.f.session.max_context": 1000, "features.f.session.on_overflow": "summarize"},
            "features.f.session.summary_tokens: missing",
        ),
        (
            {"features.f.session.summary_tokens": 10},
            'features.f.session.summary_tokens: only with on_overflow = "summarize"',
        ),
        (
            {"features.f.session.turns": {"kind": "fixed", "value": 0}},
            "features.f.session.turns.value: must be >= 1, got 0",
        ),
        (
            {"features.f.session.think_time": {"kind": "uniform", "low": 3, "high": 1}},
            "features.f.session.think_time.high: must be >= low (3 s), got 1 s",
        ),
    ],
)
def test_bad_session_config_names_the_field(changes: dict[str, Any], phrase: str) -> None:
    with pytest.raises(ConfigError) as err:
        scenario(**changes)
    assert phrase in str(err.value)


def test_a_closed_loop_feature_cannot_replay_a_trace() -> None:
    raw = copy.deepcopy(BASE)
    feat = raw["features"]["f"]
    for key in ("arrivals", "input_tokens", "output_tokens"):
        del feat[key]
    feat["trace"] = {"path": "builtin:azure-conv"}
    raw["run"]["duration"] = "trace"
    with pytest.raises(
        ConfigError, match=re.escape("features.f.session: not allowed with a trace")
    ):
        scenario_from_dict(raw)


def test_a_feature_without_sessions_keeps_the_plain_client() -> None:
    sim, _ = run(scenario(**{"features.f.session": None}))
    assert type(sim.clients["f"]) is Client
    assert sim.drivers == {}


def test_size_limits_count_turns_and_context_windows_see_the_transcript() -> None:
    sc = scenario(**{"features.f.session.turns": {"kind": "uniform", "low": 2, "high": 6}})
    assert estimate(sc).arrivals == pytest.approx(1 * 4.0)
    # Without max_context a conversation's prompt has no bound; with one, the cap + max_tokens.
    assert longest_request([sc.features["f"]]) == math.inf
    capped = scenario(**{"features.f.session.max_context": 4000})
    assert longest_request([capped.features["f"]]) == 4000 + 1024
    assert MAX_CONTEXT == MAX_TOKENS


@pytest.mark.parametrize(
    "cfg",
    [
        {"kind": "fixed", "value": 3},
        {"kind": "uniform", "low": 1, "high": 8},
        {"kind": "lognormal", "median": 5, "p99": 40},
        {"kind": "empirical", "quantiles": [1, 2, 4, 10]},
    ],
)
def test_mean_turns_is_what_the_sampler_draws(cfg: dict[str, Any]) -> None:
    parsed = scenario(**{"features.f.session.turns": cfg}).features["f"].session.turns
    draws = count_sampler(parsed, np.random.default_rng(7))(200_000)
    assert draws.min() >= 1
    # Rounding moves an empirical or lognormal mean by well under 2%.
    assert draws.mean() == pytest.approx(mean_count(parsed), rel=0.02)


@pytest.mark.parametrize(
    ("policy", "client"),
    [
        ({"hedge": {"delay": 0.5}}, "SessionHedgedClient"),
        ({"layers": [{"preset": "langchain-retry"}]}, "SessionLayeredClient"),
        ({"route": {"deployments": ["p", "q"], "strategy": "least_busy"}}, "SessionRoutedClient"),
    ],
)
def test_hedged_layered_and_routed_clients_drive_sessions_too(
    policy: dict[str, Any], client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1 s service, 5 s think: turns at 0, 6, 12 whatever the client (a hedge sent at 0.5 s
    # loses to the first attempt, which answers at 1 s); the driver takes each turn once.
    p = copy.deepcopy(BASE["providers"]["p"])
    p["service"] = {"kind": "deterministic", "value": 1.0}
    sc = scenario(
        **{
            "providers.p": p,
            # A second deployment, used only by the route (the others ignore it).
            "providers.q": p,
            **{f"policies.x.{k}": v for k, v in policy.items()},
        }
    )
    sim, res = run(sc, monkeypatch)
    assert type(sim.clients["f"]).__name__ == client
    assert requests_of(res).arrival_time.tolist() == [0.0, 6.0, 12.0]
    seen = sim.drivers["f"].seen  # type: ignore[attr-defined]
    assert [(r.id, outcome) for r, outcome, _ in seen] == [(0, "ok"), (1, "ok"), (2, "ok")]
    f = res.summary["features"]["f"]
    assert (f["sessions_completed"], f["session_duration_mean"]) == (1, 13.0)


def test_checks_know_the_session_metrics_before_any_run() -> None:
    from llmtraffic.checks.columns import expected_columns

    cols = expected_columns([scenario()])
    assert {"feature.f.session_success_rate", "feature.f.cost_per_completed_session"} <= cols
    agent = {"calls": {"kind": "fixed", "value": 2}, "tool_time": {"kind": "fixed", "value": 1}}
    cols = expected_columns([scenario(**{"features.f.session": None, "features.f.agent": agent})])
    assert "feature.f.cost_per_succeeded_task" in cols and "feature.f.sessions" not in cols
    # The keys checks expect are the keys a run gives.
    _, res = run(scenario())
    summary_keys = {f"feature.f.{k}" for k in res.summary["features"]["f"]}
    assert {c for c in expected_columns([scenario()]) if "session" in c} <= summary_keys


def test_session_ids_are_unique_across_features(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = copy.deepcopy(BASE)
    raw["features"]["g"] = copy.deepcopy(raw["features"]["f"])
    raw["features"]["g"]["arrivals"] = {"kind": "times", "at": [1.0]}
    monkeypatch.setattr("llmtraffic.simulation.SessionDriver", Recording)
    sim = Simulation(scenario_from_dict(raw))
    sim.run()
    ids = {
        name: {r.session for r, _, _ in driver.seen}  # type: ignore[attr-defined]
        for name, driver in sim.drivers.items()
    }
    assert ids == {"f": {0}, "g": {1}}


def test_a_slower_provider_sees_the_same_sessions_turn_for_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Common random numbers: a session's turns, token sizes and pauses are drawn when it
    # arrives, so a provider three times slower (which reorders every later turn) changes
    # when turns are sent, not what they are.
    def sessions(service: float) -> dict[int, list[tuple[int, int]]]:
        sc = scenario(
            **{
                "run.duration": 300.0,
                "features.f.arrivals": {"kind": "poisson", "rate": 0.5},
                "features.f.input_tokens": {"kind": "lognormal", "median": 100, "p99": 900},
                "features.f.session.turns": {"kind": "uniform", "low": 1, "high": 6},
                "features.f.session.think_time": {"kind": "exponential", "mean": 4.0},
                "providers.p.service": {"kind": "exponential", "mean": service},
            }
        )
        monkeypatch.setattr("llmtraffic.simulation.SessionDriver", Recording)
        sim = Simulation(sc)
        sim.run()
        out: dict[int, list[tuple[int, int]]] = {}
        for r, _, _ in sim.drivers["f"].seen:  # type: ignore[attr-defined]
            out.setdefault(r.session, []).append((r.input_tokens, r.output_tokens))
        return out

    fast, slow = sessions(1.0), sessions(3.0)
    assert len(fast) > 100
    assert fast == slow
