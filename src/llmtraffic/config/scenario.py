"""The whole scenario: run settings, providers, features and policies, cross-checked."""

from __future__ import annotations

import math
import os.path
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from llmtraffic.config import policy_presets
from llmtraffic.config.base import (
    ArrivalSpan,
    Duration,
    FiniteDuration,
    FiniteDurationOrZero,
    Model,
    Slug,
)
from llmtraffic.config.levers import SpendCap
from llmtraffic.config.policy import Policy, policy_from_preset
from llmtraffic.config.provider import Provider
from llmtraffic.config.workload import Feature

MAX_SEED = 2**63 - 1
"""Largest root seed: what a TOML integer and the int64 columns of the result tables hold."""


class Recovery(Model):
    """How recovery after an incident is judged (see docs/metrics.md)."""

    tolerance: float = Field(
        0.02, ge=0, le=1, description="recovered when within this of the pre-incident success rate"
    )
    window: FiniteDurationOrZero = Field(60.0, description="rolling window of the success rate")
    baseline: FiniteDurationOrZero = Field(
        300.0, description="pre-incident span that sets the level"
    )
    horizon: FiniteDuration = Field(
        600.0,
        description="how long after an incident ends the system has to recover before it is "
        "called metastable",
    )
    hold: FiniteDuration = Field(
        300.0, description="how long the success rate must stay at the level to be a recovery"
    )


class RunSettings(Model):
    """Length, seed and recording of one run."""

    duration: ArrivalSpan = Field(
        "trace",
        description="span during which requests arrive; 'trace' (the default, allowed when "
        "every feature replays a trace without loop): until the end of the traces",
    )
    seed: int = Field(0, description="root seed of every random stream, 0 to 2**63 - 1")
    drain: Duration = Field(
        float("inf"),
        description="after the arrivals stop, how long requests may take to finish; the rest "
        "are recorded as 'unfinished' (\"inf\", the default: until every request ends)",
    )
    timeseries_bin: FiniteDuration = Field(10.0, description="width of a time-series bin")
    records: Literal["all", "timeseries", "summary"] = Field(
        "all", description="which tables to keep: all, time series + summary, or summary only"
    )
    start_hour: float = Field(0.0, ge=0, lt=24, description="hour of day at t=0 (diurnal load)")
    recovery: Recovery = Recovery()

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, seed: int) -> int:
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(
                f"must be a whole number from 0 to 2**63 - 1 ({MAX_SEED}), got {seed}; "
                "seeds are stored as 64-bit integers"
            )
        return seed

    @property
    def seconds(self) -> float:
        """``duration`` in seconds, once a "trace" duration is resolved (by ``load_config``,
        ``scenario_from_dict`` or ``Simulation``: see ``config.span``)."""
        if isinstance(self.duration, str):
            raise ValueError(
                'run.duration = "trace" is resolved from the trace files by '
                "llmtraffic.config.span.resolve_duration(scenario); call it first"
            )
        return float(self.duration)


class Scenario(Model):
    """One simulated system: traffic, providers and client policies. Build with ``load_config``
    from TOML or directly in Python."""

    name: Slug = Field(
        "scenario",
        description="name of the results folder under runs/: letters, digits, '-', '_' and "
        "'.' (not first)",
    )
    run: RunSettings
    providers: dict[str, Provider]
    features: dict[str, Feature]
    policies: dict[str, Policy] = Field(default_factory=dict)
    spend_caps: dict[str, SpendCap] = Field(
        default_factory=dict,
        description="spend caps per API key, feature or user (docs/policies.md, 'Spend caps')",
    )
    price_files: list[str] = Field(
        default_factory=list,
        description="TOML price files in the format of data/models.toml, relative to the "
        "config file; their models add to (and override) the presets",
    )

    @model_validator(mode="before")
    @classmethod
    def _price_files_need_the_loader(cls, data: Any, info: ValidationInfo) -> Any:
        context: Any = info.context
        if (
            isinstance(data, Mapping)
            and data.get("price_files")
            and not (isinstance(context, Mapping) and "models" in context)
        ):
            raise ValueError(
                "price_files: read by load_config() or scenario_from_dict(); "
                "Scenario.model_validate() alone does not read files"
            )
        return data

    @field_validator("price_files")
    @classmethod
    def _absolute_price_files(cls, files: list[str], info: ValidationInfo) -> list[str]:
        """Recorded as absolute paths, so the resolved scenario names the files it used."""
        context: Any = info.context
        base = context.get("base_dir") if isinstance(context, Mapping) else None
        root = Path(base) if base is not None else Path.cwd()
        return [os.path.normpath((root / Path(f).expanduser()).absolute()) for f in files]

    @model_validator(mode="after")
    def _cross_check(self) -> Self:
        problems: list[str] = []
        if not self.providers:
            problems.append("providers: define at least one provider")
        if not self.features:
            problems.append("features: define at least one feature")
        duration = self.run.duration
        if duration == "trace":
            others = [n for n, f in self.features.items() if f.trace is None or f.trace.loop]
            if others:
                problems.append(
                    "run.duration: needed; give the span during which requests arrive (e.g. "
                    'duration = "1h"). Left out (or "trace"), it replays each trace once, so '
                    "every feature must replay a trace without loop; these do not: "
                    + ", ".join(others)
                )
        for name, feat in self.features.items():
            at = getattr(feat.arrivals, "at", None)
            if at and isinstance(duration, float) and at[-1] >= duration:
                problems.append(
                    f"features.{name}.arrivals.at: {sum(t >= duration for t in at)} "
                    f"times are at or after the end of the arrivals (run.duration = "
                    f"{duration:g} s); lengthen run.duration or drop them"
                )
            if feat.provider not in self.providers:
                problems.append(
                    f"features.{name}.provider: unknown provider {feat.provider!r}; "
                    f"defined: {_names(self.providers)}"
                )
            if feat.policy is None:
                if len(self.policies) > 1:
                    problems.append(
                        f"features.{name}.policy: missing; several policies are defined "
                        f"({_names(self.policies)}), name one"
                    )
            elif feat.policy not in self.policies and feat.policy not in policy_presets.POLICIES:
                problems.append(
                    f"features.{name}.policy: unknown policy {feat.policy!r}; "
                    f"defined: {_names(self.policies)}; presets: "
                    f"{_names(policy_presets.POLICIES)}"
                )
        if isinstance(duration, float):
            problems.extend(late_incidents(self, duration))
        for pname, policy in self.policies.items():
            if policy.route is not None:
                problems.extend(self._route_problems(pname, policy))
            if policy.fallback is None:
                continue
            for i, target in enumerate(policy.fallback.providers):
                if target not in self.providers:
                    problems.append(
                        f"policies.{pname}.fallback.providers[{i}]: unknown provider "
                        f"{target!r}; defined: {_names(self.providers)}"
                    )
        for name, feat in self.features.items():
            route = self.policy_of(name).route if not problems else None
            if route is not None and feat.provider not in route.deployments:
                problems.append(
                    f"features.{name}.provider: {feat.provider!r} is not one of its policy "
                    f"{feat.policy!r}'s route.deployments ({', '.join(route.deployments)}); "
                    "the feature's provider is the route's primary (its prices are the "
                    "baseline): add it to the deployments or name one of them"
                )
        problems.extend(_shared_quotas(self.providers))
        problems.extend(self._lever_problems())
        if not problems:
            problems.extend(self._endless_stalls())
            problems.extend(self._tpot_without_tokens())
            problems.extend(self._hedges_on_batching())
            problems.extend(self._pricing_conflicts())
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _route_problems(self, pname: str, policy: Policy) -> list[str]:
        """A route's deployments are defined providers; weights by rate limit need that limit
        on every deployment."""
        route = policy.route
        assert route is not None
        problems = []
        for i, target in enumerate(route.deployments):
            if target not in self.providers:
                problems.append(
                    f"policies.{pname}.route.deployments[{i}]: unknown provider {target!r}; "
                    f"defined: {_names(self.providers)}"
                )
            elif isinstance(route.weights, str):
                limit = self.providers[target].rate_limit
                if limit is None or getattr(limit, route.weights) is None:
                    problems.append(
                        f"policies.{pname}.route.weights: {route.weights!r} weighs each "
                        f"deployment by its rate_limit.{route.weights}, and provider "
                        f"{target!r} has none; give it one, or give weights as numbers"
                    )
        return problems

    def chain_names(self, feature: str) -> list[str]:
        """The providers a feature's attempts may go to: its provider, the other deployments
        of its policy's route, then its policy's fallback providers, in order; or its
        cascade's models, or its split's two providers (which refuse a route and a fallback)."""
        feat = self.features[feature]
        if feat.cascade is not None:
            return list(feat.cascade.models)
        if feat.split is not None:
            return [feat.provider, feat.split.provider]
        policy = self.policy_of(feature)
        primary = self.features[feature].provider
        routed = [] if policy.route is None else policy.route.deployments
        fallbacks = [] if policy.fallback is None else policy.fallback.providers
        return [primary, *(d for d in routed if d != primary), *fallbacks]

    def _endless_stalls(self) -> list[str]:
        """A stalled stream ends only when the client's timeout cuts it: with no timeout, no
        deadline and an unbounded drain, the run would never end (a problem line per feature)."""
        if not math.isinf(self.run.drain):
            return []
        problems = []
        for name in self.features:
            policy = self.policy_of(name)
            chain = self.chain_names(name)
            stalls = [
                p for p in chain if p in self.providers and self.providers[p].failures.stall_rate
            ]
            limits = (
                policy.timeout,
                policy.first_token_timeout,
                policy.idle_timeout,
                policy.deadline,
            )
            if stalls and all(math.isinf(x) for x in limits):
                problems.append(
                    f"features.{name}: provider {stalls[0]!r} has failures.stall_rate > 0 and "
                    f"the policy has no timeout, idle_timeout, first_token_timeout or deadline, "
                    f"so a stalled stream never ends and the run never would; set "
                    f"idle_timeout (the SDKs: 600 s) or a finite run.drain"
                )
        return problems

    def _tpot_without_tokens(self) -> list[str]:
        """A tpot SLO needs a provider with the token model: a service-time distribution has
        no time per token (a problem line per feature)."""
        problems = []
        for name, feat in self.features.items():
            if feat.slo is None or feat.slo.tpot is None:
                continue
            chain = self.chain_names(name)
            kinds = {self.providers[p].service.kind for p in chain if p in self.providers}
            if "tokens" not in kinds:
                problems.append(
                    f"features.{name}.slo.tpot: provider {feat.provider!r} has a "
                    f"{'/'.join(sorted(kinds))} service, which has no time per token; give it "
                    f'service = {{ kind = "tokens", ... }} or drop tpot'
                )
        return problems

    def _hedges_on_batching(self) -> list[str]:
        """Hedging cancels attempts through the plain endpoint's abandon path; a batching
        provider's cancellation is not modelled yet (a problem line per feature)."""
        problems = []
        for name, feat in self.features.items():
            provider = self.providers.get(feat.provider)
            if self.policy_of(name).hedge is not None and provider and provider.batching:
                problems.append(
                    f"features.{name}: its policy hedges and provider {feat.provider!r} has "
                    "batching; hedging on a batching provider is not modelled yet: drop the "
                    "policy's hedge or the provider's batching"
                )
        return problems

    def _lever_problems(self) -> list[str]:
        """Cascades, splits, response caches and spend caps: their provider and feature names,
        and the policy features they do not combine with (a problem line each)."""
        problems = []
        for name, feat in self.features.items():
            path = f"features.{name}"
            if feat.cascade is not None:
                for i, model in enumerate(feat.cascade.models):
                    if model not in self.providers:
                        problems.append(
                            f"{path}.cascade.models[{i}]: unknown provider {model!r}; "
                            f"defined: {_names(self.providers)}"
                        )
                if feat.cascade.models[0] != feat.provider:
                    problems.append(
                        f"{path}.cascade.models[0]: must be the feature's provider "
                        f"({feat.provider!r}), where every request goes first; got "
                        f"{feat.cascade.models[0]!r}"
                    )
                if feat.split is not None:
                    problems.append(
                        f"{path}.split: a feature has a cascade or a split, not both; drop one"
                    )
            if feat.split is not None and feat.split.provider not in self.providers:
                problems.append(
                    f"{path}.split.provider: unknown provider {feat.split.provider!r}; "
                    f"defined: {_names(self.providers)}"
                )
            known = feat.policy is None or feat.policy in self.policies
            if not (known or feat.policy in policy_presets.POLICIES):
                continue  # an unknown policy: reported above
            capped = any(name in cap.features for cap in self.spend_caps.values())
            if not (feat.levers or capped):
                continue
            policy = self.policy_of(name)
            which = "its cascade, split, response_cache or spend cap"
            if policy.layers:
                problems.append(
                    f"{path}: {which} does not combine with the retry layers of its policy "
                    "yet; drop the policy's layers or the lever"
                )
            if policy.hedge is not None:
                problems.append(
                    f"{path}: {which} does not combine with the hedging of its policy yet; "
                    "drop the policy's hedge or the lever"
                )
            if feat.session is not None or feat.agent is not None:
                problems.append(
                    f"{path}: {which} does not combine with sessions or agent tasks yet; drop "
                    "the lever, or model the sessions without it"
                )
            if policy.route is not None:
                problems.append(
                    f"{path}: {which} does not combine with the route of its policy yet; drop "
                    "the policy's route or the lever"
                )
            if (feat.cascade or feat.split) and policy.fallback is not None:
                problems.append(
                    f"{path}: a cascade or split moves requests between providers itself; drop "
                    "the policy's fallback (a cascade escalates on exhausted retries with "
                    "escalate_on_error)"
                )
        for cname, cap in self.spend_caps.items():
            for i, fname in enumerate(cap.features):
                if fname not in self.features:
                    problems.append(
                        f"spend_caps.{cname}.features[{i}]: unknown feature {fname!r}; "
                        f"defined: {_names(self.features)}"
                    )
                elif cap.per == "user" and self.features[fname].users is None:
                    problems.append(
                        f"spend_caps.{cname}.per: 'user' needs a user population; give "
                        f"features.{fname}.users = {{ count = N }}"
                    )
        return problems

    def _pricing_conflicts(self) -> list[str]:
        """A fixed cached share next to a prompt cache that derives it; a batch provider
        whose attempts the client would abandon before the results come; a long-context
        tier on a batching provider, which bills standard prices (a problem line each)."""
        from llmtraffic.provider.errors import longest_request

        problems = []
        for name, feat in self.features.items():
            policy = self.policy_of(name)
            for pname in self.chain_names(name):
                provider = self.providers.get(pname)
                if provider is None:
                    continue
                if feat.cached_fraction and provider.prompt_cache is not None:
                    problems.append(
                        f"features.{name}.cached_fraction: provider {pname!r} has a "
                        "prompt_cache, which derives the cached tokens from the traffic; drop "
                        "cached_fraction (or the provider's prompt_cache to keep a fixed share)"
                    )
                if (
                    provider.service_tier == "batch"
                    and min(policy.timeout, policy.deadline) < 86_400.0
                ):
                    problems.append(
                        f"features.{name}: provider {pname!r} is a batch provider (results "
                        "within 24 h) and the policy gives up after "
                        f"{min(policy.timeout, policy.deadline):g} s; set the policy's timeout "
                        'and deadline to "24h" or more'
                    )
                lc = provider.prices.long_context
                if (
                    provider.batching is not None
                    and lc is not None
                    and longest_request([feat]) > lc.above
                ):
                    problems.append(
                        f"features.{name}: provider {pname!r} has batching and long-context "
                        f"prices above {lc.above:,} input tokens, which batching does not bill; "
                        "keep the prompts under it or drop batching"
                    )
        return problems

    def policy_of(self, feature: str) -> Policy:
        """The policy a feature uses (its named one, the only one defined, or no retries)."""
        name = self.features[feature].policy
        if name is not None:
            if name in self.policies:
                return self.policies[name]
            preset = policy_from_preset(name)
            assert preset is not None  # the cross-check accepted the name
            return preset
        if self.policies:
            return next(iter(self.policies.values()))
        return Policy()


def late_incidents(scenario: Scenario, duration: float, span: str = "run.duration") -> list[str]:
    """One problem line per incident that starts at or after the end of the arrivals
    (``duration`` seconds, named ``span`` in the message): it could never affect a request,
    so it is a mistake (a start in minutes written as seconds, a run shortened after the
    schedule was written)."""
    problems = []
    for pname, provider in scenario.providers.items():
        for i, inc in enumerate(provider.incidents):
            if inc.start >= duration:
                problems.append(
                    f"providers.{pname}.incidents[{i}].start: {inc.start:g} s is at or after "
                    f"the end of the arrivals ({span} = {duration:g} s), so the "
                    f"{inc.kind} would never hit a request; start it before {duration:g} s "
                    "or lengthen run.duration"
                )
    return problems


def _shared_quotas(providers: Mapping[str, Provider]) -> list[str]:
    """Providers that share a quota account must agree on its cap and period."""
    first: dict[str, str] = {}
    problems = []
    for name, cfg in providers.items():
        quota = cfg.quota
        if quota is None or quota.account is None:
            continue
        other = first.setdefault(quota.account, name)
        theirs = providers[other].quota
        assert theirs is not None
        if (quota.spend_cap, quota.period) != (theirs.spend_cap, theirs.period):
            problems.append(
                f"providers.{name}.quota: account {quota.account!r} has spend_cap "
                f"{quota.spend_cap:g} and period {quota.period:g} s here but "
                f"{theirs.spend_cap:g} and {theirs.period:g} s in providers.{other}.quota; "
                "give every provider of one account the same spend_cap and period"
            )
    return problems


def _names(d: Mapping[str, object]) -> str:
    return ", ".join(sorted(d)) or "(none)"
