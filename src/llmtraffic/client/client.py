"""The client of one feature: sends attempts, takes their outcomes, asks its policy what to do,
and carries the decision out in simulated time (retry after a wait, or end the request)."""

from __future__ import annotations

import math

from llmtraffic.client.breaker import CLOSED, OPEN, CircuitBreaker
from llmtraffic.client.budget import RetryBudget
from llmtraffic.client.retry import RetryController
from llmtraffic.client.waits import RetryState
from llmtraffic.config.policy import Policy
from llmtraffic.config.workload import Feature
from llmtraffic.engine.entities import (
    DEADLINE,
    OK,
    REJECTED_BREAKER,
    REJECTED_BUDGET,
    UNFINISHED,
    Attempt,
    Request,
)
from llmtraffic.engine.kernel import Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.provider.endpoint import Endpoint
from llmtraffic.results.recorder import FLUSH_ROWS, Recorder

NAN = math.nan


class Client:
    """One feature's client: its policy, breaker and budget, and its request lifecycle.

    ``live`` maps the ids of requests between arrival and outcome to them when the run may be
    cut short (a finite drain) and must end them as unfinished.
    """

    def __init__(
        self,
        name: str,
        feature: Feature,
        policy: Policy,
        endpoint: Endpoint,
        kernel: Kernel,
        streams: Streams,
        recorder: Recorder,
        track_live: bool = False,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.kernel = kernel
        self.env = kernel.env
        self.recorder = recorder
        self.max_tokens = feature.max_tokens
        self.timeout = policy.timeout
        self.deadline = policy.deadline
        self.controller = RetryController.from_policy(policy)
        self.u = streams.uniforms(f"client/{name}/jitter")
        self.tally = recorder.tallies[name]
        self.bins = recorder.bins
        self._inv = recorder.bins.inv
        self.arrived_failed = recorder.bins.arrived["arrived_failed"]
        self.arrived_unfinished = recorder.bins.arrived["arrived_unfinished"]
        self.breaker: CircuitBreaker | None = None
        self.breaker_failures: frozenset[str] = frozenset()
        if policy.breaker is not None:
            self.breaker = CircuitBreaker(policy.breaker, self._on_breaker_transition)
            self.breaker_failures = frozenset(policy.breaker.record)
        self._open_since = 0.0
        self.budget = (
            RetryBudget(policy.budget.ratio, policy.budget.max_tokens)
            if policy.budget is not None
            else None
        )
        self.live: dict[int, Request] | None = {} if track_live else None

    # Request lifecycle ------------------------------------------------------------------------

    def arrive(self, req: Request) -> None:
        """A new request arrives now."""
        self.tally.requests += 1
        if self.live is not None:
            self.live[req.id] = req
        if self.budget is not None:
            self.budget.deposit()
        self.send(req, self.env._now)

    def send(self, req: Request, now: float) -> None:
        """Send the next attempt of ``req``, unless the breaker rejects it."""
        breaker = self.breaker
        epoch = 0
        if breaker is not None:
            if breaker.state is not CLOSED and not breaker.allow(now):
                self.finish(req, REJECTED_BREAKER, now)
                return
            epoch = breaker.epoch
        abandon = now + self.timeout
        if req.deadline_at < abandon:
            abandon = req.deadline_at
        endpoint = self.endpoint
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
        req.last_provider = endpoint
        endpoint.submit(Attempt(req, self, number, endpoint, now, abandon, wait, epoch), now)

    def on_response(self, att: Attempt) -> None:
        """The client sees the outcome of ``att`` now."""
        now = self.env._now
        req = att.request
        status = att.status
        cost = att.cost
        tally = self.tally
        tally.attempts += 1
        tally.billed += cost
        tally.status[status] += 1
        tally.inflight_acc += now
        req.billed += cost
        breaker = self.breaker
        if breaker is not None:
            if status is OK or status in self.breaker_failures:
                breaker.record(now, att.epoch, status is not OK, now - att.send)
            else:
                breaker.ignore(att.epoch)
        if status is OK:
            req.useful = cost
            if att.number == 0:
                # The common case: one combined row stands for the request and its attempt.
                self.finish(req, OK, now, att)
                return
        rows = self.recorder.attempts
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
                    att.generated if started else 0,
                    cost,
                    att.wait_before,
                )
            )
        if status is OK:
            self.finish(req, OK, now)
        else:
            tally.failed_attempts += 1
            tally.wasted += cost
            self._after_failure(att, req, now)

    def _after_failure(self, att: Attempt, req: Request, now: float) -> None:
        if now >= req.deadline_at:
            self.finish(req, DEADLINE, now)
            return
        state = RetryState(
            req.attempts,
            att.status,
            att.http_status,
            att.retry_after,
            now - req.arrival,
            req.prev_wait,
            now,
        )
        decision = self.controller.decide(state, self.u)
        wait = decision.wait
        if wait is None:
            self.finish(req, decision.outcome, now)
            return
        if now + wait >= req.deadline_at:
            # The user gives up before the retry would go out.
            self.kernel.schedule(req, req.deadline_at - now, self._on_deadline)
            return
        budget = self.budget
        if budget is not None:
            if not budget.withdraw():
                if not budget.exhausted:
                    budget.exhausted = True
                    self.recorder.event(now, "budget_exhausted", self.name, "", "", budget.level)
                self.finish(req, REJECTED_BUDGET, now)
                return
            if budget.exhausted:
                budget.exhausted = False
                self.recorder.event(now, "budget_recovered", self.name, "", "", budget.level)
        req.prev_wait = wait
        self.kernel.schedule(req, wait, self._on_retry)

    def _on_retry(self, req: Request) -> None:
        self.send(req, self.env._now)

    def _on_deadline(self, req: Request) -> None:
        self.finish(req, DEADLINE, self.env._now)

    def finish(
        self, req: Request, outcome: str, now: float, first_try: Attempt | None = None
    ) -> None:
        """End ``req`` with its one terminal ``outcome``; ``first_try`` is its only attempt
        when that succeeded (recorded as one combined row)."""
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
        if first_try is not None:
            simple = recorder.simple
            if simple is not None:
                provider = first_try.provider
                simple.append(
                    (
                        req.id,
                        self.name,
                        provider.name,
                        provider.model,
                        req.arrival,
                        first_try.start,
                        now,
                        req.input_tokens,
                        first_try.generated,
                        req.useful,
                        req.baseline,
                    )
                )
                if len(simple) >= FLUSH_ROWS:
                    recorder.flush_if_full()
            return
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

    def _on_breaker_transition(self, now: float, frm: str, to: str) -> None:
        self.recorder.event(now, "breaker", self.name, self.endpoint.name, f"{frm}->{to}", 0.0)
        if to == OPEN:
            self._open_since = now
        elif frm == OPEN:
            self.bins.add_interval(self.bins.levels["breakers_open"], self._open_since, now)

    def close_open_intervals(self, now: float) -> None:
        """At the end of the run, count a still-open breaker up to ``now``."""
        if self.breaker is not None and self.breaker.state == OPEN:
            self.bins.add_interval(self.bins.levels["breakers_open"], self._open_since, now)
