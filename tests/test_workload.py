"""Arrival processes and token sizes against their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from llmtraffic.config.workload import (
    BurstyArrivals,
    DiurnalArrivals,
    LognormalTokens,
    PoissonArrivals,
    RampArrivals,
    UniformTokens,
)
from llmtraffic.workload.arrivals import arrival_times, diurnal_rate, mean_rate
from llmtraffic.workload.tokens import token_sampler


def times_of(cfg: object, horizon: float, seed: int = 0, start_hour: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(list(arrival_times(cfg, rng, horizon, start_hour)))  # type: ignore[arg-type]


def test_poisson_gaps_are_exponential() -> None:
    t = times_of(PoissonArrivals(kind="poisson", rate=20.0), 5000.0)
    gaps = np.diff(t)
    assert np.all(gaps > 0) and t[0] >= 0 and t[-1] < 5000.0
    assert len(t) / 5000.0 == pytest.approx(20.0, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.02)  # CV of exponential = 1
    # Kolmogorov-Smirnov against Exp(20): the generator does not truncate gaps.
    assert stats.kstest(gaps, "expon", args=(0, 1 / 20.0)).pvalue > 1e-3


def test_diurnal_counts_follow_the_profile_hour_by_hour() -> None:
    cfg = DiurnalArrivals(kind="diurnal", mean_rate=3.0, peak_to_trough=4.0, peak_hour=14.0)
    day = 86400.0
    t = times_of(cfg, day, seed=3)
    observed, _ = np.histogram(t, bins=24, range=(0, day))
    rate, peak = diurnal_rate(3.0, 4.0, 14.0, None, 0.0)
    grid = np.linspace(0, day, 24 * 600 + 1)
    values = rate(grid)
    expected = [
        np.trapezoid(values[i * 600 : (i + 1) * 600 + 1], grid[i * 600 : (i + 1) * 600 + 1])
        for i in range(24)
    ]
    chi2 = stats.chisquare(observed, np.asarray(expected) * observed.sum() / sum(expected))
    assert chi2.pvalue > 1e-3
    assert np.argmax(observed) in (13, 14)  # the peak hour
    # Peak over trough of the rate function is exactly the configured ratio.
    assert values.max() / values.min() == pytest.approx(4.0, rel=1e-6)
    assert peak == pytest.approx(values.max(), rel=1e-6)
    assert len(t) / day == pytest.approx(mean_rate(cfg, day), rel=0.02)


def test_diurnal_hourly_profile() -> None:
    profile = [1.0] * 12 + [3.0] * 12
    cfg = DiurnalArrivals(kind="diurnal", mean_rate=2.0, profile=profile)
    t = times_of(cfg, 86400.0, seed=4)
    first, second = (t < 43200).sum(), (t >= 43200).sum()
    assert second / first == pytest.approx(3.0, rel=0.05)
    assert len(t) / 86400 == pytest.approx(2.0, rel=0.02)


def test_bursty_mean_rate_and_overdispersion() -> None:
    cfg = BurstyArrivals(kind="bursty", rates=[20.0, 2.0], mean_durations=[30.0, 90.0])
    horizon = 200_000.0
    t = times_of(cfg, horizon, seed=5)
    # The share of time spent bursting varies from run to run: over n on/off cycles its
    # standard error is about sqrt((30^2 * 0.75^2 + 90^2 * 0.25^2) / n) / 120.
    cycles = horizon / 120
    se_rate = 18 * math.sqrt((900 * 0.5625 + 8100 * 0.0625) / cycles) / 120
    assert abs(len(t) / horizon - mean_rate(cfg, horizon)) < 4 * se_rate
    assert mean_rate(cfg, horizon) == pytest.approx((20 * 30 + 2 * 90) / 120)
    counts, _ = np.histogram(t, bins=int(horizon / 10), range=(0, horizon))
    # Poisson counts have index of dispersion 1; switching rates make it much larger.
    assert counts.var() / counts.mean() > 3.0
    assert np.all(np.diff(t) >= 0)


def test_ramp_rate_grows_linearly() -> None:
    cfg = RampArrivals(kind="ramp", start_rate=1.0, end_rate=9.0)
    t = times_of(cfg, 10_000.0, seed=6)
    halves = np.histogram(t, bins=2, range=(0, 10_000.0))[0]
    # Integrals of the rate over each half: mean 3 then mean 7, times 5000 s.
    assert halves[0] == pytest.approx(15_000, rel=0.03)
    assert halves[1] == pytest.approx(35_000, rel=0.03)


def test_lognormal_tokens_hit_median_and_p99() -> None:
    sample = token_sampler(
        LognormalTokens(kind="lognormal", median=800, p99=4000), np.random.default_rng(7)
    )(200_000)
    assert np.median(sample) == pytest.approx(800, rel=0.02)
    assert np.percentile(sample, 99) == pytest.approx(4000, rel=0.03)
    assert sample.min() >= 1


def test_lognormal_tokens_by_mean_and_sigma() -> None:
    sample = token_sampler(
        LognormalTokens(kind="lognormal", mean=500, sigma=0.8), np.random.default_rng(8)
    )(200_000)
    assert sample.mean() == pytest.approx(500, rel=0.02)
    assert np.log(sample).std() == pytest.approx(0.8, rel=0.03)


def test_uniform_tokens_include_both_ends() -> None:
    sample = token_sampler(
        UniformTokens(kind="uniform", low=4000, high=8000), np.random.default_rng(9)
    )(100_000)
    assert sample.min() == 4000 and sample.max() == 8000
    assert sample.mean() == pytest.approx(6000, rel=0.01)


def test_token_service_time_mean() -> None:
    from llmtraffic.config.provider import TokenService
    from llmtraffic.provider.service import make_service, mean_service_time

    cfg = TokenService(kind="tokens", ttft=0.4, decode_tps=50.0, noise_sigma=0.3)
    model = make_service(cfg, np.random.default_rng(10))
    draws = np.array([model.sample(200) for _ in range(100_000)])
    assert draws.mean() == pytest.approx(mean_service_time(cfg, 200), rel=0.01)
    assert mean_service_time(cfg, 200) == pytest.approx(0.4 + 200 / 50)
    assert np.log(draws).std() == pytest.approx(0.3, rel=0.03)
    assert not math.isnan(draws.sum())
