"""The routing decisions of one client across the deployments of its route, as LiteLLM's Router
makes them (litellm 1.110.2; docs/policies.md, "Routing across deployments"): which deployment
an attempt goes to (``Router.pick``), and what an outcome teaches it (``Router.record``): the
latencies, the per-minute usage, and whether the deployment cools down.

Decisions apart from effects: nothing here sends, waits or schedules; ``RoutedClient`` does.
The clock is the ``now`` passed in, the randomness the uniforms given at construction.

The rules, with the LiteLLM source each follows:

- ``weighted``: ``router_strategy/simple_shuffle.py``: ``random.choices`` by weight among the
  deployments not cooling down (equal weights: ``random.choice``).
- ``least_busy``: ``router_strategy/least_busy.py``: the fewest attempts in flight from this
  client; ties go to the first in the route's order (``min`` over the indices).
- ``latency``: ``router_strategy/lowest_latency.py``: the lowest average of the last
  ``samples`` successful latencies (per output token, as LiteLLM divides by the completion
  tokens; time to first token for a streamed feature); a timeout adds a 1000 s sample; a
  deployment without samples counts 0 (so an untried one is tried); all samples are forgotten
  ``ttl`` after the first was recorded (the cache entry's ttl is set when it is created and
  not moved by later writes, ``caching/in_memory_cache.py`` ``allow_ttl_override``); random
  among those within ``buffer`` of the lowest; a deployment over its rpm or tpm limit in the
  current minute (successes counted) is skipped.
- ``cost``: ``router_strategy/lowest_cost.py``: the lowest input + output price per token,
  skipping those over their limits in the current minute; ties: the first in order.
- ``usage``: ``router_strategy/lowest_tpm_rpm_v2.py``: the lowest tokens (input + output of
  the successes) in the current minute, skipping a deployment whose tokens + the request's
  input would pass its tpm limit or whose attempts this minute + 1 would reach its rpm
  limit; ties at random.
- Cooldown: ``router_utils/cooldown_handlers.py`` (``_is_cooldown_required``,
  ``_should_cooldown_deployment``, ``should_cooldown_based_on_allowed_fails_policy``) and
  ``router_utils/router_callbacks/track_deployment_metrics.py`` (the per-minute success and
  failure counters, each expiring 60 s after its first increment).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence

from llmtraffic.config.route import Route
from llmtraffic.engine.entities import MIDSTREAM_ERROR, OK, TIMEOUT

__all__ = ["TIMEOUT_PENALTY", "Deployment", "Router"]

INF = math.inf
MINUTE = 60.0
TIMEOUT_PENALTY = 1000.0
"""Seconds LiteLLM's latency strategy records for a timed-out call
(``async_log_failure_event``: "give 1000s penalty for failing")."""
FAILURE_SHARE = 0.5
"""``DEFAULT_FAILURE_THRESHOLD_PERCENT``: cool down above this share of failures ..."""
FAILURE_MIN_CALLS = 5
"""... of at least ``DEFAULT_FAILURE_THRESHOLD_MINIMUM_REQUESTS`` calls in the minute."""
CONSIDERED_4XX = frozenset((401, 402, 404, 408, 429))
"""The 4xx statuses ``_is_cooldown_required`` considers (every other 4xx never cools down)."""


def litellm_should_retry(http: int) -> bool:
    """``litellm.utils.should_retry``: 408, 409, 429 and >= 500 are retried."""
    return http in (408, 409, 429) or http >= 500


class Deployment:
    """One deployment of the route, as this client's router sees it.

    ``attempts`` counts the attempts sent to it, ``cooldowns`` the times it was cooled down,
    ``skipped`` the picks made while it was cooling down (it was left out of them).
    """

    __slots__ = (
        "attempts",
        "cool_until",
        "cooldowns",
        "fail_count",
        "fail_until",
        "fails_count",
        "fails_until",
        "inflight",
        "lat",
        "minute",
        "minute_rpm",
        "minute_sent",
        "minute_tpm",
        "name",
        "ok_count",
        "ok_until",
        "position",
        "price",
        "rpm_limit",
        "skipped",
        "tpm_limit",
        "ttft",
        "weight",
    )

    def __init__(
        self,
        name: str,
        position: int,
        weight: float,
        price: float,
        rpm_limit: float,
        tpm_limit: float,
        samples: int,
    ) -> None:
        self.name = name
        self.position = position  # its index in the client's provider chain
        self.weight = weight
        self.price = price  # input + output USD per token, what the cost strategy compares
        self.rpm_limit = rpm_limit
        self.tpm_limit = tpm_limit
        self.inflight = 0
        self.attempts = 0
        self.cooldowns = 0
        self.skipped = 0
        self.cool_until = -INF
        # LiteLLM's per-minute success and failure counters (each from its first increment).
        self.ok_count = 0
        self.ok_until = -INF
        self.fail_count = 0
        self.fail_until = -INF
        # The allowed_fails counter (lives `cooldown.time` from its first increment).
        self.fails_count = 0
        self.fails_until = -INF
        # Usage in the current clock minute: successes and their tokens, attempts sent.
        self.minute = -1
        self.minute_rpm = 0
        self.minute_tpm = 0
        self.minute_sent = 0
        self.lat: deque[float] = deque(maxlen=samples)
        self.ttft: deque[float] = deque(maxlen=samples)

    def cooling(self, now: float) -> bool:
        """Whether it is cooling down at ``now``."""
        return now < self.cool_until

    def usage_at(self, now: float) -> None:
        """Start a new clock minute's usage counts when ``now`` is in a later minute."""
        minute = int(now // MINUTE)
        if minute != self.minute:
            self.minute = minute
            self.minute_rpm = self.minute_tpm = self.minute_sent = 0

    def over_limits(self, now: float, input_tokens: int) -> bool:
        """The latency and cost strategies' filter: this minute's successes (and their tokens)
        plus this request would pass the deployment's rpm or tpm limit."""
        self.usage_at(now)
        return (
            self.minute_tpm + input_tokens > self.tpm_limit or self.minute_rpm + 1 > self.rpm_limit
        )


class Router:
    """Picks a deployment for each attempt and learns from each outcome (module docstring).

    ``deployments`` are in the route's order. ``uniforms`` is the client's routing stream.
    ``stream`` says whether the feature streams (the latency strategy then compares times to
    first token).
    """

    def __init__(
        self,
        route: Route,
        deployments: Sequence[Deployment],
        uniforms: Iterator[float],
        stream: bool,
    ) -> None:
        self.strategy = route.strategy
        self.deployments = tuple(deployments)
        self.u = uniforms
        self.stream = stream
        cd = route.cooldown
        self.cooldown = cd.enabled
        self.allowed_fails = cd.allowed_fails
        self.cooldown_time = cd.time
        lat = route.latency
        self.latency_ttl = 3600.0 if lat is None else lat.ttl
        self.latency_buffer = 0.0 if lat is None else lat.buffer
        self.latency_until = -INF  # when the latency samples are forgotten (-inf: no entry)
        self.by_name = {d.name: d for d in self.deployments}

    # Picking ---------------------------------------------------------------------------------

    def pick(self, now: float, input_tokens: int) -> Deployment | None:
        """The deployment the next attempt goes to, or None when none can take it (every one
        cooling down or over its limits: LiteLLM's "No deployments available")."""
        healthy = []
        for d in self.deployments:
            if now < d.cool_until:
                d.skipped += 1
            else:
                healthy.append(d)
        if not healthy:
            return None
        strategy = self.strategy
        if strategy == "weighted":
            return self._weighted(healthy)
        if strategy == "least_busy":
            return min(healthy, key=lambda d: d.inflight)
        if strategy == "latency":
            return self._lowest_latency(healthy, now, input_tokens)
        if strategy == "cost":
            cheap = [d for d in healthy if not d.over_limits(now, input_tokens)]
            return min(cheap, key=lambda d: d.price) if cheap else None
        return self._lowest_usage(healthy, now, input_tokens)

    def _weighted(self, healthy: list[Deployment]) -> Deployment:
        total = sum(d.weight for d in healthy)
        if total <= 0.0:
            # simple_shuffle: no weight among the healthy ones, a uniform choice.
            return healthy[int(next(self.u) * len(healthy))]
        x = next(self.u) * total
        for d in healthy:
            x -= d.weight
            if x < 0.0:
                return d
        # Rounding left x at 0 after the last weight: the last deployment with a weight.
        return [d for d in healthy if d.weight > 0.0][-1]

    def _choice(self, options: list[Deployment]) -> Deployment:
        return options[0] if len(options) == 1 else options[int(next(self.u) * len(options))]

    def _lowest_latency(
        self, healthy: list[Deployment], now: float, input_tokens: int
    ) -> Deployment | None:
        self._expire_latency(now)
        scored = []
        for d in healthy:
            if d.over_limits(now, input_tokens):
                continue
            samples = d.ttft if self.stream and d.ttft else d.lat
            scored.append((sum(samples) / len(samples) if samples else 0.0, d))
        if not scored:
            return None
        lowest = min(s for s, _ in scored)
        within = lowest + self.latency_buffer * lowest
        return self._choice([d for s, d in scored if s <= within])

    def _lowest_usage(
        self, healthy: list[Deployment], now: float, input_tokens: int
    ) -> Deployment | None:
        best: list[Deployment] = []
        lowest = INF
        for d in healthy:
            d.usage_at(now)
            if d.minute_tpm + input_tokens > d.tpm_limit or d.minute_sent + 1 >= d.rpm_limit:
                continue
            if d.minute_tpm < lowest:
                lowest = float(d.minute_tpm)
                best = [d]
            elif d.minute_tpm == lowest:
                best.append(d)
        return self._choice(best) if best else None

    # Learning --------------------------------------------------------------------------------

    def sent(self, d: Deployment, now: float) -> None:
        """An attempt goes to ``d`` now."""
        d.inflight += 1
        d.attempts += 1
        d.usage_at(now)
        d.minute_sent += 1  # usage-based-routing-v2 counts rpm before the call

    def record(
        self,
        d: Deployment,
        now: float,
        status: str,
        http: int,
        latency: float,
        ttft: float,
        tokens: int,
        generated: int,
    ) -> bool:
        """An attempt on ``d`` ended now with ``status`` (``http`` its HTTP status, 0 without
        one), ``latency`` seconds after it was sent; ``ttft`` its time to first token (NaN if
        none), ``tokens`` its input + output tokens and ``generated`` its output tokens.
        Returns whether ``d`` starts cooling down now."""
        d.inflight -= 1
        if status is OK:
            if now >= d.ok_until:
                d.ok_count = 0
                d.ok_until = now + MINUTE
            d.ok_count += 1
            d.usage_at(now)
            d.minute_rpm += 1
            d.minute_tpm += tokens
            self._learn_latency(d, now, latency / generated if generated else latency, ttft)
            return False
        if now >= d.fail_until:
            d.fail_count = 0
            d.fail_until = now + MINUTE
        d.fail_count += 1
        if status is TIMEOUT:
            self._learn_latency(d, now, TIMEOUT_PENALTY, math.nan)
            http = 408  # litellm.Timeout
        elif status is MIDSTREAM_ERROR:
            http = 500  # a stream that broke off: the provider's error, not the caller's
        if not self.cooldown or (400 <= http < 500 and http not in CONSIDERED_4XX):
            return False
        if self.allowed_fails is not None:
            if now >= d.fails_until:
                d.fails_count = 0
                d.fails_until = now + self.cooldown_time
            d.fails_count += 1
            trigger = d.fails_count > self.allowed_fails
        else:
            ok = d.ok_count if now < d.ok_until else 0
            total = ok + d.fail_count
            trigger = (
                http == 429
                or (d.fail_count / total > FAILURE_SHARE and total >= FAILURE_MIN_CALLS)
                or not litellm_should_retry(http)
            )
        if not trigger or now < d.cool_until:
            # Already cooling: LiteLLM's cooldown entry keeps its first expiry.
            return False
        d.cool_until = now + self.cooldown_time
        d.cooldowns += 1
        return True

    def _expire_latency(self, now: float) -> None:
        """At the entry's ttl every deployment's samples are forgotten (untried again)."""
        if now >= self.latency_until and self.latency_until != -INF:
            for d in self.deployments:
                d.lat.clear()
                d.ttft.clear()
            self.latency_until = -INF

    def _learn_latency(self, d: Deployment, now: float, value: float, ttft: float) -> None:
        self._expire_latency(now)
        if self.latency_until == -INF:
            # The first sample of a new entry sets its expiry; later writes keep it.
            self.latency_until = now + self.latency_ttl
        d.lat.append(value)
        if self.stream and ttft == ttft:
            d.ttft.append(ttft)
