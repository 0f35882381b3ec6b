"""Statistical helpers for tests that compare simulations with theory."""

from __future__ import annotations

import numpy as np


def batch_means(values: np.ndarray, batches: int = 20) -> tuple[float, float]:
    """Mean and its standard error by the method of batch means (for correlated samples)."""
    values = np.asarray(values, dtype=float)
    usable = len(values) - len(values) % batches
    means = values[:usable].reshape(batches, -1).mean(axis=1)
    return float(values.mean()), float(means.std(ddof=1) / np.sqrt(batches))


def within(sim: float, theory: float, se: float, z: float = 4.0, rel: float = 0.0) -> bool:
    """True when ``sim`` is within z standard errors (or ``rel`` relative) of ``theory``."""
    return abs(sim - theory) <= max(z * se, rel * abs(theory))
