"""Config of providers (model endpoints): prices, rate limits, capacity, latency, failures."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llmtraffic import presets
from llmtraffic.config.base import (
    FiniteDuration,
    FiniteDurationOrZero,
    HttpErrorStatus,
    Model,
    PositiveDuration,
)


class TierPrices(Model):
    """The input and output prices of one service tier (batch, flex, priority), USD per
    million tokens. Cached reads and cache writes under the tier scale with its input price
    (what LiteLLM's price map gives where it lists them: docs/billing.md)."""

    input: float = Field(ge=0.0, description="USD per 1M input tokens under this tier")
    output: float = Field(ge=0.0, description="USD per 1M output tokens under this tier")


class LongContextPrices(Model):
    """Higher prices for a prompt longer than ``above`` input tokens: the whole request (all
    its input and output) is billed at them, as Google and OpenAI bill their long-context
    tiers (LiteLLM's ``*_above_200k_tokens`` / ``*_above_272k_tokens`` fields)."""

    above: int = Field(
        gt=0, description="input tokens above which the whole request is billed here"
    )
    input: float = Field(ge=0.0, description="USD per 1M input tokens of a long request")
    output: float = Field(ge=0.0, description="USD per 1M output tokens of a long request")
    cached_input: float | None = Field(
        None,
        ge=0.0,
        description="USD per 1M cached input tokens of a long request (default: the cached "
        "price scaled as the input price is)",
    )


class Prices(Model):
    """Prices in USD per million tokens: the standard tier, and optionally cache writes, the
    other service tiers and a long-context tier (docs/billing.md gives each rule's source)."""

    input: float = Field(ge=0.0, description="USD per 1M input tokens")
    output: float = Field(ge=0.0, description="USD per 1M output tokens")
    cached_input: float | None = Field(
        None, ge=0.0, description="USD per 1M cached input tokens (defaults to the input price)"
    )
    cache_write: float | None = Field(
        None,
        ge=0.0,
        description="USD per 1M tokens written to the prompt cache with a 5-minute TTL "
        "(Anthropic: 1.25 x input; default: that for anthropic cache rules, the input price "
        "for openai ones, which have no write premium)",
    )
    cache_write_1h: float | None = Field(
        None,
        ge=0.0,
        description="USD per 1M tokens written to the prompt cache with a 1-hour TTL "
        "(Anthropic: 2 x input, the default)",
    )
    batch: TierPrices | None = Field(
        None, description="prices of the Batch API (service_tier = 'batch'; 50% off)"
    )
    flex: TierPrices | None = Field(
        None, description="prices of flex processing (service_tier = 'flex')"
    )
    priority: TierPrices | None = Field(
        None, description="prices of priority processing (service_tier = 'priority')"
    )
    long_context: LongContextPrices | None = Field(
        None, description="prices of a request whose input exceeds `above` tokens"
    )

    def for_tier(self, tier: str) -> tuple[float, float]:
        """The factors of a service tier on the standard input and output prices (1, 1 for
        'standard'): cached reads, cache writes and long-context prices scale with them."""
        prices = None if tier == "standard" else getattr(self, tier)
        if prices is None:
            return 1.0, 1.0
        f_in = prices.input / self.input if self.input else 1.0
        f_out = prices.output / self.output if self.output else 1.0
        # A zero or subnormal standard price has no usable ratio: its own price stands.
        return (f_in if f_in < float("inf") else 1.0), (f_out if f_out < float("inf") else 1.0)


class PromptCache(Model):
    """The provider's prompt cache, keyed on prefixes (docs/billing.md, "Prompt caching").

    ``rules = "anthropic"``: explicit ``cache_control`` breakpoints; a write bills 1.25 x input
    (5-minute TTL) or 2 x input (1-hour TTL), a read 0.1 x input (``prices.cached_input``);
    a hit refreshes the TTL. ``rules = "openai"``: automatic caching of prompts of 1,024
    tokens or more, matched in 128-token increments, read at the cached price, no write
    premium; an entry is evicted after ``ttl`` without use. Omitted keys come from the
    model preset (its provider and minimum) or these rules.
    """

    rules: Literal["anthropic", "openai"] | None = Field(
        None,
        description="whose caching rules: 'anthropic' (breakpoints, write premium) or "
        "'openai' (automatic, 128-token increments); default: the model preset's provider",
    )
    ttl: FiniteDuration = Field(
        300.0,
        description="how long an entry lives after its last use (anthropic: '5m' or '1h'; "
        "openai: evicted after 5-10 min of inactivity, 5 min taken)",
    )
    min_tokens: int | None = Field(
        None,
        gt=0,
        description="shortest cacheable prefix (default: the model preset's, else 1,024)",
    )
    increment: int | None = Field(
        None,
        gt=0,
        description="a match counts whole increments above min_tokens (openai: 128; "
        "anthropic: 1, the exact prefix)",
    )


class RateLimit(Model):
    """Per-account rate limits, shared by every feature that uses the provider.

    OpenAI style: ``rpm`` and ``tpm`` (``max(input, max_tokens)`` counted at admission).
    Anthropic style: ``rpm``, ``itpm`` (input tokens at admission, cache reads excluded unless
    ``cache_reads_count``) and ``otpm`` (the output actually generated, counted when the
    attempt ends; admission only needs the bucket out of debt). ``rpd`` and ``tpd`` are the
    daily counterparts of ``rpm`` and ``tpm``. ``window`` enforces the per-minute limits
    over a shorter span (a 60,000 RPM limit as 1,000 per second), ``rpm_window`` the
    requests limit alone. ``tier`` names a preset (``openai/tier-3``, ``azure/standard``)
    that fills in the limits of the provider's model and the tier's counting rules; keys
    given next to it override the tier's. docs/providers.md gives the source of each rule
    and default.
    """

    tier: str | None = Field(
        None, description="a tier preset, e.g. 'openai/tier-3' (see `llmtraffic presets`)"
    )
    rpm: float | None = Field(None, gt=0, description="requests per minute")
    tpm: float | None = Field(None, gt=0, description="tokens per minute: input + max_tokens")
    itpm: float | None = Field(None, gt=0, description="input tokens per minute")
    otpm: float | None = Field(None, gt=0, description="output tokens per minute")
    rpd: float | None = Field(None, gt=0, description="requests per day")
    tpd: float | None = Field(None, gt=0, description="tokens per day, counted as tpm counts them")
    refill: Literal["continuous", "window"] = Field(
        "continuous",
        description="token buckets refilled continuously, or fixed windows (of `window`)",
    )
    window: FiniteDuration = Field(
        60.0,
        description="span over which the per-minute limits are enforced, at most 1 min: a "
        "bucket (or each fixed window) holds limit x window / 60 (OpenAI: 60,000 RPM 'may be "
        "enforced as 1,000 requests/second')",
    )
    rpm_window: FiniteDuration | None = Field(
        None,
        description="the rpm limit's own window when it differs from `window` (Azure OpenAI: "
        "RPM checked over 1 s or 10 s, TPM over the minute)",
    )
    daily_refill: Literal["continuous", "window"] = Field(
        "continuous",
        description="rpd / tpd refilled continuously over 24 h (what OpenAI's reset headers "
        "show), or reset once a day (Gemini: at midnight Pacific time)",
    )
    day_starts_at: FiniteDurationOrZero = Field(
        0.0,
        description="with daily_refill = 'window': time of the run at which the first daily "
        "reset falls (then every 24 h), under 24 h",
    )
    count_rejected: bool = Field(
        False,
        description="whether a rejected (429) attempt still counts against the limits (true: "
        "with continuous refill, sustained load above a limit locks every attempt out)",
    )
    tpm_counts: Literal["max", "sum"] = Field(
        "max",
        description="what tpm / tpd charge at admission: 'max' of input and max_tokens "
        "(OpenAI), or their 'sum' (Azure OpenAI's estimate: prompt + max_tokens)",
    )
    cache_reads_count: bool = Field(
        False,
        description="whether cached input (prompt-cache reads) counts against itpm "
        "(Anthropic: not for Claude 4.x)",
    )
    retry_after_resolution: FiniteDurationOrZero = Field(
        1.0, description="retry_after is rounded up to a multiple of this (headers use seconds)"
    )

    @field_validator("tier")
    @classmethod
    def _known_tier(cls, tier: str | None) -> str | None:
        if tier is not None and presets.find_tier(tier) is None:
            raise ValueError(presets.unknown_tier_message(tier))
        return tier

    @model_validator(mode="after")
    def _check(self) -> Self:
        limits = (self.rpm, self.tpm, self.itpm, self.otpm, self.rpd, self.tpd)
        if all(v is None for v in limits):
            if self.tier is not None:
                raise ValueError(
                    f"tier {self.tier!r} is resolved against a provider's model: use it in a "
                    "provider's rate_limit"
                )
            raise ValueError(
                "a rate_limit needs at least one of rpm, tpm, itpm, otpm, rpd, tpd, or a tier"
            )
        for key in ("window", "rpm_window"):
            value = getattr(self, key)
            if value is not None and value > 60.0:
                raise ValueError(
                    f".{key}: a per-minute limit is enforced over at most a minute, got "
                    f"{value:g} s; use a window of 60 s or less (e.g. '1s' or '10s')"
                )
        if self.rpm_window is not None and self.rpm is None:
            raise ValueError(".rpm_window: set without rpm; give rpm, or remove rpm_window")
        if self.day_starts_at >= 86_400.0:
            raise ValueError(
                f".day_starts_at: the first daily reset comes within a day of the start, got "
                f"{self.day_starts_at:g} s; give a time under 24h"
            )
        if self.day_starts_at and self.daily_refill != "window":
            raise ValueError(
                '.day_starts_at: only fixed days have a reset time; set daily_refill = "window" '
                "or remove day_starts_at"
            )
        return self


def _queue_limit(value: object) -> object:
    if value == "unbounded" or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0
    ):
        return value
    raise ValueError(f"expected a whole number >= 0 or 'unbounded', got {value!r}")


class Capacity(Model):
    """Serving capacity: concurrent slots and a FIFO queue; past the queue limit, load is shed.

    A provider without a ``capacity`` table is not capacity-limited: a hosted model's own
    traffic is a tiny share of the provider's fleet, so only the rate limits bound it.
    """

    slots: int = Field(gt=0, description="attempts served at once")
    queue_limit: Annotated[int | Literal["unbounded"], BeforeValidator(_queue_limit)] = Field(
        "unbounded",
        description="attempts that may wait for a slot; beyond it they get overload errors",
    )
    overload_status: HttpErrorStatus = Field(
        529, description="HTTP status of a shed attempt (503 or 529)"
    )


class TokenService(Model):
    """Service time = ttft + output_tokens / decode_tps, times mean-one lognormal noise."""

    kind: Literal["tokens"] = "tokens"
    ttft: FiniteDurationOrZero = Field(0.5, description="time to first token")
    decode_tps: float = Field(60.0, gt=0, description="output tokens per second while decoding")
    noise_sigma: float = Field(
        0.25, ge=0, description="sigma of the multiplicative lognormal noise (0 for none)"
    )


class ExponentialService(Model):
    """Exponential service time (the provider then reduces to M/M/c)."""

    kind: Literal["exponential"] = "exponential"
    mean: FiniteDuration = Field(description="mean service time (1 / mu)")


class DeterministicService(Model):
    """Every attempt takes the same time."""

    kind: Literal["deterministic"] = "deterministic"
    value: FiniteDurationOrZero = Field(description="the service time of every attempt")


class LognormalService(Model):
    """Lognormal service time given its median and 99th percentile."""

    kind: Literal["lognormal"] = "lognormal"
    median: FiniteDurationOrZero = Field(description="median service time (> 0)")
    p99: FiniteDurationOrZero = Field(description="99th percentile, above the median")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.median <= 0:
            raise ValueError(f".median: must be > 0, got {self.median:g} s")
        if self.p99 <= self.median:
            raise ValueError(f".p99: must be > median ({self.median:g} s), got {self.p99:g} s")
        return self


class UniformService(Model):
    """Service time uniform on [low, high]."""

    kind: Literal["uniform"] = "uniform"
    low: FiniteDurationOrZero = Field(description="shortest service time")
    high: FiniteDurationOrZero = Field(description="longest service time, >= low")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.high < self.low:
            raise ValueError(f".high: must be >= low ({self.low:g} s), got {self.high:g} s")
        return self


Service = Annotated[
    TokenService | ExponentialService | DeterministicService | LognormalService | UniformService,
    Field(discriminator="kind"),
]


def _not_429(value: int) -> int:
    if value == 429:
        raise ValueError(
            "a 429 is not a server error: use rate_limit for rate limits, quota (a spend cap) "
            'or an incident of kind "quota_exhausted" for an exhausted quota'
        )
    return value


ErrorStatus = Annotated[HttpErrorStatus, AfterValidator(_not_429)]
"""An HTTP error status of a fast error, 400-599 but not 429 (429s come from the limits)."""


class ErrorKind(Model):
    """One kind of fast error: its HTTP status, how often it happens, and the
    ``x-should-retry`` header the provider sends with it."""

    status: ErrorStatus = Field(description="HTTP status (e.g. 503, 504, 529, 408, 409; not 429)")
    rate: float = Field(gt=0, le=1, description="probability per attempt")
    should_retry: bool | None = Field(
        None,
        description="the x-should-retry header sent with it (true/false); omitted: not sent",
    )


MAX_BATCH = 1_000_000
"""Largest concurrency a ``batching.tpot`` point may name (a batch is thousands at most)."""


def _points(value: object) -> object:
    """``[[concurrency, seconds], ...]``: a pair per point, concurrency a whole number from 1
    to ``MAX_BATCH`` rising from point to point, seconds > 0 and finite. Checked here so
    that the message names the point (``tpot[1][0]``)."""
    if not isinstance(value, list) or not value:
        raise ValueError(
            "expected a list of [concurrency, seconds per token] pairs, e.g. "
            f"[[1, 0.012], [64, 0.03]]; got {value!r}"
        )
    prev = 0
    for i, point in enumerate(value):
        if (
            not isinstance(point, list)
            or len(point) != 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in point)
        ):
            raise ValueError(f"[{i}]: expected a pair [concurrency, seconds], got {point!r}")
        n, sec = point
        if not isinstance(n, int) or not 1 <= n <= MAX_BATCH:
            raise ValueError(
                f"[{i}][0]: concurrency must be a whole number from 1 to {MAX_BATCH:,}, got {n!r}"
            )
        if n <= prev:
            raise ValueError(
                f"[{i}][0]: concurrency must rise from point to point: {n} is not above the "
                f"previous point's {prev}; sort the points by concurrency"
            )
        if not 0 < sec < float("inf"):
            raise ValueError(f"[{i}][1]: seconds per token must be > 0 and finite, got {sec!r}")
        prev = n
    return value


class Batching(Model):
    """Continuous batching: the per-token time of every decoding sequence grows with how many
    decode at once, and the time to first token grows with the prompt tokens queued for
    prefill ahead of an attempt (docs/providers.md, "Continuous batching").

    ``capacity.slots`` is the batch limit (vLLM's ``max_num_seqs``) and the capacity queue is
    the waiting queue. Give the per-token curve either as measured points (``tpot``) or as
    llm-d-inference-sim's linear load factor (``load_factor``) over ``service.decode_tps``.
    """

    tpot: Annotated[list[list[float]] | None, BeforeValidator(_points)] = Field(
        None,
        description="seconds per output token against concurrent decoding sequences, "
        "[[concurrency, seconds], ...]: interpolated linearly, extended past the last point "
        "along the last segment (two points: step = a + b * batch); the output of "
        "`llmtraffic calibrate`",
    )
    load_factor: float | None = Field(
        None,
        ge=1.0,
        description="per-token time at a full batch (capacity.slots sequences) over that of "
        "one sequence (1 / service.decode_tps), linear in between: llm-d-inference-sim's "
        "time-factor-under-load",
    )
    prefill_tps: float | None = Field(
        None,
        gt=0,
        description="uncached prompt tokens prefilled per second, one prompt at a time in "
        "arrival order: the time to first token grows with the prompt tokens queued ahead "
        "(none: prefill takes no time beyond service.ttft)",
    )

    @model_validator(mode="after")
    def _one_curve(self) -> Self:
        if (self.tpot is None) == (self.load_factor is None):
            raise ValueError(
                "give exactly one of tpot (measured points, e.g. from `llmtraffic calibrate`) "
                "and load_factor (per-token time at a full batch / at one sequence)"
            )
        return self


class Failures(Model):
    """Per-attempt failures outside incidents.

    ``error_rate`` / ``error_status`` is one kind of fast error; ``errors`` adds more kinds,
    each with its own status and rate. One draw per admitted attempt picks at most one of
    them (probabilities add up), so their rates may total at most 1.
    """

    error_rate: float = Field(
        0.0, ge=0, le=1, description="probability of a fast server error (before generation)"
    )
    error_status: HttpErrorStatus = Field(500, description="HTTP status of those errors")
    error_should_retry: bool | None = Field(
        None,
        description="x-should-retry header sent with those errors (true/false); omitted: not sent",
    )
    errors: list[ErrorKind] = Field(
        default_factory=list,
        description="more kinds of fast error, each { status, rate, should_retry }",
    )
    error_latency: FiniteDurationOrZero = Field(
        0.05, description="how long a fast error takes to come back"
    )
    midstream_rate: float = Field(
        0.0, ge=0, le=1, description="probability that generation fails part-way through"
    )
    stall_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability that a response stalls part-way through: no more tokens "
        "and no error, until the client's timeout cuts it (never, without one)",
    )

    @model_validator(mode="after")
    def _one_fate(self) -> Self:
        # One draw decides an attempt's fate in generation: it stalls, fails or completes.
        if self.midstream_rate + self.stall_rate > 1.0:
            raise ValueError(
                f"midstream_rate + stall_rate must be <= 1 (one attempt fails or stalls, not "
                f"both), got {self.midstream_rate:g} + {self.stall_rate:g}"
            )
        return self

    @model_validator(mode="after")
    def _rates_add_up(self) -> Self:
        total = self.error_rate + sum(k.rate for k in self.errors)
        if total > 1.0 + 1e-12:
            raise ValueError(
                f"error_rate and the rates of errors add up to {total:g}, more than 1; one "
                "draw picks at most one kind per attempt, so lower them"
            )
        seen: set[int] = set()
        for i, kind in enumerate(self.errors):
            if kind.status in seen:
                raise ValueError(
                    f".errors[{i}].status: {kind.status} is listed twice; give one entry per "
                    "status with the rates added"
                )
            seen.add(kind.status)
        return self


class Quota(Model):
    """A spend cap: once the cost billed by this provider in the current period reaches
    ``spend_cap``, every attempt is refused with a 429 ``quota_exhausted`` (no retry-after,
    billed nothing) until the period ends. OpenAI's project budgets and an exhausted credit
    balance answer ``insufficient_quota``; Anthropic's monthly spend limit a 429 without
    retry-after (docs/providers.md). Attempts already in flight finish and are billed, so the
    spend can overshoot the cap by them, as a real cap is checked at admission."""

    spend_cap: float = Field(
        gt=0, description="USD billed per period before every attempt is refused"
    )
    period: PositiveDuration = Field(
        float("inf"),
        description='the cap resets at every multiple of this from the start of the run ("inf": '
        "never within the run; a month is 30d)",
    )
    account: str | None = Field(
        None,
        description="providers whose quota names the same account share one cap: the costs "
        "they bill add up (give each the same spend_cap and period); none: this provider's own",
    )


class Billing(Model):
    """Which failed attempts are billed, and how much (docs/billing.md has every combination).

    Successes bill input + output; 429s and fast errors bill nothing. ``partial`` bills the
    input plus the output tokens the provider generates: up to the failure point of a
    mid-stream error; for an attempt the client abandoned, all of it when the provider keeps
    running it (``abandoned_keeps_running``, the default), or up to the disconnect (after the
    time to first token) when the provider stops. ``full`` bills as if the attempt had
    succeeded (nothing when the provider stopped it before it started). ``none`` bills
    nothing, which is only valid for work the provider stops.
    """

    timeout: Literal["partial", "full", "none"] = Field(
        "partial", description="billing of an attempt the client abandoned on timeout"
    )
    midstream: Literal["partial", "full", "none"] = Field(
        "partial", description="billing of an attempt that failed mid-stream"
    )
    abandoned_keeps_running: bool = Field(
        True,
        description="an abandoned attempt keeps its slot (or queue place) until it would end",
    )

    @model_validator(mode="after")
    def _bills_the_work_done(self) -> Self:
        # A provider that keeps running abandoned work generates its whole output: billing
        # none of it would bill less than the work done, and make a retry storm look free.
        if self.abandoned_keeps_running and self.timeout == "none":
            raise ValueError(
                'timeout = "none" bills nothing for work the provider keeps running after the '
                'client left; use timeout = "partial" (what it generates) or "full", or set '
                "abandoned_keeps_running = false (the provider stops at the disconnect)"
            )
        return self


class _Window(Model):
    start: FiniteDurationOrZero = Field(
        description="time since the start of the run; before the end of the arrivals"
    )
    duration: FiniteDuration = Field(description="how long the incident lasts (> 0)")


class Outage(_Window):
    """Every attempt fails fast with ``status`` (not billed)."""

    kind: Literal["outage"] = "outage"
    status: HttpErrorStatus = Field(503, description="HTTP status of the failed attempts")


class Brownout(_Window):
    """A degraded provider: the fast-error probability is raised to ``error_rate`` and the
    mid-stream failure probability to ``midstream_rate`` (which costs capacity and money)."""

    kind: Literal["brownout"] = "brownout"
    error_rate: float = Field(
        0.0, ge=0, le=1, description="probability of a fast error during the brownout"
    )
    midstream_rate: float = Field(
        0.0, ge=0, le=1, description="probability of a mid-stream failure during it"
    )
    status: HttpErrorStatus = Field(500, description="HTTP status of the fast errors")

    @model_validator(mode="after")
    def _check_rates(self) -> Self:
        if self.error_rate == 0 and self.midstream_rate == 0:
            raise ValueError("a brownout needs error_rate > 0 or midstream_rate > 0")
        return self


class LatencySpike(_Window):
    """Service times are multiplied by ``factor``."""

    kind: Literal["latency_spike"] = "latency_spike"
    factor: float = Field(gt=0, description="multiplier of the service times (> 0)")


class CapacityDrop(_Window):
    """Only a fraction ``remaining`` of the slots serve (at least one)."""

    kind: Literal["capacity_drop"] = "capacity_drop"
    remaining: float = Field(gt=0, lt=1, description="share of the slots that still serve")


class RateLimitChange(_Window):
    """All rate limits are multiplied by ``factor`` (a tier change, or a provider tightening)."""

    kind: Literal["rate_limit_change"] = "rate_limit_change"
    factor: float = Field(gt=0, description="multiplier of every rate limit (> 0)")


class QuotaExhaustion(_Window):
    """The account's quota is exhausted for a while (credits ran out, a budget was hit
    elsewhere): every attempt is refused with a 429 ``quota_exhausted`` without retry-after."""

    kind: Literal["quota_exhausted"] = "quota_exhausted"


Incident = Annotated[
    Outage | Brownout | LatencySpike | CapacityDrop | RateLimitChange | QuotaExhaustion,
    Field(discriminator="kind"),
]


BATCH_SERVICE = {"kind": "lognormal", "median": 1800.0, "p99": 21600.0}
"""The default service of a batch provider: a lognormal turnaround with a median of 30 min
and 99% within 6 h, so that 99.98% complete within the 24 h window (docs/billing.md)."""


class Provider(Model):
    """A model endpoint: where attempts go."""

    model: str = Field(
        description="model name (shown in records); a preset name such as 'openai/gpt-4o-mini' "
        "supplies the prices and a rate_limit tier's limits"
    )
    prices: Prices = Field(
        None,  # filled from the model's preset by _preset_prices
        validate_default=True,
        description="USD per million tokens; omit to use the preset of `model`",
    )
    service_tier: Literal["standard", "batch", "flex", "priority"] = Field(
        "standard",
        description="which prices and service the attempts get: 'batch' (the Batch API: "
        "prices.batch, results within 24 h), 'flex' or 'priority' (prices.flex / "
        "prices.priority); docs/billing.md",
    )
    prompt_cache: PromptCache | None = Field(
        None,
        description="the provider's prompt cache: hits follow from the features' shared "
        "system prompts and sessions' transcripts; none: features' cached_fraction applies",
    )
    rate_limit: RateLimit | None = None
    capacity: Capacity | None = Field(
        None, description="serving slots and queue; none: the traffic is not capacity-limited"
    )
    service: Service = TokenService(kind="tokens")
    batching: Batching | None = Field(
        None,
        description="continuous batching: per-token time grows with the sequences decoding at "
        "once; none: every attempt decodes at service.decode_tps",
    )
    failures: Failures = Failures()
    billing: Billing = Billing()
    quota: Quota | None = Field(
        None, description="a spend cap (USD per period); none: the quota never runs out"
    )
    context_window: Annotated[int, Field(gt=0)] | Literal["none"] | None = Field(
        None,
        validate_default=True,
        description="tokens: an attempt whose input + max_tokens exceed it gets a 400 "
        'context_length_exceeded; omitted: the model preset\'s; "none": no check',
    )
    incidents: list[Incident] = Field(default_factory=list)

    @field_validator("prices", mode="before")
    @classmethod
    def _preset_prices(cls, value: object, info: ValidationInfo) -> object:
        """Omitted prices come from the preset named by ``model`` (user price files first)."""
        if value is not None:
            return value
        model = info.data.get("model")
        if not isinstance(model, str):
            raise ValueError("missing; give prices, or a preset model name in 'model'")
        models = _models(info)
        preset = presets.find_model(model, models)
        if preset is None:
            raise ValueError(
                f"missing, and {presets.unknown_model_message(model, models)}; give prices = "
                "{ input = ..., output = ... } (USD per million tokens), use a preset model "
                "name, or add the model to a price file (price_files)"
            )
        return preset.prices()

    @model_validator(mode="before")
    @classmethod
    def _batch_service(cls, data: Any) -> Any:
        """A batch provider's attempts take the Batch API's turnaround unless ``service`` says
        otherwise (docs/billing.md, "Batch API": median 30 min, 99% within 6 h)."""
        if isinstance(data, dict) and data.get("service_tier") == "batch" and "service" not in data:
            return {**data, "service": dict(BATCH_SERVICE)}
        return data

    @field_validator("prompt_cache", mode="before")
    @classmethod
    def _preset_cache_rules(cls, value: object, info: ValidationInfo) -> object:
        """Omitted rules and minimum come from the model preset (its provider, its
        ``cache_min_tokens``); the increment from the rules."""
        if isinstance(value, PromptCache):
            value = value.model_dump(exclude_unset=True)
        if not isinstance(value, dict):
            return value
        out = dict(value)
        model = info.data.get("model")
        preset = presets.find_model(model, _models(info)) if isinstance(model, str) else None
        if "rules" not in out:
            family = preset.provider if preset is not None else ""
            if family not in ("anthropic", "openai"):
                raise ValueError(
                    f".rules: missing, and model {model!r} has no preset whose caching rules "
                    'are known; give rules = "anthropic" (explicit breakpoints, write '
                    'premium) or "openai" (automatic, 128-token increments)'
                )
            out["rules"] = family
        if "min_tokens" not in out:
            found = preset.cache_min_tokens if preset is not None else None
            out["min_tokens"] = found if found is not None else 1024
        if "increment" not in out and out["rules"] in ("anthropic", "openai"):
            out["increment"] = 128 if out["rules"] == "openai" else 1
        return out

    @model_validator(mode="after")
    def _pricing_needs(self) -> Self:
        """A service tier needs its prices; Anthropic offers two cache TTLs; the prompt
        cache is not modelled with continuous batching."""
        tier = self.service_tier
        if tier != "standard" and getattr(self.prices, tier) is None:
            raise ValueError(
                f".service_tier: {tier!r} needs prices.{tier} = {{ input = ..., output = ... }} "
                f"(USD per million tokens); model {self.model!r} has no {tier} prices in its "
                "preset"
            )
        cache = self.prompt_cache
        if cache is None:
            return self
        if cache.rules == "anthropic" and cache.ttl not in (300.0, 3600.0):
            raise ValueError(
                f".prompt_cache.ttl: Anthropic's cache lives 5 minutes or 1 hour, got "
                f'{cache.ttl:g} s; give ttl = "5m" or "1h"'
            )
        if self.batching is not None:
            raise ValueError(
                ".prompt_cache: not modelled with batching (a cached prefix would shorten the "
                "prefill batching queues); drop one of them"
            )
        return self

    @field_validator("context_window", mode="before")
    @classmethod
    def _preset_context(cls, value: object, info: ValidationInfo) -> object:
        """Omitted, the context window is the model preset's (none for another model)."""
        if value == "none" or (
            isinstance(value, int) and not isinstance(value, bool) and value > 0
        ):
            return value
        if value is not None:
            raise ValueError(
                f'must be a whole number of tokens > 0, or "none" (no check), got {value!r}; '
                "omit it to use the model preset's window"
            )
        model = info.data.get("model")
        if not isinstance(model, str):
            return None
        preset = presets.find_model(model, _models(info))
        return None if preset is None else preset.context_window

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _preset_tier(cls, value: object, info: ValidationInfo) -> object:
        """A ``tier`` fills in the limits of the provider's model and the tier's rules."""
        if isinstance(value, RateLimit):
            value = value.model_dump(exclude_unset=True)
        if not isinstance(value, dict) or not isinstance(value.get("tier"), str):
            return value
        tier = presets.find_tier(value["tier"])
        model = info.data.get("model")
        if tier is not None and tier.rpm_per_1000_tpm is not None:
            return {**tier.rules(), **_derived_rpm(tier, value), **value}
        if tier is None or not isinstance(model, str):
            return value  # RateLimit reports the unknown tier; the model error is reported
        limits = tier.limits.get(model)
        if limits is None:
            raise ValueError(
                f".tier: tier {tier.name!r} has no limits for model {model!r}; it covers "
                f"{', '.join(tier.limits)}. Use one of those models, or give rpm / tpm "
                "(or rpm / itpm / otpm) without a tier"
            )
        # Explicit keys override the tier's.
        return {**tier.rules(), **limits.as_dict(), **value}

    @model_validator(mode="after")
    def _capacity_for_drops(self) -> Self:
        """A capacity drop needs slots to drop from: without them the provider has no limit."""
        if self.capacity is None:
            for i, inc in enumerate(self.incidents):
                if isinstance(inc, CapacityDrop):
                    raise ValueError(
                        f"incidents[{i}] is a capacity_drop, which needs capacity.slots: this "
                        "provider has no capacity table, so it is not capacity-limited and has "
                        "no slots to drop; add capacity = { slots = ... } (and queue_limit)"
                    )
        return self

    @model_validator(mode="after")
    def _brownout_rates_add_up(self) -> Self:
        """A brownout raises error_rate; with the other kinds of errors it must stay <= 1."""
        others = sum(k.rate for k in self.failures.errors)
        for i, inc in enumerate(self.incidents):
            if isinstance(inc, Brownout) and others and inc.error_rate + others > 1.0 + 1e-12:
                raise ValueError(
                    f"incidents[{i}].error_rate: {inc.error_rate:g} plus the rates of "
                    f"failures.errors ({others:g}) is more than 1; one draw picks at most one "
                    "kind of error per attempt, so lower one of them"
                )
        return self

    @model_validator(mode="after")
    def _batching_needs(self) -> Self:
        """Batching works on token service within a batch limit (``capacity.slots``)."""
        b = self.batching
        if b is None:
            return self
        if self.capacity is None:
            raise ValueError(
                "batching needs capacity.slots, the batch limit (vLLM's max_num_seqs): add "
                "capacity = { slots = ... } (and queue_limit)"
            )
        if not isinstance(self.service, TokenService):
            raise ValueError(
                f'batching needs service.kind = "tokens" (time to first token, then tokens): '
                f"got {self.service.kind!r}"
            )
        if b.tpot is not None and "decode_tps" in self.service.model_fields_set:
            raise ValueError(
                "service.decode_tps is not used with batching.tpot (the points give the "
                "per-token time); remove one of them"
            )
        if b.tpot is not None:
            from llmtraffic.provider.batching import first_non_positive

            bad = first_non_positive(b, self.capacity.slots, self.service.decode_tps)
            if bad is not None:
                raise ValueError(
                    f"batching.tpot: extended along its last segment the per-token time is "
                    f"<= 0 at concurrency {bad} (capacity.slots = {self.capacity.slots}); "
                    "add a point at or beyond capacity.slots"
                )
        return self

    @field_validator("incidents")
    @classmethod
    def _no_overlap(cls, incidents: list[Incident]) -> list[Incident]:
        by_kind: dict[str, list[tuple[float, float, int]]] = {}
        for i, inc in enumerate(incidents):
            by_kind.setdefault(inc.kind, []).append((inc.start, inc.start + inc.duration, i))
        for kind, spans in by_kind.items():
            spans.sort()
            for (s0, e0, i0), (s1, _, i1) in itertools.pairwise(spans):
                if s1 < e0:
                    raise ValueError(
                        f"incidents [{i0}] and [{i1}] are both {kind} and overlap "
                        f"({s0:g}-{e0:g} s and from {s1:g} s); merge them or move one"
                    )
        return incidents


def _derived_rpm(tier: presets.TierPreset, value: dict[str, Any]) -> dict[str, float]:
    """The rpm a quota-based tier (Azure OpenAI: 6 RPM per 1,000 TPM) grants for the ``tpm``
    given next to it; nothing when rpm is given too, or when tpm is not a number (which the
    rate_limit's own check then reports)."""
    tpm = value.get("tpm")
    ratio = tier.rpm_per_1000_tpm or 0.0
    if tpm is None:
        raise ValueError(
            f".tier: tier {tier.name!r} grants {ratio:g} RPM per 1,000 TPM of the deployment's "
            f"quota: give the quota next to it, e.g. tpm = 100000 (then rpm = {100 * ratio:g})"
        )
    if "rpm" in value or not isinstance(tpm, int | float) or isinstance(tpm, bool):
        return {}
    return {"rpm": tpm * ratio / 1000.0}


def _models(info: ValidationInfo) -> Mapping[str, presets.ModelPreset] | None:
    """The model presets in force: the built-in ones, or those ``scenario_from_dict`` put in the
    validation context (built-in ones plus the scenario's price files)."""
    context: Any = info.context
    if isinstance(context, Mapping):
        models = context.get("models")
        if isinstance(models, Mapping):
            return models
    return None
