"""The two things the engine moves around: requests and their attempts, plus outcome names.

Both are also SimPy-compatible events (``callbacks`` and ``_ok``): a request is scheduled as
the event of its own next step (its arrival, a retry after a wait, its deadline) and an
attempt as the event of its end at the provider, which saves an event object per step on the
hot path. Plain ``__slots__`` classes: millions are made per run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmtraffic.client.client import Client
    from llmtraffic.engine.kernel import Call
    from llmtraffic.provider.endpoint import Endpoint

# Attempt statuses (the ``status`` column of the attempts table).
OK = "ok"
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
OVERLOADED = "overloaded"
TIMEOUT = "timeout"
MIDSTREAM_ERROR = "midstream_error"
STALLED = "stalled"
"""Not an outcome: the provider's mark on an attempt whose stream will stop part-way without an
error. The client sees it as a ``timeout`` when its timeout cuts the stream."""
# A 429 that waiting does not clear: OpenAI's ``insufficient_quota``, Anthropic's spend cap.
QUOTA_EXHAUSTED = "quota_exhausted"
# A 400: input + max_tokens exceed the model's context window (OpenAI's error code).
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
ATTEMPT_STATUSES = (
    OK,
    RATE_LIMITED,
    SERVER_ERROR,
    OVERLOADED,
    TIMEOUT,
    MIDSTREAM_ERROR,
    QUOTA_EXHAUSTED,
    CONTEXT_LENGTH_EXCEEDED,
)

# Request outcomes (the ``outcome`` column of the requests table); exactly one per request.
EXHAUSTED = "exhausted"
DEADLINE = "deadline"
REJECTED_BREAKER = "rejected_breaker"
REJECTED_BUDGET = "rejected_budget"
REJECTED_THROTTLE = "rejected_throttle"
# Every deployment of the request's route was cooling down or over its limits: LiteLLM's
# "No deployments available for selected model" (docs/policies.md, "Routing across deployments").
REJECTED_ROUTE = "rejected_route"
NON_RETRYABLE = "non_retryable"
UNFINISHED = "unfinished"
REQUEST_OUTCOMES = (
    OK,
    EXHAUSTED,
    DEADLINE,
    REJECTED_BREAKER,
    REJECTED_BUDGET,
    REJECTED_THROTTLE,
    REJECTED_ROUTE,
    NON_RETRYABLE,
    UNFINISHED,
)

NAN = math.nan

# What a request may hold between the client's gates and the wire (``Request.held`` bits).
HELD_PERMIT = 1  # a half-open breaker's trial permit
HELD_THROTTLE = 2  # a request counted by the adaptive throttle
HELD_BUDGET = 4  # a retry withdrawn from the retry budget
HELD_PACE = 8  # a reservation in the client's pacer


class Request:
    """One logical call a feature makes; lives from arrival to its terminal outcome."""

    __slots__ = (
        "arrival",
        "attempts",
        "baseline",
        "billed",
        "cached_tokens",
        "callbacks",
        "chain_pos",
        "deadline_at",
        "epoch",
        "gated_at",
        "held",
        "id",
        "input_tokens",
        "last_provider",
        "output_tokens",
        "prefix_tokens",
        "prev_wait",
        "provider_attempts",
        "reasoning",
        "session",
        "useful",
    )

    _ok = True  # SimPy event protocol: a scheduled request never fails
    callbacks: list[Any] | None
    # Reasoning tokens among ``output_tokens`` (generated first, billed as output, not in the
    # visible answer). Only the source of a feature with reasoning_tokens sets it, so that
    # other requests cost nothing more: read it with ``getattr(req, "reasoning", 0)``.
    reasoning: int

    def __init__(
        self,
        rid: int,
        arrival: float,
        input_tokens: int,
        cached_tokens: int,
        output_tokens: int,
        deadline_at: float,
        baseline: float,
    ) -> None:
        self.id = rid
        self.arrival = arrival
        self.input_tokens = input_tokens
        self.cached_tokens = cached_tokens
        self.output_tokens = output_tokens
        self.deadline_at = deadline_at
        self.baseline = baseline
        self.attempts = 0
        self.billed = 0.0
        self.useful = 0.0
        self.prev_wait = 0.0
        self.chain_pos = 0  # index in the client's provider chain (fallbacks)
        self.provider_attempts = 0  # attempts on the current provider of the chain
        self.last_provider: Endpoint | None = None
        # Between passing the client's gates and going out, a request may hold what the gates
        # gave it (HELD_* bits): given back if it never goes out (see Client.release_held).
        self.held = 0
        self.epoch = 0  # the breaker epoch in which it passed the breaker
        self.gated_at = 0.0  # when the throttle counted it and the budget gave it a retry
        # Sessions and prompt caching: the session (closed-loop workload) the request is a turn
        # of (-1: none), and how many tokens at the start of its prompt repeat an earlier
        # request's (a shared system prompt, a conversation's transcript): what a provider's
        # prompt cache could match.
        self.session = -1
        self.prefix_tokens = 0


class Attempt:
    """One HTTP call to a provider on behalf of a request.

    ``start`` is NaN until a serving slot takes it (it may never: 429s, fast errors, timeouts
    while queued). ``cost`` is what the provider bills for it. ``should_retry`` is the
    ``x-should-retry`` header of an error response; only providers configured to send it set
    it (``__init__`` leaves it unset, so attempts elsewhere cost nothing more): read it with
    ``getattr(att, "should_retry", None)``.
    """

    __slots__ = (
        "abandon_at",
        "abandoned",
        "cache_write",
        "cached",
        "callbacks",
        "client",
        "cost",
        "epoch",
        "first_token",
        "generated",
        "http_status",
        "late",
        "number",
        "provider",
        "queued_at",
        "request",
        "retry_after",
        "send",
        "service",
        "should_retry",
        "start",
        "status",
        "timer",
        "wait_before",
    )

    _ok = True  # SimPy event protocol
    callbacks: list[Any] | None
    should_retry: bool  # unset unless the provider sent x-should-retry (see the docstring)
    # Input tokens read from and written to the provider's prompt cache: set only by a
    # provider with pricing rules (provider/pricing.py), which bills by them.
    cached: int
    cache_write: int

    def __init__(
        self,
        request: Request,
        client: Client,
        number: int,
        provider: Endpoint,
        send: float,
        abandon_at: float,
        wait_before: float,
        epoch: int,
    ) -> None:
        self.request = request
        self.client = client
        self.number = number
        self.provider = provider
        self.send = send
        self.abandon_at = abandon_at
        self.wait_before = wait_before
        self.epoch = epoch
        self.start = NAN
        self.queued_at = NAN
        self.service = 0.0  # drawn at admission; times the provider's slowdown once started
        self.first_token = 0.0  # time to first token within ``service`` (0: no token model)
        self.status = OK
        self.http_status = 200
        self.retry_after = NAN
        self.generated = 0
        self.cost = 0.0
        self.abandoned = False
        self.timer: Call | None = None
        # A streamed attempt's limit once its first token arrives (0: the limit does not
        # change; see Client.late_timeout). 0 rather than inf: a constant, tested by truth.
        self.late = 0.0
