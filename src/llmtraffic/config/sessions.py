"""Config of closed-loop workloads: chat sessions and agent tasks (``features.X.session``,
``features.X.agent``).

A feature with one of these tables sends conversations rather than independent requests: its
``arrivals`` are the arrivals of sessions (or tasks), its ``input_tokens`` the new tokens each
turn (or call) adds, its ``output_tokens`` each answer's tokens. A turn is sent only after the
previous one ended, so the provider's latency and failures shape the load it receives.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from llmtraffic.config.base import FiniteDuration, FiniteDurationOrZero, Model

MAX_TURNS = 10_000
"""Most turns (or calls) one session (or task) may make: a bound that keeps a lognormal's far
tail from making a run endless; draws above it are capped at it."""

MAX_CONTEXT = 10_000_000
"""Most tokens a prompt may hold: the largest context window offered (the same bound as
``config.workload.MAX_TOKENS``, which this module cannot import: workload imports it)."""


class FixedCount(Model):
    """Every session makes the same number of turns."""

    kind: Literal["fixed"] = "fixed"
    value: int = Field(ge=1, le=MAX_TURNS, description="turns of every session, 1 to 10,000")


class UniformCount(Model):
    """Numbers of turns uniform on the integers ``low..high`` (both included)."""

    kind: Literal["uniform"] = "uniform"
    low: int = Field(ge=1, le=MAX_TURNS, description="fewest turns, 1 to 10,000")
    high: int = Field(ge=1, le=MAX_TURNS, description="most turns, low to 10,000")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.high < self.low:
            raise ValueError(f".high: must be >= low ({self.low}), got {self.high}")
        return self


class LognormalCount(Model):
    """Lognormal numbers of turns given the median and 99th percentile; rounded, 1 to 10,000."""

    kind: Literal["lognormal"] = "lognormal"
    median: float = Field(ge=1, le=MAX_TURNS, description="median turns, 1 to 10,000")
    p99: float = Field(ge=1, le=MAX_TURNS, description="99th percentile of turns, above the median")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.p99 <= self.median:
            raise ValueError(f".p99: must be > median ({self.median:g}), got {self.p99:g}")
        return self


class EmpiricalCount(Model):
    """Numbers of turns from evenly spaced quantiles (minimum to maximum), interpolated and
    rounded, as the empirical token distribution does."""

    kind: Literal["empirical"] = "empirical"
    quantiles: list[float] = Field(
        min_length=2, description="evenly spaced quantiles of turns, increasing, each 1 to 10,000"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        for i, q in enumerate(self.quantiles):
            if not 1 <= q <= MAX_TURNS:
                raise ValueError(f".quantiles[{i}]: must be 1 to {MAX_TURNS:,} turns, got {q:g}")
        for i, (a, b) in enumerate(itertools.pairwise(self.quantiles), start=1):
            if b < a:
                raise ValueError(
                    f".quantiles[{i}]: quantiles must be in increasing order; {b:g} comes "
                    f"after {a:g}"
                )
        return self


Count = Annotated[
    FixedCount | UniformCount | LognormalCount | EmpiricalCount, Field(discriminator="kind")
]
"""How many turns (or calls) a session (or task) makes."""


class FixedDelay(Model):
    """Every pause lasts the same time."""

    kind: Literal["fixed"] = "fixed"
    value: FiniteDurationOrZero = Field(description="the pause, seconds (0 allowed)")


class ExponentialDelay(Model):
    """Exponential pauses (memoryless: the closed network is then a machine-repairman model)."""

    kind: Literal["exponential"] = "exponential"
    mean: FiniteDuration = Field(description="mean pause, seconds (> 0)")


class UniformDelay(Model):
    """Pauses uniform on [low, high]."""

    kind: Literal["uniform"] = "uniform"
    low: FiniteDurationOrZero = Field(description="shortest pause, seconds")
    high: FiniteDurationOrZero = Field(description="longest pause, seconds, >= low")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.high < self.low:
            raise ValueError(f".high: must be >= low ({self.low:g} s), got {self.high:g} s")
        return self


class LognormalDelay(Model):
    """Lognormal pauses given the median and 99th percentile."""

    kind: Literal["lognormal"] = "lognormal"
    median: FiniteDuration = Field(description="median pause, seconds (> 0)")
    p99: FiniteDuration = Field(description="99th percentile, above the median")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.p99 <= self.median:
            raise ValueError(f".p99: must be > median ({self.median:g} s), got {self.p99:g} s")
        return self


Delay = Annotated[
    FixedDelay | ExponentialDelay | UniformDelay | LognormalDelay, Field(discriminator="kind")
]
"""A pause between two requests of a session: a user's think time, an agent's tool call."""


class _Context(Model):
    """How the prompt of each turn is built: the system prompt, then the transcript carried
    over (every earlier answered turn's input and output), then the turn's new tokens; and
    what happens when that exceeds ``max_context``."""

    system_tokens: int = Field(
        0,
        ge=0,
        le=MAX_CONTEXT,
        description="tokens of the system prompt at the start of every turn's prompt",
    )
    max_context: int | None = Field(
        None,
        ge=1,
        le=MAX_CONTEXT,
        description="most prompt tokens (system + transcript + new) the application sends; "
        "the transcript is cut by on_overflow to fit (none: no cap)",
    )
    on_overflow: Literal["truncate", "summarize"] = Field(
        "truncate",
        description="when a prompt would exceed max_context: 'truncate' drops the oldest "
        "transcript tokens, 'summarize' replaces the transcript by summary_tokens",
    )
    summary_tokens: int | None = Field(
        None,
        ge=0,
        le=MAX_CONTEXT,
        description="size of the summary that replaces the transcript (on_overflow = "
        "'summarize'; required then)",
    )

    @model_validator(mode="after")
    def _check_context(self) -> Self:
        cap = self.max_context
        if cap is not None and cap <= self.system_tokens:
            raise ValueError(
                f".max_context: must be > system_tokens ({self.system_tokens}), got {cap}; "
                "the prompt must leave room for the conversation"
            )
        if self.on_overflow == "summarize":
            if cap is None:
                raise ValueError(
                    '.on_overflow: "summarize" needs max_context (the size that triggers it)'
                )
            if self.summary_tokens is None:
                raise ValueError(
                    '.summary_tokens: missing; on_overflow = "summarize" needs the size of '
                    "the summary"
                )
            if self.system_tokens + self.summary_tokens >= cap:
                raise ValueError(
                    f".summary_tokens: system_tokens + summary_tokens must be < max_context "
                    f"({cap}), got {self.system_tokens} + {self.summary_tokens}; a summary "
                    "must be shorter than the context it replaces"
                )
        elif self.summary_tokens is not None:
            raise ValueError(
                '.summary_tokens: only with on_overflow = "summarize"; remove it, or set '
                "on_overflow"
            )
        return self


class Session(_Context):
    """A chat session: ``turns`` requests, each sent ``think_time`` after the previous one's
    answer (or failure); each turn's prompt carries the transcript so far."""

    turns: Count = Field(description="turns per session (a count distribution)")
    think_time: Delay = Field(
        description="the user's pause between an answer and the next turn (a delay distribution)"
    )
    abandon_on_failure: bool = Field(
        True,
        description="a failed turn (after the policy's retries) ends its session; false: the "
        "user sends the next turn anyway, and the failed exchange is not in the transcript",
    )


class Agent(_Context):
    """An agent task: a chain of ``calls`` requests with a tool call of ``tool_time`` between
    two; each call carries the transcript so far. A failed call ends the task (it cannot go on
    without the answer), and a task succeeds only if every call does."""

    calls: Count = Field(description="model calls per task (a count distribution)")
    tool_time: Delay = Field(
        description="latency of the tool call between two model calls (a delay distribution)"
    )
