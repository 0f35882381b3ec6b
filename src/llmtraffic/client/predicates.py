"""Retry predicates: which failed attempts are worth retrying, as tenacity's ``retry``
strategies. Composable with ``|`` (either) and ``&`` (both)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llmtraffic.client.waits import RetryState


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
