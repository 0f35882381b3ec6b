"""The providers' wire formats: response bodies, error bodies, stream events and headers.

Shapes follow the public API references (OpenAI Chat Completions and Responses, Anthropic
Messages, as of 2026-12) closely enough that the official SDKs parse them: each body carries
the fields the SDKs' models require, and errors carry the status, body and headers their
retry loops read (``retry-after``, ``retry-after-ms``, ``x-should-retry``).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from llmtraffic.engine.entities import (
    CONTEXT_LENGTH_EXCEEDED,
    OVERLOADED,
    QUOTA_EXHAUSTED,
    RATE_LIMITED,
    Attempt,
)

FILLER = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed",
    "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna",
)  # fmt: skip


def filler(start: int, n: int) -> str:
    """``n`` tokens of filler text, from token ``start`` of the answer: one word per token
    (a leading space each, as BPE tokens of English mostly are), so counts add up."""
    return "".join(" " + FILLER[(start + i) % len(FILLER)] for i in range(n))


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event (``event:`` line when named, then ``data:`` JSON)."""
    head = f"event: {event}\n" if event else ""
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {body}\n\n".encode()


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``120ms``."""
    if seconds < 1.0:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60.0)
    return f"{int(minutes)}m{secs:.0f}s" if minutes else f"{secs:.3g}s"


def _rfc3339(seconds_from_now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds_from_now))


def rate_limit_headers(
    api: str, limits: tuple[float | None, float | None], state: tuple[float, float, float, float]
) -> dict[str, str]:
    """The rate-limit headers of a response: OpenAI's ``x-ratelimit-{limit,remaining,reset}-
    {requests,tokens}`` or Anthropic's ``anthropic-ratelimit-{requests,tokens}-{limit,
    remaining,reset}``. ``limits`` are the configured (requests, tokens) per minute, ``state``
    what ``RateLimiter.headers`` says now, its resets already in wall seconds."""
    remaining_req, remaining_tok, reset_req, reset_tok = state
    out: dict[str, str] = {}
    for kind, limit, left, reset in (
        ("requests", limits[0], remaining_req, reset_req),
        ("tokens", limits[1], remaining_tok, reset_tok),
    ):
        if limit is None or math.isnan(left):
            continue
        if api == "anthropic":
            out[f"anthropic-ratelimit-{kind}-limit"] = str(int(limit))
            out[f"anthropic-ratelimit-{kind}-remaining"] = str(int(left))
            out[f"anthropic-ratelimit-{kind}-reset"] = _rfc3339(reset)
        else:
            out[f"x-ratelimit-limit-{kind}"] = str(int(limit))
            out[f"x-ratelimit-remaining-{kind}"] = str(int(left))
            out[f"x-ratelimit-reset-{kind}"] = _duration(reset)
    return out


def retry_headers(att: Attempt, speedup: float) -> dict[str, str]:
    """``retry-after`` (whole seconds, rounded up, as the providers send it) and
    ``retry-after-ms`` (the SDKs read it first) of a 429 in wall time, and ``x-should-retry``
    when the provider model's error kind sets it."""
    out: dict[str, str] = {}
    ra = att.retry_after
    if ra == ra and not math.isinf(ra):
        wall = ra / speedup
        out["retry-after"] = str(max(1, math.ceil(wall))) if wall > 0 else "0"
        out["retry-after-ms"] = f"{wall * 1000:.0f}"
    should = getattr(att, "should_retry", None)
    if should is not None:
        out["x-should-retry"] = "true" if should else "false"
    return out


# Errors ---------------------------------------------------------------------------------------

_OPENAI_MESSAGES = {
    RATE_LIMITED: ("rate_limit_exceeded", "requests", "Rate limit reached. Please try again."),
    QUOTA_EXHAUSTED: (
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    CONTEXT_LENGTH_EXCEEDED: (
        "context_length_exceeded",
        "invalid_request_error",
        "This model's maximum context length was exceeded.",
    ),
    OVERLOADED: (None, "server_error", "The engine is currently overloaded, please try later."),
}

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(api: str, att: Attempt) -> dict[str, Any]:
    """The JSON body of an error response, as the provider sends it."""
    status, http = att.status, att.http_status
    if api == "anthropic":
        kind = _ANTHROPIC_TYPES.get(http, "api_error" if http >= 500 else "invalid_request_error")
        message = {
            RATE_LIMITED: "This request would exceed your rate limit.",
            QUOTA_EXHAUSTED: "Your credit balance is too low to access the Anthropic API.",
            CONTEXT_LENGTH_EXCEEDED: "prompt is too long",
            OVERLOADED: "Overloaded",
        }.get(status, "Internal server error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    code, kind, message = _OPENAI_MESSAGES.get(
        status, (None, "server_error", "The server had an error while processing your request.")
    )
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def stream_error(api: str, att: Attempt) -> bytes:
    """The event that ends a stream that failed mid-way (the SDKs raise on it)."""
    if api == "anthropic":
        body = {"type": "error", "error": {"type": "api_error", "message": "Internal error"}}
        return sse(body, "error")
    message = "The server had an error while processing your request."
    return sse({"error": {"message": message, "type": "server_error", "param": None}})


# OpenAI Chat Completions ----------------------------------------------------------------------


def chat_completion(rid: str, model: str, inp: int, out: int) -> dict[str, Any]:
    """A non-streamed chat completion with ``out`` tokens of filler."""
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": filler(0, out), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out},
    }


def chat_chunk(
    rid: str, model: str, delta: dict[str, Any], finish: str | None, usage: Any = None
) -> bytes:
    """One ``chat.completion.chunk`` event."""
    choices = [] if usage is not None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    ]  # fmt: skip
    body: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return sse(body)


# OpenAI Responses -----------------------------------------------------------------------------


def response_object(rid: str, model: str, inp: int, out: int, status: str) -> dict[str, Any]:
    """A Responses API ``response`` with ``out`` tokens of filler (none while in progress)."""
    done = status == "completed"
    content = [{"type": "output_text", "text": filler(0, out), "annotations": []}]
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_" + rid,
                "status": status,
                "role": "assistant",
                "content": content if done else [],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": inp + out,
        }
        if done
        else None,
    }


# Anthropic Messages ---------------------------------------------------------------------------


def message(rid: str, model: str, inp: int, out: int) -> dict[str, Any]:
    """A non-streamed Messages API message with ``out`` tokens of filler."""
    return {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": filler(0, out)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": inp, "output_tokens": out},
    }


def message_start(rid: str, model: str, inp: int) -> bytes:
    """The events that open a Messages stream: ``message_start``, ``content_block_start``."""
    start = message(rid, model, inp, 0)
    start.update({"content": [], "stop_reason": None})
    start["usage"]["output_tokens"] = 1
    return sse({"type": "message_start", "message": start}, "message_start") + sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    )


def text_delta(text: str) -> bytes:
    """A ``content_block_delta`` event carrying ``text``."""
    return sse(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        "content_block_delta",
    )


def message_end(out: int) -> bytes:
    """The events that close a Messages stream, with the output usage."""
    return (
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        + sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": out},
            },
            "message_delta",
        )
        + sse({"type": "message_stop"}, "message_stop")
    )
