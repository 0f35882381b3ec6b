"""Hedged requests (Dean & Barroso, "The Tail at Scale", CACM 2013; docs/policies.md, "Hedged
requests"): when an attempt has not answered ``hedge.delay`` after it was sent, send another
attempt of the same request to the same provider, up to ``hedge.max_hedges`` of them; the first
success ends the request and the attempts still in flight are cancelled. ``hedge.delay`` may
be a percentile ("p95") of the latencies of this client's last ``hedge.samples`` successful
attempts (hedges included), taken when the attempt is sent; no hedge goes out before
``hedge.min_samples`` of them were seen.

A cancelled attempt is treated by the provider exactly as one the client abandoned at its
timeout (``Endpoint.cancel``): it keeps running and is billed per ``billing.timeout`` when
``abandoned_keeps_running``, else it stops. It reaches the client at once with status timeout,
before the request's own outcome, so its bill is on the request's row.

A failed attempt while another of the request is still in flight is recorded and otherwise
ignored: the request waits for the other. When the last one in flight fails, the retry policy
decides as without hedging (its own attempt count, ``provider_attempts``, leaves hedges out;
``max_attempts`` caps all attempts, hedges included). Each attempt the retry policy sends may
be hedged again.

Only policies with ``hedge`` use ``HedgedClient``: the others keep ``Client``'s code unchanged.
The policy config refuses hedging with breakers, budgets, throttles, pacing, a concurrency
limit, fallbacks and layers (not modelled yet), so every attempt here goes straight out.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque

from llmtraffic.client.client import Client
from llmtraffic.config.policy import Policy
from llmtraffic.config.workload import Feature
from llmtraffic.engine.entities import OK, Attempt, Request
from llmtraffic.engine.kernel import Call, Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.provider.endpoint import Endpoint
from llmtraffic.results.recorder import Recorder

__all__ = ["HedgedClient", "Hedging"]

NAN = math.nan


class Hedging:
    """Where one request stands: its attempts in flight, the hedges sent for the retry
    policy's current attempt (``round_hedges``) and their delay, the timer of the next hedge,
    and whether a success has settled it (its other attempts are being cancelled)."""

    __slots__ = ("delay", "inflight", "round_hedges", "settled", "timer")

    def __init__(self) -> None:
        self.delay = math.inf  # the hedge delay of the retry policy's current attempt
        self.inflight: list[Attempt] = []
        self.round_hedges = 0
        self.settled = False
        self.timer: Call | None = None


class HedgedClient(Client):
    """A client whose policy hedges its attempts.

    ``hedges`` counts the hedge attempts sent, ``hedge_wins`` the requests a hedge answered,
    ``cancelled`` the attempts cancelled because another of their request succeeded.
    """

    def __init__(
        self,
        name: str,
        feature: Feature,
        policy: Policy,
        chain: list[Endpoint],
        kernel: Kernel,
        streams: Streams,
        recorder: Recorder,
        track_live: bool = False,
    ) -> None:
        super().__init__(name, feature, policy, chain, kernel, streams, recorder, track_live)
        hedge = policy.hedge
        assert hedge is not None  # simulation chooses this class only for hedging policies
        assert self._direct  # the config refuses the gates and breakers hedging does not model
        # A fixed delay, or (hedge_q > 0) a percentile of the latencies of the last
        # ``hedge.samples`` successful attempts, kept sorted (``_latencies``) and in arrival
        # order (``_recent``, to drop the oldest); no hedge before ``hedge.min_samples``.
        self.hedge_q = hedge.percentile
        self.hedge_delay = hedge.delay if isinstance(hedge.delay, float) else math.inf
        self.hedge_min = hedge.min_samples
        self._recent: deque[float] = deque(maxlen=hedge.samples)
        self._latencies: list[float] = []
        self.max_hedges = hedge.max_hedges
        self.hedging: dict[int, Hedging] = {}
        self.hedges = 0
        self.hedge_wins = 0
        self.cancelled = 0
        self._hedge_numbers: dict[int, set[int]] = {}

    # Sending ----------------------------------------------------------------------------------

    def _submit(self, req: Request, now: float, cap: float = math.inf) -> None:
        """An attempt of the retry policy (the first or a retry) goes out now; its hedge timer
        starts (``cap`` is for retry layers, which the config refuses with hedging)."""
        st = self.hedging.get(req.id)
        if st is None:
            st = self.hedging[req.id] = Hedging()
        st.round_hedges = 0
        number = req.attempts
        tally = self.tally
        if number:
            tally.retries += 1
            wait = req.prev_wait
        else:
            wait = 0.0
        req.provider_attempts += 1
        self._send(req, st, now, wait)
        delay = st.delay = self.hedge_delay if not self.hedge_q else self._percentile_delay()
        if now + delay < req.deadline_at:
            st.timer = self.kernel.call_in(delay, self._on_hedge_timer, req)

    def _percentile_delay(self) -> float:
        """The ``hedge_q`` percentile (nearest rank) of the latencies seen, or inf (no hedge)
        before ``hedge_min`` of them."""
        n = len(self._latencies)
        if n < self.hedge_min:
            return math.inf
        return self._latencies[max(0, math.ceil(self.hedge_q * n) - 1)]

    def _learn(self, latency: float) -> None:
        """A successful attempt took ``latency`` seconds: into the window of the percentile."""
        recent = self._recent
        if len(recent) == recent.maxlen:
            oldest = recent[0]
            del self._latencies[bisect_left(self._latencies, oldest)]
        recent.append(latency)
        insort(self._latencies, latency)

    def _send(self, req: Request, st: Hedging, now: float, wait: float) -> Attempt:
        """``Client._submit``'s sending, for an attempt of either kind: counted, timed out as
        any attempt, and tracked as in flight."""
        endpoint = self.chain[req.chain_pos]
        req.held = 0
        abandon = now + self.timeout
        if req.deadline_at < abandon:
            abandon = req.deadline_at
        number = req.attempts
        tally = self.tally
        tally.sent += 1
        tally.inflight_acc -= now
        req.attempts = number + 1
        req.last_provider = endpoint
        att = Attempt(req, self, number, endpoint, now, abandon, wait, req.epoch)
        if self.late_timeout is not None:
            late = now + self.late_timeout
            att.late = late if late < req.deadline_at else req.deadline_at
        st.inflight.append(att)
        endpoint.submit(att, now)
        return att

    def _on_hedge_timer(self, ev: Call) -> None:
        """``hedge.delay`` after the last attempt sent, none has answered: hedge."""
        req: Request = ev._value
        st = self.hedging.get(req.id)
        if st is None or st.settled or not st.inflight:
            return
        st.timer = None
        now = self.kernel.now
        if req.attempts >= self.max_attempts or now >= req.deadline_at:
            return
        st.round_hedges += 1
        self.hedges += 1
        self._hedge_numbers.setdefault(req.id, set()).add(req.attempts)
        self._send(req, st, now, 0.0)
        if st.round_hedges < self.max_hedges and now + st.delay < req.deadline_at:
            st.timer = self.kernel.call_in(st.delay, self._on_hedge_timer, req)

    # Outcomes ---------------------------------------------------------------------------------

    def on_response(self, att: Attempt) -> None:
        """The client sees the outcome of ``att`` now; a success cancels the request's other
        attempts in flight first (their bills land on the request before its row)."""
        req = att.request
        st = self.hedging[req.id]
        st.inflight.remove(att)
        if self.hedge_q and att.status is OK:
            self._learn(self.kernel.now - att.send)
        if att.status is OK and not st.settled:
            st.settled = True
            if st.timer is not None:
                Kernel.cancel(st.timer)
                st.timer = None
            numbers = self._hedge_numbers.get(req.id)
            if numbers is not None and att.number in numbers:
                self.hedge_wins += 1
            now = self.kernel.now
            self.cancelled += len(st.inflight)
            for other in list(st.inflight):
                other.provider.cancel(other, now)
        super().on_response(att)

    def _after_failure(self, att: Attempt, req: Request, now: float) -> None:
        st = self.hedging[req.id]
        if st.settled or st.inflight:
            # Cancelled, or another attempt may still answer: nothing to decide yet.
            return
        if st.timer is not None:
            Kernel.cancel(st.timer)
            st.timer = None
        super()._after_failure(att, req, now)

    def finish(self, req: Request, outcome: str, now: float) -> None:
        """End ``req`` with its one terminal ``outcome`` (and forget its hedging)."""
        self._forget(req)
        super().finish(req, outcome, now)

    def _finish_first_try(self, req: Request, att: Attempt, now: float) -> None:
        """The combined row stands for a request of one attempt only: a request whose first
        attempt won over cancelled hedges gets its attempt row and request row apart."""
        if req.attempts == 1:
            self._forget(req)
            super()._finish_first_try(req, att, now)
            return
        rows = self.recorder.attempts
        ttft, tpot = self.token_times(att, now)
        if rows is not None:
            start = att.start
            rows.append(
                (
                    req.id,
                    att.number,
                    self.name,
                    att.provider.name,
                    att.provider.model,
                    att.send,
                    start,
                    now,
                    att.status,
                    att.http_status,
                    att.retry_after,
                    start - att.send if start == start else NAN,
                    req.input_tokens,
                    att.generated,
                    att.cost,
                    att.wait_before,
                    ttft,
                    tpot,
                )
            )
        # As Client.on_response records a success (the token times its tally keeps).
        tally = self.tally
        if self.keep_ttft:
            tally.ttfts.append(ttft + (att.send - req.arrival))
        if self.keep_tpot:
            tally.tpots.append(tpot)
        self.finish(req, OK, now)

    def _forget(self, req: Request) -> None:
        st = self.hedging.pop(req.id, None)
        self._hedge_numbers.pop(req.id, None)
        if st is not None and st.timer is not None:
            Kernel.cancel(st.timer)
