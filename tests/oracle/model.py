"""The oracle: llmtraffic's model semantics as plain SimPy processes (tests only).

One process per request walks it through the client's gates, sends its attempts, waits for
their outcomes and for its retry waits; one process per attempt the provider admits waits for
a serving slot and serves it. State lives in small explicit objects (token buckets, a breaker,
a throttle, a budget, a pacer, the slots). The rules are read from docs/providers.md,
docs/billing.md, docs/policies.md and the config models, including those issue 11 changed:

- a half-open breaker permit, a throttle count, a retry taken from the budget and a pacing
  reservation are given back when the attempt they were given for never goes out (a later gate
  refuses it, or its request ends while it waits);
- an attempt the client abandoned while the provider keeps running it is billed for what the
  provider runs (its full output when it completes, up to the failure point when it fails
  mid-stream); ``billing.timeout`` otherwise applies to work the provider stops at the
  disconnect, and work dropped from the queue unserved costs nothing;
- partial billing counts generated tokens only: none before the first token;
- rate limits: rejected attempts are not charged unless ``count_rejected``; TPM charges
  max(input, max_tokens), ITPM the input without cache reads, OTPM the output generated when
  the attempt ends (admission only needs the bucket out of debt);
- a provider without a ``capacity`` table is not capacity-limited;
- retry layers (issue 14): each layer around the policy retries what the layer below gave up
  on, with its own counter, and its timeout bounds each call to the layer below (attempts,
  waits and local gate waits included).

Randomness: arrival times and token sizes are drawn exactly as the engine documents them
(named streams from one root seed, style.md principle 2 and the engine's streams: the stream
of a name is ``SeedSequence(seed, spawn_key=(crc32(name),))``), so that both see the same traffic
and per-request comparisons are possible. Everything else (service noise, error coins,
mid-stream points, jitter, throttle coins) comes from the oracle's own generator: compared with
the engine statistically, never draw by draw.

It does not import the engine's client, provider, workload or results modules.
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import simpy

from llmtraffic.config.policy import (
    Breaker,
    ClientRateLimit,
    EnvoyBudget,
    ExponentialRetry,
    FinagleBudget,
    FixedRetry,
    Layer,
    NaiveRetry,
    NoRetry,
    Policy,
    RandomExponentialRetry,
    Throttle,
    TokenBucketBudget,
)
from llmtraffic.config.provider import (
    Brownout,
    CapacityDrop,
    DeterministicService,
    ExponentialService,
    LatencySpike,
    LognormalService,
    Outage,
    Provider,
    RateLimit,
    RateLimitChange,
    TokenService,
    UniformService,
)
from llmtraffic.config.scenario import Scenario
from llmtraffic.config.workload import (
    ExplicitArrivals,
    Feature,
    FixedTokens,
    PoissonArrivals,
    TokenDist,
    UniformTokens,
)

MINUTE = 60.0
DAY = 86_400.0
INF = math.inf
NAN = math.nan
ProcessGen = Generator[simpy.Event, Any, Any]

# Attempt statuses and request outcomes, as docs/records.md names them.
OK = "ok"
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
OVERLOADED = "overloaded"
TIMEOUT = "timeout"
MIDSTREAM_ERROR = "midstream_error"
EXHAUSTED = "exhausted"
DEADLINE = "deadline"
REJECTED_BREAKER = "rejected_breaker"
REJECTED_BUDGET = "rejected_budget"
REJECTED_THROTTLE = "rejected_throttle"
NON_RETRYABLE = "non_retryable"
UNFINISHED = "unfinished"


# Traffic ----------------------------------------------------------------------------------------


def named_generator(seed: int, name: str) -> np.random.Generator:
    """The engine's documented stream of ``name`` under root ``seed`` (see module docstring)."""
    key = zlib.crc32(name.encode("utf-8"))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(key,))))


ARRIVAL_CHUNK = (
    8192  # Poisson gaps are drawn in chunks of this many (the engine's documented batch)
)


def arrival_chunks(cfg: Any, rng: np.random.Generator, horizon: float) -> Iterator[list[float]]:
    """Arrival times in [0, horizon), chunk by chunk (token sizes are drawn per chunk)."""
    if isinstance(cfg, ExplicitArrivals):
        yield list(cfg.at)
        return
    if isinstance(cfg, PoissonArrivals):
        # A Poisson process: independent exponential gaps of mean 1 / rate.
        t = 0.0
        while True:
            times = (t + np.cumsum(rng.exponential(1.0 / cfg.rate, ARRIVAL_CHUNK))).tolist()
            inside = [x for x in times if x < horizon]
            yield inside
            if len(inside) < len(times):
                return
            t = times[-1]
    raise NotImplementedError(f"the oracle models poisson and times arrivals, not {cfg.kind}")


def draw_tokens(cfg: TokenDist, rng: np.random.Generator, n: int) -> list[int]:
    """``n`` token counts."""
    if isinstance(cfg, FixedTokens):
        return [cfg.value] * n
    if isinstance(cfg, UniformTokens):
        return [int(x) for x in rng.integers(cfg.low, cfg.high + 1, n)]
    raise NotImplementedError(f"the oracle models fixed and uniform tokens, not {cfg.kind}")


@dataclass
class OracleAttempt:
    """One attempt as the client saw it."""

    feature: str
    request: int  # index of the request within its feature, in arrival order
    number: int
    provider: str
    send: float
    end: float = NAN  # when the client saw the outcome
    start: float = NAN  # when a slot took it
    status: str = OK
    http_status: int = 200
    retry_after: float = NAN
    generated: int = 0
    cost: float = 0.0  # everything the provider billed for it, whenever it was billed
    abandon_at: float = INF  # when the client gives up on it
    cached: int = -1  # prompt-cache reads when its provider has a prompt cache (-1: none)
    written: int = 0  # prompt-cache writes billed at the write price (Anthropic)


@dataclass
class OracleRequest:
    """One request and its one terminal outcome."""

    feature: str
    index: int  # within its feature, in arrival order
    arrival: float
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    deadline_at: float
    outcome: str = ""
    end: float = NAN
    attempts: list[OracleAttempt] = field(default_factory=list)
    useful: float = 0.0
    layers: Any = None  # its ``Layers`` when the policy has retry layers

    @property
    def billed(self) -> float:
        """Everything billed for its attempts."""
        return sum(a.cost for a in self.attempts)

    @property
    def latency(self) -> float:
        """end - arrival."""
        return self.end - self.arrival


@dataclass
class OracleResult:
    """Every request, in (feature, arrival) order."""

    requests: list[OracleRequest]

    @property
    def billed(self) -> float:
        """Total billed cost."""
        return sum(r.billed for r in self.requests)


# Provider ---------------------------------------------------------------------------------------


class ContinuousBucket:
    """A bucket of ``span`` seconds' worth (one minute unless the limit is enforced over a
    shorter window, or a day for a daily limit), refilled continuously at limit / 60 per
    second.

    Kept as the time ``full_at`` at which it is full again (the generic cell rate algorithm,
    which docs/providers.md names): the level at ``now`` is ``capacity - (full_at - now) *
    rate`` while ``full_at > now``. Written in time rather than in tokens on purpose: a client
    that paces itself exactly at the provider's limit sends each attempt at the very instant
    the bucket holds it, and only the same arithmetic on both sides keeps that instant exact.
    The level may go negative when rejected attempts are charged, down to minus one window's
    worth (docs/providers.md, "Rejected attempts count").
    """

    def __init__(self, per_minute: float, span: float = MINUTE, capacity: float = 0.0) -> None:
        self.span = span
        # A window's share of the limit (exactly the limit over a minute), or given (a day's).
        self.base = capacity or (per_minute if span == MINUTE else per_minute * span / MINUTE)
        self.capacity = self.base
        self.full_at = 0.0

    def seconds_per_unit(self) -> float:
        """Refill time of one unit."""
        return self.span / self.capacity

    def level_at(self, now: float) -> float:
        """The level at ``now``."""
        owed = max(0.0, self.full_at - now)
        return self.capacity - owed / self.seconds_per_unit()

    def can_pay(self, cost: float, now: float) -> bool:
        """Whether ``cost`` fits now: what is owed after paying it refills within a window."""
        return max(self.full_at, now) + cost * self.seconds_per_unit() <= now + self.span

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` fits; inf when it never can."""
        if cost > self.capacity:
            return INF
        return max(0.0, self.full_at + cost * self.seconds_per_unit() - self.span - now)

    def charge(self, cost: float, now: float) -> None:
        """Take ``cost`` (down to a debt of one window's worth)."""
        owed_until = max(self.full_at, now) + cost * self.seconds_per_unit()
        self.full_at = min(owed_until, now + 2 * self.span)

    def scale(self, factor: float, now: float) -> None:
        """The limit becomes ``factor`` times the configured one; the level is kept (capped)."""
        level = min(self.level_at(now), self.base * factor)
        self.capacity = self.base * factor
        self.full_at = now + (self.capacity - level) * self.seconds_per_unit()


class WindowBucket:
    """Usage counted in fixed windows [start + span k, start + span (k + 1)): one minute
    unless enforced over a shorter window, or a day for a daily limit."""

    def __init__(
        self, per_minute: float, span: float = MINUTE, start: float = 0.0, capacity: float = 0.0
    ) -> None:
        self.span = span
        self.start = start
        self.base = capacity or (per_minute if span == MINUTE else per_minute * span / MINUTE)
        self.capacity = self.base
        self.window = int((0.0 - start) // span)
        self.used = 0.0

    def settle(self, now: float) -> None:
        """Start the window ``now`` falls in."""
        w = int((now - self.start) // self.span)
        if w != self.window:
            self.window = w
            self.used = 0.0

    def can_pay(self, cost: float, now: float) -> bool:
        """Whether ``cost`` fits in this window."""
        self.settle(now)
        return self.used + cost <= self.capacity

    def wait_for(self, cost: float, now: float) -> float:
        """0 when it fits, else until the next window; inf when it never can."""
        if cost > self.capacity:
            return INF
        if self.can_pay(cost, now):
            return 0.0
        return self.start + (self.window + 1) * self.span - now

    def charge(self, cost: float, now: float) -> None:
        """Count ``cost`` in this window."""
        self.settle(now)
        self.used += cost

    def scale(self, factor: float, now: float) -> None:
        """The limit becomes ``factor`` times the configured one."""
        self.settle(now)
        self.capacity = self.base * factor


class Limits:
    """A provider's rate limits: what each attempt costs in each bucket, and the 429s."""

    def __init__(self, cfg: RateLimit) -> None:
        windowed = cfg.refill == "window"
        self.buckets: list[tuple[str, ContinuousBucket | WindowBucket]] = []
        for what, limit in (
            ("rpm", cfg.rpm),
            ("tpm", cfg.tpm),
            ("itpm", cfg.itpm),
            ("otpm", cfg.otpm),
        ):
            if limit:
                span = cfg.rpm_window if what == "rpm" and cfg.rpm_window else cfg.window
                bucket = WindowBucket(limit, span) if windowed else ContinuousBucket(limit, span)
                self.buckets.append((what, bucket))
        for what, limit in (("rpd", cfg.rpd), ("tpd", cfg.tpd)):
            if limit:
                # A day's limit, over a day: reset at day_starts_at + 24 h k, or refilled.
                per_minute = limit * MINUTE / DAY
                daily: ContinuousBucket | WindowBucket = (
                    WindowBucket(per_minute, DAY, cfg.day_starts_at, capacity=limit)
                    if cfg.daily_refill == "window"
                    else ContinuousBucket(per_minute, DAY, capacity=limit)
                )
                self.buckets.append((what, daily))
        self.count_rejected = cfg.count_rejected
        self.cache_reads_count = cfg.cache_reads_count
        self.tpm_sum = cfg.tpm_counts == "sum"
        self.resolution = cfg.retry_after_resolution

    def cost(self, what: str, req: OracleRequest, max_tokens: int) -> float:
        """What an attempt costs in the bucket ``what`` at admission (docs/providers.md,
        "What counts"): RPM and RPD one; TPM and TPD the larger of input and max_tokens (their
        sum for Azure); ITPM the input without cache reads (unless they count); OTPM nothing
        (the output is charged as it is generated, and admission only needs the bucket out of
        debt)."""
        if what in ("rpm", "rpd"):
            return 1.0
        if what in ("tpm", "tpd"):
            if self.tpm_sum:
                return float(req.input_tokens + max_tokens)
            return float(max(req.input_tokens, max_tokens))
        if what == "itpm":
            cached = 0 if self.cache_reads_count else req.cached_tokens
            return float(req.input_tokens - cached)
        return 0.0

    def admit(self, now: float, req: OracleRequest, max_tokens: int) -> float | None:
        """None when admitted (and charged); else the 429's retry_after (NaN: never)."""
        costs = [(b, self.cost(w, req, max_tokens)) for w, b in self.buckets]
        if all(b.can_pay(c, now) for b, c in costs):
            for b, c in costs:
                b.charge(c, now)
            return None
        if self.count_rejected:
            for b, c in costs:
                b.charge(c, now)
        wait = max(b.wait_for(c, now) for b, c in costs)
        if math.isinf(wait):
            return NAN
        if self.resolution > 0:
            # Headers carry whole units: rounded up (the 1e-9 forgives float noise).
            wait = math.ceil(wait / self.resolution - 1e-9) * self.resolution
        return wait

    def charge_output(self, generated: int, now: float) -> None:
        """OTPM counts the output an attempt generated, when it ends at the provider."""
        for what, b in self.buckets:
            if what == "otpm" and generated > 0:
                b.charge(float(generated), now)

    def scale(self, factor: float, now: float) -> None:
        """Every limit times ``factor`` (1 restores them)."""
        for _, b in self.buckets:
            b.scale(factor, now)


class Slots:
    """Serving slots with a FIFO queue of attempts waiting for one."""

    def __init__(self, env: simpy.Environment, limit: int) -> None:
        self.env = env
        self.limit = limit
        self.busy = 0
        self.waiting: deque[tuple[Job, simpy.Event]] = deque()

    def free(self) -> bool:
        """Whether an attempt arriving now starts at once."""
        return self.busy < self.limit

    def take(self, job: Job) -> simpy.Event:
        """An event that fires when ``job`` holds a slot (at once when one is free)."""
        granted = self.env.event()
        self.waiting.append((job, granted))
        self._grant()
        return granted

    def withdraw(self, job: Job) -> None:
        """``job`` leaves the queue without being served."""
        self.waiting = deque((j, e) for j, e in self.waiting if j is not job)

    def release(self) -> None:
        """A slot is free again: the longest-waiting attempt takes it."""
        self.busy -= 1
        self._grant()

    def set_limit(self, limit: int) -> None:
        """Fewer slots stop nobody in service; more start queued attempts."""
        self.limit = limit
        self._grant()

    def _grant(self) -> None:
        while self.waiting and self.busy < self.limit:
            job, granted = self.waiting.popleft()
            self.busy += 1
            job.start = self.env.now
            granted.succeed()


@dataclass
class Work:
    """What the provider will run for an admitted attempt, before any latency spike."""

    fails: bool  # fails mid-stream after ``made`` tokens
    made: int  # output tokens it generates if run to its end
    first: float  # time to the first token
    decode: float  # time from the first token to the end

    def generated_by(self, elapsed: float, slowdown: float) -> int:
        """Output generated ``elapsed`` seconds into service (docs/billing.md, "Tokens
        generated by a time"): none before the first token, then at an even pace."""
        first, end = self.first * slowdown, (self.first + self.decode) * slowdown
        if elapsed <= first:
            return 0
        if elapsed >= end or end <= first:
            return self.made
        return math.floor(self.made * (elapsed - first) / (end - first))


@dataclass
class Job:
    """What the provider knows of an attempt it admitted."""

    attempt: OracleAttempt
    req: OracleRequest
    client: OracleClient
    abandon_at: float
    seen: simpy.Event  # fires when the client sees the outcome
    work: Work
    start: float = NAN
    gone: bool = False  # the client has abandoned it


class OracleProvider:
    """One provider: rate limits, fast errors, slots, service, incidents and billing."""

    def __init__(self, name: str, cfg: Provider, env: simpy.Environment, rng: np.random.Generator):
        self.name = name
        self.cfg = cfg
        self.env = env
        self.rng = rng
        p = cfg.prices
        # A service tier multiplies the standard prices (docs/billing.md).
        tier = None if cfg.service_tier == "standard" else getattr(p, cfg.service_tier)
        f_in = tier.input / p.input if tier is not None and p.input else 1.0
        f_out = tier.output / p.output if tier is not None and p.output else 1.0
        self.p_in = p.input * f_in * 1e-6
        self.p_cached = (p.cached_input if p.cached_input is not None else p.input) * f_in * 1e-6
        self.p_out = p.output * f_out * 1e-6
        # The prompt cache (docs/billing.md, "Prompt caching"): feature -> (expires, tokens).
        self.prompt_cache = cfg.prompt_cache
        self.entries: dict[str, tuple[float, int]] = {}
        self.system_prompt: dict[str, int] = {}  # per feature, filled in by Oracle
        anthropic = self.prompt_cache is not None and self.prompt_cache.rules == "anthropic"
        self.bills_writes = anthropic
        if anthropic and self.prompt_cache is not None and self.prompt_cache.ttl == 3600.0:
            write = p.cache_write_1h if p.cache_write_1h is not None else 2 * p.input
        elif anthropic:
            write = p.cache_write if p.cache_write is not None else 1.25 * p.input
        else:
            write = p.input
        self.p_write = write * f_in * 1e-6
        self.long_context = p.long_context
        self.limits = Limits(cfg.rate_limit) if cfg.rate_limit is not None else None
        cap = cfg.capacity
        # Without a capacity table the provider is not capacity-limited (docs/providers.md).
        self.slots = Slots(env, cap.slots if cap is not None else 10**12)
        q = cap.queue_limit if cap is not None else 0
        self.queue_limit = INF if q == "unbounded" else float(q)
        self.overload_status = cap.overload_status if cap is not None else 529
        f = cfg.failures
        # Error kinds (issue 14) are kept out of the generated scenarios: tested on hand-computed
        # cases and by the invariants instead (tests/test_error_kinds.py).
        if f.errors or f.error_should_retry is not None or cfg.quota is not None:
            raise NotImplementedError("the oracle does not model error kinds or quotas")
        if isinstance(cfg.context_window, int):
            raise NotImplementedError("the oracle does not model context windows")
        self.error_rate = f.error_rate
        self.error_status = f.error_status
        self.midstream_rate = f.midstream_rate
        self.outage_status = 0
        self.slowdown = 1.0
        for inc in cfg.incidents:
            env.process(self._incident(inc))

    def price(
        self,
        req: OracleRequest,
        output_tokens: int,
        started: bool = True,
        att: OracleAttempt | None = None,
    ) -> float:
        """USD for the request's input (once processing started) and ``output_tokens``: the
        cached and written tokens of ``att`` when its provider has a prompt cache, and the
        whole request at the long-context prices when its input is above their threshold."""
        if not started:
            return 0.0
        cached, written = req.cached_tokens, 0
        if att is not None and att.cached >= 0:
            cached, written = att.cached, att.written
        p_in, p_cached, p_write, p_out = self.p_in, self.p_cached, self.p_write, self.p_out
        lc = self.long_context
        if lc is not None and req.input_tokens > lc.above:
            base = self.cfg.prices
            scale_in, scale_out = self.p_in / (base.input * 1e-6), self.p_out / (base.output * 1e-6)
            plain_cached = base.cached_input if base.cached_input is not None else base.input
            lc_cached = (
                lc.cached_input
                if lc.cached_input is not None
                else plain_cached * lc.input / base.input
            )
            p_in = lc.input * scale_in * 1e-6
            p_cached = lc_cached * scale_in * 1e-6
            p_write = self.p_write * lc.input / base.input
            p_out = lc.output * scale_out * 1e-6
        return (
            (req.input_tokens - cached - written) * p_in
            + written * p_write
            + cached * p_cached
            + output_tokens * p_out
        )

    def cache_match(self, req: OracleRequest) -> int:
        """Tokens of ``req``'s feature's system prompt that a live cache entry holds."""
        cfg = self.prompt_cache
        assert cfg is not None and cfg.min_tokens is not None and cfg.increment is not None
        system = self.system_prompt.get(req.feature, 0)
        entry = self.entries.get(req.feature)
        if not system or entry is None or self.env.now >= entry[0]:
            return 0
        tokens = min(system, entry[1])
        if tokens < cfg.min_tokens:
            return 0
        return cfg.min_tokens + (tokens - cfg.min_tokens) // cfg.increment * cfg.increment

    def cache_accept(self, req: OracleRequest, att: OracleAttempt, matched: int) -> None:
        """The provider accepted ``att``: it reads ``matched`` tokens, writes the rest of the
        system prompt (Anthropic bills it), and the entry lives ``ttl`` from now."""
        cfg = self.prompt_cache
        assert cfg is not None and cfg.min_tokens is not None
        system = self.system_prompt.get(req.feature, 0)
        att.cached, att.written = matched, 0
        if system < cfg.min_tokens:
            return
        if self.bills_writes:
            att.written = system - matched
        self.entries[req.feature] = (self.env.now + cfg.ttl, system)

    # Incidents

    def _incident(self, inc: Any) -> ProcessGen:
        yield self.env.timeout(inc.start)
        self._apply(inc, True)
        yield self.env.timeout(inc.duration)
        self._apply(inc, False)

    def _apply(self, inc: Any, on: bool) -> None:
        base = self.cfg.failures
        now = self.env.now
        if isinstance(inc, Outage):
            self.outage_status = inc.status if on else 0
        elif isinstance(inc, Brownout):
            # A brownout raises the rates; it never lowers the configured ones.
            self.error_rate = max(base.error_rate, inc.error_rate) if on else base.error_rate
            self.midstream_rate = (
                max(base.midstream_rate, inc.midstream_rate) if on else base.midstream_rate
            )
            self.error_status = inc.status if on else base.error_status
        elif isinstance(inc, LatencySpike):
            self.slowdown = inc.factor if on else 1.0
        elif isinstance(inc, CapacityDrop):
            assert self.cfg.capacity is not None  # the config requires it for a drop
            slots = self.cfg.capacity.slots
            self.slots.set_limit(max(1, round(slots * inc.remaining)) if on else slots)
        elif isinstance(inc, RateLimitChange):
            if self.limits is not None:
                self.limits.scale(inc.factor if on else 1.0, now)
        else:
            raise NotImplementedError(inc.kind)

    # Service

    def work(self, output_tokens: int) -> Work:
        """What an attempt admitted now will be (docs/billing.md, "When the work is drawn"):
        whether and after how many tokens it fails mid-stream (a uniform share of its output,
        at the mid-stream rate in force now), and its service time before any slowdown."""
        s = self.cfg.service
        fails = bool(self.midstream_rate) and self.rng.random() < self.midstream_rate
        share = float(self.rng.random()) if fails else 1.0
        made = int(output_tokens * share) if fails else output_tokens
        if isinstance(s, TokenService):
            noise = 1.0
            if s.noise_sigma > 0:
                noise = math.exp(s.noise_sigma * self.rng.standard_normal() - s.noise_sigma**2 / 2)
            # The first token after ttft, then one every 1 / decode_tps; a mid-stream failure
            # comes right after the last token generated.
            return Work(fails, made, s.ttft * noise, made / s.decode_tps * noise)
        if isinstance(s, DeterministicService):
            total = s.value
        elif isinstance(s, ExponentialService):
            total = float(self.rng.exponential(s.mean))
        elif isinstance(s, UniformService):
            total = float(self.rng.uniform(s.low, s.high))
        elif isinstance(s, LognormalService):
            sigma = (math.log(s.p99) - math.log(s.median)) / 2.3263478740408408
            total = float(self.rng.lognormal(math.log(s.median), sigma))
        else:
            raise NotImplementedError(s.kind)
        # A distribution of its own has no first token: output is spread over the whole
        # time, and a mid-stream failure cuts it at the same share.
        return Work(fails, made, 0.0, total * share)

    # Admission

    def submit(
        self, client: OracleClient, req: OracleRequest, att: OracleAttempt, abandon_at: float
    ) -> simpy.Event:
        """Take an attempt sent now; the returned event fires when the client sees its outcome."""
        env = self.env
        seen = env.event()
        if self.outage_status:
            self._fast(seen, att, abandon_at, SERVER_ERROR, self.outage_status, NAN)
            return seen
        matched = self.cache_match(req) if self.prompt_cache is not None else 0
        if self.limits is not None:
            fixed = req.cached_tokens
            if self.prompt_cache is not None:
                req.cached_tokens = matched  # what the limits count, for this attempt
            retry_after = self.limits.admit(env.now, req, client.max_tokens)
            req.cached_tokens = fixed
            if retry_after is not None:
                self._fast(seen, att, abandon_at, RATE_LIMITED, 429, retry_after)
                return seen
        if self.error_rate and self.rng.random() < self.error_rate:
            self._fast(seen, att, abandon_at, SERVER_ERROR, self.error_status, NAN)
            return seen
        if not self.slots.free() and len(self.slots.waiting) >= self.queue_limit:
            self._fast(seen, att, abandon_at, OVERLOADED, self.overload_status, NAN)
            return seen
        if self.prompt_cache is not None:
            self.cache_accept(req, att, matched)
        work = self.work(req.output_tokens)
        env.process(self._serve(Job(att, req, client, abandon_at, seen, work)))
        return seen

    def _fast(
        self,
        seen: simpy.Event,
        att: OracleAttempt,
        abandon_at: float,
        status: str,
        http: int,
        retry_after: float,
    ) -> None:
        """A failure before generation, billed nothing, seen after ``error_latency`` (or a
        timeout, when the client gives up first)."""
        now = self.env.now
        delay = self.cfg.failures.error_latency
        if now + delay > abandon_at:
            att.status, att.http_status, delay = TIMEOUT, 0, abandon_at - now
        else:
            att.status, att.http_status, att.retry_after = status, http, retry_after
        self.env.process(self._later(delay, seen))

    def _later(self, delay: float, ev: simpy.Event) -> ProcessGen:
        yield self.env.timeout(delay)
        ev.succeed()

    def _serve(self, job: Job) -> ProcessGen:
        """An admitted attempt: queue, serve, bill, and tell the client (once)."""
        env = self.env
        att, req = job.attempt, job.req
        keeps_running = self.cfg.billing.abandoned_keeps_running
        granted = self.slots.take(job)
        if not granted.triggered and job.abandon_at < INF:
            env.process(self._queue_timeout(job))
        yield granted
        # In service from job.start (= now); a latency spike in force now slows it.
        work, slowdown = job.work, self.slowdown
        run = (work.first + work.decode) * slowdown  # until the provider stops
        made = work.made
        status = MIDSTREAM_ERROR if work.fails else OK
        if not job.gone and env.now + run > job.abandon_at:
            # The client gives up while this is in service.
            yield env.timeout(job.abandon_at - env.now)
            self._client_timeout(job)
            if not keeps_running:
                # The provider stops at the disconnect: only what was made by then is billed.
                made = work.generated_by(env.now - job.start, slowdown)
                att.generated = made
                att.cost = self._bill_stopped(req, made, att=att)
                self._free(job, made)
                return
        yield env.timeout(job.start + run - env.now)
        # Billed for what the provider ran, whether or not the client still waits for it.
        att.generated = made
        if status == OK:
            att.cost = self.price(req, req.output_tokens, att=att)
        else:
            att.cost = self._bill_midstream(req, made, att)
        if not job.gone:
            att.start, att.status, att.http_status = job.start, status, 200
            job.seen.succeed()
        self._free(job, made)

    def _queue_timeout(self, job: Job) -> ProcessGen:
        """The client's timer while the attempt waits in the queue."""
        yield self.env.timeout(job.abandon_at - self.env.now)
        if job.start == job.start:  # it started in time: the service path handles it
            return
        self._client_timeout(job)
        if not self.cfg.billing.abandoned_keeps_running:
            self.slots.withdraw(job)
            job.attempt.cost = self._bill_stopped(job.req, 0, started=False, att=job.attempt)

    def _client_timeout(self, job: Job) -> None:
        job.gone = True
        att = job.attempt
        att.status, att.http_status = TIMEOUT, 0
        att.start = job.start
        job.seen.succeed()

    def _free(self, job: Job, made: int) -> None:
        self.slots.release()
        if self.limits is not None:
            self.limits.charge_output(made, self.env.now)

    def _bill_stopped(
        self,
        req: OracleRequest,
        made: int,
        started: bool = True,
        att: OracleAttempt | None = None,
    ) -> float:
        """``billing.timeout`` for work the provider stopped at the disconnect: nothing when
        it never started (no work was done), else none, all of it, or the input plus what was
        generated by then."""
        rule = self.cfg.billing.timeout
        if rule == "none" or not started:
            return 0.0
        if rule == "full":
            return self.price(req, req.output_tokens, att=att)
        return self.price(req, made, att=att)

    def _bill_midstream(
        self, req: OracleRequest, made: int, att: OracleAttempt | None = None
    ) -> float:
        """``billing.midstream`` for a failure after generation started."""
        rule = self.cfg.billing.midstream
        if rule == "none":
            return 0.0
        if rule == "full":
            return self.price(req, req.output_tokens, att=att)
        return self.price(req, made, att=att)


# Client gates ---------------------------------------------------------------------------------


class OracleBreaker:
    """Closed / open / half-open, as docs/policies.md and the config describe (resilience4j)."""

    def __init__(self, cfg: Breaker) -> None:
        self.cfg = cfg
        self.state = "closed"
        self.epoch = 0
        self.opened_at = 0.0
        self.calls: list[tuple[float, bool, bool]] = []  # (time, failed, slow) while closed
        self.trials: list[tuple[bool, bool]] = []
        self.permits = 0

    def _move(self, to: str, now: float) -> None:
        self.state = to
        self.epoch += 1
        if to == "open":
            self.opened_at = now
        elif to == "half_open":
            self.permits = 0
            self.trials = []
        else:
            self.calls = []

    def allow(self, now: float) -> bool:
        """Whether a call may go out now."""
        if self.state == "open":
            if now - self.opened_at < self.cfg.open_duration:
                return False
            if self.cfg.half_open_calls == 0:
                self._move("closed", now)
                return True
            self._move("half_open", now)
        if self.state == "half_open":
            if self.permits < self.cfg.half_open_calls:
                self.permits += 1
                return True
            return False
        return True

    def give_back(self, epoch: int) -> None:
        """A half-open permit whose call never reported a recorded outcome."""
        if epoch == self.epoch and self.state == "half_open" and self.permits > 0:
            self.permits -= 1

    def _window(self, now: float) -> list[tuple[float, bool, bool]]:
        if self.cfg.window == "count":
            return self.calls[-self.cfg.window_size :]
        # The last window_size seconds, in whole seconds.
        return [c for c in self.calls if int(c[0]) > int(now) - self.cfg.window_size]

    def _tripped(self, outcomes: list[tuple[bool, bool]]) -> bool:
        n = len(outcomes)
        fails = sum(f for f, _ in outcomes)
        slows = sum(s for _, s in outcomes)
        return fails >= self.cfg.failure_rate_threshold * n or (
            slows >= self.cfg.slow_call_rate_threshold * n
        )

    def record(self, now: float, epoch: int, failed: bool, duration: float) -> None:
        """A call let through in ``epoch`` reported."""
        if epoch != self.epoch:
            return
        slow = duration >= self.cfg.slow_call_duration
        if self.state == "closed":
            self.calls.append((now, failed, slow))
            window = [(f, s) for _, f, s in self._window(now)]
            count = self.cfg.failure_count_threshold
            if (len(window) >= self.cfg.minimum_calls and self._tripped(window)) or (
                count is not None and sum(f for f, _ in window) >= count
            ):
                self._move("open", now)
        elif self.state == "half_open":
            self.trials.append((failed, slow))
            if len(self.trials) >= self.cfg.half_open_calls:
                self._move("open" if self._tripped(self.trials) else "closed", now)


class OracleThrottle:
    """Google SRE adaptive throttling over the last ``window`` seconds (whole seconds)."""

    def __init__(self, cfg: Throttle, rng: np.random.Generator) -> None:
        self.k = cfg.k
        self.window = cfg.window
        self.rejections = set(cfg.rejections)
        self.rng = rng
        self.requests: list[float] = []
        self.accepts: list[float] = []

    def _recent(self, times: list[float], now: float) -> int:
        return sum(1 for t in times if math.floor(t) > math.floor(now) - self.window)

    def allow(self, now: float) -> bool:
        """Count this request; refuse with max(0, (requests - k accepts) / (requests + 1))."""
        requests, accepts = self._recent(self.requests, now), self._recent(self.accepts, now)
        p = max(0.0, (requests - self.k * accepts) / (requests + 1))
        self.requests.append(now)
        return not (p > 0 and self.rng.random() < p)

    def uncount(self, at: float) -> None:
        """Forget the request counted at ``at`` (it never went out)."""
        self.requests.remove(at)

    def record(self, now: float, status: str) -> None:
        """The backend's answer."""
        if status not in self.rejections:
            self.accepts.append(now)


class OracleBudget:
    """Retry budgets: token bucket, Finagle, Envoy (docs/policies.md)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.tokens = cfg.max_tokens if isinstance(cfg, TokenBucketBudget) else 0.0
        self.deposits: list[float] = []  # Finagle: request times
        self.withdrawals: list[float] = []  # Finagle: retry times
        self.in_flight = 0  # Envoy

    def _ttl(self, times: list[float], now: float) -> list[float]:
        return [t for t in times if math.floor(t) > math.floor(now) - self.cfg.ttl]

    def on_request(self, now: float) -> None:
        """A request arrived."""
        if isinstance(self.cfg, TokenBucketBudget):
            self.tokens = min(self.cfg.max_tokens, self.tokens + self.cfg.ratio)
        elif isinstance(self.cfg, FinagleBudget):
            self.deposits.append(now)

    def take(self, now: float, active: int) -> bool:
        """Whether a retry may go out now (and take it)."""
        cfg = self.cfg
        if isinstance(cfg, TokenBucketBudget):
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False
        if isinstance(cfg, FinagleBudget):
            self.deposits = self._ttl(self.deposits, now)
            self.withdrawals = self._ttl(self.withdrawals, now)
            balance = (
                cfg.min_per_second * cfg.ttl
                + cfg.percent * len(self.deposits)
                - len(self.withdrawals)
            )
            if balance >= 1.0:
                self.withdrawals.append(now)
                return True
            return False
        assert isinstance(cfg, EnvoyBudget)
        if self.in_flight < max(cfg.min_concurrency, cfg.percent * active):
            self.in_flight += 1
            return True
        return False

    def give_back(self, taken_at: float) -> None:
        """A retry taken at ``taken_at`` never went out."""
        if isinstance(self.cfg, TokenBucketBudget):
            self.tokens = min(self.cfg.max_tokens, self.tokens + 1.0)
        elif isinstance(self.cfg, FinagleBudget):
            if taken_at in self.withdrawals:
                self.withdrawals.remove(taken_at)
        else:
            self.in_flight -= 1

    def retry_done(self) -> None:
        """A retry came back (Envoy counts retries in flight)."""
        if isinstance(self.cfg, EnvoyBudget):
            self.in_flight -= 1


class OraclePacer:
    """Client-side pacing: an attempt may go at the earliest time every limit's bucket (a
    minute's worth, refilled continuously) holds its cost; only attempts sent keep their
    reservation. Each limit is kept as the time its bucket is full again."""

    def __init__(self, cfg: ClientRateLimit) -> None:
        self.limits = [
            (what, MINUTE / limit)
            for what, limit in (
                ("rpm", cfg.rpm),
                ("tpm", cfg.tpm),
                ("itpm", cfg.itpm),
                ("otpm", cfg.otpm),
            )
            if limit is not None
        ]
        self.full_at = {what: 0.0 for what, _ in self.limits}
        self.max_wait = cfg.max_wait

    @staticmethod
    def cost(what: str, input_tokens: int, max_tokens: int) -> float:
        """What an attempt takes from the client's own limits (docs/policies.md): requests,
        input + max_tokens, input, max_tokens."""
        return {
            "rpm": 1.0,
            "tpm": float(input_tokens + max_tokens),
            "itpm": float(input_tokens),
            "otpm": float(max_tokens),
        }[what]

    def earliest(self, now: float, input_tokens: int, max_tokens: int) -> float:
        """When the attempt could go; reserves nothing."""
        t = now
        for what, per_unit in self.limits:
            need = self.cost(what, input_tokens, max_tokens) * per_unit
            # Full again at full_at; taking ``need`` at t leaves max(full_at, t) + need - t
            # seconds of refill owed, which may not exceed a minute.
            t = max(t, self.full_at[what] + need - MINUTE)
        return t

    def reserve(self, at: float, input_tokens: int, max_tokens: int) -> None:
        """Take the attempt's share at ``at``."""
        for what, per_unit in self.limits:
            need = self.cost(what, input_tokens, max_tokens) * per_unit
            self.full_at[what] = max(self.full_at[what], at) + need

    def give_back(self, input_tokens: int, max_tokens: int) -> None:
        """An attempt that reserved never went out."""
        for what, per_unit in self.limits:
            self.full_at[what] -= self.cost(what, input_tokens, max_tokens) * per_unit


# Client ---------------------------------------------------------------------------------------


@dataclass
class Held:
    """What the gates gave a request for its next attempt, until it goes out."""

    permit_epoch: int | None = None
    throttle_at: float | None = None
    budget_at: float | None = None
    paced: bool = False


class Layers:
    """Where a request stands in each retry layer around the policy (docs/policies.md,
    "Retry layers"), outermost first: calls made in the current invocation, the last wait,
    and when the current call to the layer below times out."""

    def __init__(self, layers: list[Layer], now: float) -> None:
        self.cfg = layers
        self.calls = [1] * len(layers)
        self.waits = [0.0] * len(layers)
        self.due = [now + layer.timeout for layer in layers]

    def first_due(self, levels: int, by: float) -> int | None:
        """Of the layers above ``levels``, the one whose call times out first, if by ``by``."""
        best: int | None = None
        for i in range(levels):
            if self.due[i] <= by and (best is None or self.due[i] < self.due[best]):
                best = i
        return best

    def outermost_due(self, by: float) -> int | None:
        """The outermost layer whose call has timed out by ``by``."""
        for i, due in enumerate(self.due):
            if due <= by:
                return i
        return None

    def fresh_call(self, level: int, wait: float, at: float) -> None:
        """Layer ``level`` calls the layer below again at ``at``; the layers below start
        afresh."""
        self.calls[level] += 1
        self.waits[level] = wait
        for j in range(level, len(self.cfg)):
            if j > level:
                self.calls[j] = 1
                self.waits[j] = 0.0
            self.due[j] = at + self.cfg[j].timeout


class OracleClient:
    """One feature's client: its gates, its retry policy, and a process per request."""

    def __init__(
        self,
        name: str,
        feature: Feature,
        policy: Policy,
        chain: list[OracleProvider],
        env: simpy.Environment,
        rng: np.random.Generator,
    ) -> None:
        self.name = name
        self.policy = policy
        self.chain = chain
        self.env = env
        self.rng = rng
        self.max_tokens = feature.max_tokens
        self.breakers = [
            OracleBreaker(policy.breaker) if policy.breaker is not None else None for _ in chain
        ]
        self.throttle = OracleThrottle(policy.throttle, rng) if policy.throttle else None
        self.budget = OracleBudget(policy.budget) if policy.budget is not None else None
        self.pacer = OraclePacer(policy.rate_limit) if policy.rate_limit is not None else None
        self.in_flight = 0
        # Requests waiting under the concurrency limit, with the event that sends them.
        self.local_queue: deque[tuple[OracleRequest, simpy.Event, int]] = deque()
        self.active = 0
        self.live: list[OracleRequest] = []

    # One request

    def request(self, req: OracleRequest) -> ProcessGen:
        """A request's whole life, from arrival to its one outcome."""
        env = self.env
        self.active += 1
        self.live.append(req)
        if self.budget is not None:
            self.budget.on_request(env.now)
        pos, on_provider, prev_wait = 0, 0, 0.0
        policy = self.policy
        fb = policy.fallback
        layers = Layers(policy.layers, env.now) if policy.layers else None
        req.layers = layers
        while True:
            # Through the gates (may move along the fallback chain, wait, or end the request).
            held = Held()
            outcome: str | None = None
            while True:
                breaker = self.breakers[pos]
                if breaker is None or breaker.allow(env.now):
                    break
                if fb is not None and fb.on_breaker_open and pos + 1 < len(self.chain):
                    pos, on_provider, prev_wait = pos + 1, 0, 0.0
                    continue
                outcome = REJECTED_BREAKER
                break
            if outcome is not None:
                self._finish(req, outcome, held, pos)
                return
            breaker = self.breakers[pos]
            epoch = breaker.epoch if breaker is not None else 0
            if breaker is not None and breaker.state == "half_open":
                held.permit_epoch = epoch
            if self.throttle is not None:
                if not self.throttle.allow(env.now):
                    self._finish(req, REJECTED_THROTTLE, held, pos)
                    return
                held.throttle_at = env.now
            if req.attempts and self.budget is not None:
                if not self.budget.take(env.now, self.active):
                    self._finish(req, REJECTED_BUDGET, held, pos)
                    return
                held.budget_at = env.now
            if self.pacer is not None:
                at = self.pacer.earliest(env.now, req.input_tokens, self.max_tokens)
                if at > env.now:
                    cut = layers.first_due(len(layers.cfg), at) if layers is not None else None
                    if (
                        layers is not None
                        and cut is not None
                        and at - env.now <= self.pacer.max_wait
                        and layers.due[cut] < req.deadline_at
                    ):
                        # A layer's call times out before pacing would let the attempt go.
                        yield env.timeout(layers.due[cut] - env.now)
                        self._give_back(req, held, pos)
                        how, _ = yield from self._layered(
                            req, layers, cut, TIMEOUT, 0, NAN, pos, (None, "")
                        )
                        if how == "end":
                            return
                        on_provider, prev_wait = 0, 0.0  # a fresh call of the layers below
                        continue
                    if at - env.now > self.pacer.max_wait:
                        self._finish(req, REJECTED_THROTTLE, held, pos)
                        return
                    if at >= req.deadline_at:
                        yield env.timeout(req.deadline_at - env.now)
                        self._finish(req, DEADLINE, held, pos)
                        return
                    self.pacer.reserve(at, req.input_tokens, self.max_tokens)
                    held.paced = True
                    yield env.timeout(at - env.now)
                else:
                    self.pacer.reserve(env.now, req.input_tokens, self.max_tokens)
                    held.paced = True
            limit = policy.concurrency
            if limit is not None and self.in_flight >= limit.limit:
                # Over the concurrency limit: wait in the client's FIFO queue; a response that
                # frees a place sends the longest-waiting attempt at that instant.
                if limit.queue_limit is not None and len(self.local_queue) >= limit.queue_limit:
                    self._finish(req, REJECTED_THROTTLE, held, pos)
                    return
                released = env.event()
                self.local_queue.append((req, released, pos))
                cut = layers.first_due(len(layers.cfg), INF) if layers is not None else None
                if layers is not None and cut is not None and layers.due[cut] < req.deadline_at:
                    # A layer's call may time out while the attempt waits here.
                    layer_timer = env.timeout(layers.due[cut] - env.now)
                    yield released | layer_timer
                    if not released.triggered:
                        self.local_queue.remove((req, released, pos))
                        self._give_back(req, held, pos)
                        how, _ = yield from self._layered(
                            req, layers, cut, TIMEOUT, 0, NAN, pos, (None, "")
                        )
                        if how == "end":
                            return
                        on_provider, prev_wait = 0, 0.0
                        continue
                elif req.deadline_at < INF:
                    timer = env.timeout(req.deadline_at - env.now)
                    yield released | timer
                    if not released.triggered:
                        self.local_queue.remove((req, released, pos))
                        self._finish(req, DEADLINE, held, pos)
                        return
                else:
                    yield released
                # Sent by _release_local, which passes the attempt and its outcome event on.
                att, seen = cast(tuple[OracleAttempt, simpy.Event], released.value)
            else:
                # It goes out now: what the gates gave it belongs to the attempt.
                att, seen = self._send(req, pos)
            on_provider += 1
            yield seen
            # The client sees the outcome.
            now = env.now
            att.end = now
            self.in_flight -= 1
            if breaker is not None:
                if att.status == OK or att.status in breaker.cfg.record:
                    breaker.record(now, epoch, att.status != OK, now - att.send)
                else:
                    breaker.give_back(epoch)
            if self.throttle is not None:
                self.throttle.record(now, att.status)
            if att.number and self.budget is not None:
                self.budget.retry_done()
            self._release_local()
            if att.status == OK:
                req.useful = att.cost
                self._finish(req, OK, Held(), pos)
                return
            # After a failure: deadline, attempt cap, fallback, then the retry policy.
            if now >= req.deadline_at:
                self._finish(req, DEADLINE, Held(), pos)
                return
            if len(req.attempts) >= policy.max_attempts:
                self._finish(req, EXHAUSTED, Held(), pos)
                return
            if layers is not None:
                n = len(layers.cfg)
                level, status, code, ra = n, att.status, att.http_status, att.retry_after
                if att.status == TIMEOUT:
                    # Abandoned when a layer's call timed out: that layer sees the failure.
                    k = layers.outermost_due(att.abandon_at)
                    if k is not None:
                        level, status, code, ra = k, TIMEOUT, 0, NAN
                decided = (
                    self._decide(att, on_provider, prev_wait, now - req.arrival)
                    if level == n
                    else (None, "")
                )
                how, waited = yield from self._layered(
                    req, layers, level, status, code, ra, pos, decided
                )
                if how == "end":
                    return
                if how == "fresh":
                    on_provider, prev_wait = 0, 0.0
                else:
                    prev_wait = waited
                continue
            can_fall_back = fb is not None and pos + 1 < len(self.chain)
            if (
                can_fall_back
                and fb is not None
                and (
                    att.status in fb.on_statuses
                    or (fb.after_failures is not None and on_provider >= fb.after_failures)
                )
            ):
                pos, on_provider, prev_wait = pos + 1, 0, 0.0
                continue
            wait, give_up = self._decide(att, on_provider, prev_wait, now - req.arrival)
            if wait is None:
                if give_up == EXHAUSTED and can_fall_back and fb is not None and fb.on_exhausted:
                    pos, on_provider, prev_wait = pos + 1, 0, 0.0
                    continue
                self._finish(req, give_up, Held(), pos)
                return
            if now + wait >= req.deadline_at:
                yield env.timeout(req.deadline_at - now)
                self._finish(req, DEADLINE, Held(), pos)
                return
            prev_wait = wait
            yield env.timeout(wait)

    def _send(self, req: OracleRequest, pos: int) -> tuple[OracleAttempt, simpy.Event]:
        """The attempt goes out to provider ``pos`` of the chain now."""
        now = self.env.now
        provider = self.chain[pos]
        att = OracleAttempt(self.name, req.index, len(req.attempts), provider.name, now)
        req.attempts.append(att)
        self.in_flight += 1
        abandon_at = min(now + self.policy.timeout, req.deadline_at)
        if req.layers is not None:
            abandon_at = min(abandon_at, *req.layers.due)
        att.abandon_at = abandon_at
        return att, provider.submit(self, req, att, abandon_at)

    def _release_local(self) -> None:
        """A place under the concurrency limit is free: the longest-waiting attempt goes."""
        limit = self.policy.concurrency
        while self.local_queue and limit is not None and self.in_flight < limit.limit:
            req, released, pos = self.local_queue.popleft()
            released.succeed(self._send(req, pos))

    def _finish(self, req: OracleRequest, outcome: str, held: Held, pos: int) -> None:
        """The request's one outcome; what its gates gave it comes back."""
        env = self.env
        self._give_back(req, held, pos)
        req.outcome = outcome
        req.end = env.now
        self.active -= 1
        self.live.remove(req)

    def _give_back(self, req: OracleRequest, held: Held, pos: int) -> None:
        """What the gates gave ``req`` for an attempt that will not go out comes back."""
        breaker = self.breakers[pos]
        if held.permit_epoch is not None and breaker is not None:
            breaker.give_back(held.permit_epoch)
        if held.throttle_at is not None and self.throttle is not None:
            self.throttle.uncount(held.throttle_at)
        if held.budget_at is not None and self.budget is not None:
            self.budget.give_back(held.budget_at)
        if held.paced and self.pacer is not None:
            self.pacer.give_back(req.input_tokens, self.max_tokens)
        held.permit_epoch = held.throttle_at = held.budget_at = None
        held.paced = False

    def _layered(
        self,
        req: OracleRequest,
        layers: Layers,
        level: int,
        status: str,
        code: int,
        retry_after: float,
        pos: int,
        decided: tuple[float | None, str],
    ) -> Generator[simpy.Event, Any, tuple[str, float]]:
        """Layer ``level`` sees its call fail (``level`` = the number of layers: the policy's
        own retries, whose decision is ``decided``); it and the layers above decide, inside
        out, until one retries; a wait an outer layer's timeout cuts short passes the failure
        up from that layer. Returns ("end", 0) when the request ended, ("sdk", wait) when the
        policy sends its next attempt, ("fresh", wait) when a layer called the one below
        afresh."""
        env = self.env
        n = len(layers.cfg)
        while True:
            now = env.now
            wait: float | None = None
            give_up = EXHAUSTED
            if level == n:
                wait, give_up = decided
                if wait is None:
                    level -= 1
            while wait is None and level >= 0:
                wait, give_up = self._decide_cfg(
                    layers.cfg[level],
                    status,
                    code,
                    retry_after,
                    layers.calls[level],
                    layers.waits[level],
                )
                if wait is None:
                    level -= 1
            if wait is None:
                self._finish(req, give_up, Held(), pos)
                return "end", 0.0
            at = now + wait
            cut = layers.first_due(level, at)
            if cut is not None and layers.due[cut] < req.deadline_at:
                yield env.timeout(layers.due[cut] - now)
                level, status, code, retry_after = cut, TIMEOUT, 0, NAN
                continue
            if at >= req.deadline_at:
                yield env.timeout(req.deadline_at - now)
                self._finish(req, DEADLINE, Held(), pos)
                return "end", 0.0
            if level < n:
                layers.fresh_call(level, wait, at)
            yield env.timeout(wait)
            return ("sdk" if level == n else "fresh"), wait

    def _decide(
        self, att: OracleAttempt, on_provider: int, prev_wait: float, elapsed: float
    ) -> tuple[float | None, str]:
        """The retry policy: (wait, "") to retry, or (None, outcome) to stop."""
        return self._decide_cfg(
            self.policy, att.status, att.http_status, att.retry_after, on_provider, prev_wait
        )

    def _decide_cfg(
        self,
        policy: Policy | Layer,
        status: str,
        code: int,
        retry_after: float,
        on_provider: int,
        prev_wait: float,
    ) -> tuple[float | None, str]:
        """The retry rule of a policy or of one of its layers after a failed call."""
        r = policy.retry
        if status not in policy.retryable:
            return None, NON_RETRYABLE
        http = policy.retryable_http
        # An error response is retried only for these HTTP statuses (the SDKs' rule); a
        # timeout or a mid-stream failure has no error response and passes.
        if (
            http is not None
            and status in (RATE_LIMITED, SERVER_ERROR, OVERLOADED)
            and code not in http.codes
            and (http.at_least is None or code < http.at_least)
        ):
            return None, NON_RETRYABLE
        if isinstance(r, NoRetry):
            return None, EXHAUSTED
        if not isinstance(r, NaiveRetry | FixedRetry | ExponentialRetry | RandomExponentialRetry):
            raise NotImplementedError(f"the oracle does not model {r.kind} retries")
        if on_provider >= r.max_retries + 1:
            return None, EXHAUSTED
        ra = retry_after
        # Only a positive retry-after is honoured (the SDKs: ``0 < retry_after``).
        if r.honor_retry_after and status == RATE_LIMITED and ra > 0:
            if ra <= r.retry_after_max:
                return ra + r.retry_after_jitter * self.rng.random(), ""
            if r.retry_after_beyond_max == "give_up":
                return None, EXHAUSTED
        retries = on_provider - 1
        if isinstance(r, NaiveRetry):
            return 0.0, ""
        if isinstance(r, FixedRetry):
            return r.delay, ""
        if isinstance(r, ExponentialRetry):
            if r.jitter == "decorrelated":
                prev = prev_wait if prev_wait > 0 else r.base
                high = max(r.base, 3 * prev)
                return min(r.cap, r.base + (high - r.base) * self.rng.random()), ""
            w = min(r.cap, r.base * r.multiplier ** min(retries, 1000))
            if r.jitter == "full":
                return w * self.rng.random(), ""
            if r.jitter == "equal":
                return w / 2 + w / 2 * self.rng.random(), ""
            if r.jitter == "proportional":
                return w * (1 - r.jitter_fraction * self.rng.random()), ""
            if r.jitter == "additive":
                return w + r.jitter_added * self.rng.random(), ""
            return w, ""
        if isinstance(r, RandomExponentialRetry):
            high = max(r.min, min(r.max, r.multiplier * r.exp_base ** (on_provider - 1)))
            return r.min + (high - r.min) * self.rng.random(), ""
        raise NotImplementedError(f"the oracle does not model {r.kind} retries")


# The run ----------------------------------------------------------------------------------------


class Oracle:
    """Simulates ``scenario`` with ``seed`` (default: the scenario's) the plain way."""

    def __init__(self, scenario: Scenario, seed: int | None = None) -> None:
        self.scenario = scenario
        self.seed = scenario.run.seed if seed is None else seed

    def run(self) -> OracleResult:
        """Run to the end (the drain included) and return every request."""
        sc = self.scenario
        env = simpy.Environment()
        # The oracle's own randomness (service, errors, jitter, coins): not the engine's streams.
        own = np.random.default_rng([self.seed, 0x0AC1E])
        providers = {
            name: OracleProvider(name, cfg, env, np.random.default_rng(own.integers(2**63)))
            for name, cfg in sc.providers.items()
        }
        clients: dict[str, OracleClient] = {}
        requests: list[OracleRequest] = []
        duration = sc.run.seconds
        for name, feat in sc.features.items():
            for prov in providers.values():
                prov.system_prompt[name] = feat.system_prompt_tokens
            policy = sc.policy_of(name)
            chain = [providers[feat.provider]]
            if policy.fallback is not None:
                chain += [providers[p] for p in policy.fallback.providers]
            client = OracleClient(
                name, feat, policy, chain, env, np.random.default_rng(own.integers(2**63))
            )
            clients[name] = client
            mine = self._traffic(name, feat, policy, duration)
            requests += mine
            env.process(self._arrivals(env, client, mine))
        drain = sc.run.drain
        env.run(until=duration + drain if drain < INF else None)
        for client in clients.values():
            for req in list(client.live):
                client._finish(req, UNFINISHED, Held(), 0)
        return OracleResult(requests)

    def _traffic(
        self, name: str, feat: Feature, policy: Policy, duration: float
    ) -> list[OracleRequest]:
        """The feature's requests: arrival times, then per chunk input, RAG and output tokens."""
        if feat.trace is not None or feat.arrivals is None:
            raise NotImplementedError("the oracle does not replay traces")
        assert feat.input_tokens is not None and feat.output_tokens is not None
        times_rng = named_generator(self.seed, f"feature/{name}/arrivals")
        tokens_rng = named_generator(self.seed, f"feature/{name}/tokens")
        reasoning_rng = named_generator(self.seed, f"feature/{name}/reasoning")
        out: list[OracleRequest] = []
        for times in arrival_chunks(feat.arrivals, times_rng, duration):
            n = len(times)
            if n == 0:
                continue
            inp = draw_tokens(feat.input_tokens, tokens_rng, n)
            if feat.rag_tokens is not None:
                inp = [
                    a + b
                    for a, b in zip(inp, draw_tokens(feat.rag_tokens, tokens_rng, n), strict=True)
                ]
            outp = draw_tokens(feat.output_tokens, tokens_rng, n)
            # Reasoning tokens come first, and max_tokens caps them with the answer.
            think = [0] * n
            if feat.reasoning_tokens is not None:
                think = draw_tokens(feat.reasoning_tokens, reasoning_rng, n)
            for t, i, o, r in zip(times, inp, outp, think, strict=True):
                i += feat.system_prompt_tokens
                cached = int(np.rint(i * feat.cached_fraction))
                out.append(
                    OracleRequest(
                        name,
                        len(out),
                        t,
                        i,
                        cached,
                        min(o + r, feat.max_tokens),
                        t + policy.deadline,
                    )
                )
        return out

    @staticmethod
    def _arrivals(
        env: simpy.Environment, client: OracleClient, requests: list[OracleRequest]
    ) -> ProcessGen:
        for req in requests:
            yield env.timeout(req.arrival - env.now)
            env.process(client.request(req))
