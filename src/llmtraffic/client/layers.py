"""Retry layers that stack: a request's path through an application loop, a framework, a
router and the SDK, each with its own retry loop (docs/policies.md, "Retry layers").

The policy's own retry loop is the innermost layer (``sdk``): its attempts go to the wire, as
without layers. When it gives up on a call (retries exhausted, a status it does not retry),
the layer above sees one failed call, with the status, HTTP status and retry-after of the last
attempt, and decides with its own counter, wait and retryable statuses; a retry there calls
the layer below afresh (its counters start again), so the attempts of one request multiply up
to the product of the layers' (retries + 1). A layer's ``timeout`` bounds each call it makes
to the layer below, attempts and waits included: when it runs out, the attempt in flight is
abandoned (as a per-attempt timeout is) and the layer sees a failed call with status timeout.

Only policies with layers use ``LayeredClient``: the others keep ``Client``'s code unchanged.
Breakers, budgets, throttles and pacing still act on each attempt; a request they refuse ends
there (no layer retries a refusal).
"""

from __future__ import annotations

import math

from llmtraffic.client.client import Client
from llmtraffic.client.retry import (
    Decision,
    RetryController,
    RetryPolicy,
    as_decision,
    controller_for,
)
from llmtraffic.client.waits import RetryState
from llmtraffic.config.policy import INNER_LAYER, Policy
from llmtraffic.config.workload import Feature
from llmtraffic.engine.entities import DEADLINE, EXHAUSTED, TIMEOUT, Attempt, Request
from llmtraffic.engine.kernel import Call, Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.errors import PolicyError
from llmtraffic.provider.endpoint import Endpoint
from llmtraffic.results.recorder import Recorder

__all__ = ["LayerCalls", "LayeredClient"]

NAN = math.nan
INF = math.inf
TIME_EPS = 1e-9
"""Seconds: an attempt cut at a layer's timeout ends within this of it."""


class LayerCalls:
    """Where one request stands in each outer layer (index 0 is the outermost).

    ``calls[i]`` counts the calls layer ``i`` has made to the layer below in its current
    invocation (1 while the first runs), ``waits[i]`` is its last wait, ``due[i]`` the time
    its current call to the layer below times out, and ``cut`` the layer whose timeout a
    scheduled wake-up of the request is for (-1: none). ``queued`` numbers the request's
    waits in the client's concurrency queue (odd: waiting now), so that a timer set for one
    wait is recognised as stale in a later one.
    """

    __slots__ = ("calls", "cut", "due", "queued", "waits")

    def __init__(self, now: float, timeouts: tuple[float, ...]) -> None:
        self.calls = [1] * len(timeouts)
        self.waits = [0.0] * len(timeouts)
        self.due = [now + t for t in timeouts]
        self.cut = -1
        self.queued = 0


class LayeredClient(Client):
    """A client whose policy has retry layers around its own retries.

    ``layer_calls[i]`` counts the calls layer ``i`` made (the first call of each request
    included); the last entry, the ``sdk`` layer, counts the attempts sent.
    ``most_attempts`` is the largest number of attempts one finished request made.
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
        layers = policy.layers
        self.layer_names = (*(layer.name for layer in layers), INNER_LAYER)
        self.layer_controllers: tuple[RetryPolicy, ...] = tuple(
            controller_for(layer) for layer in layers
        )
        self.layer_timeouts = tuple(layer.timeout for layer in layers)
        self.layer_calls = [0] * (len(layers) + 1)
        self.most_attempts = 0
        self._states: dict[int, LayerCalls] = {}

    @property
    def layer_totals(self) -> dict[str, int]:
        """Calls made by each layer, outermost first; ``sdk``'s are the attempts sent."""
        calls = list(self.layer_calls)
        calls[-1] = self.tally.sent
        return dict(zip(self.layer_names, calls, strict=True))

    def arrive(self, req: Request) -> None:
        """A new request arrives now: each outer layer makes its first call."""
        now = self.kernel.now
        self._states[req.id] = LayerCalls(now, self.layer_timeouts)
        calls = self.layer_calls
        for i in range(len(self.layer_timeouts)):
            calls[i] += 1
        super().arrive(req)

    def _submit(self, req: Request, now: float, cap: float = INF) -> None:
        """``Client._submit``, with the attempt abandoned when an outer layer's call times out."""
        st = self._states[req.id]
        if st.queued & 1:
            st.queued += 1  # out of the concurrency queue: its layer timer is stale now
        due = min(st.due)
        if due <= now:
            # An outer layer's call ran out just as a local gate let the attempt go (the
            # gates' own timers cut it at the timeout; this is the tie): the call timed out.
            self.release_held(req)
            self._pass_up(req, st, self._cut_layer(st, now), now, TIMEOUT, 0, NAN, EXHAUSTED)
            return
        # A streamed attempt past its first token is bounded by the outer call too.
        super()._submit(req, now, due if due < cap else cap)

    @staticmethod
    def _first_cut(st: LayerCalls, levels: int, t: float) -> int:
        """Of the layers above ``levels``, the one whose call times out first, if that is by
        ``t`` (ties: the outermost), else -1."""
        cut = -1
        for i in range(levels):
            if st.due[i] <= t and (cut < 0 or st.due[i] < st.due[cut]):
                cut = i
        return cut

    def _cut_layer(self, st: LayerCalls, t: float) -> int:
        """The outermost layer whose call has timed out by ``t`` (the innermost index if none)."""
        for i, due in enumerate(st.due):
            if due <= t:
                return i
        return len(st.due)

    def _after_failure(self, att: Attempt, req: Request, now: float) -> None:
        if now >= req.deadline_at:
            self.finish(req, DEADLINE, now)
            return
        if req.attempts >= self.max_attempts:
            self.finish(req, EXHAUSTED, now)
            return
        st = self._states[req.id]
        inner = len(st.due)
        status = att.status
        if status is TIMEOUT:
            # Abandoned at an outer layer's timeout: that layer sees its call fail; the
            # layers inside it are cancelled with the call and decide nothing. (The tolerance:
            # the kernel's now + (due - now) may round a hair below due.)
            cut = self._cut_layer(st, now + TIME_EPS)
            if cut < inner:
                self._pass_up(req, st, cut, now, TIMEOUT, 0, NAN, EXHAUSTED)
                return
        sdk_calls = req.provider_attempts
        state = RetryState(
            sdk_calls,
            status,
            att.http_status,
            att.retry_after,
            now - req.arrival,
            req.prev_wait if sdk_calls > 1 else 0.0,  # the first call of a fresh SDK loop
            now,
            req.attempts,
            att.provider.name,
            att.provider.limiter,  # the x-ratelimit-* values, computed only when read
            getattr(att, "should_retry", None),  # x-should-retry, when the provider sends it
        )
        decision = self._decide(self.controller, self._plain_decisions, state, INNER_LAYER)
        if decision.wait is None:
            # The layer above sees the exception the SDK raised: the last response's status
            # and headers.
            self._pass_up(
                req,
                st,
                inner - 1,
                now,
                status,
                att.http_status,
                att.retry_after,
                decision.outcome,
                state,
            )
            return
        self._retry_at(req, st, inner, decision.wait, now)

    def _decide(
        self, controller: RetryPolicy, plain: bool, state: RetryState, layer: str
    ) -> Decision:
        decided = controller.decide(state, self.u)
        decision = decided if plain else as_decision(decided)
        assert isinstance(decision, Decision)
        wait = decision.wait
        if wait is not None and not 0.0 <= wait < INF:
            raise PolicyError(
                f"retry layer {layer!r} of feature {self.name!r} returned a wait of {wait!r} s; "
                "a wait must be a finite number of seconds >= 0"
            )
        return decision

    def _pass_up(
        self,
        req: Request,
        st: LayerCalls,
        level: int,
        now: float,
        status: str,
        http_status: int,
        retry_after: float,
        outcome: str,
        last: RetryState | None = None,
    ) -> None:
        """Layer ``level`` sees its call fail; it and the layers above decide, inside out,
        until one retries; if none does, the request ends with the outermost's outcome.
        ``last`` is the SDK's state of the response that failed it (None: a timeout, no
        response): its rate-limit values and ``x-should-retry`` go up with the failure."""
        provider = req.last_provider.name if req.last_provider is not None else ""
        limits = last.limits if last is not None else None
        should_retry = last.should_retry if last is not None else None
        for i in range(level, -1, -1):
            controller = self.layer_controllers[i]
            state = RetryState(
                st.calls[i],
                status,
                http_status,
                retry_after,
                now - req.arrival,
                st.waits[i],
                now,
                req.attempts,
                provider,
                limits,
                should_retry,
            )
            decision = self._decide(
                controller, isinstance(controller, RetryController), state, self.layer_names[i]
            )
            if decision.wait is not None:
                self._retry_at(req, st, i, decision.wait, now)
                return
            outcome = decision.outcome
        self.finish(req, outcome, now)

    def _retry_at(self, req: Request, st: LayerCalls, level: int, wait: float, now: float) -> None:
        """Layer ``level`` calls the layer below again after ``wait`` (``level`` = the number
        of outer layers: the SDK sends another attempt), unless the request's deadline or an
        outer layer's timeout comes first."""
        at = now + wait
        cut = self._first_cut(st, level, at)
        if cut >= 0 and st.due[cut] < req.deadline_at:
            st.cut = cut
            # max(): an attempt's end may round a hair past the timeout it was cut at.
            self.kernel.schedule(req, max(0.0, st.due[cut] - now), self._on_layer_timeout)
            return
        if at >= req.deadline_at:
            self.kernel.schedule(req, req.deadline_at - now, self._on_deadline)
            return
        inner = len(st.due)
        if level < inner:
            st.calls[level] += 1
            st.waits[level] = wait
            st.due[level] = at + self.layer_timeouts[level]  # its new call's own timeout
            self.layer_calls[level] += 1
            # A fresh call of the layers below: their counters and timeouts start again.
            for j in range(level + 1, inner):
                st.calls[j] = 1
                st.waits[j] = 0.0
                st.due[j] = at + self.layer_timeouts[j]
                self.layer_calls[j] += 1
            req.provider_attempts = 0
        req.prev_wait = wait
        self.kernel.schedule(req, wait, self._on_retry)

    def _on_layer_timeout(self, req: Request) -> None:
        st = self._states[req.id]
        cut, st.cut = st.cut, -1
        if req.held:
            self.release_held(req)  # cut while pacing held it: the attempt never goes out
        self._pass_up(req, st, cut, self.kernel.now, TIMEOUT, 0, NAN, EXHAUSTED)

    def _wait_for_pacer(self, req: Request, now: float, at: float) -> None:
        """``Client._wait_for_pacer``, unless an outer layer's call times out first: then the
        request waits for that timeout without reserving a share of the pace."""
        st = self._states[req.id]
        cut = self._first_cut(st, len(st.due), at)
        if cut >= 0 and at - now <= self.pace_max_wait:
            due = st.due[cut]
            if due < req.deadline_at:
                st.cut = cut
                self.kernel.schedule(req, max(0.0, due - now), self._on_layer_timeout)
                return
        super()._wait_for_pacer(req, now, at)

    def _queue_locally(self, req: Request, now: float) -> None:
        """``Client._queue_locally``, plus a timer for the outer layer whose call times out
        while the attempt waits in the queue (before the request's deadline)."""
        super()._queue_locally(req, now)
        st = self._states.get(req.id)
        if st is None:  # refused: the queue was full
            return
        cut = self._first_cut(st, len(st.due), INF)
        if cut >= 0 and st.due[cut] < req.deadline_at:
            st.queued += 1
            self.kernel.call_in(
                max(0.0, st.due[cut] - now), self._on_queued_layer_timeout, (req, st.queued, cut)
            )

    def _on_queued_layer_timeout(self, ev: Call) -> None:
        req, queued, cut = ev._value
        st = self._states.get(req.id)
        if st is None or st.queued != queued:
            return  # the attempt went out (or the request ended) before the timeout
        st.queued += 1
        self.local_queue.remove(req)
        timer = self._queued_deadlines.pop(req.id, None)
        if timer is not None:
            Kernel.cancel(timer)
        if req.held:
            self.release_held(req)
        self._pass_up(req, st, cut, self.kernel.now, TIMEOUT, 0, NAN, EXHAUSTED)

    def finish(self, req: Request, outcome: str, now: float) -> None:
        """End ``req`` (``Client.finish``) and forget its layer state."""
        del self._states[req.id]
        if req.attempts > self.most_attempts:
            self.most_attempts = req.attempts
        super().finish(req, outcome, now)

    def _finish_first_try(self, req: Request, att: Attempt, now: float) -> None:
        del self._states[req.id]
        if self.most_attempts < 1:
            self.most_attempts = 1
        super()._finish_first_try(req, att, now)
