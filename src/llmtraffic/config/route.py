"""Config of routing across deployments (docs/policies.md, "Routing across deployments"): a
policy's ``route`` names two or more deployments of one model (provider entries, each with its
own rate limit, capacity, incidents and prices) and the strategy that picks one for each
attempt, with LiteLLM's cooldown of failing deployments.

The defaults are LiteLLM's Router (litellm 1.110.2): ``simple-shuffle`` is its default
strategy, the latency strategy's ``RoutingArgs`` (``ttl`` 1 h, ``lowest_latency_buffer`` 0,
``max_latency_list_size`` 10) and the cooldown constants of ``litellm/constants.py``
(``DEFAULT_COOLDOWN_TIME_SECONDS = 5``).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from llmtraffic.config.base import FiniteDuration, Model

RouteStrategy = Literal["weighted", "least_busy", "latency", "cost", "usage"]
"""How a deployment is picked for an attempt: LiteLLM's ``simple-shuffle`` (Portkey's
load-balance weights), ``least-busy``, ``latency-based-routing``, ``cost-based-routing`` and
``usage-based-routing-v2``."""


class RouteCooldown(Model):
    """LiteLLM's cooldown: a failing deployment is skipped for ``time`` seconds.

    Without ``allowed_fails`` (LiteLLM's default, ``_should_cooldown_deployment``'s v2 rules
    for a group of several deployments): a deployment cools down at once on a 429, when more
    than 50% of at least 5 calls of its current minute failed, or on a status LiteLLM does not
    retry (401, 404). With ``allowed_fails`` set (LiteLLM's Router argument): when more than
    ``allowed_fails`` failures fall within ``time`` of the first of them.
    """

    enabled: bool = Field(
        True, description="cool failing deployments down (LiteLLM's disable_cooldowns = false)"
    )
    allowed_fails: int | None = Field(
        None,
        ge=0,
        description="cool down after more than this many failures within `time` of the "
        "first (none: LiteLLM's default rules: a 429, or > 50% of >= 5 calls in a minute)",
    )
    time: FiniteDuration = Field(
        5.0,
        description="how long a cooled-down deployment is skipped (LiteLLM's "
        "DEFAULT_COOLDOWN_TIME_SECONDS = 5)",
    )


class RouteLatency(Model):
    """The ``latency`` strategy's arguments: LiteLLM's ``RoutingArgs`` for
    ``latency-based-routing`` (``litellm/router_strategy/lowest_latency.py``)."""

    samples: int = Field(
        10,
        gt=0,
        description="successful latencies kept per deployment (max_latency_list_size = 10)",
    )
    ttl: FiniteDuration = Field(
        3600.0,
        description="the samples of every deployment are forgotten this long after the "
        "first was recorded (the router cache's ttl, 1 h): then each deployment is tried again",
    )
    buffer: float = Field(
        0.0,
        ge=0,
        description="pick at random among the deployments within (1 + buffer) x the lowest "
        "average (lowest_latency_buffer = 0: the lowest only)",
    )


class Route(Model):
    """Routing across deployments of one model: each attempt (first or retry) goes to the
    deployment ``strategy`` picks among those not cooling down."""

    deployments: list[str] = Field(
        description="provider names, one per deployment (region, key); the feature's "
        "provider must be one of them (its prices are the baseline)",
    )
    strategy: RouteStrategy = Field(
        "weighted",
        description="weighted (LiteLLM's default simple-shuffle, Portkey's loadbalance), "
        "least_busy, latency, cost or usage (usage-based-routing-v2)",
    )
    weights: list[float] | Literal["rpm", "tpm"] | None = Field(
        None,
        description='weighted only: a weight per deployment, or "rpm" / "tpm" (each '
        "deployment's rate limit, as LiteLLM weighs by rpm or tpm); none: equal weights",
    )
    declared_limits: bool = Field(
        False,
        description="the router knows each deployment's rate_limit rpm and tpm, and the "
        "latency, cost and usage strategies skip a deployment this minute's usage would "
        "take past them (LiteLLM: rpm / tpm written on the deployment; not by default)",
    )
    latency: RouteLatency | None = Field(
        None, description="latency only: samples, ttl and buffer (LiteLLM's defaults)"
    )
    cooldown: RouteCooldown = Field(
        default_factory=RouteCooldown,
        description="skip a failing deployment for a while (LiteLLM's cooldown)",
    )

    @field_validator("deployments")
    @classmethod
    def _two_or_more(cls, value: list[str]) -> list[str]:
        if len(value) < 2:
            raise ValueError(
                f"a route needs at least 2 deployments, got {value}; for one provider drop "
                'route (breaker = "litellm-cooldown" is LiteLLM\'s cooldown of a lone '
                "deployment)"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = self.deployments
        for name in names:
            if names.count(name) > 1:
                raise ValueError(
                    f"deployments: {name!r} is listed twice; list each deployment once (use "
                    "weights to send it more traffic)"
                )
        if self.weights is not None:
            if self.strategy != "weighted":
                raise ValueError(
                    f'weights apply to strategy = "weighted" only, not {self.strategy!r}: '
                    "drop weights or use the weighted strategy"
                )
            if isinstance(self.weights, list):
                if len(self.weights) != len(names):
                    raise ValueError(
                        f"weights: {len(self.weights)} weights for {len(names)} deployments; "
                        "give one weight per deployment, in the same order"
                    )
                if any(w < 0 for w in self.weights) or not any(w > 0 for w in self.weights):
                    raise ValueError(
                        "weights: each weight must be >= 0 and at least one > 0 "
                        f"(got {self.weights})"
                    )
        if self.latency is not None and self.strategy != "latency":
            raise ValueError(
                f'latency applies to strategy = "latency" only, not {self.strategy!r}: drop '
                "latency or use the latency strategy"
            )
        return self
