"""Routing across deployments (docs/policies.md, "Routing across deployments"): the client of
a feature whose policy has a ``route`` sends each attempt, first or retry, to the deployment
its ``Router`` picks at the moment the attempt goes out (after the client's gates), and tells
the router each outcome before its retry policy decides, so that a retry is routed again with
what the failure taught (a deployment cooled down by it is skipped).

When no deployment can take the attempt (every one cooling down, or over its limits), the
request ends ``rejected_route``: LiteLLM's Router raises "No deployments available for
selected model" then. What the gates gave the attempt is given back (``Client.finish``).

Only policies with ``route`` use ``RoutedClient``: the others keep ``Client``'s code
unchanged. The policy config refuses a route with a breaker (the route's cooldown is its
per-deployment breaker), a fallback, hedging and retry layers (not modelled yet).
"""

from __future__ import annotations

import math

from llmtraffic.client.client import Client
from llmtraffic.client.router import Deployment, Router
from llmtraffic.config.policy import Policy
from llmtraffic.config.workload import Feature
from llmtraffic.engine.entities import OK, REJECTED_ROUTE, Attempt, Request
from llmtraffic.engine.kernel import Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.provider.endpoint import Endpoint
from llmtraffic.results.recorder import Recorder

__all__ = ["RoutedClient"]

NAN = math.nan
INF = math.inf


class RoutedClient(Client):
    """A client whose policy routes each attempt across the deployments of its route.

    ``chain`` holds the feature's provider first (the baseline's prices, as for every
    client), then the route's other deployments. ``rejected`` counts the requests no
    deployment could take.
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
        route = policy.route
        assert route is not None  # simulation chooses this class only for routed policies
        position = {ep.name: i for i, ep in enumerate(self.chain)}
        deployments = []
        for i, dname in enumerate(route.deployments):
            ep = self.chain[position[dname]]
            weights = route.weights
            if isinstance(weights, list):
                weight = weights[i]
            elif weights == "rpm":
                weight = ep.limit_rpm
            elif weights == "tpm":
                weight = ep.limit_tpm
            else:
                weight = 1.0
            deployments.append(
                Deployment(
                    dname,
                    position[dname],
                    weight,
                    ep.price_input + ep.price_output,
                    ep.limit_rpm if route.declared_limits else INF,
                    ep.limit_tpm if route.declared_limits else INF,
                    route.latency.samples if route.latency is not None else 10,
                )
            )
        # Its own stream: a route added to a policy shifts no other draw of the comparison.
        self.router = Router(
            route, deployments, streams.uniforms(f"client/{name}/route"), feature.stream
        )
        self.rejected = 0

    def _submit(self, req: Request, now: float, cap: float = INF) -> None:
        """Route the attempt, then send it as ``Client._submit`` does (or end the request
        ``rejected_route`` when no deployment can take it)."""
        d = self.router.pick(now, req.input_tokens)
        if d is None:
            self.rejected += 1
            self.finish(req, REJECTED_ROUTE, now)
            return
        self.router.sent(d, now)
        req.chain_pos = d.position
        super()._submit(req, now, cap)

    def on_response(self, att: Attempt) -> None:
        """The router learns the outcome of ``att`` (and may cool its deployment down) before
        the client acts on it."""
        now = self.kernel.now
        req = att.request
        status = att.status
        ttft = NAN
        if status is OK and self.stream:
            ttft = self.token_times(att, now)[0]
        router = self.router
        d = router.by_name[att.provider.name]
        if router.record(
            d,
            now,
            status,
            att.http_status,
            now - att.send,
            ttft,
            req.input_tokens + att.generated,
            att.generated,
        ):
            self.recorder.event(now, "cooldown", self.name, d.name, status, router.cooldown_time)
        super().on_response(att)

    def route_totals(self) -> tuple[str, list[tuple[str, int, int, int]], int]:
        """The strategy, per deployment (name, attempts sent, cooldowns, picks skipped while
        cooling down), and the requests no deployment could take."""
        rows = [(d.name, d.attempts, d.cooldowns, d.skipped) for d in self.router.deployments]
        return self.router.strategy, rows, self.rejected
