"""The provider model of a scenario, run in wall-clock time for ``llmtraffic serve``.

The seam: the simulator's own kernel, endpoints (rate limiter, serving slots and queue, errors,
mid-stream failures, service times, billing) and incident schedule, built exactly as
``Simulation`` builds them, with the kernel's clock driven by the wall clock instead of by its
own event loop. Simulated time is ``(wall - start) * speedup``. Before anything touches the
model, ``advance`` runs the kernel's events up to the current simulated time; a timer on the
asyncio loop wakes it at the kernel's next event (an attempt's end, an incident's start), so
outcomes are reached on time even when no HTTP request arrives.

Each HTTP request becomes one ``Attempt`` of a fresh ``Request`` whose token counts are drawn
from the feature's distributions; it goes to ``Endpoint.submit`` as a simulated attempt does,
and its outcome comes back through ``ServeClient.on_response``. A client that hangs up is the
provider's view of a timeout: ``Endpoint.cancel`` (billed per ``billing.timeout``).

Everything here runs on the asyncio loop's thread: the model holds no locks.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmtraffic.config.scenario import Scenario
from llmtraffic.engine.entities import Attempt, Request
from llmtraffic.engine.kernel import Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.errors import ConfigError
from llmtraffic.provider.endpoint import Endpoint
from llmtraffic.provider.errors import longest_request, make_endpoint, spend_meters
from llmtraffic.provider.incidents import schedule_incidents
from llmtraffic.results.recorder import Recorder
from llmtraffic.serve.client import ServeClient
from llmtraffic.workload.tokens import TokenSampler, token_sampler

INF = math.inf
NAN = math.nan


@dataclass(eq=False)
class Served:
    """One HTTP request in the provider model: its attempt, and the futures the server awaits.

    ``started`` resolves (True) when a serving slot takes the attempt, or (False) when its
    outcome comes without one (a 429, a fast error, overload); ``done`` resolves with the
    attempt when its outcome is reached. ``end`` is the simulated time of the outcome.
    """

    att: Attempt
    feature: str
    request_key: str
    started: asyncio.Future[bool]
    done: asyncio.Future[Attempt]
    end: float = NAN
    extra: dict[str, Any] = field(default_factory=dict)


AttemptHook = Callable[[Served], None]
"""Called once per attempt, when its outcome is reached (the log writes its row)."""


class ProviderModel:
    """The providers of ``scenario`` (its features give token sizes), served in wall time.

    ``start()`` must be called on the running loop; simulated time 0 is then. ``speedup``
    divides the scenario's times (an incident at 10 min with speedup 60 starts after 10 s).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        speedup: float = 1.0,
        seed: int | None = None,
        on_attempt: AttemptHook | None = None,
        wait_for_traffic: bool = False,
    ) -> None:
        if not speedup > 0 or math.isinf(speedup):
            raise ConfigError([f"--speedup: must be a finite number > 0, got {speedup}"])
        self.scenario = sc = scenario
        self.speedup = speedup
        self.seed = sc.run.seed if seed is None else seed
        self.on_attempt = on_attempt
        self.kernel = kernel = Kernel()
        self.streams = streams = Streams(self.seed)
        check_servable(sc)
        self.recorder = Recorder(
            None, False, False, sc.run.timeseries_bin, 1.0, features=list(sc.features)
        )
        meters = spend_meters(sc.providers, self.recorder)
        self.endpoints: dict[str, Endpoint] = {}
        for name, cfg in sc.providers.items():
            users = [f for f in sc.features.values() if f.provider == name]
            self.endpoints[name] = make_endpoint(
                name, cfg, kernel, streams, longest_request(users), meters.get(name)
            )
            schedule_incidents(kernel, self.endpoints[name], cfg.incidents, self.recorder)
        self.inputs: dict[str, TokenSampler] = {}
        self.outputs: dict[str, TokenSampler] = {}
        for name, feat in sc.features.items():
            assert feat.input_tokens is not None and feat.output_tokens is not None
            self.inputs[name] = token_sampler(
                feat.input_tokens, streams.generator(f"serve/{name}/input_tokens")
            )
            self.outputs[name] = token_sampler(
                feat.output_tokens, streams.generator(f"serve/{name}/output_tokens")
            )
        # One client per (feature, max_tokens): the limiter reads max_tokens from the client.
        self._clients: dict[tuple[str, int], ServeClient] = {}
        self._served: dict[int, Served] = {}
        self._waiting_start: set[Served] = set()
        # Per request key: attempts so far, when the last one's outcome came, and the token
        # sizes drawn for its first attempt (input, output before max_tokens).
        self._requests: dict[str, tuple[int, float, int, int]] = {}
        self._ids: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        # Simulated time 0 is the first request rather than ``start`` (a CI job's application
        # starts when it starts; the schedule should meet its traffic, not the server's boot).
        self.wait_for_traffic = wait_for_traffic
        self._clock_running = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = INF

    # Clock ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start simulated time now, on the running loop (at the first request instead with
        ``wait_for_traffic``)."""
        self._loop = asyncio.get_running_loop()
        if not self.wait_for_traffic:
            self._start_clock()

    def _start_clock(self) -> None:
        self._t0 = self.loop.time()
        self._clock_running = True
        self._arm()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the model runs on (after ``start``)."""
        if self._loop is None:
            raise RuntimeError("ProviderModel.start() was not called")
        return self._loop

    def sim_time(self) -> float:
        """The simulated time now: wall seconds since ``start`` times ``speedup`` (0 until the
        first request with ``wait_for_traffic``)."""
        if not self._clock_running:
            return 0.0
        return (self.loop.time() - self._t0) * self.speedup

    def wall_at(self, sim: float) -> float:
        """The loop time at which simulated time reaches ``sim``."""
        return self._t0 + sim / self.speedup

    def advance(self) -> None:
        """Run the kernel's events up to the simulated time now."""
        target = self.sim_time()
        if target > self.kernel.now:
            self.kernel.run(until=target)
        if self._waiting_start:
            for s in [s for s in self._waiting_start if s.att.start == s.att.start]:
                self._waiting_start.discard(s)
                if not s.started.done():
                    s.started.set_result(True)
        self._arm()

    def _arm(self) -> None:
        """Wake at the kernel's next event (an earlier one replaces a later timer)."""
        queue = self.kernel.queue
        if not queue or self._loop is None or not self._clock_running:
            return
        at = self.wall_at(queue[0][0])
        if self._timer is not None and at >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._wake)

    def _wake(self) -> None:
        self._timer = None
        self._timer_at = INF
        self.advance()

    def close(self) -> None:
        """Stop the timer (the model takes no more requests)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # Attempts ---------------------------------------------------------------------------------

    def feature_for(self, provider: str, feature: str | None) -> str:
        """The feature whose token sizes a request to ``provider`` takes: ``feature`` when
        given (it must use that provider), else the first feature of the config that does.
        Raises ``KeyError`` with the message to send back."""
        sc = self.scenario
        if provider not in sc.providers:
            raise KeyError(
                f"no provider {provider!r} in the config; providers: {', '.join(sc.providers)}"
            )
        users = [n for n, f in sc.features.items() if f.provider == provider]
        if feature is None:
            if not users:
                raise KeyError(
                    f"provider {provider!r} serves no feature of the config, so it has no "
                    "token sizes; add a feature with provider = " + repr(provider)
                )
            return users[0]
        if feature not in users:
            raise KeyError(
                f"x-llmtraffic-feature: {feature!r} is not a feature of provider {provider!r}; "
                f"its features: {', '.join(users) or 'none'}"
            )
        return feature

    def submit(
        self,
        provider: str,
        feature: str,
        *,
        max_tokens: int | None = None,
        request_key: str | None = None,
        attempt_number: int | None = None,
    ) -> Served:
        """Send one attempt to ``provider`` now, with token sizes drawn from ``feature``'s.

        ``request_key`` groups the attempts of one logical request (the application's call
        with its retries); attempts without one are requests of their own, numbered by
        ``attempt_number`` when the client says it (the SDKs' ``x-stainless-retry-count``).
        """
        if not self._clock_running:
            self._start_clock()
        self.advance()
        now = self.kernel.now
        feat = self.scenario.features[feature]
        limit = feat.max_tokens if max_tokens is None else max_tokens
        ep = self.endpoints[provider]
        key = request_key if request_key is not None else f"attempt-{len(self._ids)}"
        rid = self._ids.setdefault(key, len(self._ids))
        made, last_end, inp, drawn = self._requests.get(key, (0, NAN, 0, 0))
        if made == 0:
            # A retry sends the same prompt and asks for the same answer: the sizes drawn for
            # the request's first attempt hold for all of them, as in a simulation.
            inp = int(self.inputs[feature](1)[0])
            drawn = int(self.outputs[feature](1)[0])
        out = min(drawn, limit)
        number = made if request_key is not None or attempt_number is None else attempt_number
        wait = 0.0 if made == 0 else max(0.0, now - last_end)
        self._requests[key] = (made + 1, last_end, inp, drawn)
        req = Request(rid, now, inp, 0, out, INF, ep.cost(inp, 0, out))
        att = Attempt(req, self._client(feature, limit), number, ep, now, INF, wait, 0)
        loop = self.loop
        served = Served(att, feature, key, loop.create_future(), loop.create_future())
        self._served[id(att)] = served
        self._waiting_start.add(served)
        ep.submit(att, now)
        self.advance()
        return served

    def cancel(self, served: Served) -> None:
        """The client hung up before the outcome: the provider treats it as a timeout."""
        if served.done.done():
            return
        self.advance()
        if not served.done.done():
            served.att.provider.cancel(served.att, self.kernel.now)
            self.advance()

    def _client(self, feature: str, max_tokens: int) -> ServeClient:
        key = (feature, max_tokens)
        client = self._clients.get(key)
        if client is None:
            feat = self.scenario.features[feature]
            if max_tokens != feat.max_tokens:
                feat = feat.model_copy(update={"max_tokens": max_tokens})
            client = ServeClient(
                feature,
                feat,
                [self.endpoints[feat.provider]],
                self.kernel,
                self.streams,
                self.recorder,
                self._deliver,
            )
            self._clients[key] = client
        return client

    def _deliver(self, att: Attempt) -> None:
        served = self._served.pop(id(att))
        self._waiting_start.discard(served)
        served.end = self.kernel.now
        made, _, inp, drawn = self._requests[served.request_key]
        # The next attempt's wait counts from when the outcome actually goes out: a busy
        # loop runs the kernel's events late, and that lag is the server's, not the client's.
        sent = max(served.end, self.sim_time())
        self._requests[served.request_key] = (made, sent, inp, drawn)
        if not served.started.done():
            served.started.set_result(att.start == att.start)
        if self.on_attempt is not None:
            self.on_attempt(served)
        served.done.set_result(att)

    def cancel_all(self) -> None:
        """End every attempt still in flight as a hang-up (the server is stopping)."""
        self.advance()
        for served in list(self._served.values()):
            self.cancel(served)

    def in_flight(self) -> int:
        """Attempts whose outcome is not reached yet."""
        return len(self._served)

    def rate_limit_headers(self, provider: str) -> tuple[float, float, float, float]:
        """Remaining requests and tokens, and seconds until each is full again, now (NaN
        where the provider has no such limit): what the ``x-ratelimit-*`` headers say."""
        limiter = self.endpoints[provider].limiter
        if limiter is None:
            return (NAN, NAN, NAN, NAN)
        return limiter.headers(self.kernel.now)


def token_times(served: Served) -> tuple[float, float]:
    """The attempt's time to first token from its send (a success's whole answer when it
    has no token model) and its time per output token; NaN where undefined."""
    att = served.att
    if not att.generated or att.start != att.start:
        return NAN, NAN
    ep = att.provider
    first = att.start + ep.first_token_offset(att)
    ttft = first - att.send if first <= served.end else NAN
    return ttft, ep.token_pace(att)


def check_servable(sc: Scenario) -> None:
    """Refuse what the server cannot run (``ConfigError`` naming the field to change)."""
    problems = []
    for name, cfg in sc.providers.items():
        if cfg.batching is not None:
            problems.append(
                f"providers.{name}.batching: llmtraffic serve does not serve continuous "
                "batching yet (a token's time depends on the batch of the moment); remove "
                "the batching table to serve this provider"
            )
    for name, feat in sc.features.items():
        if feat.input_tokens is None or feat.output_tokens is None:
            problems.append(
                f"features.{name}.trace: llmtraffic serve draws each request's token sizes "
                "from input_tokens and output_tokens; give those instead of a trace"
            )
    if problems:
        raise ConfigError(problems)
