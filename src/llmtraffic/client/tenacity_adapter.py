"""Run tenacity's own ``wait``, ``stop`` and ``retry`` strategy objects in simulated time.

A team that retries with tenacity names its ``tenacity.Retrying`` (or a function of the same
module that takes no arguments and returns one: ``load_retrying`` calls nothing else) in the
config; after each failed attempt the adapter builds a ``tenacity.RetryCallState``
holding simulated times and the failure as an exception, and asks the three strategies in
tenacity's own order (``BaseRetrying._post_retry_check_actions``, tenacity 9.2.1): retry?,
then how long to wait (stored as ``upcoming_sleep``), then stop? (``stop_before_delay`` reads
``upcoming_sleep``). ``idle_for`` holds the waits already slept. tenacity draws its jitter
from the global ``random`` module; while a strategy runs, the adapter points tenacity's wait
module at a generator fed from the simulation's seeded stream, so runs stay reproducible.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llmtraffic.client.predicates import RetryIf
from llmtraffic.client.retry import Decision
from llmtraffic.client.waits import RetryState
from llmtraffic.config.policy import TenacityRetry
from llmtraffic.engine.entities import (
    CONTEXT_LENGTH_EXCEEDED,
    EXHAUSTED,
    MIDSTREAM_ERROR,
    NON_RETRYABLE,
    OVERLOADED,
    QUOTA_EXHAUSTED,
    RATE_LIMITED,
    SERVER_ERROR,
    TIMEOUT,
)

__all__ = [
    "AttemptTimeoutError",
    "ContextLengthError",
    "MidstreamError",
    "OverloadedError",
    "QuotaExhaustedError",
    "RateLimitedError",
    "ServerError",
    "SimulatedAPIError",
    "TenacityPolicy",
]


class SimulatedAPIError(Exception):
    """The exception a failed simulated attempt stands for, as tenacity's predicates see it.

    ``status`` is the attempt status, ``status_code`` the HTTP status (0 for a timeout) and
    ``retry_after`` the 429's retry-after in seconds (NaN when absent).
    """

    def __init__(self, status: str, status_code: int, retry_after: float) -> None:
        super().__init__(f"{status} ({status_code})")
        self.status = status
        self.status_code = status_code
        self.retry_after = retry_after


class RateLimitedError(SimulatedAPIError):
    """A 429."""


class QuotaExhaustedError(RateLimitedError):
    """A 429 that waiting does not clear (``insufficient_quota``, a spend cap); a subclass of
    ``RateLimitedError`` because the SDKs raise one ``RateLimitError`` for both, so
    ``retry_if_exception_type(RateLimitedError)`` catches it as the application's would."""


class ContextLengthError(SimulatedAPIError):
    """A 400: the prompt and max_tokens do not fit the model's context window."""


class ServerError(SimulatedAPIError):
    """A 5xx before generation (or an outage)."""


class OverloadedError(SimulatedAPIError):
    """A 503/529 from a provider shedding load."""


class AttemptTimeoutError(SimulatedAPIError):
    """The client gave up waiting."""


class MidstreamError(SimulatedAPIError):
    """Generation failed part-way."""


EXCEPTIONS: dict[str, type[SimulatedAPIError]] = {
    RATE_LIMITED: RateLimitedError,
    SERVER_ERROR: ServerError,
    OVERLOADED: OverloadedError,
    TIMEOUT: AttemptTimeoutError,
    MIDSTREAM_ERROR: MidstreamError,
    QUOTA_EXHAUSTED: QuotaExhaustedError,
    CONTEXT_LENGTH_EXCEEDED: ContextLengthError,
}


class _Uniforms:
    """Stands in for the ``random`` module inside tenacity's wait strategies."""

    def __init__(self, draws: Iterator[float]) -> None:
        self._draws = draws

    def random(self) -> float:
        """Next U[0, 1)."""
        return next(self._draws)

    def uniform(self, a: float, b: float) -> float:
        """As ``random.uniform``: a + (b - a) * U."""
        return a + (b - a) * next(self._draws)


@contextmanager
def seeded_tenacity(draws: Iterator[float]) -> Iterator[None]:
    """Make tenacity's wait strategies draw from ``draws`` for the duration of the block."""
    import tenacity.wait as wait_module

    # tenacity's wait module calls random.uniform through its module-level name "random".
    saved = getattr(wait_module, "random")  # noqa: B009
    setattr(wait_module, "random", _Uniforms(draws))  # noqa: B010
    try:
        yield
    finally:
        setattr(wait_module, "random", saved)  # noqa: B010


def import_tenacity() -> Any:
    """tenacity, or a ValueError saying how to install it."""
    try:
        import tenacity
    except ImportError:
        raise ValueError(
            "the tenacity adapter needs tenacity: pip install 'llmtraffic[tenacity]'"
        ) from None
    return tenacity


RETRYING_RULE = (
    "a tenacity.Retrying object, or a function defined in that module that takes no "
    "arguments and returns one"
)
"""What a config's ``retrying`` may name (``load_retrying`` calls nothing else)."""


def load_retrying(path: str) -> Any:
    """The ``tenacity.Retrying`` named by ``path``, or returned by the factory it names.

    The rule: ``path`` names an instance of ``tenacity.BaseRetrying`` (used as it is), or a
    plain Python function (``def``) whose ``__module__`` is the module named, that takes no
    arguments; it is called once and must return a ``tenacity.BaseRetrying``. Anything else
    (a class, a builtin such as ``os:getpid``, a function imported from another module, an
    object with ``__call__``) is refused without being called.
    """
    from llmtraffic.client.plugins import load_object

    tenacity = import_tenacity()
    obj = load_object(path)
    if isinstance(obj, tenacity.BaseRetrying):
        return obj
    module = path.partition(":")[0]
    if not inspect.isfunction(obj) or obj.__module__ != module:
        if inspect.isfunction(obj):
            what = f"a function from the module {obj.__module__!r}"
        elif inspect.isbuiltin(obj):
            what = "a builtin function"
        elif inspect.isclass(obj):
            what = "a class"
        else:
            what = f"a {type(obj).__name__}"
        raise ValueError(f"{path} must name {RETRYING_RULE}; it is {what}, and was not called")
    required = [
        p
        for p in inspect.signature(obj).parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise ValueError(
            f"{path} must name {RETRYING_RULE}; it needs arguments "
            f"({', '.join(p.name for p in required)}), and was not called"
        )
    try:
        made = obj()
    except Exception as exc:  # the factory's own code failed
        raise ValueError(f"{path}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(made, tenacity.BaseRetrying):
        raise ValueError(
            f"{path}() returned a {type(made).__name__}, not a tenacity.Retrying; it must "
            f"name {RETRYING_RULE}"
        )
    return made


IDLE_MEMORY = 100_000
"""Requests whose slept time the adapter remembers between their failures (oldest dropped)."""


class TenacityPolicy:
    """A retry policy that asks a tenacity ``Retrying`` object's strategies.

    tenacity's call state carries ``idle_for``, the time slept so far; ``RetryState`` does not,
    so the adapter remembers it per request (keyed by arrival time and provider) from one
    failure to the next. A request that succeeds after a retry leaves its entry behind, so the
    memory keeps only the latest ``IDLE_MEMORY`` entries; a request pushed out while it waits
    sees ``idle_for`` start again at 0.
    """

    def __init__(self, retrying: Any, retryable: RetryIf | None = None) -> None:
        self.retrying = retrying
        self.retryable = retryable
        self._tenacity = import_tenacity()
        self._idle: OrderedDict[tuple[float, str], float] = OrderedDict()

    @classmethod
    def from_config(cls, cfg: TenacityRetry, retryable: RetryIf) -> TenacityPolicy:
        """From the config's import path (the policy's ``retryable`` also applies)."""
        return cls(load_retrying(cfg.retrying), retryable)

    def call_state(self, state: RetryState) -> Any:
        """The ``tenacity.RetryCallState`` that describes ``state`` in simulated time."""
        tenacity = self._tenacity
        rcs = tenacity.RetryCallState(retry_object=self.retrying, fn=None, args=(), kwargs={})
        rcs.start_time = state.now - state.elapsed
        rcs.attempt_number = state.attempt_number
        error = EXCEPTIONS.get(state.status, SimulatedAPIError)(
            state.status, state.http_status, state.retry_after
        )
        rcs.outcome = tenacity.Future.construct(state.attempt_number, error, True)
        rcs.outcome_timestamp = state.now
        return rcs

    def decide(self, state: RetryState, uniforms: Iterator[float]) -> Decision:
        """Ask in tenacity's order: the retry predicate, then the wait (``upcoming_sleep``),
        then the stop condition, which may read that wait."""
        # The arrival time, rounded: now - elapsed may differ in its last bit between failures.
        key = (round(state.now - state.elapsed, 6), state.provider)
        # The first failure on a provider starts a fresh tenacity call: nothing slept yet.
        idle = self._idle.pop(key, 0.0) if state.attempt_number > 1 else 0.0
        if self.retryable is not None and not self.retryable(state):
            return Decision(None, NON_RETRYABLE)
        rcs = self.call_state(state)
        rcs.idle_for = idle
        if not self.retrying.retry(rcs):
            return Decision(None, NON_RETRYABLE)
        # tenacity computes the wait before asking stop, even when it then stops.
        with seeded_tenacity(uniforms):
            wait = float(self.retrying.wait(rcs))
        rcs.upcoming_sleep = wait
        if self.retrying.stop(rcs):
            return Decision(None, EXHAUSTED)
        if not wait >= 0 or wait == math.inf:
            # tenacity's own sleep (time.sleep) refuses it too; never move time backwards.
            raise ValueError(
                f"the tenacity wait {self.retrying.wait!r} returned {wait!r}; waits must be "
                "finite and >= 0"
            )
        self._idle[key] = idle + wait
        if len(self._idle) > IDLE_MEMORY:
            self._idle.popitem(last=False)
        return Decision(wait)
