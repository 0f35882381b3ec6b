"""The arrival kinds ``llmtraffic fit`` chooses among: a k-state Markov-modulated Poisson
process (``mmpp``), batch arrivals (``batch``) and a block bootstrap of a trace's gaps
(``resample``). Each is an iterator of sorted numpy chunks of arrival times, drawn from the
feature's own arrival stream, like the kinds of ``workload/arrivals.py``.

Closed forms the tests compare with (docs/workload.md): an MMPP's mean rate pi . lambda and
its index of dispersion for counts (Fischer and Meier-Hellstern 1993); a batch Poisson
process's index of dispersion E[B^2] / E[B]; a resampled trace keeps its gap distribution.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from llmtraffic.config.workload import BatchArrivals, MmppArrivals, ResampleArrivals
from llmtraffic.errors import TraceError
from llmtraffic.workload.arrivals import poisson_times

CHUNK = 8192


def fitted_times(
    cfg: MmppArrivals | BatchArrivals | ResampleArrivals,
    rng: np.random.Generator,
    horizon: float,
) -> Iterator[np.ndarray]:
    """Chunks of arrival times in [0, horizon) of a fitted arrival kind."""
    if isinstance(cfg, MmppArrivals):
        return mmpp_times(np.asarray(cfg.rates, float), np.asarray(cfg.matrix()), rng, horizon)
    if isinstance(cfg, BatchArrivals):
        return batch_times(cfg, rng, horizon)
    return resample_times(trace_gaps(cfg), cfg.rate, cfg.mean_block, rng, horizon)


def fitted_mean_rate(cfg: MmppArrivals | BatchArrivals | ResampleArrivals) -> float:
    """Long-run arrivals per second: pi . lambda; batches per second x E[B]; ``rate``."""
    if isinstance(cfg, MmppArrivals):
        rates = np.asarray(cfg.rates, float)
        return float(stationary(np.asarray(cfg.matrix())) @ rates)
    if isinstance(cfg, BatchArrivals):
        return cfg.batch_rate() * cfg.size_moments()[0]
    return cfg.rate


# --- MMPP --------------------------------------------------------------------------------


def switch_rate(cfg: MmppArrivals) -> float:
    """Long-run state changes per second, sum_i pi_i (-Q_ii): the generator's own work."""
    q = np.asarray(cfg.matrix())
    return float(stationary(q) @ -np.diag(q)) if len(cfg.rates) > 1 else 0.0


def stationary(q: np.ndarray) -> np.ndarray:
    """The stationary distribution pi of a generator: pi Q = 0, sum(pi) = 1."""
    k = q.shape[0]
    a = q.T.astype(float).copy()
    a[-1, :] = 1.0
    b = np.zeros(k)
    b[-1] = 1.0
    pi: np.ndarray = np.clip(np.linalg.solve(a, b), 0.0, None)
    out: np.ndarray = pi / pi.sum()
    return out


def mmpp_dispersion(rates: np.ndarray, q: np.ndarray, t: float = math.inf) -> float:
    """Index of dispersion for counts Var N(t) / E N(t) of an MMPP started from pi.

    With D = (e pi - Q)^-1 - e pi (the deviation matrix) and lambda* = pi . lambda:
    IDC(t) = 1 + 2/lambda* pi L D lambda - 2/(lambda* t) pi L D^2 (I - exp(Qt)) lambda,
    which tends to 1 + 2/lambda* pi L D lambda as t -> inf (Fischer and Meier-Hellstern 1993).
    """
    from scipy.linalg import expm

    k = q.shape[0]
    pi = stationary(q)
    mean = float(pi @ rates)
    e_pi = np.outer(np.ones(k), pi)
    d = np.linalg.inv(e_pi - q) - e_pi
    left = pi * rates
    limit = 1.0 + 2.0 / mean * float(left @ d @ rates)
    if math.isinf(t):
        return limit
    transient = left @ d @ d @ (np.eye(k) - expm(q * t)) @ rates
    return limit - 2.0 / (mean * t) * float(transient)


def mmpp_times(
    rates: np.ndarray, q: np.ndarray, rng: np.random.Generator, horizon: float
) -> Iterator[np.ndarray]:
    """MMPP arrivals: the state path a block of sojourns at a time, then every sojourn's
    Poisson arrivals at once (uniform within it, as Poisson arrivals given their count)."""
    k = len(rates)
    leave = -np.diag(q)
    if k == 1 or not leave.any():
        if rates[0] > 0:
            yield from poisson_times(float(rates[0]), rng, horizon)
        return
    jumps = np.where(np.eye(k, dtype=bool), 0.0, q) / np.where(leave > 0, leave, 1.0)[:, None]
    cum = np.cumsum(jumps, axis=1)
    pi = stationary(q)
    state = int(rng.choice(k, p=pi))
    # Sojourns per block: about CHUNK arrivals a block, within bounds.
    per = float(pi @ (rates / np.where(leave > 0, leave, 1.0)))
    block = int(np.clip(CHUNK / max(per, 1e-9), 16, 4096))
    t = 0.0
    while t < horizon:
        u = rng.random(block)
        states = np.empty(block, dtype=np.int64)
        for n in range(block):
            states[n] = state
            # A state that never leaves (rate 0 out) stays for good.
            if leave[state] > 0:
                state = min(int(np.searchsorted(cum[state], u[n], side="right")), k - 1)
        stay = rng.exponential(1.0, block) / np.where(leave[states] > 0, leave[states], 1e-300)
        ends = t + np.cumsum(stay)
        starts = ends - stay
        ends = np.minimum(ends, horizon)
        live = starts < horizon
        starts, ends, states = starts[live], ends[live], states[live]
        counts = rng.poisson(rates[states] * (ends - starts))
        total = int(counts.sum())
        if total:
            times = np.repeat(starts, counts) + rng.random(total) * np.repeat(ends - starts, counts)
            yield np.sort(times)
        t = float(ends[-1]) if ends.size else horizon
        if not live.all():
            return


# --- batches -----------------------------------------------------------------------------


def batch_times(
    cfg: BatchArrivals, rng: np.random.Generator, horizon: float
) -> Iterator[np.ndarray]:
    """Batch arrivals: epochs (Poisson, or periodic from a uniform phase: both stationary),
    sizes per epoch, each request at its epoch or spread over the jitter after it."""
    weights = None
    if cfg.sizes is not None:
        w = np.asarray(cfg.sizes, float)
        weights = w / w.sum()
    jitter = cfg.jitter
    t = 0.0 if cfg.rate is not None else -float(rng.uniform(0.0, cfg.batch_rate() ** -1))
    held: np.ndarray = np.zeros(0)
    done = False
    while not done:
        epochs: np.ndarray
        if cfg.rate is not None:
            epochs = t + np.cumsum(rng.exponential(1.0 / cfg.rate, 1024))
        else:
            assert cfg.period is not None
            epochs = t + cfg.period * np.arange(1, 1025)
        done = bool(epochs[-1] >= horizon)
        epochs = epochs[epochs < horizon]
        t = float(epochs[-1]) if epochs.size else t
        if weights is not None:
            sizes = rng.choice(len(weights), epochs.size, p=weights) + 1
        else:
            assert cfg.mean_size is not None
            sizes = rng.geometric(1.0 / cfg.mean_size, epochs.size)
        times = np.repeat(epochs, sizes)
        if jitter > 0:
            times = times + rng.random(times.size) * jitter
            times = np.sort(np.concatenate([held, times[times < horizon]]))
            if not done:
                # A later batch's requests can come before these (its epoch is after t):
                # keep the ones after t for the next chunk.
                held = times[times >= t]
                times = times[times < t]
        if times.size:
            yield times


# --- resampled gaps ----------------------------------------------------------------------


def trace_gaps(cfg: ResampleArrivals) -> np.ndarray:
    """The inter-arrival gaps (seconds) of the trace a ``resample`` replays."""
    from llmtraffic.workload.trace import TraceReader

    reader = TraceReader(cfg.trace, None)
    times = np.concatenate([t for t, _, _ in reader.cycle()] or [np.zeros(0)])
    gaps = np.diff(times)
    if gaps.size == 0 or not gaps.sum() > 0:
        raise TraceError(
            f"{cfg.trace.path}: resample needs at least two requests at different times, got "
            f"{times.size:,} request(s) spanning 0 s; give a longer trace"
        )
    return gaps


def resample_times(
    gaps: np.ndarray,
    rate: float,
    mean_block: float,
    rng: np.random.Generator,
    horizon: float,
) -> Iterator[np.ndarray]:
    """A stationary block bootstrap of ``gaps`` scaled to mean 1 / rate (Politis and Romano
    1994): each gap continues the current block (the next gap of the trace, wrapping at its
    end) or, with probability 1 / mean_block, starts a new block at a uniform position; so
    blocks have geometric lengths of mean ``mean_block``."""
    scaled = gaps * (1.0 / (rate * float(gaps.mean())))
    m = scaled.size
    p_new = 1.0 / mean_block
    pos = int(rng.integers(m))
    # The run starts mid-gap: a uniform share of the first gap (the first block starts at
    # ``pos``: the first chunk's first gap always carries on from it).
    t = -float(rng.random()) * float(scaled[pos])
    first = True
    while True:
        new = rng.random(CHUNK) < p_new
        carry = not new[0]
        new[0] = True
        seg_first = np.flatnonzero(new)
        seg_start = rng.integers(0, m, seg_first.size)
        if carry or first:
            first = False
            # The chunk's first gap continues the block the last chunk ended in.
            seg_start[0] = pos
        seg = np.cumsum(new) - 1
        idx = (seg_start[seg] + np.arange(CHUNK) - seg_first[seg]) % m
        pos = int((idx[-1] + 1) % m)
        times = t + np.cumsum(scaled[idx])
        t = float(times[-1])
        times = times[(times >= 0.0) & (times < horizon)]
        if t >= horizon:
            if times.size:
                yield times
            return
        if times.size:
            yield times
