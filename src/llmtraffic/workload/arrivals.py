"""Arrival processes, as iterators of sorted chunks of absolute arrival times (seconds).

Times are produced in numpy batches. Non-homogeneous processes (diurnal, ramp) are sampled
exactly by thinning (Lewis and Shedler): candidates from a Poisson process at the maximum rate,
each kept with probability rate(t) / max rate. The fitted kinds (``mmpp``, ``batch``,
``resample``; what ``llmtraffic fit`` writes) live in ``workload/fitted.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from llmtraffic.config.workload import (
    Arrivals,
    BatchArrivals,
    BurstyArrivals,
    DauArrivals,
    DiurnalArrivals,
    ExplicitArrivals,
    MmppArrivals,
    PoissonArrivals,
    RampArrivals,
    ResampleArrivals,
)

CHUNK = 8192
DAY = 86400.0

RateFn = Callable[[np.ndarray], np.ndarray]


def arrival_times(
    cfg: Arrivals, rng: np.random.Generator, horizon: float, start_hour: float = 0.0
) -> Iterator[np.ndarray]:
    """Chunks of arrival times in [0, horizon) for an arrival config."""
    if isinstance(cfg, PoissonArrivals):
        return poisson_times(cfg.rate, rng, horizon)
    if isinstance(cfg, DiurnalArrivals):
        rate, peak = diurnal_rate(
            cfg.mean_rate, cfg.peak_to_trough, cfg.peak_hour, cfg.profile, start_hour
        )
        return thinned_times(rate, peak, rng, horizon)
    if isinstance(cfg, DauArrivals):
        mean = cfg.users * cfg.requests_per_user / DAY
        if cfg.peak_to_trough == 1.0:
            return poisson_times(mean, rng, horizon)
        rate, peak = diurnal_rate(mean, cfg.peak_to_trough, cfg.peak_hour, None, start_hour)
        return thinned_times(rate, peak, rng, horizon)
    if isinstance(cfg, RampArrivals):
        r0, r1 = cfg.start_rate, cfg.end_rate

        def ramp(t: np.ndarray) -> np.ndarray:
            return r0 + (r1 - r0) * (t / horizon)

        return thinned_times(ramp, max(r0, r1), rng, horizon)
    if isinstance(cfg, BurstyArrivals):
        return mmpp_times(cfg.rates, cfg.mean_durations, rng, horizon)
    if isinstance(cfg, ExplicitArrivals):
        return iter([np.asarray(cfg.at, dtype=float)])
    if isinstance(cfg, MmppArrivals | BatchArrivals | ResampleArrivals):
        # Imported here: scenarios with the other kinds never load these generators.
        from llmtraffic.workload import fitted

        return fitted.fitted_times(cfg, rng, horizon)
    raise TypeError(f"unknown arrivals config {cfg!r}")


def mean_rate(cfg: Arrivals, horizon: float, start_hour: float = 0.0) -> float:
    """Expected arrivals per second over [0, horizon) (for docs, checks and tests)."""
    if isinstance(cfg, PoissonArrivals):
        return cfg.rate
    if isinstance(cfg, RampArrivals):
        return (cfg.start_rate + cfg.end_rate) / 2
    if isinstance(cfg, ExplicitArrivals):
        return len(cfg.at) / horizon
    if isinstance(cfg, BurstyArrivals):
        weights = np.asarray(cfg.mean_durations)
        return float(np.dot(weights, cfg.rates) / weights.sum())
    if isinstance(cfg, DauArrivals) and cfg.peak_to_trough == 1.0:
        return cfg.users * cfg.requests_per_user / DAY
    if isinstance(cfg, MmppArrivals | BatchArrivals | ResampleArrivals):
        from llmtraffic.workload import fitted

        return fitted.fitted_mean_rate(cfg)
    if isinstance(cfg, DiurnalArrivals | DauArrivals):
        if isinstance(cfg, DauArrivals):
            mean = cfg.users * cfg.requests_per_user / DAY
            rate, _ = diurnal_rate(mean, cfg.peak_to_trough, cfg.peak_hour, None, start_hour)
        else:
            rate, _ = diurnal_rate(
                cfg.mean_rate, cfg.peak_to_trough, cfg.peak_hour, cfg.profile, start_hour
            )
        grid = np.linspace(0.0, horizon, 200_001)
        return float(np.trapezoid(rate(grid), grid) / horizon)
    raise TypeError(f"unknown arrivals config {cfg!r}")


def poisson_times(rate: float, rng: np.random.Generator, horizon: float) -> Iterator[np.ndarray]:
    """Homogeneous Poisson arrivals."""
    t = 0.0
    while True:
        times = t + np.cumsum(rng.exponential(1.0 / rate, CHUNK))
        if times[-1] >= horizon:
            yield times[times < horizon]
            return
        t = float(times[-1])
        yield times


def thinned_times(
    rate: RateFn, peak: float, rng: np.random.Generator, horizon: float
) -> Iterator[np.ndarray]:
    """Non-homogeneous Poisson arrivals by thinning; ``peak`` must bound ``rate``."""
    t = 0.0
    while True:
        cand = t + np.cumsum(rng.exponential(1.0 / peak, CHUNK))
        keep = rng.random(CHUNK) * peak < rate(cand)
        last = cand[-1] >= horizon
        times = cand[keep & (cand < horizon)]
        if times.size:
            yield times
        if last:
            return
        t = float(cand[-1])


def diurnal_rate(
    mean: float,
    peak_to_trough: float,
    peak_hour: float,
    profile: list[float] | None,
    start_hour: float,
) -> tuple[RateFn, float]:
    """The diurnal rate function of time since the start of the run, and its maximum."""
    if profile is not None:
        weights = np.asarray(profile, dtype=float)
        # Scaled by the largest first: the mean of 24 weights near the float maximum would
        # overflow to inf and turn every weight into 0.
        weights = weights / weights.max()
        weights = weights / weights.mean()

        def hourly(t: np.ndarray) -> np.ndarray:
            hour = ((start_hour + t / 3600.0) % 24.0).astype(np.int64) % 24
            return np.asarray(mean * weights[hour])

        return hourly, float(mean * weights.max())
    a = (peak_to_trough - 1.0) / (peak_to_trough + 1.0)
    omega = 2.0 * math.pi / DAY
    phase = (start_hour - peak_hour) * 3600.0

    def sinusoid(t: np.ndarray) -> np.ndarray:
        return np.asarray(mean * (1.0 + a * np.cos(omega * (t + phase))))

    return sinusoid, mean * (1.0 + a)


def mmpp_times(
    rates: list[float], durations: list[float], rng: np.random.Generator, horizon: float
) -> Iterator[np.ndarray]:
    """Markov-modulated Poisson arrivals cycling through the states in order.

    The first state is drawn from the stationary distribution (time share of each state), so
    the process is stationary from t = 0.
    """
    n = len(rates)
    share = np.asarray(durations) / np.sum(durations)
    state = int(rng.choice(n, p=share))
    t = 0.0
    pending: list[np.ndarray] = []
    size = 0
    while t < horizon:
        stay = float(rng.exponential(durations[state]))
        end = min(t + stay, horizon)
        k = int(rng.poisson(rates[state] * (end - t))) if rates[state] > 0 else 0
        if k:
            pending.append(np.sort(rng.uniform(t, end, k)))
            size += k
        if size >= CHUNK:
            yield np.concatenate(pending)
            pending, size = [], 0
        t = end
        state = (state + 1) % n
    if pending:
        yield np.concatenate(pending)
