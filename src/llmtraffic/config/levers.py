"""Config of the cost levers a team pulls in front of its providers (docs/policies.md, "Cost
levers"): a model cascade, a split of the prompts by size, a response cache, a feature's user
population, and spend caps per key, feature or user."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from llmtraffic.config.base import FiniteDurationOrZero, Model, PositiveDuration

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Cascade(Model):
    """A model cascade (FrugalGPT's): every request goes to ``models[0]`` first; an answer
    judged not good enough (probability ``quality_failure[i]``, independent per answer) sends
    the request's same prompt to the next model. Every answer is billed; the request's latency
    runs from its arrival to the answer it ends with. An HTTP failure is retried by the
    feature's policy on the same model; when the policy gives up (exhausted), the request moves
    to the next model if ``escalate_on_error``."""

    models: list[str] = Field(
        min_length=2,
        description="provider entries in escalation order; the first is the feature's provider",
    )
    quality_failure: list[Probability] = Field(
        description="per model, the probability that a successful answer is judged not good "
        "enough (0 to 1); the last model's are the request's quality failures"
    )
    escalate_on_error: bool = Field(
        True,
        description="a request whose retries on a model are exhausted moves to the next model "
        "(false: it fails there)",
    )

    @model_validator(mode="after")
    def _one_rate_per_model(self) -> Self:
        if len(self.quality_failure) != len(self.models):
            raise ValueError(
                f".quality_failure: 'models' has {len(self.models)} entries but "
                f"'quality_failure' has {len(self.quality_failure)}; give one probability per "
                "model"
            )
        return self


class PromptSplit(Model):
    """A static route by prompt size: a request whose prompt (input tokens, RAG context
    included) has fewer than ``below`` tokens goes to ``provider``; the others to the feature's
    own provider."""

    below: Annotated[int, Field(gt=0)] = Field(
        description="prompts with fewer input tokens than this go to 'provider'"
    )
    provider: str = Field(description="provider entry that serves the small prompts")


class ResponseCache(Model):
    """A response cache (exact or semantic) in front of the provider: a hit answers after
    ``latency`` at no provider cost. Either a fixed ``hit_rate``, or a key population: each
    request asks one of ``keys`` prompts with a Zipf law of exponent ``zipf`` and hits when
    that prompt's answer was stored less than ``ttl`` ago (an answer is stored when a miss
    succeeds, and expires ``ttl`` after it was stored)."""

    hit_rate: Probability | None = Field(
        None, description="share of requests answered from the cache (0 to 1); or give keys"
    )
    keys: Annotated[int, Field(gt=0, le=10_000_000)] | None = Field(
        None,
        description="number of distinct prompts the requests draw from (Zipf law), up to "
        "10,000,000",
    )
    zipf: Annotated[float, Field(ge=0.0, le=10.0)] = Field(
        1.0, description="Zipf exponent of the key popularity (0: uniform), with keys"
    )
    ttl: PositiveDuration = Field(
        float("inf"), description='how long a stored answer serves hits ("1h"; inf: forever)'
    )
    latency: FiniteDurationOrZero = Field(
        0.005, description="time a hit takes to answer (a cache lookup: 5 ms)"
    )

    @model_validator(mode="after")
    def _one_model(self) -> Self:
        if (self.hit_rate is None) == (self.keys is None):
            raise ValueError(
                "give either hit_rate (a fixed share of hits) or keys (a Zipf key population "
                "with a ttl), not both and not neither"
            )
        if self.hit_rate is not None and "zipf" in self.model_fields_set:
            raise ValueError(".zipf: only with keys; remove it, or give keys instead of hit_rate")
        return self


class Users(Model):
    """A feature's user population: each request belongs to one of ``count`` users, drawn
    uniformly or by a Zipf law of exponent ``zipf`` (a few heavy users), on its own random
    stream. Per-user spend caps need it."""

    count: Annotated[int, Field(gt=0, le=10_000_000)] = Field(
        description="number of users, up to 10,000,000"
    )
    assignment: Literal["uniform", "zipf"] = Field(
        "uniform", description="how requests are spread over users: uniform or zipf"
    )
    zipf: Annotated[float, Field(gt=0.0, le=10.0)] = Field(
        1.0, description="Zipf exponent when assignment = 'zipf'"
    )


def _named_period(value: object) -> object:
    """The calendar words a budget is written with, as seconds (a month is 30 days, as
    LiteLLM's ``budget_duration = "30d"``); anything else is a duration."""
    words = {"minute": 60.0, "hour": 3600.0, "day": 86400.0, "month": 30 * 86400.0}
    return words.get(value, value) if isinstance(value, str) else value


class SpendCap(Model):
    """A spend cap at the client's gateway (an API key's or a virtual key's budget, LiteLLM's
    ``max_budget`` and ``budget_duration``): once the features it covers were billed ``usd`` in
    the current period, every attempt of theirs is refused with a 429 ``quota_exhausted``
    until the period ends. ``per = "user"`` gives every user of each feature its own cap of
    ``usd`` (the features need ``users``)."""

    usd: Annotated[float, Field(gt=0)] = Field(description="USD billed per period before refusal")
    period: PositiveDuration = Field(
        description='"minute", "hour", "day", "month" (30 days) or a duration; periods start '
        "at the start of the run"
    )
    features: list[str] = Field(min_length=1, description="features whose spend the cap counts")
    per: Literal["key", "user"] = Field(
        "key", description="key: one cap shared by the features; user: one cap per user"
    )

    @model_validator(mode="before")
    @classmethod
    def _period_words(cls, data: object) -> object:
        if isinstance(data, dict) and "period" in data:
            return {**data, "period": _named_period(data["period"])}
        return data


__all__ = [
    "Cascade",
    "PromptSplit",
    "ResponseCache",
    "SpendCap",
    "Users",
]
