"""Arrival models for ``llmtraffic fit``: the figures that describe a trace's burstiness,
the candidate models fitted to it, and the choice among them.

Figures (the same code for the trace and for a model's synthetic traffic): index of dispersion
for counts (variance / mean) in windows of 1 s, 10 s and 60 s; busiest minute / mean minute;
the share of empty minutes; the inter-arrival coefficient of variation.

Candidates: Poisson; a Markov-modulated Poisson process with k = 2..4 states fitted by EM on
the counts per bin (a Poisson hidden Markov model, Baum-Welch), k chosen by BIC; batch arrivals
when timestamps repeat; and a stationary block bootstrap of the trace's own gaps. Each
candidate's figures are measured on its synthetic traffic over the trace's span (a few seeds,
averaged); the simplest candidate whose every figure is within ``TOLERANCE`` of the trace's is
chosen, else the one with the smallest worst error.

The EM is written here (about 60 lines, numpy): hmmlearn's PoissonHMM would do it, but brings
scikit-learn, which the project does not otherwise need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TOLERANCE = 0.25
"""Largest relative error of a figure for a model to count as reproducing it."""

EMPTY_FLOOR = 0.04
"""The share of empty minutes is compared with an absolute tolerance below this share: its
relative error is |model - real| / max(real, EMPTY_FLOOR), so a trace with no empty minute
accepts a model with at most 1% of its minutes empty."""

WINDOWS = (1.0, 10.0, 60.0)
MIN_WINDOWS = 10
"""Fewest windows of a size for its figures to count in the choice."""
SEEDS = 3
MAX_BINS = 2000
"""Most bins the EM reads: the bin is the trace's span / MAX_BINS, at least 1 s."""
MAX_STATES = 4
BATCHED = 0.01
"""Share of zero gaps from which timestamps are reported as batched (and a batch model tried)."""
PERIODIC_CV = 0.1
"""Coefficient of variation of the gaps between batches below which batches are periodic."""
MAX_GAPS = 20_000_000
"""Most gaps kept in memory for the resampling candidate (160 MB)."""

FIGURES = ("idc_1", "idc_10", "idc_60", "peak_mean", "empty", "cv")
LABELS = {
    "idc_1": "dispersion, 1 s",
    "idc_10": "dispersion, 10 s",
    "idc_60": "dispersion, 60 s",
    "peak_mean": "peak / mean minute",
    "empty": "empty minutes",
    "cv": "inter-arrival CV",
}


def figures(seconds: np.ndarray, counts: np.ndarray, span: float, cv: float) -> dict[str, float]:
    """The figures of traffic given as its busy seconds (since the first request, ascending)
    and their counts, over ``span`` seconds; ``cv`` is measured on the gaps. Only busy
    windows are built: a long quiet stretch costs nothing."""
    out: dict[str, float] = {"cv": cv}
    for w in WINDOWS:
        bins = math.floor(span / w)
        inside = seconds < bins * w
        keys, where = np.unique((seconds[inside] // w).astype(np.int64), return_inverse=True)
        c = np.bincount(where, counts[inside]) if keys.size else np.zeros(0)
        total = float(c.sum())
        mean = total / bins if bins else 0.0
        var = float(np.dot(c, c)) / bins - mean * mean if bins else 0.0
        out[f"idc_{w:g}"] = max(0.0, var) / mean if bins >= 2 and mean > 0 else math.nan
        if w == 60.0:
            out["peak_mean"] = float(c.max()) / mean if keys.size and mean > 0 else math.nan
            out["empty"] = 1.0 - keys.size / bins if bins else math.nan
    return out


def times_figures(times: np.ndarray, span: float) -> dict[str, float]:
    """The figures of arrival times (seconds from the start) over ``span``."""
    if times.size < 2:
        nan = math.nan
        return {**dict.fromkeys(FIGURES, nan), "empty": 1.0}
    gaps = np.diff(times)
    cv = float(gaps.std() / gaps.mean()) if gaps.mean() > 0 else math.nan
    seconds, counts = np.unique(np.floor(times).astype(np.int64), return_counts=True)
    return figures(seconds, counts, span, cv)


def comparable(span: float) -> list[str]:
    """The figures a trace of ``span`` seconds measures well enough to compare: those of
    windows it holds at least ``MIN_WINDOWS`` of (a 3-minute trace's per-minute dispersion is
    a variance of 3 counts)."""
    window = {"idc_1": 1.0, "idc_10": 10.0, "idc_60": 60.0, "peak_mean": 60.0, "empty": 60.0}
    return [k for k in FIGURES if k not in window or span / window[k] >= MIN_WINDOWS]


def error(model: float, real: float, name: str) -> float:
    """Relative error of a figure (absolute below ``EMPTY_FLOOR`` for empty minutes)."""
    if not (math.isfinite(model) and math.isfinite(real)):
        return 0.0 if math.isnan(model) and math.isnan(real) else math.inf
    if name == "empty":
        return abs(model - real) / max(real, EMPTY_FLOOR)
    return abs(model - real) / real if real > 0 else (0.0 if model == 0 else math.inf)


@dataclass(frozen=True)
class Batching:
    """How a trace's timestamps repeat: the share of zero gaps and the batches they make."""

    zero_share: float
    mean_size: float
    max_size: int
    sizes: list[float]
    """Share of batches of 1, 2, 3, ... requests."""
    epoch_rate: float
    """Batches (distinct timestamps) per second."""
    epoch_cv: float
    """Coefficient of variation of the gaps between batches."""
    period: float
    """Median gap between batches, seconds."""
    resolution: float | None
    """The coarsest of 60, 1, 0.1, 0.01, 0.001 s of which every timestamp is a whole multiple
    (repeats may then be rounding), or None."""

    @property
    def batched(self) -> bool:
        """Whether timestamps repeat often enough to report."""
        return self.zero_share >= BATCHED

    @property
    def periodic(self) -> bool:
        """Whether batches come at a regular interval."""
        return self.epoch_cv < PERIODIC_CV

    def describe(self) -> str:
        """One line for the report, e.g. "batches every 3 s, 90% of gaps zero"."""
        if not self.batched:
            return f"no ({self.zero_share:.1%} of gaps zero)"
        when = (
            f"every {self.period:.3g} s"
            if self.periodic
            else f"{self.epoch_rate:.3g} /s (gap CV {self.epoch_cv:.2f})"
        )
        text = (
            f"batches {when}, {self.zero_share:.0%} of gaps zero, mean batch "
            f"{self.mean_size:.1f} (max {self.max_size:,})"
        )
        if self.resolution is not None and not (
            self.periodic and self.period > 1.5 * self.resolution
        ):
            # Repeats at every tick of the stamps' resolution may be rounding, not batching.
            text += f"; stamps are whole {_unit_name(self.resolution)}: repeats may be rounding"
        return text


def _unit_name(r: float) -> str:
    return {60.0: "minutes", 1.0: "seconds"}.get(r, f"multiples of {r:g} s")


@dataclass
class Candidate:
    """One arrival model: its config, its synthetic figures and its errors."""

    name: str
    config: dict[str, Any]
    figures: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def worst(self) -> float:
        """The largest relative error over the figures."""
        return max(self.errors.values(), default=math.inf)


@dataclass(frozen=True)
class ArrivalChoice:
    """The candidates, the trace's figures, and the one chosen."""

    real: dict[str, float]
    candidates: list[Candidate]
    chosen: int
    bic: dict[int, float]
    """BIC of the MMPP with k states (k = 1 is Poisson on the same bins)."""
    bin_width: float
    batching: Batching | None
    """How timestamps repeat; None when the trace had too many requests to keep their times."""

    @property
    def model(self) -> Candidate:
        """The chosen candidate."""
        return self.candidates[self.chosen]


def sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


# --- MMPP by EM --------------------------------------------------------------------------


@dataclass(frozen=True)
class HmmFit:
    """A Poisson hidden Markov model on counts per bin: rates per second, transition matrix
    per bin, log-likelihood."""

    rates: np.ndarray
    transitions: np.ndarray
    loglik: float
    k: int
    bin_width: float
    bins: int
    """T, the number of bins fitted."""

    @property
    def bic(self) -> float:
        """-2 log L + p ln T, with p = k rates + k (k - 1) transition probabilities."""
        return -2.0 * self.loglik + (self.k + self.k * (self.k - 1)) * math.log(self.bins)

    def config(self, mean_rate: float) -> dict[str, Any]:
        """The ``mmpp`` table: the generator Q = (P - I) / bin (sojourns of whole bins), the
        rates scaled so that the mean rate pi . lambda is the trace's ``mean_rate``."""
        if self.k == 1:
            return {"kind": "poisson", "rate": sig(mean_rate)}
        from llmtraffic.workload.fitted import stationary

        q = (self.transitions - np.eye(self.k)) / self.bin_width
        rates = self.rates * (mean_rate / float(stationary(q) @ self.rates))
        rows = [[sig(float(v), 3) for v in row] for row in q]
        for i, row in enumerate(rows):
            # Rounding must keep each row summing to 0.
            row[i] = -sig(sum(v for j, v in enumerate(row) if j != i), 4)
        return {"kind": "mmpp", "rates": [sig(float(r)) for r in rates], "generator": rows}


def fit_hmm(counts: np.ndarray, width: float, k: int, iterations: int = 200) -> HmmFit:
    """Baum-Welch (scaled forward-backward) for a Poisson HMM on ``counts`` per bin."""
    from scipy.special import gammaln

    c = counts.astype(float)
    t_n = c.size
    if k == 1:
        lam = c.mean()
        ll = float(np.sum(c * math.log(lam) - lam - gammaln(c + 1))) if lam > 0 else 0.0
        return HmmFit(np.array([lam / width]), np.ones((1, 1)), ll, 1, width, t_n)
    # Start: rates at spread quantiles of the counts, states that last a long time.
    levels = (np.arange(k) + 0.5) / k
    lam = np.maximum(np.quantile(c, levels), 1e-3) + np.arange(k) * 1e-6
    stay = 1.0 - 1.0 / max(2.0, t_n / (4 * k))
    p = np.full((k, k), (1.0 - stay) / (k - 1))
    np.fill_diagonal(p, stay)
    start = np.full(k, 1.0 / k)
    lgc = gammaln(c + 1)
    prev = -math.inf
    ll = -math.inf
    for _ in range(iterations):
        logb = c[:, None] * np.log(lam)[None, :] - lam[None, :] - lgc[:, None]
        top = logb.max(axis=1)
        b = np.exp(logb - top[:, None])
        alpha = np.empty((t_n, k))
        scale = np.empty(t_n)
        a = start * b[0]
        for t in range(t_n):
            if t:
                a = (a @ p) * b[t]
            # A bin no state explains (an underflow) must not turn the pass into NaN.
            s = max(float(a.sum()), 1e-300)
            a = a / s
            alpha[t] = a
            scale[t] = s
        ll = float(np.log(scale).sum() + top.sum())
        beta = np.empty((t_n, k))
        beta[-1] = 1.0
        nxt = beta[-1]
        for t in range(t_n - 2, -1, -1):
            nxt = p @ (b[t + 1] * nxt) / scale[t + 1]
            beta[t] = nxt
        gamma = alpha * beta
        gamma /= gamma.sum(axis=1, keepdims=True)
        xi = p * (alpha[:-1].T @ (b[1:] * beta[1:] / scale[1:, None]))
        rows = xi.sum(axis=1, keepdims=True)
        # A state no bin visits keeps its row (else 0 / 0).
        p = np.where(rows > 0, xi / np.where(rows > 0, rows, 1.0), p)
        weight = gamma.sum(axis=0)
        lam = np.maximum((gamma * c[:, None]).sum(axis=0) / np.maximum(weight, 1e-300), 1e-9)
        start = gamma[0]
        if ll - prev < 1e-7 * abs(ll):
            break
        prev = ll
    # A switching probability that ran to 0 would make a state absorbing: floor it at once
    # in a thousand spans.
    floor = 1e-3 / t_n
    p = np.where(np.eye(k, dtype=bool), p, np.maximum(p, floor))
    np.fill_diagonal(p, 0.0)
    np.fill_diagonal(p, 1.0 - p.sum(axis=1))
    order = np.argsort(lam)
    return HmmFit(lam[order] / width, p[np.ix_(order, order)], ll, k, width, t_n)


def bin_counts(seconds: np.ndarray, counts: np.ndarray, span: float) -> tuple[np.ndarray, float]:
    """Counts per bin of at least 1 s and at most ``MAX_BINS`` bins, and the bin width."""
    nice = (1, 2, 3, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600)
    width = float(next((w for w in nice if span / w <= MAX_BINS), math.ceil(span / MAX_BINS)))
    bins = max(1, math.floor(span / width))
    inside = seconds < bins * width
    c = np.bincount((seconds[inside] // width).astype(np.int64), counts[inside], minlength=bins)
    return c.astype(np.int64), width


# --- batches -----------------------------------------------------------------------------


def batching(times: np.ndarray, stamps_exact: dict[float, bool]) -> Batching:
    """How the trace's timestamps repeat (``times`` in seconds, ascending)."""
    gaps = np.diff(times)
    zero = float((gaps == 0).mean()) if gaps.size else 0.0
    new = np.concatenate([[True], gaps > 0]) if times.size else np.zeros(0, bool)
    epochs = times[new]
    sizes = np.diff(np.append(np.flatnonzero(new), times.size))
    egaps = np.diff(epochs)
    span = float(times[-1] - times[0]) if times.size else 0.0
    hist = np.bincount(sizes)[1:] if sizes.size else np.zeros(1)
    resolution = next((r for r, ok in sorted(stamps_exact.items(), reverse=True) if ok), None)
    return Batching(
        zero_share=zero,
        mean_size=float(sizes.mean()) if sizes.size else 1.0,
        max_size=int(sizes.max()) if sizes.size else 1,
        sizes=[float(h) / max(1, sizes.size) for h in hist],
        epoch_rate=(epochs.size - 1) / span if span > 0 else math.nan,
        epoch_cv=float(egaps.std() / egaps.mean()) if egaps.size > 1 else math.nan,
        period=float(np.median(egaps)) if egaps.size else math.nan,
        resolution=resolution,
    )


def batch_config(b: Batching) -> dict[str, Any]:
    """The ``batch`` table that reproduces the repeats: periodic or Poisson batches, sizes
    by their measured shares (geometric with their mean when there are more than 40)."""
    cfg: dict[str, Any] = {"kind": "batch"}
    if b.periodic:
        cfg["period"] = sig(b.period)
    else:
        cfg["rate"] = sig(b.epoch_rate)
    if len(b.sizes) <= 40:
        cfg["sizes"] = [sig(s, 3) for s in b.sizes]
    else:
        cfg["mean_size"] = sig(b.mean_size)
    return cfg


# --- choosing ----------------------------------------------------------------------------


def choose(
    seconds: np.ndarray,
    counts: np.ndarray,
    span: float,
    cv: float,
    times: np.ndarray | None,
    trace: dict[str, Any],
    stamps_exact: dict[float, bool],
    seed: int = 0,
) -> ArrivalChoice:
    """Fit the candidates to the trace (busy seconds and their counts over ``span``; all its
    times, or None when too many to keep) and choose the one that reproduces its figures.
    ``trace`` is the trace's table, for the ``resample`` candidate."""
    from llmtraffic.workload import fitted

    n = int(counts.sum())
    rate = n / span
    real = figures(seconds, counts, span, cv)
    binned, width = bin_counts(seconds, counts, span)
    fits = {k: fit_hmm(binned, width, k) for k in range(1, MAX_STATES + 1) if k <= binned.size}
    bic = {k: f.bic for k, f in fits.items()}
    best = min(bic, key=bic.__getitem__)
    cands = [Candidate("poisson", {"kind": "poisson", "rate": sig(rate)})]
    if best > 1:
        hmm = fits[best]
        cands.append(Candidate(f"mmpp-{best}", hmm.config(rate), note=f"bin {width:g} s"))
    bat = batching(times, stamps_exact) if times is not None else None
    if bat is not None and bat.batched:
        cands.append(Candidate("batch", batch_config(bat)))
    gaps = np.diff(times) if times is not None and times.size > 2 else None
    if gaps is not None and gaps.sum() > 0:
        for minutes in (2, 10):
            block = max(1.0, min(float(gaps.size) / 4, sig(minutes * 60 * rate, 2)))
            table = {"kind": "resample", "trace": trace, "rate": sig(rate), "mean_block": block}
            cands.append(Candidate(f"resample-{minutes}m", table, note=f"{block:g} gaps"))
    from llmtraffic.config.workload import (
        BatchArrivals,
        MmppArrivals,
        PoissonArrivals,
        ResampleArrivals,
    )

    for cand in cands:
        per_seed = []
        for s in range(SEEDS):
            rng = np.random.default_rng([seed, s])
            cfg = cand.config
            if cfg["kind"] == "poisson":
                pc = PoissonArrivals.model_validate(cfg)
                syn = np.cumsum(rng.exponential(1 / pc.rate, int(pc.rate * span * 1.2) + 100))
                syn = syn[syn < span]
            elif cfg["kind"] == "mmpp":
                mc = MmppArrivals.model_validate(cfg)
                syn = _concat(
                    fitted.mmpp_times(np.asarray(mc.rates), np.asarray(mc.matrix()), rng, span)
                )
            elif cfg["kind"] == "batch":
                syn = _concat(fitted.batch_times(BatchArrivals.model_validate(cfg), rng, span))
            else:
                assert gaps is not None
                rc = ResampleArrivals.model_construct(**cfg)
                syn = _concat(fitted.resample_times(gaps, rc.rate, rc.mean_block, rng, span))
            per_seed.append(times_figures(syn, span))
        cand.figures = {k: float(np.mean([f[k] for f in per_seed])) for k in FIGURES}
        cand.errors = {k: error(cand.figures[k], real[k], k) for k in comparable(span)}
    # Of the block lengths, keep the one that does best.
    resampled = [c for c in cands if c.config["kind"] == "resample"]
    if resampled:
        keep = min(resampled, key=lambda c: c.worst)
        cands = [c for c in cands if c.config["kind"] != "resample"]
        keep.name = "resample"
        cands.append(keep)
    passing = [i for i, c in enumerate(cands) if c.worst <= TOLERANCE]
    chosen = passing[0] if passing else min(range(len(cands)), key=lambda i: cands[i].worst)
    return ArrivalChoice(real, cands, chosen, bic, width, bat)


def _concat(chunks: Any) -> np.ndarray:
    parts = list(chunks)
    return np.concatenate(parts) if parts else np.zeros(0)
