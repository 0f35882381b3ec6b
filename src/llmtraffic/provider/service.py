"""Service-time models: how long a provider works on an attempt, given its output tokens."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from itertools import repeat
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

from llmtraffic.config.provider import (
    DeterministicService,
    ExponentialService,
    LognormalService,
    Service,
    TokenService,
    UniformService,
)
from llmtraffic.engine.streams import BATCH, exponentials, lognormal_factors


class ServiceModel(NamedTuple):
    """Service time = ``(fixed + per_token * output_tokens) * next(factors)``.

    One formula for every distribution, so the hot path needs no call: token-based service
    uses (ttft, 1 / decode_tps, lognormal noise); a distribution of its own uses (1, 0, draws).
    """

    fixed: float
    per_token: float
    factors: Iterator[float]

    def sample(self, output_tokens: int) -> float:
        """One service time (for tests; the engine inlines the formula)."""
        return (self.fixed + self.per_token * output_tokens) * next(self.factors)


Z99 = NormalDist().inv_cdf(0.99)  # 99th percentile of the standard normal


def make_service(cfg: Service, rng: np.random.Generator) -> ServiceModel:
    """Build the service-time model for a config, drawing from ``rng``."""
    if isinstance(cfg, TokenService):
        noise = lognormal_factors(rng, cfg.noise_sigma) if cfg.noise_sigma > 0 else repeat(1.0)
        return ServiceModel(cfg.ttft, 1.0 / cfg.decode_tps, noise)
    if isinstance(cfg, ExponentialService):
        return ServiceModel(1.0, 0.0, exponentials(rng, cfg.mean))
    if isinstance(cfg, DeterministicService):
        return ServiceModel(cfg.value, 0.0, repeat(1.0))
    if isinstance(cfg, LognormalService):
        mu = math.log(cfg.median)
        sigma = (math.log(cfg.p99) - mu) / Z99
        return ServiceModel(1.0, 0.0, _batched(lambda: rng.lognormal(mu, sigma, BATCH)))
    if isinstance(cfg, UniformService):
        low, high = cfg.low, cfg.high
        return ServiceModel(1.0, 0.0, _batched(lambda: rng.uniform(low, high, BATCH)))
    raise TypeError(f"unknown service config {cfg!r}")


def _batched(draw: Callable[[], np.ndarray]) -> Iterator[float]:
    while True:
        yield from draw().tolist()


def mean_service_time(cfg: Service, mean_output_tokens: float) -> float:
    """Expected service time (for capacity planning and the docs' worked examples)."""
    if isinstance(cfg, TokenService):
        return cfg.ttft + mean_output_tokens / cfg.decode_tps
    if isinstance(cfg, ExponentialService):
        return cfg.mean
    if isinstance(cfg, DeterministicService):
        return cfg.value
    if isinstance(cfg, LognormalService):
        sigma = (math.log(cfg.p99) - math.log(cfg.median)) / Z99
        return cfg.median * math.exp(sigma * sigma / 2)
    if isinstance(cfg, UniformService):
        return (cfg.low + cfg.high) / 2
    raise TypeError(f"unknown service config {cfg!r}")
