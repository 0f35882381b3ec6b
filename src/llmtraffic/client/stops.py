"""Stop conditions: when to give up retrying, as tenacity's ``stop`` strategies.

Small callables of the retry state, composable with ``|`` (stop when either says so) and
``&`` (stop when both do). They never look at a clock: the state carries simulated time.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmtraffic.client.waits import RetryState

__all__ = [
    "Stop",
    "StopAfterAttempt",
    "StopAfterDelay",
    "StopAll",
    "StopAny",
    "StopNever",
]


class Stop:
    """Base of stop conditions."""

    def __call__(self, state: RetryState) -> bool:
        """True to give up after the attempt described by ``state``."""
        raise NotImplementedError

    def __or__(self, other: Stop) -> Stop:
        return StopAny((self, other))

    def __and__(self, other: Stop) -> Stop:
        return StopAll((self, other))


@dataclass(frozen=True)
class StopAny(Stop):
    """Stop when any part says so."""

    parts: tuple[Stop, ...]

    def __call__(self, state: RetryState) -> bool:
        """Any of the parts."""
        return any(p(state) for p in self.parts)


@dataclass(frozen=True)
class StopAll(Stop):
    """Stop when every part says so."""

    parts: tuple[Stop, ...]

    def __call__(self, state: RetryState) -> bool:
        """All of the parts."""
        return all(p(state) for p in self.parts)


@dataclass(frozen=True)
class StopAfterAttempt(Stop):
    """Give up once ``attempts`` attempts were made (tenacity's ``stop_after_attempt``)."""

    attempts: int

    def __call__(self, state: RetryState) -> bool:
        """After that many attempts."""
        return state.attempt_number >= self.attempts


@dataclass(frozen=True)
class StopAfterDelay(Stop):
    """Give up once ``seconds`` have passed since the request arrived."""

    seconds: float

    def __call__(self, state: RetryState) -> bool:
        """After that much time."""
        return state.elapsed >= self.seconds


@dataclass(frozen=True)
class StopNever(Stop):
    """Never give up (bounded by the deadline and the policy's max_attempts)."""

    def __call__(self, state: RetryState) -> bool:
        """Never."""
        return False
