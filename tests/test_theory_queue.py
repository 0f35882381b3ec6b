"""The provider's queueing against closed forms: M/M/c (Erlang C) and M/M/c/K blocking."""

from __future__ import annotations

import numpy as np
import pytest

from llmtraffic import Scenario, Simulation
from llmtraffic.theory import erlang_c, mmc_mean_wait, mmck_blocking
from tests.conftest import make_scenario
from tests.stats import batch_means, within

WARMUP = 500.0


def mmc_scenario(
    lam: float, mu: float, c: int, duration: float, seed: int, queue: object
) -> Scenario:
    return make_scenario(
        **{
            "run.duration": duration,
            "run.seed": seed,
            "run.timeseries_bin": 100.0,
            "providers.p.capacity": {"slots": c, "queue_limit": queue},
            "providers.p.service": {"kind": "exponential", "mean": 1.0 / mu},
            "features.f.arrivals": {"kind": "poisson", "rate": lam},
            "policies": {"no-retry": {"timeout": "inf"}},
        }
    )


def test_erlang_c_known_value() -> None:
    # Hand-checkable case: c=1 reduces to M/M/1, where P(wait) = rho.
    assert erlang_c(1, 0.6) == pytest.approx(0.6)
    # Two servers, a = 1: C = (a^2/2! * 2/(2-1)) / (1 + a + a^2/2! * 2) = 1/3.
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)


def test_mmc_mean_wait_matches_erlang_c() -> None:
    lam, mu, c = 7.0, 1.0, 10
    result = Simulation(mmc_scenario(lam, mu, c, 20_000.0, 11, "unbounded")).run()
    att = result.df("attempts")
    att = att[att.send_time > WARMUP].sort_values("send_time")
    mean, se = batch_means(att.queue_wait.to_numpy())
    theory = mmc_mean_wait(lam, mu, c)
    assert within(mean, theory, se), (mean, theory, se)
    # Probability of waiting at all is Erlang C itself.
    waited, se_w = batch_means((att.queue_wait.to_numpy() > 0).astype(float))
    assert within(waited, erlang_c(c, lam / mu), se_w), (waited, erlang_c(c, lam / mu))
    # Service times are exponential with mean 1/mu: end - start.
    service, se_s = batch_means((att.end_time - att.start_time).to_numpy())
    assert within(service, 1.0 / mu, se_s)


def test_mmc_time_weighted_levels_follow_little() -> None:
    """Busy slots average lam/mu and the queue lam * Wq (time-weighted levels, not tallies)."""
    lam, mu, c = 7.0, 1.0, 10
    result = Simulation(mmc_scenario(lam, mu, c, 20_000.0, 12, "unbounded")).run()
    ts = result.df("timeseries")
    ts = ts[(ts.time >= WARMUP) & (ts.time < 20_000.0 - 100)]
    busy, se_b = batch_means(ts.busy_slots.to_numpy(), batches=10)
    assert within(busy, lam / mu, se_b, rel=0.01), busy
    queue, se_q = batch_means(ts.queue_length.to_numpy(), batches=10)
    assert within(queue, lam * mmc_mean_wait(lam, mu, c), se_q), queue


def test_mmck_blocking_probability() -> None:
    """Past the queue limit the provider sheds load: the share of overloaded attempts is the
    M/M/c/K blocking probability (PASTA)."""
    lam, mu, c, queue = 12.0, 1.0, 10, 5
    result = Simulation(mmc_scenario(lam, mu, c, 8_000.0, 13, queue)).run()
    att = result.df("attempts")
    att = att[att.send_time > WARMUP].sort_values("send_time")
    blocked = (att.status == "overloaded").to_numpy().astype(float)
    mean, se = batch_means(blocked)
    theory = mmck_blocking(lam, mu, c, c + queue)
    assert within(mean, theory, se), (mean, theory, se)
    assert set(att.loc[att.status == "overloaded", "http_status"]) == {529}


def test_no_failures_means_every_request_succeeds_once() -> None:
    result = Simulation(mmc_scenario(5.0, 1.0, 10, 2_000.0, 14, "unbounded")).run()
    s = result.summary
    assert s["success_rate"] == 1.0
    assert s["attempt_amplification"] == 1.0
    assert s["cost_amplification"] == pytest.approx(1.0)
    assert s["wasted_cost"] == pytest.approx(0.0, abs=1e-12)
    req = result.df("requests")
    assert np.allclose(req.billed_cost, req.baseline_cost)
