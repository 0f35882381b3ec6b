"""The client of a feature that pulls cost levers (docs/policies.md, "Cost levers"): a model
cascade, a split of the prompts by size, a response cache, spend caps. A feature without them
gets the plain ``Client`` (``simulation.client_class``), which runs none of this code.

- **Routes** are the providers of the client's chain: a cascade's models in order, or a
  split's (the feature's provider, then the one for small prompts). Each route reports the
  requests that reached it, its attempts and cost, the requests it answered and their latency,
  its quality failures and the requests it escalated.
- **Cascade**: an ok answer of model i is judged not good enough with probability
  ``quality_failure[i]`` (its own random stream). Not the last model: the attempt is billed and
  recorded as ok, and the request is sent, with the same prompt, to model i + 1 (it is the
  request's next attempt). The last model: the request succeeds, counted as a quality failure.
  HTTP failures go through the policy as always; exhausted retries (or an open breaker) move
  the request to the next model when ``escalate_on_error`` (the fallback machinery).
- **Response cache**: checked at arrival, before the gates; a hit ends the request ok after the
  cache's latency, with no attempt and no cost.
- **Spend caps**: checked as each attempt is sent; a refusal is an attempt with status
  ``quota_exhausted`` (429) that reaches the client at once and costs nothing, decided on by
  the policy as a provider's would be.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from llmtraffic.client.client import Client
from llmtraffic.client.spendcaps import CapBook
from llmtraffic.config.policy import Policy
from llmtraffic.config.workload import Feature
from llmtraffic.engine.entities import OK, QUOTA_EXHAUSTED, UNFINISHED, Attempt, Request
from llmtraffic.engine.kernel import Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.provider.endpoint import Endpoint
from llmtraffic.results.recorder import Recorder

INF = math.inf
NAN = math.nan


def zipf_cdf(n: int, s: float) -> np.ndarray:
    """The cumulative probabilities of ranks 1..n under a Zipf law of exponent ``s``
    (P(k) proportional to k^-s; s = 0 is uniform)."""
    w = np.arange(1, n + 1, dtype=float) ** -s
    cdf = np.cumsum(w / w.sum())
    cdf[-1] = 1.0
    return cdf


def ranks(cdf: np.ndarray, rng: np.random.Generator, batch: int = 4096) -> Iterator[int]:
    """Endless draws of a rank 0..n-1 with cumulative probabilities ``cdf`` (inverse CDF),
    drawn a batch at a time."""
    last = len(cdf) - 1
    while True:
        yield from np.minimum(np.searchsorted(cdf, rng.random(batch), side="right"), last).tolist()


class LeversClient(Client):
    """A feature's client with a cascade or split (routes), a response cache and spend caps."""

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
        caps: list[CapBook] | None = None,
    ) -> None:
        super().__init__(name, feature, policy, chain, kernel, streams, recorder, track_live)
        n = len(self.chain)
        self.route_names = [ep.name for ep in self.chain]
        self.route_requests = [0] * n
        self.route_attempts = [0] * n
        self.route_cost = [0.0] * n
        self.route_ok = [0] * n
        self.route_latency = [0.0] * n  # sum over the requests it answered, from arrival
        self.route_quality = [0] * n  # answers judged not good enough
        self.route_escalated = [0] * n
        self.escalation_cost = 0.0  # billed for answers a cascade did not use
        cascade = feature.cascade
        self.quality: list[float] | None = None
        # Each lever draws from its own stream, so that pulling one shifts no other draw.
        self.u_quality = streams.uniforms(f"feature/{name}/quality")
        self.u_cache = streams.uniforms(f"feature/{name}/response_cache")
        if cascade is not None:
            self.quality = list(cascade.quality_failure)
            # Escalation on errors is the fallback chain's move: on exhausted retries, and on
            # an open breaker (the next model can answer what this one cannot).
            self.fallback_on_exhausted = self.fallback_on_open = cascade.escalate_on_error
        split = feature.split
        self.split_below = split.below if split is not None else 0
        # Response cache.
        cache = feature.response_cache
        self.cache_hit_rate = NAN
        self.cache_keys: Iterator[int] | None = None
        self.cache_ttl = INF
        self.cache_latency = 0.0
        self.cache_store: dict[int, float] = {}  # key: until when its stored answer serves
        self._pending_key: dict[int, int] = {}  # request id: the key a miss will store
        self.cache_hits = 0
        self.cache_saved = 0.0
        self.has_cache = cache is not None
        if cache is not None:
            self.cache_ttl = cache.ttl
            self.cache_latency = cache.latency
            if cache.hit_rate is not None:
                self.cache_hit_rate = cache.hit_rate
            else:
                assert cache.keys is not None  # the config gives hit_rate or keys
                self.cache_keys = ranks(
                    zipf_cdf(cache.keys, cache.zipf),
                    streams.generator(f"feature/{name}/response_cache/keys"),
                )
        # Users and spend caps.
        users = feature.users
        self.users: Iterator[int] | None = None
        if users is not None:
            s = users.zipf if users.assignment == "zipf" else 0.0
            self.users = ranks(zipf_cdf(users.count, s), streams.generator(f"feature/{name}/users"))
        self.caps = list(caps or [])
        self._user: dict[int, int] = {}  # request id: its user (while it lives)
        self._refused: dict[int, list[CapBook]] = {}  # request id: the caps that refused it
        self.cap_refused = 0  # requests that ended failed because a cap refused them
        self.cap_prevented = 0.0  # their baseline cost

    # Arrival: cache, route ----------------------------------------------------------------

    def arrive(self, req: Request) -> None:
        """A new request arrives now: its user, its route, then the cache or the gates."""
        self.tally.requests += 1
        if self.live is not None:
            self.live[req.id] = req
        now = self.kernel.now
        if self.users is not None:
            self._user[req.id] = next(self.users)
        if self.split_below and req.input_tokens < self.split_below:
            # Its primary model is the small-prompt route: so is its baseline.
            req.chain_pos = 1
            ep = self.chain[1]
            baseline = ep.cost(req.input_tokens, req.cached_tokens, req.output_tokens)
            self.tally.baseline += baseline - req.baseline
            req.baseline = baseline
        if self.has_cache and self._cache_hit(req, now):
            self.cache_hits += 1
            self.cache_saved += req.baseline
            self.kernel.schedule(req, self.cache_latency, self._on_cache_hit)
            return
        self.route_requests[req.chain_pos] += 1
        if self.budget is not None:
            self.budget.on_request(now)
        self.send(req, now)

    def _cache_hit(self, req: Request, now: float) -> bool:
        """Whether the cache answers ``req`` (a miss of the key model remembers its key)."""
        if self.cache_keys is None:
            return next(self.u_cache) < self.cache_hit_rate
        key = next(self.cache_keys)
        if now < self.cache_store.get(key, -INF):
            return True
        self._pending_key[req.id] = key
        return False

    def _on_cache_hit(self, req: Request) -> None:
        now = self.kernel.now
        tally = self.tally
        # The token times the tally keeps per success: the whole answer at once, no pace.
        if self.keep_ttft:
            tally.ttfts.append(now - req.arrival)
        if self.keep_tpot:
            tally.tpots.append(NAN)
        self.finish(req, OK, now)

    # Sending: spend caps ------------------------------------------------------------------

    def _submit(self, req: Request, now: float, cap: float = INF) -> None:
        if self.caps:
            user = self._user.get(req.id, -1)
            refusing = [b for b in self.caps if b.refuses(b.tenant(self.name, user), now)]
            if refusing:
                self._refuse(req, now, refusing)
                return
        super()._submit(req, now, cap)

    def _refuse(self, req: Request, now: float, books: list[CapBook]) -> None:
        """The gateway refuses the attempt: a 429 quota_exhausted, at once, unbilled (the
        bookkeeping of ``Client._submit`` for an attempt that never reaches the provider)."""
        endpoint = self.chain[req.chain_pos]
        req.held = 0
        number = req.attempts
        tally = self.tally
        tally.sent += 1
        tally.inflight_acc -= now
        wait = 0.0
        if number:
            tally.retries += 1
            wait = req.prev_wait
        req.attempts = number + 1
        req.provider_attempts += 1
        req.last_provider = endpoint
        att = Attempt(req, self, number, endpoint, now, INF, wait, req.epoch)
        att.status = QUOTA_EXHAUSTED
        att.http_status = 429
        self._refused[req.id] = books
        self.kernel.schedule(att, 0.0, self.on_response)

    # Responses: routes, charges, quality ---------------------------------------------------

    def on_response(self, att: Attempt) -> None:
        """The outcome of ``att``: charged to the spend caps and its route; an ok answer of a
        cascade is judged, and escalated when not good enough."""
        req = att.request
        r = req.chain_pos
        cost = att.cost
        self.route_attempts[r] += 1
        self.route_cost[r] += cost
        if cost and self.caps:
            user = self._user.get(req.id, -1)
            now = self.kernel.now
            for book in self.caps:
                book.charge(book.tenant(self.name, user), cost, now)
        quality = self.quality
        if att.status is OK and quality is not None and next(self.u_quality) < quality[r]:
            self.route_quality[r] += 1
            if r + 1 < len(self.chain):
                self._escalate(att, req)
                return
            self.tally.quality_failures += 1
        super().on_response(att)

    def _escalate(self, att: Attempt, req: Request) -> None:
        """An ok answer not good enough: billed and recorded like any response (the books of
        ``Client.on_response``), then the request goes to the next model of the cascade."""
        now = self.kernel.now
        cost = att.cost
        tally = self.tally
        tally.attempts += 1
        tally.billed += cost
        tally.status[OK] += 1
        tally.inflight_acc += now
        req.billed += cost
        self.escalation_cost += cost
        if cost:
            self.arrived_billed[int(req.arrival * self._inv)] += cost
        breaker = self.breakers[req.chain_pos]
        if breaker is not None:
            breaker.record(now, att.epoch, False, now - att.send)
        if self.throttle is not None:
            self.throttle.record(now, True)
        if att.number and self.budget is not None:
            self.budget.on_retry_done()
        if self.local_queue:
            self._release_local(now)
        rows = self.recorder.attempts
        if rows is not None:
            start = att.start
            ttft, tpot = self.token_times(att, now)
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
                    OK,
                    att.http_status,
                    att.retry_after,
                    start - att.send if start == start else NAN,
                    req.input_tokens,
                    att.generated,
                    cost,
                    att.wait_before,
                    ttft,
                    tpot,
                )
            )
        self._fall_back(req, now)

    def _fall_back(self, req: Request, now: float) -> bool:
        """Escalate ``req`` to the next route (a cascade's next model)."""
        r = req.chain_pos
        if r + 1 >= len(self.chain):
            return False
        self.route_escalated[r] += 1
        self.route_requests[r + 1] += 1
        return super()._fall_back(req, now)

    # Ends -----------------------------------------------------------------------------------

    def _settle(self, req: Request, outcome: str, now: float) -> None:
        """A request ends: its route's answer, the cache's store, the caps' refusals."""
        rid = req.id
        if outcome is OK and req.attempts:  # a cache hit was answered by no route
            r = req.chain_pos
            self.route_ok[r] += 1
            self.route_latency[r] += now - req.arrival
        if self._pending_key:
            key = self._pending_key.pop(rid, None)
            if key is not None and outcome is OK:
                self.cache_store[key] = now + self.cache_ttl
        user = self._user.pop(rid, -1) if self._user else -1
        if self._refused:
            books = self._refused.pop(rid, None)
            if books is not None and outcome is not OK and outcome is not UNFINISHED:
                self.cap_refused += 1
                self.cap_prevented += req.baseline
                for book in books:
                    book.count_refused(book.tenant(self.name, user), req.baseline)

    def finish(self, req: Request, outcome: str, now: float) -> None:
        """End ``req`` with its one terminal ``outcome`` (and settle its levers)."""
        self._settle(req, outcome, now)
        super().finish(req, outcome, now)

    def _finish_first_try(self, req: Request, att: Attempt, now: float) -> None:
        self._settle(req, OK, now)
        super()._finish_first_try(req, att, now)

    # Summary --------------------------------------------------------------------------------

    def lever_metrics(self) -> dict[str, object]:
        """The feature's cascade, routes and cache figures (docs/metrics.md, "Cost levers")."""
        requests = self.tally.requests
        out: dict[str, object] = {}
        if self.quality is not None or self.split_below:
            out["routes"] = {
                name: {
                    "requests": self.route_requests[i],
                    "attempts": self.route_attempts[i],
                    "billed_cost": self.route_cost[i],
                    "answered": self.route_ok[i],
                    "latency_mean": (
                        self.route_latency[i] / self.route_ok[i] if self.route_ok[i] else NAN
                    ),
                    "quality_failures": self.route_quality[i],
                    "escalated": self.route_escalated[i],
                    "escalation_share": (
                        self.route_escalated[i] / self.route_requests[i]
                        if self.route_requests[i]
                        else NAN
                    ),
                }
                for i, name in enumerate(self.route_names)
            }
        if self.quality is not None:
            escalated = sum(self.route_escalated[:-1])
            out["escalations"] = escalated
            out["escalation_cost"] = self.escalation_cost
            out["quality_failures"] = self.tally.quality_failures
            out["quality_failure_share"] = (
                self.tally.quality_failures / requests if requests else NAN
            )
        if self.has_cache:
            out["cache_hits"] = self.cache_hits
            out["cache_hit_rate"] = self.cache_hits / requests if requests else NAN
            out["cache_saved_cost"] = self.cache_saved
        if self.caps:
            out["spend_cap_refused"] = self.cap_refused
            out["spend_cap_prevented_cost"] = self.cap_prevented
        return out


__all__ = ["LeversClient", "ranks", "zipf_cdf"]
