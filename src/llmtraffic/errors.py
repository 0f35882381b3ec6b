"""Exceptions raised for bad input, so that callers can tell a user's mistake from a bug."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "LLMTrafficError",
    "OutputError",
    "PolicyError",
    "TraceError",
    "TraceWarning",
]


class LLMTrafficError(Exception):
    """Base class of the errors llmtraffic raises on purpose."""


class ConfigError(LLMTrafficError):
    """A scenario or experiment config is invalid.

    ``problems`` holds one line per problem, each starting with the dotted field path
    (``features.chat.arrivals.rate: must be greater than 0, got -1``).
    """

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            text = f"{where}invalid config: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            text = f"{where}invalid config ({len(self.problems)} problems):\n{lines}"
        super().__init__(text)


class OutputError(LLMTrafficError):
    """A results folder cannot be written where asked (exists, or its parent is not a folder)."""


class TraceError(LLMTrafficError):
    """A trace file cannot be read; the message names the file, line and column."""


class TraceWarning(UserWarning):
    """A trace was read with a fix-up the user asked for (``sort = "warn"`` sorted it)."""


class PolicyError(LLMTrafficError):
    """A retry policy (built-in, plugin or tenacity) returned something the client cannot carry
    out, such as a negative, infinite or NaN wait; the message names the policy class."""
