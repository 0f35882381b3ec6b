"""A provider endpoint with error kinds beyond today's single fast error: several kinds of
fast error with their own status, rate and ``x-should-retry`` header, the context-length 400,
and an exhausted quota (a spend cap, or an incident).

``make_endpoint`` builds this subclass only for a provider that uses one of these; every other
provider is the plain ``Endpoint`` and runs exactly the code it ran before they existed.

At admission, in order (docs/providers.md, "Error kinds"): an outage; an exhausted quota (429
``quota_exhausted``, no retry-after); a prompt too long for the model (400
``context_length_exceeded``); the rate limits; one draw that picks at most one kind of fast
error; then a slot, the queue or shedding. None of the refusals is billed, and none counts
against the rate limits (they come before them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from llmtraffic.config.provider import Provider, QuotaExhaustion
from llmtraffic.config.workload import (
    EmpiricalTokens,
    Feature,
    FixedTokens,
    TokenDist,
    UniformTokens,
)
from llmtraffic.engine.entities import (
    CONTEXT_LENGTH_EXCEEDED,
    OVERLOADED,
    QUOTA_EXHAUSTED,
    RATE_LIMITED,
    SERVER_ERROR,
    Attempt,
)
from llmtraffic.engine.kernel import Call, Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.provider.endpoint import Endpoint
from llmtraffic.provider.quota import SpendMeter
from llmtraffic.results.recorder import Recorder

INF = math.inf
NAN = math.nan

__all__ = [
    "ErrorEndpoint",
    "longest_request",
    "make_endpoint",
    "spend_meters",
]


def _most_tokens(dist: TokenDist | None) -> float:
    """The largest token count a distribution can draw (inf when unbounded)."""
    if dist is None:
        return 0.0
    if isinstance(dist, FixedTokens):
        return float(dist.value)
    if isinstance(dist, UniformTokens):
        return float(dist.high)
    if isinstance(dist, EmpiricalTokens):
        return float(math.ceil(dist.quantiles[-1]))
    return INF  # lognormal: unbounded


def longest_request(features: Iterable[Feature]) -> float:
    """The largest input + max_tokens any of ``features`` can send (inf when unbounded: a
    lognormal size, a trace, a conversation without max_context), which decides whether a
    context window can ever refuse one."""
    longest = 0.0
    for feat in features:
        if feat.trace is not None:
            return INF
        size = (
            _most_tokens(feat.input_tokens)
            + _most_tokens(feat.rag_tokens)
            + feat.system_prompt_tokens
        )
        conv = feat.session if feat.session is not None else feat.agent
        if conv is not None:
            # A conversation's prompt grows by each turn: bounded only by its max_context
            # (or by the system prompt and a turn's new tokens, sent whole when they exceed it).
            if conv.max_context is None:
                return INF
            size = max(float(conv.max_context), conv.system_tokens + size)
        longest = max(longest, size + feat.max_tokens)
    return longest


def spend_meters(providers: Mapping[str, Provider], recorder: Recorder) -> dict[str, SpendMeter]:
    """The spend meter of each provider with a quota; providers whose quota names the same
    ``account`` share one (their bills add up). Its events name the provider, or the account
    of a shared cap."""
    meters: dict[str, SpendMeter] = {}
    shared: dict[str, SpendMeter] = {}
    for name, cfg in providers.items():
        quota = cfg.quota
        if quota is None:
            continue
        if quota.account is not None and quota.account in shared:
            meters[name] = shared[quota.account]
            continue
        label = name if quota.account is None else quota.account

        def reached(now: float, spent: float, label: str = label) -> None:
            recorder.event(now, "quota_exhausted", "", label, "spend_cap", spent)

        def reset(now: float, spent: float, label: str = label) -> None:
            recorder.event(now, "quota_reset", "", label, "spend_cap", spent)

        meter = SpendMeter(quota.spend_cap, quota.period, reached, reset)
        meters[name] = meter
        if quota.account is not None:
            shared[quota.account] = meter
    return meters


def make_endpoint(
    name: str,
    cfg: Provider,
    kernel: Kernel,
    streams: Streams,
    longest: float,
    meter: SpendMeter | None = None,
    features: Mapping[str, Feature] | None = None,
) -> Endpoint:
    """The endpoint of provider ``name``: an ``ErrorEndpoint`` when it uses error kinds, a
    quota (``meter``, from ``spend_meters``), or a context window that a request of
    ``longest`` tokens could exceed; serving by continuous batching (``BatchingEndpoint``,
    or both) when it has a ``batching`` table; billing by the prompt cache, long-context
    prices or reasoning tokens (``PricedEndpoint``) when it has a ``prompt_cache``,
    ``prices.long_context``, or one of ``features`` (those that may send to it, by name)
    has reasoning tokens."""
    window = cfg.context_window
    check_context = isinstance(window, int) and longest > window
    f = cfg.failures
    features = features or {}
    if cfg.batching is not None:
        # Imported here: batching's endpoint extends this module's. It bills standard (or
        # tier) prices; the scenario refuses a prompt cache or a reachable long-context
        # tier with batching (config.scenario).
        from llmtraffic.provider.batching import BatchingEndpoint

        return BatchingEndpoint(name, cfg, kernel, streams, check_context, meter)
    if (
        cfg.prompt_cache is not None
        or cfg.prices.long_context is not None
        or any(feat.reasoning_tokens is not None for feat in features.values())
    ):
        from llmtraffic.provider.pricing import PricedEndpoint

        # A negative key per feature (session keys are the sessions' ids, >= 0).
        # The system prompt every request of a feature starts with: a session's or agent's
        # system_tokens, else the feature's system_prompt_tokens.
        prefixes = {}
        for i, (fname, feat) in enumerate(features.items()):
            conv = feat.session if feat.session is not None else feat.agent
            system = conv.system_tokens if conv is not None else feat.system_prompt_tokens
            prefixes[fname] = (-1 - i, system)
        return PricedEndpoint(name, cfg, kernel, streams, check_context, meter, prefixes)
    if cfg.batching is not None:
        # Imported here: batching's endpoint extends this module's.
        from llmtraffic.provider.batching import BatchingEndpoint

        return BatchingEndpoint(name, cfg, kernel, streams, check_context, meter)
    if (
        check_context
        or f.errors
        or f.error_should_retry is not None
        or meter is not None
        or any(isinstance(inc, QuotaExhaustion) for inc in cfg.incidents)
    ):
        return ErrorEndpoint(name, cfg, kernel, streams, check_context, meter)
    return Endpoint(name, cfg, kernel, streams)


class ErrorEndpoint(Endpoint):
    """An ``Endpoint`` whose admission knows the error kinds above (the module docstring)."""

    def __init__(
        self,
        name: str,
        cfg: Provider,
        kernel: Kernel,
        streams: Streams,
        check_context: bool,
        meter: SpendMeter | None = None,
    ) -> None:
        super().__init__(name, cfg, kernel, streams)
        window = cfg.context_window
        self.context_window = float(window) if check_context and isinstance(window, int) else INF
        # The other kinds follow the base kind (error_rate) on one draw: kind i is picked when
        # the draw falls in its slice of [error_rate, error_rate + sum of rates).
        self.kinds = tuple((k.rate, k.status, k.should_retry) for k in cfg.failures.errors)
        self.kinds_rate = sum(k.rate for k in cfg.failures.errors)
        self.quota_blocked = False  # a quota_exhausted incident is on
        self.meter = meter
        if meter is not None:
            self._finish_callbacks = [self._on_finish_metered]
        self.quota_checks = self.meter is not None or any(
            isinstance(inc, QuotaExhaustion) for inc in cfg.incidents
        )
        # Refusals by cause, for the summary's quota_exhausted_by.
        self.quota_refused = {"spend_cap": 0, "incident": 0}
        self.context_refused = 0

    def submit(self, att: Attempt, now: float) -> None:
        """Take an attempt sent at ``now`` (``Endpoint.submit`` with the checks above)."""
        if self.outage_status:
            self._respond(att, now, SERVER_ERROR, self.outage_status, NAN)
            return
        if self.quota_checks and self._quota_refuses(att, now):
            return
        req = att.request
        max_tokens = att.client.max_tokens
        if req.input_tokens + max_tokens > self.context_window:
            self.context_refused += 1
            self._respond(att, now, CONTEXT_LENGTH_EXCEEDED, 400, NAN)
            return
        limiter = self.limiter
        if limiter is not None:
            retry_after = limiter.admit(now, req.input_tokens, req.cached_tokens, max_tokens)
            if retry_after is not None:
                self._respond(att, now, RATE_LIMITED, 429, retry_after)
                return
        rate = self.error_rate
        if rate or self.kinds_rate:
            u = next(self.u)
            if u < rate:
                self._fail(att, now, self.error_status, self.error_should_retry)
                return
            u -= rate
            for kind_rate, status, should_retry in self.kinds:
                if u < kind_rate:
                    self._fail(att, now, status, should_retry)
                    return
                u -= kind_rate
        # A slot, the queue, or shedding: the end of ``Endpoint.submit``.
        if self.busy < self.slots:
            self._start(att, now)
        elif len(self.queue) < self.queue_limit:
            self._draw(att)
            att.queued_at = now
            self.queue.append(att)
            self.queue_acc -= now
            if att.abandon_at != INF:
                att.timer = self.kernel.call_in(att.abandon_at - now, self._on_timeout, att)
        else:
            self._respond(att, now, OVERLOADED, self.overload_status, NAN)

    def _quota_refuses(self, att: Attempt, now: float) -> bool:
        """Refuse ``att`` with a 429 quota_exhausted when a quota incident is on or the spend
        cap is reached; whether it did."""
        if self.quota_blocked:
            self.quota_refused["incident"] += 1
        elif self.meter is not None and self.meter.exhausted(now):
            self.quota_refused["spend_cap"] += 1
        else:
            return False
        self._respond(att, now, QUOTA_EXHAUSTED, 429, NAN)
        return True

    def _fail(self, att: Attempt, now: float, status: int, should_retry: bool | None) -> None:
        """A fast error of one kind, with its x-should-retry header when the kind sends one."""
        if should_retry is not None:
            att.should_retry = should_retry
        self._respond(att, now, SERVER_ERROR, status, NAN)

    # The spend cap counts every cost the provider bills, when it bills it: the end of an
    # attempt the client waited for (``_on_finish``, metered only when there is a cap, through
    # ``_finish_callbacks``), the client's timeout (what abandoned work will cost is billed
    # then) and a stalled stream cut by it.

    def _on_finish_metered(self, att: Attempt) -> None:
        self._on_finish(att)
        if att.cost:
            self.meter.add(att.cost, self.kernel.now)  # type: ignore[union-attr]

    def _on_timeout(self, ev: Call) -> None:
        super()._on_timeout(ev)
        att: Attempt = ev._value
        if self.meter is not None and att.cost:
            self.meter.add(att.cost, self.kernel.now)

    def _on_stall_cut(self, ev: Call) -> None:
        super()._on_stall_cut(ev)
        att: Attempt = ev._value
        if self.meter is not None and att.cost:
            self.meter.add(att.cost, self.kernel.now)
