"""The client of one feature: sends attempts, takes their outcomes, asks its policy what to do,
and carries the decision out in simulated time (retry after a wait, fall back to another
provider, or end the request).

Before an attempt goes out it passes, in order: the circuit breaker of its provider (a refusal
may move the request to a fallback provider), adaptive throttling, the retry budget (for
retries), client-side pacing (it may wait), and the concurrency limit (it may queue locally).

What a gate gives an attempt it lets through (a half-open trial permit, a throttle count, a
retry from the budget, a pacing reservation) is held by the request until the attempt goes out;
if a later gate refuses it, or the request ends while it waits (deadline, end of the run), the
request gives everything back (``release_held``): gates that compose must not leak.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from llmtraffic.client.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from llmtraffic.client.budget import RetryBudget, make_budget
from llmtraffic.client.pacing import ClientPacer
from llmtraffic.client.retry import Decision, RetryController, as_decision, controller_for
from llmtraffic.client.throttle import AdaptiveThrottle
from llmtraffic.client.waits import RetryState
from llmtraffic.config.policy import Policy
from llmtraffic.config.workload import Feature
from llmtraffic.engine.entities import (
    DEADLINE,
    EXHAUSTED,
    HELD_BUDGET,
    HELD_PACE,
    HELD_PERMIT,
    HELD_THROTTLE,
    OK,
    REJECTED_BREAKER,
    REJECTED_BUDGET,
    REJECTED_THROTTLE,
    UNFINISHED,
    Attempt,
    Request,
)
from llmtraffic.engine.kernel import Call, Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.errors import PolicyError
from llmtraffic.provider.endpoint import Endpoint
from llmtraffic.results.recorder import FLUSH_ROWS, Recorder

NAN = math.nan
INF = math.inf


class Client:
    """One feature's client: its policy, breakers, budget and throttles, and its requests.

    ``chain`` is the primary provider followed by the fallbacks, each with its own breaker.
    ``live`` maps the ids of requests between arrival and outcome to them when the run may be
    cut short (a finite drain) and must end them as unfinished.
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
        self.name = name
        self.chain = tuple(chain)
        self.endpoint = chain[0]  # the primary: baseline prices, records
        self.kernel = kernel
        self.recorder = recorder
        self.max_tokens = feature.max_tokens
        self.stream = feature.stream
        # Before its first token an attempt waits at most the least of the timeouts (for a
        # non-streamed call the first token is the whole answer: one read, one limit). A
        # streamed attempt whose first token came in time is then held to the total timeout
        # (``late_timeout``; Endpoint lifts the limit), and a stalled one to ``idle_timeout``
        # after its last token (at an even pace no later silence is longer than the first).
        first_limit = min(policy.timeout, policy.first_token_timeout, policy.idle_timeout)
        self.timeout = first_limit
        self.idle_timeout = policy.idle_timeout
        self.late_timeout: float | None = (
            policy.timeout if feature.stream and first_limit < policy.timeout else None
        )
        if self.late_timeout is not None:
            for ep in chain:
                ep.token_events = True  # its attempts may have their limit lifted (_start)
        # Which per-request token times the tally keeps (metrics.py): a streamed feature's
        # time to first token (a non-streamed one's is its latency, kept anyway), and the time
        # per output token where some provider of the chain has the token model.
        self.keep_ttft = feature.stream
        self.keep_tpot = any(ep.svc_per_token for ep in chain)
        self.deadline = policy.deadline
        self.max_attempts = policy.max_attempts
        self.controller = controller_for(policy)
        # The built-in controller returns Decisions; user policies may return numbers.
        self._plain_decisions = isinstance(self.controller, RetryController)
        self.u = streams.uniforms(f"client/{name}/jitter")
        # The throttle's coin flips have their own stream, so that a throttle added to a
        # policy does not shift the jitter draws of the comparison it is paired with.
        self.u_throttle = streams.uniforms(f"client/{name}/throttle")
        self.policy_name = type(self.controller).__name__
        self.tally = recorder.tallies[name]
        self.bins = recorder.bins
        self._inv = recorder.bins.inv
        # Per feature: incident metrics are judged on the features an incident hits.
        arrived = recorder.bins.arrived_of(name)
        self.arrived_failed = arrived["arrived_failed"]
        self.arrived_unfinished = arrived["arrived_unfinished"]
        self.arrived_billed = recorder.bins.arrived_cost_of(name)
        self.breaker_failures: frozenset[str] = frozenset()
        self.breakers: tuple[CircuitBreaker | None, ...] = (None,) * len(self.chain)
        self._open_since = [0.0] * len(self.chain)
        if policy.breaker is not None:
            self.breakers = tuple(
                CircuitBreaker(policy.breaker, self._transition_hook(i))
                for i in range(len(self.chain))
            )
            self.breaker_failures = frozenset(policy.breaker.record)
        self.breaker = self.breakers[0]
        self.budget: RetryBudget | None = (
            make_budget(policy.budget) if policy.budget is not None else None
        )
        self.throttle: AdaptiveThrottle | None = None
        self.throttle_rejections: frozenset[str] = frozenset()
        if policy.throttle is not None:
            self.throttle = AdaptiveThrottle(policy.throttle.k, policy.throttle.window)
            self.throttle_rejections = frozenset(policy.throttle.rejections)
        self.pacer: ClientPacer | None = None
        self.pace_max_wait = INF
        if policy.rate_limit is not None:
            rl = policy.rate_limit
            self.pacer = ClientPacer(rl.rpm, rl.tpm, rl.itpm, rl.otpm)
            self.pace_max_wait = rl.max_wait
        self.concurrency = INF
        self.queue_limit = INF
        self.local_queue: deque[Request] = deque()
        self._queued_deadlines: dict[int, Call] = {}
        if policy.concurrency is not None:
            self.concurrency = float(policy.concurrency.limit)
            if policy.concurrency.queue_limit is not None:
                self.queue_limit = float(policy.concurrency.queue_limit)
        fb = policy.fallback
        self.fallback_after = INF
        self.fallback_statuses: frozenset[str] = frozenset()
        self.fallback_on_open = self.fallback_on_exhausted = False
        if fb is not None:
            self.fallback_after = float(fb.after_failures or INF)
            self.fallback_statuses = frozenset(fb.on_statuses)
            self.fallback_on_open = fb.on_breaker_open
            self.fallback_on_exhausted = fb.on_exhausted
        self.live: dict[int, Request] | None = {} if track_live else None
        # Most policies have none of these gates: one flag keeps them off the hot path.
        self._gated = (
            self.throttle is not None
            or self.budget is not None
            or self.pacer is not None
            or self.concurrency != INF
        )
        # No breaker and no gate: a new request's first attempt goes straight out.
        self._direct = not self._gated and all(b is None for b in self.breakers)

    # Request lifecycle ------------------------------------------------------------------------

    def arrive(self, req: Request) -> None:
        """A new request arrives now."""
        self.tally.requests += 1
        if self.live is not None:
            self.live[req.id] = req
        now = self.kernel.now
        if self._direct:
            self._submit(req, now)
            return
        if self.budget is not None:
            self.budget.on_request(now)
        self.send(req, now)

    def send(self, req: Request, now: float) -> None:
        """Send the next attempt of ``req`` through the client's gates, or end it."""
        breaker = self.breakers[req.chain_pos]
        if breaker is not None:
            if breaker.state is not CLOSED:
                if not breaker.allow(now):
                    if self.fallback_on_open and self._fall_back(req, now):
                        return
                    self.finish(req, REJECTED_BREAKER, now)
                    return
                if breaker.state is HALF_OPEN:
                    req.held |= HELD_PERMIT
            req.epoch = breaker.epoch
        if self._gated:
            self._send_through_gates(req, now)
        else:
            self._submit(req, now)

    def _send_through_gates(self, req: Request, now: float) -> None:
        """Throttle, budget, pacing and concurrency, for the policies that have them."""
        req.gated_at = now
        if self.throttle is not None:
            if not self.throttle.allow(now, self.u_throttle):
                self.finish(req, REJECTED_THROTTLE, now)
                return
            req.held |= HELD_THROTTLE
        budget = self.budget
        if req.attempts and budget is not None:
            if not self._take_budget(budget, now):
                self.finish(req, REJECTED_BUDGET, now)
                return
            req.held |= HELD_BUDGET
        pacer = self.pacer
        if pacer is not None:
            at = pacer.earliest(now, req.input_tokens, self.max_tokens)
            if at > now:
                self._wait_for_pacer(req, now, at)
                return
            pacer.commit(now, req.input_tokens, self.max_tokens)
            req.held |= HELD_PACE
        if self.tally.sent - self.tally.attempts >= self.concurrency:
            self._queue_locally(req, now)
            return
        self._submit(req, now)

    def _submit(self, req: Request, now: float, cap: float = INF) -> None:
        """The attempt goes out to the provider now; it is abandoned at its timeout, the
        request's deadline, or ``cap`` (an outer retry layer's call running out), whichever
        comes first."""
        endpoint = self.chain[req.chain_pos]
        # What the gates gave the request now belongs to the attempt (reported on response).
        req.held = 0
        epoch = req.epoch
        deadline = req.deadline_at
        if cap < deadline:
            deadline = cap
        abandon = now + self.timeout
        if deadline < abandon:
            abandon = deadline
        number = req.attempts
        tally = self.tally
        tally.sent += 1
        tally.inflight_acc -= now
        if number:
            tally.retries += 1
            wait = req.prev_wait
        else:
            wait = 0.0
        req.attempts = number + 1
        req.provider_attempts += 1
        req.last_provider = endpoint
        att = Attempt(req, self, number, endpoint, now, abandon, wait, epoch)
        if self.late_timeout is not None:
            late = now + self.late_timeout
            att.late = late if late < deadline else deadline
        endpoint.submit(att, now)

    def on_response(self, att: Attempt) -> None:
        """The client sees the outcome of ``att`` now."""
        now = self.kernel.now
        req = att.request
        status = att.status
        cost = att.cost
        tally = self.tally
        tally.attempts += 1
        tally.billed += cost
        tally.status[status] += 1
        tally.inflight_acc += now
        req.billed += cost
        if cost:
            self.arrived_billed[int(req.arrival * self._inv)] += cost
        if not self._direct:
            breaker = self.breakers[req.chain_pos]
            if breaker is not None:
                if status is OK or status in self.breaker_failures:
                    breaker.record(now, att.epoch, status is not OK, now - att.send)
                else:
                    breaker.ignore(att.epoch)
            if self._gated:
                if self.throttle is not None:
                    self.throttle.record(now, status not in self.throttle_rejections)
                if att.number and self.budget is not None:
                    self.budget.on_retry_done()
                if self.local_queue:
                    self._release_local(now)
        if status is OK:
            req.useful = cost
            if att.number == 0 and att.send == req.arrival:
                # The common case: one combined row stands for the request and its attempt
                # (sent when the request arrived: not held by pacing or a local queue).
                self._finish_first_try(req, att, now)
                return
        rows = self.recorder.attempts
        ttft, tpot = self.token_times(att, now)
        if rows is not None:
            start = att.start
            started = start == start
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
                    status,
                    att.http_status,
                    att.retry_after,
                    start - att.send if started else NAN,
                    req.input_tokens,
                    att.generated,  # what the bill counts (0 for work never run)
                    cost,
                    att.wait_before,
                    ttft,
                    tpot,
                )
            )
        if status is OK:
            if self.keep_ttft:
                tally.ttfts.append(ttft + (att.send - req.arrival))
            if self.keep_tpot:
                tally.tpots.append(tpot)
            self.finish(req, OK, now)
        else:
            tally.failed_attempts += 1
            tally.wasted += cost
            self._after_failure(att, req, now)

    def token_times(self, att: Attempt, now: float) -> tuple[float, float]:
        """What the user saw of ``att``, whose outcome reached the client at ``now``: its time
        to first token from when it was sent (a streamed call's first token; a non-streamed
        call's whole answer, so only a success has one), and its time per output token (the
        provider's decode pace, ``Endpoint.token_pace``). NaN where undefined: no token
        generated, never started."""
        start = att.start
        if not att.generated or start != start:
            return NAN, NAN
        provider = att.provider
        ft = provider.first_token_offset(att)
        tpot = provider.token_pace(att)
        if self.stream:
            first = start + ft
            return (first - att.send if first <= now else NAN), tpot
        return (now - att.send if att.status is OK else NAN), tpot

    def _after_failure(self, att: Attempt, req: Request, now: float) -> None:
        if now >= req.deadline_at:
            self.finish(req, DEADLINE, now)
            return
        if req.attempts >= self.max_attempts:
            self.finish(req, EXHAUSTED, now)
            return
        status = att.status
        if (
            status in self.fallback_statuses or req.provider_attempts >= self.fallback_after
        ) and self._fall_back(req, now):
            return
        state = RetryState(
            req.provider_attempts,
            status,
            att.http_status,
            att.retry_after,
            now - req.arrival,
            req.prev_wait,
            now,
            req.attempts,
            att.provider.name,
            att.provider.limiter,  # the x-ratelimit-* values, computed only when read
            # Set only by providers that send x-should-retry (engine.entities.Attempt).
            getattr(att, "should_retry", None),
        )
        decided = self.controller.decide(state, self.u)
        decision = decided if self._plain_decisions else as_decision(decided)
        assert isinstance(decision, Decision)
        wait = decision.wait
        if wait is None:
            exhausted = decision.outcome == EXHAUSTED and self.fallback_on_exhausted
            if exhausted and self._fall_back(req, now):
                return
            self.finish(req, decision.outcome, now)
            return
        if not 0.0 <= wait < INF:  # also catches NaN: every policy's waits, built-in or not
            raise PolicyError(
                f"retry policy {self.policy_name} of feature {self.name!r} returned a wait of "
                f"{wait!r} s; a wait must be a finite number of seconds >= 0"
            )
        if now + wait >= req.deadline_at:
            # The user gives up before the retry would go out.
            self.kernel.schedule(req, req.deadline_at - now, self._on_deadline)
            return
        req.prev_wait = wait
        self.kernel.schedule(req, wait, self._on_retry)

    def _fall_back(self, req: Request, now: float) -> bool:
        """Move ``req`` to the next provider of the chain and send it there at once."""
        if req.chain_pos + 1 >= len(self.chain):
            return False
        req.chain_pos += 1
        req.provider_attempts = 0
        req.prev_wait = 0.0
        self.send(req, now)
        return True

    def _take_budget(self, budget: RetryBudget, now: float) -> bool:
        """Whether the budget lets a retry out; records budget exhaustion and recovery."""
        if budget.try_retry(now, self.active):
            if budget.exhausted:
                budget.exhausted = False
                self.recorder.event(now, "budget_recovered", self.name, "", "", budget.level(now))
            return True
        if not budget.exhausted:
            budget.exhausted = True
            self.recorder.event(now, "budget_exhausted", self.name, "", "", budget.level(now))
        return False

    def _wait_for_pacer(self, req: Request, now: float, at: float) -> None:
        """Client-side pacing holds the attempt until ``at`` (or refuses a too-long wait).

        Only an attempt that will be sent reserves its share: a refused one, or one whose
        request reaches its deadline first, leaves the pacer as it was."""
        if at - now > self.pace_max_wait:
            self.finish(req, REJECTED_THROTTLE, now)
        elif at >= req.deadline_at:
            self.kernel.schedule(req, req.deadline_at - now, self._on_deadline)
        else:
            self.pacer.commit(at, req.input_tokens, self.max_tokens)  # type: ignore[union-attr]
            req.held |= HELD_PACE
            self.kernel.schedule(req, at - now, self._on_paced)

    def _on_paced(self, req: Request) -> None:
        now = self.kernel.now
        if self.tally.sent - self.tally.attempts >= self.concurrency:
            self._queue_locally(req, now)
        else:
            self._submit(req, now)

    def _queue_locally(self, req: Request, now: float) -> None:
        """Over the concurrency limit: wait in the client's own FIFO queue."""
        if len(self.local_queue) >= self.queue_limit:
            self.finish(req, REJECTED_THROTTLE, now)
            return
        self.local_queue.append(req)
        if req.deadline_at != INF:
            # A separate timer: the request itself is not scheduled while it waits here.
            self._queued_deadlines[req.id] = self.kernel.call_in(
                req.deadline_at - now, self._on_queued_deadline, req
            )

    def _release_local(self, now: float) -> None:
        """A slot under the concurrency limit is free: send the longest-waiting attempt."""
        while self.local_queue and self.tally.sent - self.tally.attempts < self.concurrency:
            req = self.local_queue.popleft()
            timer = self._queued_deadlines.pop(req.id, None)
            if timer is not None:
                Kernel.cancel(timer)
            self._submit(req, now)

    def _on_queued_deadline(self, ev: Call) -> None:
        req: Request = ev._value
        del self._queued_deadlines[req.id]
        self.local_queue.remove(req)
        self.finish(req, DEADLINE, self.kernel.now)

    def _on_retry(self, req: Request) -> None:
        self.send(req, self.kernel.now)

    def _on_deadline(self, req: Request) -> None:
        self.finish(req, DEADLINE, self.kernel.now)

    def release_held(self, req: Request) -> None:
        """Give back what the gates gave ``req`` for an attempt that will never go out."""
        held = req.held
        req.held = 0
        if held & HELD_PERMIT:
            breaker = self.breakers[req.chain_pos]
            if breaker is not None:
                breaker.ignore(req.epoch)
        if held & HELD_THROTTLE and self.throttle is not None:
            self.throttle.uncount(req.gated_at)
        if held & HELD_BUDGET and self.budget is not None:
            self.budget.refund(req.gated_at)
        if held & HELD_PACE and self.pacer is not None:
            self.pacer.release(req.input_tokens, self.max_tokens)

    def finish(self, req: Request, outcome: str, now: float) -> None:
        """End ``req`` with its one terminal ``outcome``."""
        if req.held:
            self.release_held(req)
        tally = self.tally
        tally.outcomes[outcome] += 1
        latency = now - req.arrival
        if outcome is OK:
            tally.useful += req.useful
            tally.latencies.append(latency)
            tally.ok_input_tokens += req.input_tokens
            tally.ok_output_tokens += req.output_tokens
        elif outcome is UNFINISHED:
            self.arrived_unfinished[int(req.arrival * self._inv)] += 1
        else:
            self.arrived_failed[int(req.arrival * self._inv)] += 1
        if self.live is not None:
            del self.live[req.id]
        recorder = self.recorder
        rows = recorder.requests
        if rows is not None:
            last = req.last_provider
            rows.append(
                (
                    req.id,
                    self.name,
                    req.arrival,
                    now,
                    outcome,
                    req.attempts,
                    last.name if last is not None else "",
                    last.model if last is not None else "",
                    req.input_tokens,
                    req.output_tokens,
                    req.billed,
                    req.useful,
                    req.baseline,
                    latency,
                )
            )
            if len(rows) >= FLUSH_ROWS:
                recorder.flush_if_full()

    def _finish_first_try(self, req: Request, att: Attempt, now: float) -> None:
        """``finish(req, OK, now)`` for a request whose first attempt succeeded, as one combined
        row: the path most requests take, so it skips the branches that cannot apply."""
        tally = self.tally
        tally.outcomes[OK] += 1
        tally.useful += req.useful
        latency = now - req.arrival
        tally.latencies.append(latency)
        # token_times, inlined for the path most requests take (started, sent on arrival):
        # a non-streamed answer's first token is all of it; the token model's pace.
        ttft = latency
        tpot = NAN
        if self.keep_tpot:
            gen = att.generated
            if gen and att.provider.svc_per_token:
                tpot = (att.service - att.first_token) / gen
            tally.tpots.append(tpot)
        if self.keep_ttft:
            gen = att.generated
            ttft = att.start + Endpoint.first_token_offset(att) - req.arrival if gen else NAN
            tally.ttfts.append(ttft)
        tally.ok_input_tokens += req.input_tokens
        tally.ok_output_tokens += req.output_tokens
        if self.live is not None:
            del self.live[req.id]
        recorder = self.recorder
        simple = recorder.simple
        if simple is not None:
            provider = att.provider
            simple.append(
                (
                    req.id,
                    self.name,
                    provider.name,
                    provider.model,
                    req.arrival,
                    att.start,
                    now,
                    req.input_tokens,
                    att.generated,
                    req.useful,
                    req.baseline,
                    ttft,
                    tpot,
                )
            )
            if len(simple) >= FLUSH_ROWS:
                recorder.flush_if_full()

    def inflight_integral(self, t: float) -> float:
        """Integral of this client's attempts in flight from 0 to ``t``."""
        tally = self.tally
        return tally.inflight_acc + (tally.sent - tally.attempts) * t

    @property
    def active(self) -> int:
        """Requests that arrived and have not reached their outcome yet."""
        tally = self.tally
        return tally.requests - tally.finished

    # Breaker hooks ----------------------------------------------------------------------------

    def _transition_hook(self, index: int) -> Callable[[float, str, str], None]:
        provider = self.chain[index].name

        def on_transition(now: float, frm: str, to: str) -> None:
            self.recorder.event(now, "breaker", self.name, provider, f"{frm}->{to}", 0.0)
            if to == OPEN:
                self._open_since[index] = now
            elif frm == OPEN:
                self.bins.add_interval(
                    self.bins.levels["breakers_open"], self._open_since[index], now
                )

        return on_transition

    def close_open_intervals(self, now: float) -> None:
        """At the end of the run, count still-open breakers up to ``now``."""
        for i, breaker in enumerate(self.breakers):
            if breaker is not None and breaker.state == OPEN:
                self.bins.add_interval(self.bins.levels["breakers_open"], self._open_since[i], now)
