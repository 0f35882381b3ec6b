"""Retry predicates: which failed attempts are worth retrying, as tenacity's ``retry``
strategies. Composable with ``|`` (either) and ``&`` (both)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmtraffic.client.waits import RetryState

if TYPE_CHECKING:
    from llmtraffic.config.policy import Layer, Policy

__all__ = [
    "RetryIf",
    "RetryIfAll",
    "RetryIfAny",
    "RetryIfHttp",
    "RetryIfHttpStatus",
    "RetryIfStatus",
    "for_policy",
]


class RetryIf:
    """Base of retry predicates."""

    def __call__(self, state: RetryState) -> bool:
        """True when the failed attempt described by ``state`` may be retried."""
        raise NotImplementedError

    def __or__(self, other: RetryIf) -> RetryIf:
        return RetryIfAny((self, other))

    def __and__(self, other: RetryIf) -> RetryIf:
        return RetryIfAll((self, other))


@dataclass(frozen=True)
class RetryIfAny(RetryIf):
    """Retry when any part says so."""

    parts: tuple[RetryIf, ...]

    def __call__(self, state: RetryState) -> bool:
        """Any of the parts."""
        return any(p(state) for p in self.parts)


@dataclass(frozen=True)
class RetryIfAll(RetryIf):
    """Retry when every part says so."""

    parts: tuple[RetryIf, ...]

    def __call__(self, state: RetryState) -> bool:
        """All of the parts."""
        return all(p(state) for p in self.parts)


@dataclass(frozen=True)
class RetryIfStatus(RetryIf):
    """Retry attempts that ended with one of ``statuses`` (attempt status names)."""

    statuses: frozenset[str]

    @classmethod
    def of(cls, statuses: Iterable[str]) -> RetryIfStatus:
        """From any iterable of status names."""
        return cls(frozenset(statuses))

    def __call__(self, state: RetryState) -> bool:
        """The status is one of them."""
        return state.status in self.statuses


@dataclass(frozen=True)
class RetryIfHttpStatus(RetryIf):
    """Retry attempts whose HTTP status is one of ``codes`` (0 stands for a timeout)."""

    codes: frozenset[int]

    def __call__(self, state: RetryState) -> bool:
        """The HTTP status is one of them."""
        return state.http_status in self.codes


RESPONSE_STATUSES = frozenset(
    {"rate_limited", "server_error", "overloaded", "quota_exhausted", "context_length_exceeded"}
)
"""Failed attempts that came back as an HTTP error response (a timeout has no response, and a
mid-stream failure's response was a 200 whose body broke off)."""


@dataclass(frozen=True)
class RetryIfHttp(RetryIf):
    """The SDKs' ``_should_retry`` on error responses: retry a response whose HTTP status is
    one of ``codes`` or at least ``at_least``; failures without an error response (timeouts,
    mid-stream failures: connection errors to an SDK) pass.

    ``RetryIfHttp(frozenset({408, 409, 429}), 500)`` is the OpenAI and Anthropic SDKs' rule
    (openai 3.57.0 and anthropic 2.16.0, ``_base_client.py``): a 424 or a 400 is not retried
    even if the provider's config sends it as a ``server_error``. With ``obey_should_retry``
    an ``x-should-retry: true`` or ``false`` on the response decides before the status does,
    as the SDKs' ``_should_retry`` reads it first.
    """

    codes: frozenset[int]
    at_least: int | None = None
    obey_should_retry: bool = False

    def __call__(self, state: RetryState) -> bool:
        """The failure had no error response, or its header or status says retry."""
        if state.status not in RESPONSE_STATUSES:
            return True
        if self.obey_should_retry and state.should_retry is not None:
            return state.should_retry
        code = state.http_status
        return code in self.codes or (self.at_least is not None and code >= self.at_least)


def for_policy(policy: Policy | Layer) -> RetryIf:
    """The retry predicate a policy's (or a layer's) ``retryable`` and ``retryable_http``
    describe."""
    by_status = RetryIfStatus.of(policy.retryable)
    http = policy.retryable_http
    if http is None:
        return by_status
    return by_status & RetryIfHttp(frozenset(http.codes), http.at_least, http.obey_should_retry)
