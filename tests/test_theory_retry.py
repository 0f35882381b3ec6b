"""Retries against closed forms: attempts per request, residual failure, jitter means, budgets."""

from __future__ import annotations

import numpy as np
import pytest

from llmtraffic import Scenario, Simulation
from llmtraffic.client.waits import RetryState, WaitExponential
from llmtraffic.theory import expected_attempts, jitter_mean, residual_failure
from tests.conftest import make_scenario
from tests.stats import within


def independent_failures(
    p: float, retry: dict[str, object], seed: int, **extra: object
) -> Scenario:
    return make_scenario(
        **{
            "run.duration": 400.0,
            "run.seed": seed,
            "providers.p.capacity": {"slots": 2000, "queue_limit": 0},
            "providers.p.service": {"kind": "deterministic", "value": 0.1},
            "providers.p.failures": {"error_rate": p},
            "features.f.arrivals": {"kind": "poisson", "rate": 50.0},
            "policies": {"pol": {"retry": retry, **extra}},
        }
    )


@pytest.mark.parametrize(
    ("p", "retry"),
    [
        (0.3, {"kind": "naive", "max_retries": 3}),
        (0.5, {"kind": "fixed", "max_retries": 2, "delay": 0.5}),
        (0.2, {"kind": "exponential", "max_retries": 4, "base": 0.1, "cap": 2.0}),
    ],
)
def test_expected_attempts_and_residual_failure(p: float, retry: dict[str, object]) -> None:
    n_retries = int(retry["max_retries"])  # type: ignore[call-overload]
    result = Simulation(independent_failures(p, retry, seed=21)).run()
    req = result.df("requests")
    attempts = req.attempts.to_numpy()
    se = attempts.std(ddof=1) / np.sqrt(len(attempts))
    theory = expected_attempts(p, n_retries)
    assert within(attempts.mean(), theory, se), (attempts.mean(), theory)
    failed = (req.outcome != "ok").to_numpy().astype(float)
    q = residual_failure(p, n_retries)
    se_f = np.sqrt(q * (1 - q) / len(failed))
    assert within(failed.mean(), q, se_f), (failed.mean(), q)
    assert set(req.outcome) <= {"ok", "exhausted"}
    assert attempts.max() <= n_retries + 1
    # Fast errors are not billed, so cost amplification stays 1 whatever the retries.
    assert result.summary["cost_amplification"] == pytest.approx(1.0)


@pytest.mark.parametrize("jitter", ["none", "full", "equal", "decorrelated"])
def test_jitter_means_unit(jitter: str) -> None:
    """Each jitter mode's mean wait over many draws, against its closed form."""
    wait = WaitExponential(base=0.5, multiplier=2.0, cap=100.0, jitter=jitter)
    rng = np.random.default_rng(5)
    u = iter(rng.random(200_000).tolist())
    for retries, previous in [(0, 0.0), (2, 1.3), (4, 6.0)]:
        state = RetryState(retries + 1, "server_error", 500, float("nan"), 0.0, previous, 0.0)
        draws = np.array([wait(state, u) for _ in range(40_000)])
        ceiling = min(100.0, 0.5 * 2.0**retries)
        prev = previous if previous > 0 else 0.5
        theory = jitter_mean(jitter, ceiling, base=0.5, previous=prev)
        se = draws.std(ddof=1) / np.sqrt(len(draws)) + 1e-12
        assert within(float(draws.mean()), theory, se), (jitter, retries, draws.mean(), theory)
        # Bounds: never negative, never above the cap, never above the un-jittered wait
        # (decorrelated jitter is bounded by 3 * previous instead).
        assert draws.min() >= 0.0
        upper = min(100.0, 3 * prev) if jitter == "decorrelated" else ceiling
        assert draws.max() <= upper + 1e-9


@pytest.mark.parametrize("jitter", ["none", "full", "equal"])
def test_jitter_means_in_simulation(jitter: str) -> None:
    """The waits the simulation carries out (attempts' wait_before) follow the formula."""
    retry = {"kind": "exponential", "max_retries": 3, "base": 0.2, "cap": 5.0, "jitter": jitter}
    result = Simulation(independent_failures(0.5, retry, seed=22)).run()
    att = result.df("attempts")
    for number in (1, 2, 3):
        waits = att.loc[att.attempt == number, "wait_before"].to_numpy()
        ceiling = min(5.0, 0.2 * 2.0 ** (number - 1))
        theory = jitter_mean(jitter, ceiling)
        se = waits.std(ddof=1) / np.sqrt(len(waits)) + 1e-12
        assert within(float(waits.mean()), theory, se), (number, waits.mean(), theory)
        # The next attempt goes out exactly that long after the previous one came back.
        prev = att[att.attempt == number - 1].set_index("request_id").end_time
        this = att[att.attempt == number].set_index("request_id")
        gap = this.send_time - prev.loc[this.index]
        assert np.allclose(gap, this.wait_before)


def test_retry_budget_holds_retries_to_its_share() -> None:
    """Everything fails; naive clients would make 3 retries per request. A budget of 10%
    holds retries to 0.1 per request over the long run (plus the initial bucket)."""
    result = Simulation(
        independent_failures(
            1.0,
            {"kind": "naive", "max_retries": 3},
            seed=23,
            budget={"ratio": 0.1, "max_tokens": 10},
        )
    ).run()
    s = result.summary
    retries_per_request = (s["attempts"] - s["requests"]) / s["requests"]
    # Exactly: retries = 0.1 * requests + 10 (start full) - level left; level in [0, 10].
    assert 0.1 - 1e-9 <= retries_per_request <= 0.1 + 10 / s["requests"] + 1e-9
    assert s["outcomes"]["rejected_budget"] > 0.85 * s["requests"]
    events = result.df("events")
    assert "budget_exhausted" in set(events.kind)


def test_decorrelated_jitter_stays_within_base_and_cap() -> None:
    retry = {
        "kind": "exponential",
        "max_retries": 6,
        "base": 0.1,
        "cap": 1.5,
        "jitter": "decorrelated",
    }
    result = Simulation(independent_failures(0.7, retry, seed=24)).run()
    waits = result.df("attempts").query("attempt > 0").wait_before
    assert waits.min() >= 0.1 - 1e-12
    assert waits.max() <= 1.5 + 1e-12


def test_retry_after_is_honoured_up_to_the_maximum() -> None:
    """429s carry retry_after; a policy that honours it waits exactly that long."""
    sc = make_scenario(
        **{
            "run.duration": 300.0,
            "providers.p.rate_limit": {"rpm": 60, "count_rejected": False},
            "features.f.arrivals": {"kind": "poisson", "rate": 2.0},
            "policies": {
                "pol": {
                    "retry": {
                        "kind": "exponential",
                        "max_retries": 5,
                        "base": 0.5,
                        "cap": 4.0,
                        "retry_after_max": 30.0,
                    }
                }
            },
        }
    )
    att = Simulation(sc).run().df("attempts").sort_values(["request_id", "attempt"])
    limited = att[att.status == "rate_limited"]
    assert len(limited) > 0
    # Whole seconds, as the header carries them.
    assert np.allclose(limited.retry_after, np.ceil(limited.retry_after))
    nxt = att.groupby("request_id").shift(-1)
    followed = limited.index[nxt.loc[limited.index, "wait_before"].notna()]
    assert np.allclose(nxt.loc[followed, "wait_before"], limited.loc[followed, "retry_after"])
