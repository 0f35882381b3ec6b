"""Config of the workload: features, their arrival processes and their token sizes."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Annotated, Literal, Self, TypeVar

from pydantic import AfterValidator, Field, model_validator

from llmtraffic.config.base import (
    FiniteDuration,
    FiniteDurationOrZero,
    Model,
    Rate,
    RateOrZero,
)
from llmtraffic.config.levers import Cascade, PromptSplit, ResponseCache, Users
from llmtraffic.config.sessions import Agent, Session
from llmtraffic.config.trace import Trace
from llmtraffic.units import show_number

MAX_TOKENS = 10_000_000
"""Most tokens one request's prompt or output may hold: the largest context window offered
(10M, Llama 4 Scout). A bound keeps token counts, their sums and costs far from int64
overflow; draws of a distribution's tail above it are capped at it (``workload.tokens``)."""

MAX_LOG_SIGMA = 16.0
"""Largest lognormal sigma of token counts: ln(MAX_TOKENS) is about 16, so a wider spread
puts nearly every draw at 1 token or at the cap, which describes no real workload."""


_N = TypeVar("_N", int, float)


def _token_bound(value: _N) -> _N:
    if value > MAX_TOKENS:
        raise ValueError(
            f"must be <= {MAX_TOKENS:,} tokens (the largest context window), got "
            f"{show_number(value)}; give a token count per request"
        )
    return value


def _sigma_bound(value: float) -> float:
    if value > MAX_LOG_SIGMA:
        raise ValueError(
            f"must be <= {MAX_LOG_SIGMA:g}, got {show_number(value)}: ln({MAX_TOKENS:,}) is "
            "about 16, so a wider spread puts nearly every draw at 1 token or at the cap; "
            "give the spread of log(tokens), typically 0.3 to 2"
        )
    return value


TokenCount = Annotated[int, Field(ge=0), AfterValidator(_token_bound)]
"""A whole number of tokens, 0 to ``MAX_TOKENS``."""

TokenSize = Annotated[float, Field(gt=0), AfterValidator(_token_bound)]
"""A (possibly fractional) token count of a distribution, > 0 and at most ``MAX_TOKENS``."""


class PoissonArrivals(Model):
    """Homogeneous Poisson arrivals at a constant rate."""

    kind: Literal["poisson"] = "poisson"
    rate: Rate = Field(description="mean arrival rate, requests per second (or '1200/min')")


class DiurnalArrivals(Model):
    """Non-homogeneous Poisson arrivals following a daily profile, sampled exactly by thinning.

    The rate is ``mean_rate * (1 + a cos(2 pi (h - peak_hour) / 24))`` with
    ``a = (peak_to_trough - 1) / (peak_to_trough + 1)``, where ``h`` is the hour of day; or,
    when ``profile`` is given, ``mean_rate`` times the hourly weights normalised to mean 1.
    """

    kind: Literal["diurnal"] = "diurnal"
    mean_rate: Rate = Field(description="mean over a whole day, requests per second")
    peak_to_trough: float = Field(3.0, ge=1.0, description="ratio of the peak to the lowest rate")
    peak_hour: float = Field(14.0, ge=0.0, lt=24.0, description="hour of day of the peak")
    profile: list[float] | None = Field(
        None, description="24 hourly weights (replaces the sinusoid; scaled to mean 1)"
    )

    @model_validator(mode="after")
    def _check_profile(self) -> Self:
        if self.profile is not None:
            if len(self.profile) != 24:
                raise ValueError(f".profile: must have 24 hourly weights, got {len(self.profile)}")
            for i, weight in enumerate(self.profile):
                if weight < 0:
                    raise ValueError(f".profile[{i}]: weights must be >= 0, got {weight:g}")
            if max(self.profile) <= 0:
                raise ValueError(".profile: weights must not all be zero")
        return self


class BurstyArrivals(Model):
    """Markov-modulated Poisson arrivals: the rate switches between states.

    State ``i`` lasts an exponential time of mean ``mean_durations[i]`` and then moves to the
    next state in turn (an on/off source when two states are given).
    """

    kind: Literal["bursty"] = "bursty"
    rates: list[RateOrZero] = Field(
        description="arrival rate in each state, per second (0 allowed: an off state)"
    )
    mean_durations: list[FiniteDuration] = Field(description="mean time spent in each state (> 0)")

    @model_validator(mode="after")
    def _check_states(self) -> Self:
        if len(self.rates) < 2:
            raise ValueError(".rates: bursty arrivals need at least two states")
        if len(self.rates) != len(self.mean_durations):
            raise ValueError(
                f".mean_durations: 'rates' has {len(self.rates)} states but 'mean_durations' has "
                f"{len(self.mean_durations)}; give one mean duration per state"
            )
        if max(self.rates) <= 0:
            raise ValueError(".rates: at least one state needs a rate > 0")
        return self


MAX_MMPP_STATES = 16
"""Most states of an ``mmpp``: more is a model no trace can identify (``fit`` tries 1 to 4)."""


class MmppArrivals(Model):
    """Markov-modulated Poisson arrivals with k states and any switching between them.

    While the hidden state is ``i``, arrivals are Poisson at ``rates[i]``; the state is a
    continuous-time Markov chain given by its ``generator`` matrix Q (Q[i][j] the rate of
    moving from i to j, each row summing to 0), or by ``mean_durations`` (state i lasts an
    exponential time of that mean, then moves to one of the other states, each equally
    likely). The first state is drawn from the stationary distribution pi, so the mean rate
    is pi . rates from t = 0 (Fischer and Meier-Hellstern, "The MMPP cookbook", 1993).
    """

    kind: Literal["mmpp"] = "mmpp"
    rates: list[RateOrZero] = Field(
        description="arrival rate in each state, per second (0 allowed: an off state)"
    )
    generator: list[list[float]] | None = Field(
        None,
        description="k x k switching rates per second: Q[i][j] >= 0 from state i to j, each "
        "row summing to 0 within 0.1% (give this or mean_durations)",
    )
    mean_durations: list[FiniteDuration] | None = Field(
        None,
        description="mean time in each state; on leaving, the next state is one of the others, "
        "equally likely (give this or generator)",
    )

    @model_validator(mode="after")
    def _check_states(self) -> Self:
        k = len(self.rates)
        if not 1 <= k <= MAX_MMPP_STATES:
            raise ValueError(f".rates: give 1 to {MAX_MMPP_STATES} states, got {k}")
        if max(self.rates) <= 0:
            raise ValueError(".rates: at least one state needs a rate > 0")
        if (self.generator is None) == (self.mean_durations is None):
            raise ValueError(
                "give either 'generator' (the switching-rate matrix) or 'mean_durations', "
                "not both and not neither"
            )
        if self.mean_durations is not None and len(self.mean_durations) != k:
            raise ValueError(
                f".mean_durations: 'rates' has {k} states but 'mean_durations' has "
                f"{len(self.mean_durations)}; give one mean duration per state"
            )
        if self.generator is not None:
            _check_generator(self.generator, k)
        return self

    def matrix(self) -> list[list[float]]:
        """The generator Q (rows sum to 0), from ``generator`` or ``mean_durations``."""
        if self.generator is not None:
            # The diagonal is minus the others' sum exactly (the config's may be rounded).
            q = [list(row) for row in self.generator]
            for i, row in enumerate(q):
                row[i] = -sum(v for j, v in enumerate(row) if j != i)
            return q
        assert self.mean_durations is not None
        k = len(self.rates)
        if k == 1:
            return [[0.0]]
        q = [[0.0] * k for _ in range(k)]
        for i, d in enumerate(self.mean_durations):
            for j in range(k):
                q[i][j] = -1.0 / d if i == j else 1.0 / (d * (k - 1))
        return q


def _check_generator(q: list[list[float]], k: int) -> None:
    """A generator matrix: k x k, finite, off-diagonal >= 0, rows summing to 0, and one
    stationary distribution (all states communicate)."""
    if len(q) != k or any(len(row) != k for row in q):
        raise ValueError(
            f".generator: must be {k} x {k} (one row and one column per state in 'rates')"
        )
    for i, row in enumerate(q):
        for j, v in enumerate(row):
            if i != j and v < 0:
                raise ValueError(f".generator[{i}][{j}]: switching rates must be >= 0, got {v:g}")
        off = sum(v for j, v in enumerate(row) if j != i)
        # Rounded figures are accepted (the diagonal used is minus the others' sum).
        if abs(row[i] + off) > 1e-3 * off or (off == 0 and row[i] != 0):
            raise ValueError(
                f".generator[{i}][{i}]: each row must sum to 0: the diagonal must be minus the "
                f"sum of the row's other entries ({-off:g}), got {row[i]:g}"
            )
    if not _communicate(q):
        raise ValueError(
            ".generator: the states must all reach each other (one stationary distribution); "
            "add switching rates between the groups of states"
        )


def _communicate(q: list[list[float]]) -> bool:
    """Whether every state reaches every other through positive switching rates."""
    k = len(q)

    def reach(edge: Callable[[int, int], bool]) -> set[int]:
        seen, todo = {0}, [0]
        while todo:
            i = todo.pop()
            for j in range(k):
                if j not in seen and edge(i, j):
                    seen.add(j)
                    todo.append(j)
        return seen

    return len(reach(lambda i, j: q[i][j] > 0)) == k == len(reach(lambda i, j: q[j][i] > 0))


class BatchArrivals(Model):
    """Batch (compound) arrivals: batches come as a Poisson process at ``rate`` or every
    ``period`` seconds, and each batch brings a random number of requests that share its
    timestamp (or are spread uniformly over ``jitter`` seconds after it).

    Sizes are geometric with mean ``mean_size`` (P(B = n) = (1 - p)^(n - 1) p, p = 1 /
    mean_size), or drawn with the weights ``sizes`` for 1, 2, 3, ... requests. Poisson
    batches have index of dispersion E[B^2] / E[B] at every window (batch Poisson process).
    """

    kind: Literal["batch"] = "batch"
    rate: Rate | None = Field(None, description="batches per second, Poisson (give this or period)")
    period: FiniteDuration | None = Field(
        None, description="one batch every this many seconds (give this or rate)"
    )
    mean_size: float | None = Field(
        None, ge=1.0, description="mean requests per batch, geometric sizes (or give sizes)"
    )
    sizes: list[float] | None = Field(
        None,
        min_length=1,
        description="weights of batches of 1, 2, 3, ... requests (scaled to sum to 1)",
    )
    jitter: FiniteDurationOrZero = Field(
        0.0, description="spread a batch's requests uniformly over this many seconds (0: same time)"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.rate is None) == (self.period is None):
            raise ValueError("give either 'rate' (Poisson batches) or 'period', not both")
        if (self.mean_size is None) == (self.sizes is None):
            raise ValueError("give either 'mean_size' (geometric sizes) or 'sizes', not both")
        if self.mean_size is not None and not self.mean_size < 1e6:
            raise ValueError(
                ".mean_size: must be < 1,000,000 requests a batch, got "
                f"{show_number(self.mean_size)}"
            )
        if self.sizes is not None:
            for i, w in enumerate(self.sizes):
                if w < 0:
                    raise ValueError(f".sizes[{i}]: weights must be >= 0, got {w:g}")
            if max(self.sizes) <= 0:
                raise ValueError(".sizes: weights must not all be zero")
        return self

    def size_moments(self) -> tuple[float, float]:
        """E[B] and E[B^2] of the batch size."""
        if self.mean_size is not None:
            p = 1.0 / self.mean_size
            return self.mean_size, (2.0 - p) / (p * p)
        assert self.sizes is not None
        total = sum(self.sizes)
        mean = sum((n + 1) * w for n, w in enumerate(self.sizes)) / total
        square = sum((n + 1) ** 2 * w for n, w in enumerate(self.sizes)) / total
        return mean, square

    def batch_rate(self) -> float:
        """Batches per second."""
        if self.rate is not None:
            return self.rate
        assert self.period is not None
        return 1.0 / self.period


class ResampleArrivals(Model):
    """Arrivals that replay a trace's inter-arrival gaps in blocks, at a new mean rate.

    A stationary block bootstrap (Politis and Romano 1994; blocks after Kunsch 1989): blocks
    of consecutive gaps start at uniformly random positions of the trace (wrapping around at
    its end) and have geometric lengths of mean ``mean_block`` gaps; every gap is multiplied
    by (trace's mean rate / ``rate``). The gaps keep their distribution (and the trace's
    bursts within a block); the trace is read when the run starts.
    """

    kind: Literal["resample"] = "resample"
    trace: Trace = Field(description="the request log whose gaps are replayed (its columns)")
    rate: Rate = Field(description="mean arrival rate of the replayed gaps, per second")
    mean_block: float = Field(
        1000.0,
        ge=1.0,
        le=1e9,
        description="mean block length, in gaps (long blocks keep slow bursts; 1: gaps drawn "
        "independently)",
    )


class RampArrivals(Model):
    """Poisson arrivals whose rate moves linearly from ``start_rate`` to ``end_rate``."""

    kind: Literal["ramp"] = "ramp"
    start_rate: float = Field(ge=0.0, description="rate at t=0, per second")
    end_rate: float = Field(ge=0.0, description="rate at the end of the run, per second")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.start_rate == 0 and self.end_rate == 0:
            raise ValueError(".end_rate: start_rate and end_rate cannot both be 0")
        return self


class DauArrivals(Model):
    """Daily-active-users form: ``users * requests_per_user`` requests a day.

    Poisson at the daily mean when ``peak_to_trough`` is 1, otherwise diurnal.
    """

    kind: Literal["dau"] = "dau"
    users: float = Field(gt=0, description="daily active users")
    requests_per_user: float = Field(gt=0, description="requests per user per day")
    peak_to_trough: float = Field(
        1.0, ge=1.0, description="ratio of the peak to the lowest rate (1: a constant rate)"
    )
    peak_hour: float = Field(14.0, ge=0.0, lt=24.0, description="hour of day of the peak")


class ExplicitArrivals(Model):
    """Arrivals at the listed times (seconds from the start): small exact cases and examples."""

    kind: Literal["times"] = "times"
    at: list[float] = Field(description="arrival times in seconds, sorted, each >= 0")

    @model_validator(mode="after")
    def _check(self) -> Self:
        for i, t in enumerate(self.at):
            if t < 0:
                raise ValueError(f".at[{i}]: arrival times must be >= 0, got {t:g}")
        for i, (a, b) in enumerate(itertools.pairwise(self.at), start=1):
            if b < a:
                raise ValueError(
                    f".at[{i}]: arrival times must be sorted in increasing order; "
                    f"{b:g} comes after {a:g}"
                )
        return self


Arrivals = Annotated[
    PoissonArrivals
    | DiurnalArrivals
    | BurstyArrivals
    | MmppArrivals
    | BatchArrivals
    | ResampleArrivals
    | RampArrivals
    | DauArrivals
    | ExplicitArrivals,
    Field(discriminator="kind"),
]


class FixedTokens(Model):
    """Every request has the same number of tokens."""

    kind: Literal["fixed"] = "fixed"
    value: TokenCount = Field(description="tokens of every request, 0 to 10,000,000")


class UniformTokens(Model):
    """Token counts uniform on the integers ``low..high`` (both included)."""

    kind: Literal["uniform"] = "uniform"
    low: TokenCount = Field(description="fewest tokens, 0 to 10,000,000")
    high: TokenCount = Field(description="most tokens, low to 10,000,000")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.high < self.low:
            raise ValueError(f".high: must be >= low ({self.low}), got {self.high}")
        return self


class LognormalTokens(Model):
    """Lognormal token counts, given (median, p99) or (mean, sigma); rounded, at least 1."""

    kind: Literal["lognormal"] = "lognormal"
    median: TokenSize | None = Field(None, description="median tokens, up to 10,000,000")
    p99: TokenSize | None = Field(
        None, description="99th percentile of tokens, above the median, up to 10,000,000"
    )
    mean: TokenSize | None = Field(None, description="mean tokens, up to 10,000,000")
    sigma: Annotated[float, AfterValidator(_sigma_bound)] | None = Field(
        None, gt=0, description="standard deviation of log(tokens), at most 16"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        by_quantiles = self.median is not None or self.p99 is not None
        by_moments = self.mean is not None or self.sigma is not None
        if by_quantiles and by_moments:
            raise ValueError("give either (median, p99) or (mean, sigma), not both")
        if by_quantiles:
            if self.median is None or self.p99 is None:
                raise ValueError("lognormal by quantiles needs both 'median' and 'p99'")
            if self.p99 <= self.median:
                raise ValueError(f".p99: must be > median ({self.median:g}), got {self.p99:g}")
        elif by_moments:
            if self.mean is None or self.sigma is None:
                raise ValueError("lognormal by moments needs both 'mean' and 'sigma'")
        else:
            raise ValueError("lognormal needs (median, p99) or (mean, sigma)")
        return self


class EmpiricalTokens(Model):
    """Token counts drawn from a measured distribution given by evenly spaced quantiles.

    ``quantiles[0]`` is the minimum and ``quantiles[-1]`` the maximum; with 101 values they are
    the percentiles p0..p100. A draw picks a uniform probability and interpolates linearly
    between the neighbouring quantiles (inverse-CDF sampling), then rounds. ``llmtraffic fit``
    writes these when a lognormal does not fit a trace's column.
    """

    kind: Literal["empirical"] = "empirical"
    quantiles: list[float] = Field(
        min_length=2,
        description="evenly spaced quantiles, from the minimum to the maximum; each 0 to "
        "10,000,000 tokens",
    )
    levels: list[float] | None = Field(
        None,
        description="the probability of each quantile, from 0 to 1, increasing (default: "
        "evenly spaced); finer levels near 1 keep a long tail",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        for i, q in enumerate(self.quantiles):
            if q < 0:
                raise ValueError(f".quantiles[{i}]: quantiles must be >= 0, got {q:g}")
            if q > MAX_TOKENS:
                raise ValueError(
                    f".quantiles[{i}]: quantiles must be <= {MAX_TOKENS:,} tokens (the largest "
                    f"context window), got {show_number(q)}"
                )
        for i, (a, b) in enumerate(itertools.pairwise(self.quantiles), start=1):
            if b < a:
                raise ValueError(
                    f".quantiles[{i}]: quantiles must be in increasing order; {b:g} comes "
                    f"after {a:g}"
                )
        if self.levels is not None:
            _check_levels(self.levels, len(self.quantiles))
        return self

    def grid(self) -> list[float]:
        """The probability of each quantile: ``levels``, or evenly spaced from 0 to 1."""
        if self.levels is not None:
            return list(self.levels)
        n = len(self.quantiles)
        return [i / (n - 1) for i in range(n)]


def _check_levels(levels: list[float], n: int) -> None:
    if len(levels) != n:
        raise ValueError(
            f".levels: 'quantiles' has {n} values but 'levels' has {len(levels)}; give one "
            "probability per quantile"
        )
    if levels[0] != 0.0 or levels[-1] != 1.0:
        raise ValueError(
            f".levels: must start at 0 (the minimum) and end at 1 (the maximum), got "
            f"{levels[0]:g} .. {levels[-1]:g}"
        )
    for i, (a, b) in enumerate(itertools.pairwise(levels), start=1):
        if not b > a:
            raise ValueError(
                f".levels[{i}]: levels must be strictly increasing; {b:g} comes after {a:g}"
            )


TokenDist = Annotated[
    FixedTokens | UniformTokens | LognormalTokens | EmpiricalTokens, Field(discriminator="kind")
]


class Slo(Model):
    """Latency objectives of a feature's requests, as GuideLLM and inference-perf define them:
    a request meets its SLO when it succeeds and each bound given holds; a failed request
    misses. Times are the user's: from the request's arrival, retries included."""

    ttft: FiniteDuration | None = Field(
        None, description="time to first token: arrival to the first token the user sees"
    )
    tpot: FiniteDuration | None = Field(
        None, description="time per output token after the first (the decode pace)"
    )
    e2e: FiniteDuration | None = Field(
        None, description="end-to-end latency: arrival to the last token"
    )

    @model_validator(mode="after")
    def _some_bound(self) -> Self:
        if self.ttft is None and self.tpot is None and self.e2e is None:
            raise ValueError("an slo needs at least one of ttft, tpot, e2e (seconds)")
        return self


class Feature(Model):
    """A stream of requests with its own arrivals, token sizes, provider and client policy.

    Arrivals and token sizes come from distributions (``arrivals``, ``input_tokens``,
    ``output_tokens``) or from a request log (``trace``, docs/traces.md), not both.
    """

    provider: str = Field(description="name of the provider entry that serves this feature")
    policy: str | None = Field(
        None, description="name of a [policies] entry; may be omitted when only one is defined"
    )
    arrivals: Arrivals | None = Field(
        None, description="arrival process (required unless a trace is given)"
    )
    input_tokens: TokenDist | None = Field(
        None, description="prompt tokens per request (required unless a trace is given)"
    )
    output_tokens: TokenDist | None = Field(
        None,
        description="tokens the model generates, capped by max_tokens (required unless a "
        "trace is given)",
    )
    trace: Trace | None = Field(
        None, description="replay a request log: arrival times and token counts from a file"
    )
    rag_tokens: TokenDist | None = Field(
        None, description="retrieved context added to the prompt (the RAG add-on)"
    )
    cached_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="share of input tokens billed at the cached-input price"
    )
    system_prompt_tokens: Annotated[int, Field(ge=0), AfterValidator(_token_bound)] = Field(
        0,
        description="a system prompt shared by every request of the feature, added at the "
        "start of each prompt: the prefix a provider's prompt_cache can match",
    )
    reasoning_tokens: TokenDist | None = Field(
        None,
        description="reasoning (thinking) tokens per request: generated before the answer, "
        "billed as output and decoded like it, not part of the visible answer; with the "
        "answer, capped by max_tokens",
    )
    max_tokens: Annotated[int, Field(gt=0), AfterValidator(_token_bound)] = Field(
        1024, description="max_tokens sent with each attempt, 1 to 10,000,000"
    )
    value_per_success: float | None = Field(
        None, ge=0.0, description="business value of one successful request, USD (for ROI)"
    )
    stream: bool = Field(
        False,
        description="streamed responses (the SDKs' stream=True): tokens reach the user as "
        "generated, so the first token comes before the end; false (the SDKs' default): "
        "the whole answer at once",
    )
    slo: Slo | None = Field(
        None, description="latency objectives: SLO attainment and goodput within them"
    )
    session: Session | None = Field(
        None,
        description="closed-loop chat sessions: arrivals are sessions, input_tokens each "
        "turn's new tokens, and each turn waits for the previous one (docs/workload.md)",
    )
    agent: Agent | None = Field(
        None,
        description="closed-loop agent tasks: arrivals are tasks, input_tokens each call's "
        "new tokens (a tool's result), and each call waits for the previous one and its tool",
    )
    cascade: Cascade | None = Field(
        None,
        description="a model cascade: cheap model first, escalate answers judged not good "
        "enough (docs/policies.md, 'Cost levers')",
    )
    split: PromptSplit | None = Field(
        None, description="route prompts below a size to another provider (a static split)"
    )
    response_cache: ResponseCache | None = Field(
        None, description="a response cache in front of the provider: hits cost nothing"
    )
    users: Users | None = Field(
        None, description="the feature's user population (per-user spend caps need it)"
    )

    @property
    def levers(self) -> bool:
        """Whether the feature uses a cascade, a split or a response cache (the client that
        runs them is chosen at construction; spend caps are in the scenario's spend_caps)."""
        return self.cascade is not None or self.split is not None or self.response_cache is not None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        keys = ("arrivals", "input_tokens", "output_tokens")
        if self.trace is None:
            missing = [k for k in keys if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    "\n".join(f".{k}: missing required key (or give a trace)" for k in missing)
                )
        else:
            extra = [k for k in keys if getattr(self, k) is not None]
            if extra:
                raise ValueError(
                    "\n".join(
                        f".{k}: not allowed with a trace (the trace gives arrival times and "
                        "token counts); remove it, or remove the trace"
                        for k in extra
                    )
                )
        closed = [k for k in ("session", "agent") if getattr(self, k) is not None]
        if len(closed) == 2:
            raise ValueError(
                ".agent: a feature is chat sessions or agent tasks, not both; remove session "
                "or agent (or make two features)"
            )
        if closed and self.trace is not None:
            raise ValueError(
                f".{closed[0]}: not allowed with a trace (a trace's rows are independent "
                f"requests, not turns of a conversation); remove {closed[0]}, or the trace"
            )
        if closed and self.system_prompt_tokens:
            raise ValueError(
                f".system_prompt_tokens: a conversation's system prompt is "
                f"{closed[0]}.system_tokens (every turn starts with it); move it there"
            )
        if closed and self.reasoning_tokens is not None:
            raise ValueError(
                f".reasoning_tokens: not modelled for {closed[0]} turns yet; remove it, or "
                "give the turns' output_tokens the reasoning they generate"
            )
        return self
