"""Samplers of the closed-loop workload's distributions: how many turns a session makes
(counts) and how long the pauses between turns last (think time, tool time).

Each returns scalar draws from batched numpy calls (one numpy call per draw costs ~20x a list
read), from the generator it is given: one named stream per purpose (``engine.streams``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from statistics import NormalDist
from typing import Any

import numpy as np

from llmtraffic.config.sessions import (
    MAX_TURNS,
    Count,
    Delay,
    EmpiricalCount,
    ExponentialDelay,
    FixedCount,
    FixedDelay,
    LognormalCount,
    LognormalDelay,
    UniformCount,
    UniformDelay,
)
from llmtraffic.engine.streams import BATCH

Z99 = NormalDist().inv_cdf(0.99)  # 99th percentile of the standard normal


def scalars(draw: Callable[[int], np.ndarray], batch: int = BATCH) -> Iterator[Any]:
    """Endless scalar draws of ``draw(n)``, ``batch`` at a time: Python ints from an int
    array, floats from a float one."""
    while True:
        yield from draw(batch).tolist()


def count_sampler(cfg: Count, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
    """``n`` numbers of turns (int64, 1 to ``MAX_TURNS``) for a count config."""
    if isinstance(cfg, FixedCount):
        value = cfg.value
        return lambda n: np.full(n, value, dtype=np.int64)
    if isinstance(cfg, UniformCount):
        low, high = cfg.low, cfg.high
        return lambda n: rng.integers(low, high + 1, n, dtype=np.int64)
    if isinstance(cfg, LognormalCount):
        mu = math.log(cfg.median)
        sigma = (math.log(cfg.p99) - mu) / Z99
        # The tail is capped at MAX_TURNS: a session of a million turns would keep a run going
        # for ever, and describes no conversation.
        return lambda n: np.clip(np.rint(rng.lognormal(mu, sigma, n)), 1, MAX_TURNS).astype(
            np.int64
        )
    if isinstance(cfg, EmpiricalCount):
        q = np.asarray(cfg.quantiles, dtype=float)
        grid = np.linspace(0.0, 1.0, len(q))
        return lambda n: np.rint(np.interp(rng.random(n), grid, q)).astype(np.int64)
    raise TypeError(f"unknown count config {cfg!r}")


def delay_sampler(cfg: Delay, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
    """``n`` pauses in seconds (float64, >= 0) for a delay config."""
    if isinstance(cfg, FixedDelay):
        value = cfg.value
        return lambda n: np.full(n, value, dtype=float)
    if isinstance(cfg, ExponentialDelay):
        mean = cfg.mean
        return lambda n: rng.exponential(mean, n)
    if isinstance(cfg, UniformDelay):
        low, high = cfg.low, cfg.high
        return lambda n: rng.uniform(low, high, n)
    if isinstance(cfg, LognormalDelay):
        mu = math.log(cfg.median)
        sigma = (math.log(cfg.p99) - mu) / Z99
        return lambda n: rng.lognormal(mu, sigma, n)
    raise TypeError(f"unknown delay config {cfg!r}")


def mean_count(cfg: Count) -> float:
    """The mean number of turns of a count config (before the cap at ``MAX_TURNS``, an upper
    bound then): what the size limits multiply session arrivals by."""
    if isinstance(cfg, FixedCount):
        return float(cfg.value)
    if isinstance(cfg, UniformCount):
        return (cfg.low + cfg.high) / 2
    if isinstance(cfg, LognormalCount):
        mu = math.log(cfg.median)
        sigma = (math.log(cfg.p99) - mu) / Z99
        return min(math.exp(mu + sigma * sigma / 2), float(MAX_TURNS))
    # Linear between evenly spaced quantiles: the mean is the trapezoid rule's.
    q = cfg.quantiles
    return (sum(q) - (q[0] + q[-1]) / 2) / (len(q) - 1)
