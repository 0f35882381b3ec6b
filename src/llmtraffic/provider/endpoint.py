"""A provider endpoint: admits attempts through its rate limiter, fails some, queues the rest
for its serving slots, sheds past the queue limit, and bills per its billing rules.

An attempt reaches the client exactly once, through ``client.on_response(attempt)``, at the
time the client sees its outcome; an attempt the client abandoned may keep running here,
holding its slot, until it would have ended.

An admitted attempt's work is drawn when it is admitted (service time, and whether and where
it fails mid-stream), so that an attempt abandoned while still queued is billed, at once, for
what the provider will run when it serves it (docs/billing.md).
"""

from __future__ import annotations

import math
import sys
from collections import deque
from heapq import heappush

from llmtraffic.config.provider import Provider
from llmtraffic.engine.entities import (
    MIDSTREAM_ERROR,
    OK,
    OVERLOADED,
    RATE_LIMITED,
    SERVER_ERROR,
    STALLED,
    TIMEOUT,
    Attempt,
)
from llmtraffic.engine.kernel import NORMAL, Call, Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.provider.ratelimit import RateLimiter
from llmtraffic.provider.service import make_service

PER_MILLION = 1e-6
INF = math.inf


class Endpoint:
    """One provider (model endpoint) in a running simulation.

    Levels for the time series: the integral of busy slots from 0 to T is
    ``busy_acc + busy * T``, and of the queue length ``queue_acc + len(queue) * T``.
    """

    def __init__(self, name: str, cfg: Provider, kernel: Kernel, streams: Streams) -> None:
        self.name = name
        self.model = cfg.model
        self.kernel = kernel
        prices = cfg.prices
        # A service tier (batch, flex, priority) scales the standard prices (1, 1: standard).
        f_in, f_out = prices.for_tier(cfg.service_tier)
        self.price_input = prices.input * f_in * PER_MILLION
        cached = prices.cached_input if prices.cached_input is not None else prices.input
        self.price_cached = cached * f_in * PER_MILLION
        self.price_output = prices.output * f_out * PER_MILLION
        rl = cfg.rate_limit
        self.limiter = RateLimiter.from_config(rl) if rl is not None else None
        self.charges_output = self.limiter is not None and self.limiter.otpm is not None
        # The per-minute limits a router reads as the deployment's rpm / tpm (LiteLLM's
        # deployment rpm and tpm; inf: none).
        self.limit_rpm = INF if rl is None or rl.rpm is None else rl.rpm
        self.limit_tpm = INF if rl is None or rl.tpm is None else rl.tpm
        cap = cfg.capacity
        if cap is None:
            # A hosted model's own traffic is not capacity-limited unless the config says so
            # (docs/providers.md): every admitted attempt starts at once, no queue forms.
            self.base_slots = sys.maxsize
            self.queue_limit = 0.0
            self.overload_status = 529
        else:
            self.base_slots = cap.slots
            self.queue_limit = INF if cap.queue_limit == "unbounded" else cap.queue_limit
            self.overload_status = cap.overload_status
        self.slots = self.base_slots
        self.busy = 0
        self.busy_acc = 0.0
        self.queue: deque[Attempt] = deque()
        self.queue_acc = 0.0
        f = cfg.failures
        self.base_error_rate = f.error_rate
        self.base_error_status = f.error_status
        self.error_rate = f.error_rate
        self.error_status = f.error_status
        # The x-should-retry header of those errors; only ``ErrorEndpoint`` sends it.
        self.base_should_retry = f.error_should_retry
        self.error_should_retry = f.error_should_retry
        self.error_latency = f.error_latency
        self.base_midstream_rate = f.midstream_rate
        self.midstream_rate = f.midstream_rate
        self.stall_rate = f.stall_rate
        # Whether an attempt may stall or have its limit lifted at its first token (a streamed
        # client with first-token or idle timeouts sets it): one test in _start when not.
        self.token_events = f.stall_rate > 0
        self.outage_status = 0
        self.slowdown = 1.0
        b = cfg.billing
        self.bill_timeout = b.timeout
        self.bill_midstream = b.midstream
        self.keep_running = b.abandoned_keeps_running
        service = make_service(cfg.service, streams.generator(f"provider/{name}/latency"))
        self.svc_fixed = service.fixed
        self.svc_per_token = service.per_token
        self.svc_factors = service.factors
        # One stream per purpose, so that a change in one (a brownout's error rate) leaves the
        # others' draws where they were: paired comparisons stay aligned.
        self.u = streams.uniforms(f"provider/{name}/errors")
        self.u_midstream = streams.uniforms(f"provider/{name}/midstream")
        self.u_fail_point = streams.uniforms(f"provider/{name}/fail_point")
        self.u_stall_point = streams.uniforms(f"provider/{name}/stall_point")
        self.queue_heap = kernel.queue
        self.eid = kernel.eid
        # SimPy reads an event's callbacks list without changing it, so one list serves all.
        self._finish_callbacks = [self._on_finish]
        self._release_callbacks = [self._on_release]

    def cost(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """USD for the given tokens at this endpoint's prices."""
        return (
            (input_tokens - cached_tokens) * self.price_input
            + cached_tokens * self.price_cached
            + output_tokens * self.price_output
        )

    def busy_integral(self, t: float) -> float:
        """Integral of the busy slots from 0 to ``t``."""
        return self.busy_acc + self.busy * t

    def queue_integral(self, t: float) -> float:
        """Integral of the queue length from 0 to ``t``."""
        return self.queue_acc + len(self.queue) * t

    # Admission ----------------------------------------------------------------------------------

    def submit(self, att: Attempt, now: float) -> None:
        """Take an attempt sent at ``now``."""
        if self.outage_status:
            self._respond(att, now, SERVER_ERROR, self.outage_status, math.nan)
            return
        limiter = self.limiter
        if limiter is not None:
            req = att.request
            retry_after = limiter.admit(
                now, req.input_tokens, req.cached_tokens, att.client.max_tokens
            )
            if retry_after is not None:
                self._respond(att, now, RATE_LIMITED, 429, retry_after)
                return
        if self.error_rate and next(self.u) < self.error_rate:
            self._respond(att, now, SERVER_ERROR, self.error_status, math.nan)
            return
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
            self._respond(att, now, OVERLOADED, self.overload_status, math.nan)

    def _respond(
        self, att: Attempt, now: float, status: str, http: int, retry_after: float
    ) -> None:
        """A fast, unbilled failure: the client sees it after ``error_latency``."""
        delay = self.error_latency
        if now + delay > att.abandon_at:
            att.status = TIMEOUT
            att.http_status = 0
            att.abandoned = True
            delay = att.abandon_at - now
        else:
            att.status = status
            att.http_status = http
            att.retry_after = retry_after
        self.kernel.schedule(att, delay, self._deliver)

    def _deliver(self, att: Attempt) -> None:
        att.client.on_response(att)

    # Service ------------------------------------------------------------------------------------

    def _draw(self, att: Attempt) -> None:
        """The work a queued attempt will be (``_start`` inlines the same for an attempt that
        goes straight into a slot): its output tokens (all, or up to a mid-stream
        failure) and its service time before any slowdown, with the time to first token."""
        out = att.request.output_tokens
        factor = next(self.svc_factors)
        per_token = self.svc_per_token
        if self.midstream_rate or self.stall_rate:
            generated, frac = self._fate(att, out)
        else:
            frac = 1.0
            generated = out
        att.generated = generated
        if per_token:
            # Token service: the first token after ttft, then one every 1 / decode_tps; a
            # mid-stream failure comes right after the last token generated.
            first = self.svc_fixed * factor
            att.first_token = first
            att.service = first + per_token * generated * factor
        else:
            # A service-time distribution: no first-token structure, output spread evenly.
            att.service = self.svc_fixed * factor * frac

    def _start(self, att: Attempt, now: float) -> None:
        self.busy += 1
        self.busy_acc -= now
        att.start = now
        slowdown = self.slowdown
        if att.queued_at == att.queued_at:
            # Drawn when it was queued (``_draw``); a latency spike applies from its start.
            svc = att.service * slowdown
            att.first_token *= slowdown
        else:
            # Straight into a slot: ``_draw``, inlined on the path most attempts take.
            out = att.request.output_tokens
            factor = next(self.svc_factors) * slowdown
            if self.midstream_rate or self.stall_rate:
                out, frac = self._fate(att, out)
            else:
                frac = 1.0
            att.generated = out
            per_token = self.svc_per_token
            if per_token:
                first = self.svc_fixed * factor
                att.first_token = first
                svc = first + per_token * out * factor
            else:
                svc = self.svc_fixed * factor * frac
        att.service = svc
        if self.token_events:
            if att.status is STALLED:
                self._stall(att, now, svc)
                return
            if att.late:
                self._after_first_token(att, now, svc)
        if att.abandoned:
            # The client left while this waited in the queue; the provider serves it anyway.
            callbacks = self._release_callbacks
        elif now + svc <= att.abandon_at:
            callbacks = self._finish_callbacks
        else:
            att.timer = self.kernel.call_in(att.abandon_at - now, self._on_timeout, att)
            if not self.keep_running:
                return
            callbacks = self._release_callbacks
        # The attempt is itself the event of its end at the provider (see engine.entities).
        att.callbacks = callbacks
        heappush(self.queue_heap, (now + svc, NORMAL, next(self.eid), att))

    def _fate(self, att: Attempt, out: int) -> tuple[int, float]:
        """Whether generation fails or stalls part-way (one draw decides: fails with
        ``midstream_rate``, else stalls with ``stall_rate``): the output tokens it reaches and
        their share of the answer, and the mark on ``att``."""
        u = next(self.u_midstream)
        rate = self.midstream_rate
        if u < rate:
            frac = next(self.u_fail_point)
            att.status = MIDSTREAM_ERROR
        elif u < rate + self.stall_rate:
            frac = next(self.u_stall_point)
            att.status = STALLED
        else:
            return out, 1.0
        return int(out * frac), frac

    @staticmethod
    def first_token_offset(att: Attempt) -> float:
        """Seconds from the attempt's start until its first token is complete: after the time
        to first token (``first_token``: the prefill, 0 for a service-time distribution),
        tokens come at an even pace, so the first is done one pace later (the rule partial
        billing counts by, ``_generated_by``). NaN when it generates none."""
        gen = att.generated
        if not gen:
            return math.nan
        return att.first_token + (att.service - att.first_token) / gen

    def token_pace(self, att: Attempt) -> float:
        """Seconds between output tokens of an attempt's generation (its service after the
        time to first token, over its tokens): 1 / decode_tps times the attempt's noise and
        slowdown for the token model; vLLM's TPOT, (end - first token) / (tokens - 1). NaN
        when it generates none, or without the token model (a service-time distribution has
        no decode pace)."""
        gen = att.generated
        if not gen or not self.svc_per_token:
            return math.nan
        return (att.service - att.first_token) / gen

    def _after_first_token(self, att: Attempt, now: float, svc: float) -> None:
        """A streamed attempt whose client has first-token or idle timeouts: once its first
        token arrives in time, only the total timeout (``att.late``) bounds it. The idle
        timeout needs no check after the first token: at an even pace the longest silence is
        the one before it (the prefill plus one token), which the first limit bounds."""
        if now + self.first_token_offset(att) <= att.abandon_at:  # NaN (no token): False
            att.abandon_at = att.late

    def _stall(self, att: Attempt, now: float, svc: float) -> None:
        """A stream that stops after ``att.generated`` tokens (at ``now + svc``) with no error:
        it holds its slot until the client's timeout cuts it, the idle timeout one idle span
        after the last token it saw; with no timeout, to the end of the run."""
        if att.abandoned:
            # The client left while it queued: the provider runs it to the stall and drops it.
            att.callbacks = self._release_callbacks
            heappush(self.queue_heap, (now + svc, NORMAL, next(self.eid), att))
            return
        cut = att.abandon_at
        if att.late and now + self.first_token_offset(att) <= cut:
            # Streamed, and the first token came in time: the total timeout, or the idle
            # timeout after the last token (the silence before the first is already bounded).
            cut = min(att.late, now + svc + att.client.idle_timeout)
        if cut != INF:
            att.timer = self.kernel.call_in(cut - now, self._on_stall_cut, att)

    def _on_stall_cut(self, ev: Call) -> None:
        """The client's timeout cuts a stalled stream: the provider, whose stream is dead,
        drops it, and bills it as any attempt the client abandoned that the provider stops
        (``billing.timeout``: ``partial``, the input and the tokens generated by then)."""
        att: Attempt = ev._value
        now = self.kernel.now
        att.timer = None
        att.abandoned = True
        att.status = TIMEOUT
        att.http_status = 0
        att.generated = self._generated_by(att, now)
        att.cost = self._failed_cost(self.bill_timeout, att, att.generated)
        self._free_slot(att, now)
        att.client.on_response(att)

    def _free_slot(self, att: Attempt, now: float) -> None:
        self.busy -= 1
        self.busy_acc += now
        if self.charges_output:
            # Output tokens count when generated (an attempt that generated none costs none).
            self.limiter.charge_output(now, att.generated)  # type: ignore[union-attr]
        if self.queue:
            self._serve_queue(now)

    def _serve_queue(self, now: float) -> None:
        """Start queued attempts while slots are free."""
        queue = self.queue
        while queue and self.busy < self.slots:
            nxt = queue.popleft()
            self.queue_acc += now
            if nxt.timer is not None:
                # Served in time: the client's timeout while queued will not happen.
                Kernel.cancel(nxt.timer)
                nxt.timer = None
            self._start(nxt, now)

    def _on_finish(self, att: Attempt) -> None:
        """The provider finished an attempt the client is still waiting for."""
        now = self.kernel.now
        # _free_slot, inlined: this is the path every successful attempt takes.
        self.busy -= 1
        self.busy_acc += now
        if self.charges_output:
            # Output tokens count when generated (an attempt that generated none costs none).
            self.limiter.charge_output(now, att.generated)  # type: ignore[union-attr]
        if self.queue:
            self._serve_queue(now)
        req = att.request
        if att.status is OK:
            att.cost = (
                (req.input_tokens - req.cached_tokens) * self.price_input
                + req.cached_tokens * self.price_cached
                + att.generated * self.price_output
            )
        else:  # mid-stream error
            att.cost = self._failed_cost(self.bill_midstream, att, att.generated)
        att.client.on_response(att)

    def _on_release(self, att: Attempt) -> None:
        """An abandoned attempt ends at the provider and frees its slot."""
        self._free_slot(att, self.kernel.now)

    def _on_timeout(self, ev: Call) -> None:
        """The client gives up on an attempt (per-attempt timeout or request deadline)."""
        att: Attempt = ev._value
        now = self.kernel.now
        att.timer = None
        att.abandoned = True
        att.status = TIMEOUT
        att.http_status = 0
        if self.keep_running:
            # The provider runs it to its end, now or (still queued) later, and bills what it
            # runs: every token it generates ("partial"), or the whole answer ("full").
            att.cost = self._failed_cost(self.bill_timeout, att, att.generated)
        elif att.start == att.start:  # started (not NaN): the provider stops at the disconnect
            att.generated = self._generated_by(att, now)
            att.cost = self._failed_cost(self.bill_timeout, att, att.generated)
            self._free_slot(att, now)
        else:  # still queued: the provider drops it unserved, and bills nothing
            self.queue.remove(att)
            self.queue_acc += now
            att.generated = 0
        att.client.on_response(att)

    def cancel(self, att: Attempt, now: float) -> None:
        """The client cancels ``att`` now (a hedged request answered by another attempt).

        The provider treats it exactly as an attempt the client abandons at its timeout
        (``_on_timeout``, or ``_on_stall_cut`` for a stalled stream): it keeps running and is
        billed per ``billing.timeout`` when ``abandoned_keeps_running``, else it stops (a
        queued one is dropped unbilled). The client sees it now, with status timeout. Only
        hedging calls this; no other path runs it."""
        timer = att.timer
        if timer is not None:
            Kernel.cancel(timer)  # the timeout it waited for is now
            att.timer = None
        if att.start != att.start and att.queued_at != att.queued_at:
            # A fast failure (429, 5xx) on its way back: nothing ran and nothing is billed;
            # its delivery fires empty and the client stops waiting for it now.
            att.callbacks = []
            att.abandoned = True
            att.status = TIMEOUT
            att.http_status = 0
            att.retry_after = math.nan
            att.client.on_response(att)
            return
        if att.start == att.start:
            if att.status is STALLED and not att.abandoned:
                # A stalled stream has no end event here, only the cut it waits for.
                self._on_stall_cut(Call(self._on_stall_cut, att))
                return
            if getattr(att, "callbacks", None) is self._finish_callbacks:
                # Its end is in the event queue: it frees the slot then (keeps running) or
                # fires empty (``_on_timeout`` frees the slot now).
                att.callbacks = self._release_callbacks if self.keep_running else []
        self._on_timeout(Call(self._on_timeout, att))

    @staticmethod
    def _generated_by(att: Attempt, now: float) -> int:
        """Output tokens generated by ``now`` of an attempt in service: none before the first
        token, then at an even pace to its end (time to first token generates nothing)."""
        first = att.start + att.first_token
        if now <= first:
            return 0
        span = att.start + att.service - first
        if span <= 0.0 or now >= first + span:
            return att.generated
        # The nudge keeps a whole count whole: 2 s of a 10 s answer of 50 tokens is 10 tokens,
        # not 9.999... floored to 9, when the times carry rounding error.
        return int(att.generated * (now - first) / span + 1e-9)

    def _failed_cost(self, rule: str, att: Attempt, generated: int) -> float:
        req = att.request
        if rule == "none":
            return 0.0
        if rule == "full":
            return self.cost(req.input_tokens, req.cached_tokens, req.output_tokens)
        return self.cost(req.input_tokens, req.cached_tokens, generated)

    # Incidents ----------------------------------------------------------------------------------

    def set_slots(self, slots: int, now: float) -> None:
        """Change the number of serving slots; more slots start queued attempts at once."""
        self.slots = slots
        self._serve_queue(now)
