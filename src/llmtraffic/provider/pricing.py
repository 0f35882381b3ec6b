"""A provider endpoint that bills as providers charge: a prompt cache whose hits follow from
the traffic, a long-context tier, and reasoning tokens reported apart (docs/billing.md).

``make_endpoint`` builds it only for a provider with a ``prompt_cache`` or long-context prices,
or one that serves a feature with reasoning tokens; every other provider runs the plain
``Endpoint`` (or ``ErrorEndpoint``) code as before. Service tiers need no subclass: they set
the plain endpoint's prices at construction.

An attempt's bill has five parts, each summed per provider (``parts``): uncached input, cache
writes, cache reads, visible output and reasoning (the first generated tokens). The cache is
read and written when the provider accepts the attempt (a slot or its queue): an attempt
refused by the rate limits, a fast error or shedding never reaches the model, so it neither
hits nor fills the cache (docs/billing.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from llmtraffic.config.provider import Provider
from llmtraffic.engine.entities import OK, Attempt
from llmtraffic.engine.kernel import Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.provider.caching import PromptCacheState
from llmtraffic.provider.errors import ErrorEndpoint
from llmtraffic.provider.quota import SpendMeter

PER_MILLION = 1e-6
INF = math.inf

# Indices of the bill's parts in ``PricedEndpoint.parts`` (and their names in the summary).
PART_NAMES = ("input", "cache_write", "cache_read", "output", "reasoning")


def _ratio(price: float, base: float) -> float:
    """``price / base``, or 1 when that is not a finite number (a base of 0 or subnormal)."""
    if base <= 0.0:
        return 1.0
    r = price / base
    return r if r < INF else 1.0


class PricedEndpoint(ErrorEndpoint):
    """An ``ErrorEndpoint`` that bills the prompt cache, the long-context tier and reasoning.

    ``prefixes`` maps each feature that may send here to its cache key (a negative number:
    session keys are the sessions' ids, >= 0) and its system prompt's tokens.
    """

    def __init__(
        self,
        name: str,
        cfg: Provider,
        kernel: Kernel,
        streams: Streams,
        check_context: bool,
        meter: SpendMeter | None,
        prefixes: Mapping[str, tuple[int, int]],
    ) -> None:
        super().__init__(name, cfg, kernel, streams, check_context, meter)
        prices = cfg.prices
        f_in, f_out = prices.for_tier(cfg.service_tier)
        cache = cfg.prompt_cache
        anthropic = cache is not None and cache.rules == "anthropic"
        # Cache writes: Anthropic's premium by TTL; OpenAI has none (a write is input).
        if anthropic and cache is not None and cache.ttl == 3600.0:
            write = prices.cache_write_1h if prices.cache_write_1h is not None else 2 * prices.input
        elif anthropic:
            write = prices.cache_write if prices.cache_write is not None else 1.25 * prices.input
        else:
            write = prices.input
        cached = prices.cached_input if prices.cached_input is not None else prices.input
        self.std = (
            prices.input * f_in * PER_MILLION,
            write * f_in * PER_MILLION,
            cached * f_in * PER_MILLION,
            prices.output * f_out * PER_MILLION,
        )
        lc = prices.long_context
        self.lc_above = INF
        self.long = self.std
        if lc is not None:
            self.lc_above = float(lc.above)
            # Cache writes and (unless given) reads keep their ratio to the input price; a
            # zero or subnormal input price has no usable ratio: then they bill as input.
            w_ratio = _ratio(write, prices.input)
            c_ratio = _ratio(cached, prices.input)
            lc_cached = lc.cached_input if lc.cached_input is not None else lc.input * c_ratio
            self.long = (
                lc.input * f_in * PER_MILLION,
                lc.input * w_ratio * f_in * PER_MILLION,
                lc_cached * f_in * PER_MILLION,
                lc.output * f_out * PER_MILLION,
            )
        self.bills_writes = anthropic
        self.cache: PromptCacheState | None = None
        self.shadow: PromptCacheState | None = None
        if cache is not None:
            assert cache.min_tokens is not None and cache.increment is not None
            self.cache = PromptCacheState(cache.ttl, cache.min_tokens, cache.increment)
            # The baseline's cache: every request once, at its arrival (``baseline_cost``).
            self.shadow = PromptCacheState(cache.ttl, cache.min_tokens, cache.increment)
        self.prefixes = dict(prefixes)
        self.parts = [0.0, 0.0, 0.0, 0.0, 0.0]
        self.lookups = 0  # accepted attempts with a cacheable prefix
        self.hits = 0
        self.cached_tokens = 0
        self.written_tokens = 0
        self.long_requests = 0
        self._finish_callbacks = [self._on_finish_priced]

    # The cache ----------------------------------------------------------------------------

    def _match(
        self, cache: PromptCacheState, client: str, session: int, prefix: int, now: float
    ) -> int:
        """Cached tokens of a prompt of feature ``client`` sent at ``now``: the longest live
        match of its feature's system prompt (shared by all its requests and sessions) and,
        for a session turn, of its session's entry, which the turn's first ``system +
        prefix`` tokens repeat (``Request.prefix_tokens``: the transcript carried over)."""
        key, system = self.prefixes.get(client, (0, 0))
        matched = cache.match(key, system, now) if system else 0
        if session >= 0:
            own = cache.match(session, system + prefix, now)
            if own > matched:
                matched = own
        return matched

    def _store(
        self, cache: PromptCacheState, client: str, session: int, inp: int, now: float
    ) -> int:
        """A prompt the provider accepted at ``now`` fills the cache up to its breakpoints:
        the end of the system prompt, and for a session turn the end of the prompt (two
        ``cache_control`` breakpoints, as Anthropic advises for a conversation). Returns the
        last breakpoint (0: nothing cacheable)."""
        key, system = self.prefixes.get(client, (0, 0))
        if system:
            cache.store(key, system, now)
        if session >= 0:
            cache.store(session, inp, now)
            return inp
        return system

    def submit(self, att: Attempt, now: float) -> None:
        """Take an attempt: the cache is consulted for the rate limits (cache reads may not
        count against itpm) and read and written only if the provider accepts it."""
        req = att.request
        cache = self.cache
        if cache is None:
            att.cached = req.cached_tokens  # cached_fraction, as today
            att.cache_write = 0
            super().submit(att, now)
            return
        client = att.client.name
        session = req.session
        matched = self._match(cache, client, session, req.prefix_tokens, now)
        att.cached = matched
        att.cache_write = 0
        fixed = req.cached_tokens
        req.cached_tokens = matched  # what the rate limiter counts, for this attempt only
        super().submit(att, now)
        req.cached_tokens = fixed
        if att.start == att.start or att.queued_at == att.queued_at:
            # Accepted (in a slot or queued; NaN both when refused).
            end = self._store(cache, client, session, req.input_tokens, now)
            if end:
                self.lookups += 1
                if matched:
                    self.hits += 1
                    self.cached_tokens += matched
                if self.bills_writes and end >= cache.min_tokens:
                    # Anthropic bills the tokens from the last hit to the last breakpoint.
                    att.cache_write = end - matched
                    self.written_tokens += end - matched

    def baseline_cost(
        self,
        client: str,
        t: float,
        inp: int,
        cached: int,
        out: int,
        session: int = -1,
        prefix: int = 0,
    ) -> float:
        """The baseline of a request of feature ``client`` arriving at ``t``: its cost if
        its first attempt succeeded here at once. The cache it sees is a shadow that every
        request visits once, at its arrival (retries and fallbacks do not touch it), so a
        run without failures bills exactly its baseline. ``cached`` (cached_fraction) applies
        when the provider has no prompt cache. A session turn gives its ``session`` and
        ``prefix`` (``Request.session``, ``Request.prefix_tokens``). Calls come in arrival
        order."""
        shadow = self.shadow
        written = 0
        if shadow is not None:
            cached = self._match(shadow, client, session, prefix, t)
            end = self._store(shadow, client, session, inp, t)
            if self.bills_writes and end >= shadow.min_tokens:
                written = end - cached
        p_in, p_write, p_cached, p_out = self.long if inp > self.lc_above else self.std
        return (inp - cached - written) * p_in + written * p_write + cached * p_cached + out * p_out

    # Billing ------------------------------------------------------------------------------

    def _priced_cost(self, att: Attempt, generated: int) -> float:
        """What the provider bills for ``att`` having generated ``generated`` tokens; adds
        each part to ``parts``. Reasoning tokens come first, so they are the first of
        ``generated``; a long prompt bills the whole request at the long-context prices."""
        req = att.request
        inp = req.input_tokens
        if inp > self.lc_above:
            p_in, p_write, p_cached, p_out = self.long
            self.long_requests += 1
        else:
            p_in, p_write, p_cached, p_out = self.std
        cached = att.cached
        written = att.cache_write
        reasoning: int = getattr(req, "reasoning", 0)
        if reasoning > generated:
            reasoning = generated
        parts = self.parts
        c_in = (inp - cached - written) * p_in
        c_write = written * p_write
        c_read = cached * p_cached
        c_out = (generated - reasoning) * p_out
        c_reason = reasoning * p_out
        parts[0] += c_in
        parts[1] += c_write
        parts[2] += c_read
        parts[3] += c_out
        parts[4] += c_reason
        return c_in + c_write + c_read + c_out + c_reason

    def _failed_cost(self, rule: str, att: Attempt, generated: int) -> float:
        if rule == "none":
            return 0.0
        if rule == "full":
            return self._priced_cost(att, att.request.output_tokens)
        return self._priced_cost(att, generated)

    def _on_finish_priced(self, att: Attempt) -> None:
        """``Endpoint._on_finish`` with the priced bill (and the spend cap's meter)."""
        now = self.kernel.now
        self.busy -= 1
        self.busy_acc += now
        if self.charges_output:
            self.limiter.charge_output(now, att.generated)  # type: ignore[union-attr]
        if self.queue:
            self._serve_queue(now)
        if att.status is OK:
            att.cost = self._priced_cost(att, att.generated)
        else:  # mid-stream error
            att.cost = self._failed_cost(self.bill_midstream, att, att.generated)
        if self.meter is not None and att.cost:
            self.meter.add(att.cost, now)
        att.client.on_response(att)

    def stats(self) -> dict[str, float]:
        """What the prices did at this provider, for the summary (docs/metrics.md)."""
        out: dict[str, float] = {
            f"{name}_cost": v for name, v in zip(PART_NAMES, self.parts, strict=True)
        }
        out["billed_cost"] = sum(self.parts)
        if self.cache is not None:
            out["cache_lookups"] = self.lookups
            out["cache_hits"] = self.hits
            out["cache_hit_rate"] = self.hits / self.lookups if self.lookups else math.nan
            out["cache_read_tokens"] = self.cached_tokens
            out["cache_write_tokens"] = self.written_tokens
        if self.lc_above != INF:
            out["long_context_attempts"] = self.long_requests
        return out
