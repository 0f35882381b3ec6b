"""Token-size distributions: vectorised samplers of integer token counts."""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np

from llmtraffic.config.workload import (
    MAX_TOKENS,
    EmpiricalTokens,
    FixedTokens,
    LognormalTokens,
    TokenDist,
    UniformTokens,
)

TokenSampler = Callable[[int], np.ndarray]
"""Returns ``n`` token counts (int64)."""

Z99 = NormalDist().inv_cdf(0.99)  # 99th percentile of the standard normal


def lognormal_params(cfg: LognormalTokens) -> tuple[float, float]:
    """(mu, sigma) of log(tokens) from (median, p99) or (mean, sigma)."""
    if cfg.median is not None and cfg.p99 is not None:
        mu = math.log(cfg.median)
        return mu, (math.log(cfg.p99) - mu) / Z99
    assert cfg.mean is not None and cfg.sigma is not None
    return math.log(cfg.mean) - cfg.sigma**2 / 2, cfg.sigma


def token_sampler(cfg: TokenDist, rng: np.random.Generator) -> TokenSampler:
    """Build the sampler for a token-size config."""
    if isinstance(cfg, FixedTokens):
        value = cfg.value
        return lambda n: np.full(n, value, dtype=np.int64)
    if isinstance(cfg, UniformTokens):
        low, high = cfg.low, cfg.high
        return lambda n: rng.integers(low, high + 1, n, dtype=np.int64)
    if isinstance(cfg, LognormalTokens):
        mu, sigma = lognormal_params(cfg)
        # The tail is capped at MAX_TOKENS (no context window holds more), which also keeps a
        # far draw from overflowing int64 (an inf cast to int64 turns negative).
        return lambda n: np.clip(np.rint(rng.lognormal(mu, sigma, n)), 1, MAX_TOKENS).astype(
            np.int64
        )
    if isinstance(cfg, EmpiricalTokens):
        return empirical_sampler(cfg.quantiles, rng, cfg.levels)
    raise TypeError(f"unknown token config {cfg!r}")


def empirical_sampler(
    quantiles: list[float], rng: np.random.Generator, levels: list[float] | None = None
) -> TokenSampler:
    """Inverse-CDF sampling between quantiles (linear in between), rounded; the quantiles are
    at ``levels`` (probabilities from 0 to 1), evenly spaced when not given."""
    q = np.asarray(quantiles, dtype=float)
    grid = np.linspace(0.0, 1.0, len(q)) if levels is None else np.asarray(levels, dtype=float)

    def sample(n: int) -> np.ndarray:
        out: np.ndarray = np.rint(np.interp(rng.random(n), grid, q)).astype(np.int64)
        return out

    return sample
