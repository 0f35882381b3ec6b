"""Closed forms the simulator is validated against (and that users can check runs with).

Each function names the model it describes; the tests compare simulated runs with these over
seeded replications, with statistical tolerances.
"""

from __future__ import annotations

import math


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with offered load ``a = lam / mu``.

    Computed in log space, because ``a**k / k!`` overflows for large ``c``.
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
    """Mean time in queue of an M/M/c queue: ``Wq = C(c, a) / (c mu - lam)``."""
    return erlang_c(c, lam / mu) / (c * mu - lam)


def mmck_blocking(lam: float, mu: float, c: int, k: int) -> float:
    """Probability that an arrival finds an M/M/c/K system full (K = slots + queue places).

    Stationary distribution: p_n proportional to a^n / n! for n <= c and
    a^c / c! * rho^(n - c) for c < n <= K, with a = lam / mu and rho = a / c.
    """
    if k < c:
        raise ValueError(f"need K >= c, got K={k}, c={c}")
    a = lam / mu
    log_a = math.log(a)
    logs = [n * log_a - math.lgamma(n + 1) for n in range(c + 1)]
    base = c * log_a - math.lgamma(c + 1)
    logs += [base + (n - c) * math.log(a / c) for n in range(c + 1, k + 1)]
    m = max(logs)
    total = math.fsum(math.exp(x - m) for x in logs)
    return math.exp(logs[k] - m) / total


def expected_attempts(p: float, retries: int) -> float:
    """Mean attempts per request when each attempt fails independently with probability p and
    a request retries up to ``retries`` times: ``(1 - p^(N+1)) / (1 - p)``."""
    if p == 1.0:
        return float(retries + 1)
    return (1.0 - p ** (retries + 1)) / (1.0 - p)


def residual_failure(p: float, retries: int) -> float:
    """Share of requests that fail after ``retries`` retries: ``p^(N+1)``."""
    return p ** (retries + 1)


def jitter_mean(jitter: str, ceiling: float, base: float = 0.0, previous: float = 0.0) -> float:
    """Mean wait of a jitter mode given the un-jittered wait ``ceiling``.

    none: w; full: w / 2; equal: 3 w / 4; decorrelated (uncapped): (base + 3 * previous) / 2.
    """
    if jitter == "none":
        return ceiling
    if jitter == "full":
        return ceiling / 2
    if jitter == "equal":
        return 0.75 * ceiling
    if jitter == "decorrelated":
        return (base + 3.0 * previous) / 2
    raise ValueError(f"unknown jitter {jitter!r}")


def token_bucket_admitted_rate(offered: float, per_minute: float) -> float:
    """Long-run admitted rate of a token bucket (or fixed window) of ``per_minute`` requests
    per minute fed at ``offered`` per second, when rejected requests do not count:
    ``min(offered, per_minute / 60)``."""
    return min(offered, per_minute / 60.0)
