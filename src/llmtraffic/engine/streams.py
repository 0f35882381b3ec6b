"""Named random streams from one root seed.

Each purpose (a feature's arrivals, its token sizes, a provider's errors, a client's jitter)
draws from its own ``numpy.random.Generator``, keyed by name, so that a draw added in one
component never shifts another's: the basis of common random numbers across policies.
Scalar draws come from batches, because one numpy call per draw costs ~20x a list read.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np

BATCH = 4096


class Streams:
    """Factory of independent, reproducible generators named by purpose."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def generator(self, name: str) -> np.random.Generator:
        """The generator for ``name``; the same (seed, name) always gives the same stream."""
        key = zlib.crc32(name.encode("utf-8"))
        seq = np.random.SeedSequence(self.seed, spawn_key=(key,))
        return np.random.Generator(np.random.PCG64(seq))

    def uniforms(self, name: str) -> Iterator[float]:
        """An endless iterator of U[0, 1) draws (use ``next(it)``)."""
        return uniforms(self.generator(name))


def uniforms(rng: np.random.Generator, batch: int = BATCH) -> Iterator[float]:
    """Endless U[0, 1) draws from ``rng``, produced in batches."""
    while True:
        yield from rng.random(batch).tolist()


def exponentials(rng: np.random.Generator, mean: float, batch: int = BATCH) -> Iterator[float]:
    """Endless exponential draws of the given mean, produced in batches."""
    while True:
        yield from rng.exponential(mean, batch).tolist()


def lognormal_factors(
    rng: np.random.Generator, sigma: float, batch: int = BATCH
) -> Iterator[float]:
    """Endless mean-one lognormal factors exp(sigma Z - sigma^2 / 2)."""
    shift = -0.5 * sigma * sigma
    while True:
        yield from np.exp(sigma * rng.standard_normal(batch) + shift).tolist()
