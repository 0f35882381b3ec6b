"""Closed-form M/M/c results used to sanity-check the baseline models."""

from __future__ import annotations

import math


def erlang_c(c: int, a: float) -> float:
    """Return the Erlang C probability that an arrival waits in an M/M/c queue.

    ``a = lam / mu`` is the offered load in Erlangs and must be below ``c``.
    The terms ``a**k / k!`` overflow for large ``c``, so the sum is done in log space.
    """
    if c < 1:
        raise ValueError(f"c must be >= 1, got {c}")
    if not 0.0 < a < c:
        raise ValueError(f"need 0 < a < c for a stable queue, got a={a}, c={c}")
    log_a = math.log(a)
    log_terms = [k * log_a - math.lgamma(k + 1) for k in range(c)]
    log_tail = c * log_a - math.lgamma(c + 1) + math.log(c / (c - a))
    log_terms.append(log_tail)
    m = max(log_terms)
    log_total = m + math.log(math.fsum(math.exp(t - m) for t in log_terms))
    return math.exp(log_tail - log_total)


def mmc_mean_wait(lam: float, mu: float, c: int) -> float:
    """Return the mean time in queue (before service), ``Wq = C(c, a) / (c*mu - lam)``."""
    return erlang_c(c, lam / mu) / (c * mu - lam)
