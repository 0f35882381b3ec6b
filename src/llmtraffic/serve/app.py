"""The HTTP side of ``llmtraffic serve``: a Starlette app with one path per provider.

``POST /{provider}/v1/chat/completions`` (OpenAI Chat Completions), ``/{provider}/v1/responses``
(OpenAI Responses) and ``/{provider}/v1/messages`` (Anthropic Messages), JSON or SSE streams:
an OpenAI client's ``base_url`` is ``http://HOST:PORT/{provider}/v1``, an Anthropic client's
``http://HOST:PORT/{provider}``. Each request is one attempt through the provider model
(``model.py``); the response is sent when the model reaches its outcome, and a stream's tokens
at the times the model's decode speed gives them.

A non-streamed answer that fails mid-way is a body cut short (a 200 whose body breaks off:
what the SDKs see as a connection error, and retry); a stream that fails mid-way sends the
provider's error event and ends (the SDKs raise it to the caller).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from llmtraffic.engine.entities import MIDSTREAM_ERROR, OK, Attempt
from llmtraffic.serve import wire
from llmtraffic.serve.model import ProviderModel, Served

T = TypeVar("T")

MIN_GAP = 0.01
"""Wall seconds between two writes of a stream at least: tokens due closer together go out in
one chunk (a decode speed of thousands of tokens per wall second stays cheap)."""

CUT_MESSAGE = "ASGI callable returned without completing response."


class _CutFilter(logging.Filter):
    """Hide uvicorn's error line for the bodies this server cuts on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != CUT_MESSAGE


logging.getLogger("uvicorn.error").addFilter(_CutFilter())


class BrokenBody(Response):
    """A 200 whose body breaks off after ``cut`` of its bytes: the connection closes with
    the declared Content-Length unmet (the SDKs raise a connection error, and retry)."""

    def __init__(self, body: bytes, cut: int, headers: dict[str, str]) -> None:
        super().__init__(status_code=200, headers=headers, media_type="application/json")
        self.full = body
        self.cut = cut
        self.headers["content-length"] = str(len(body))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the headers and part of the body, and return without finishing it."""
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.full[: self.cut], "more_body": True})


def build_app(model: ProviderModel) -> Starlette:
    """The app that serves ``model``'s providers (the model must be started on its loop)."""

    async def chat(request: Request) -> Response:
        return await _handle(model, request, "chat")

    async def responses(request: Request) -> Response:
        return await _handle(model, request, "responses")

    async def messages(request: Request) -> Response:
        return await _handle(model, request, "anthropic")

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "scenario": model.scenario.name,
                "providers": list(model.scenario.providers),
                "sim_time": model.sim_time(),
                "speedup": model.speedup,
                "in_flight": model.in_flight(),
            }
        )

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/{provider}/v1/chat/completions", chat, methods=["POST"]),
            Route("/{provider}/v1/responses", responses, methods=["POST"]),
            Route("/{provider}/v1/messages", messages, methods=["POST"]),
        ]
    )


def _bad_request(api: str, status: int, message: str) -> JSONResponse:
    if api == "anthropic":
        kind = "not_found_error" if status == 404 else "invalid_request_error"
        return JSONResponse(
            {"type": "error", "error": {"type": kind, "message": message}}, status_code=status
        )
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
        status_code=status,
    )


def _max_tokens(api: str, body: dict[str, Any]) -> int | None:
    """The request's output limit (``max_tokens``, ``max_completion_tokens`` or
    ``max_output_tokens``), or None to use the feature's; ``ValueError`` when malformed."""
    keys = {
        "chat": ("max_completion_tokens", "max_tokens"),
        "responses": ("max_output_tokens",),
        "anthropic": ("max_tokens",),
    }[api]
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}: must be a whole number >= 1, got {value!r}")
        return value
    if api == "anthropic":
        raise ValueError("max_tokens: required by the Messages API")
    return None


async def _disconnected(request: Request) -> None:
    """Return when the client hangs up (the body is read, so the next message is that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _until(fut: Awaitable[T], request: Request) -> T | None:
    """``fut``'s result, or None if the client hangs up first."""
    task: asyncio.Future[T] = asyncio.ensure_future(fut)
    watch: asyncio.Future[None] = asyncio.ensure_future(_disconnected(request))
    pending: set[asyncio.Future[Any]] = {task, watch}
    try:
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    return task.result() if task.done() else None


async def _handle(model: ProviderModel, request: Request, api: str) -> Response:
    provider = request.path_params["provider"]
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _bad_request(api, 400, "the request body is not valid JSON")
    if not isinstance(body, dict):
        return _bad_request(api, 400, "the request body must be a JSON object")
    try:
        feature = model.feature_for(provider, request.headers.get("x-llmtraffic-feature"))
    except KeyError as exc:
        return _bad_request(api, 404, str(exc.args[0]))
    try:
        max_tokens = _max_tokens(api, body)
    except ValueError as exc:
        return _bad_request(api, 400, str(exc))
    count = request.headers.get("x-stainless-retry-count", "")
    served = model.submit(
        provider,
        feature,
        max_tokens=max_tokens,
        request_key=request.headers.get("x-llmtraffic-request"),
        attempt_number=int(count) if count.isdigit() else None,
    )
    att = served.att
    name = str(body.get("model") or att.provider.model)
    prefix = {"chat": "chatcmpl-", "responses": "resp_", "anthropic": "msg_"}[api]
    rid = f"{prefix}{att.request.id}x{att.number}"
    if body.get("stream") is True:
        started = await _until(served.started, request)
        if started is None:
            model.cancel(served)
            return Response(status_code=499)
        if started:
            options = body.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            stream = _stream(model, served, api, rid, name, usage)
            return StreamingResponse(
                stream, media_type="text/event-stream", headers=_headers(model, served, api, rid)
            )
    done = await _until(served.done, request)
    if done is None:
        model.cancel(served)
        return Response(status_code=499)
    return _outcome(model, served, api, rid, name)


def _headers(model: ProviderModel, served: Served, api: str, rid: str) -> dict[str, str]:
    """Request id, rate-limit and retry headers of a response, in wall time."""
    att = served.att
    provider = att.provider.name
    rl = model.scenario.providers[provider].rate_limit
    limits: tuple[float | None, float | None] = (None, None)
    if rl is not None:
        tokens = rl.itpm if api == "anthropic" and rl.itpm is not None else rl.tpm
        limits = (rl.rpm, tokens)
    left_req, left_tok, reset_req, reset_tok = model.rate_limit_headers(provider)
    state = (left_req, left_tok, reset_req / model.speedup, reset_tok / model.speedup)
    out = {"request-id" if api == "anthropic" else "x-request-id": rid}
    out.update(wire.rate_limit_headers(api, limits, state))
    out.update(wire.retry_headers(att, model.speedup))
    return out


def _body(api: str, rid: str, name: str, inp: int, out: int) -> dict[str, Any]:
    if api == "anthropic":
        return wire.message(rid, name, inp, out)
    if api == "responses":
        return wire.response_object(rid, name, inp, out, "completed")
    return wire.chat_completion(rid, name, inp, out)


def _outcome(model: ProviderModel, served: Served, api: str, rid: str, name: str) -> Response:
    """The response to an attempt whose outcome is reached, not streamed."""
    att = served.att
    headers = _headers(model, served, api, rid)
    inp = att.request.input_tokens
    if att.status is OK:
        return JSONResponse(_body(api, rid, name, inp, att.generated), headers=headers)
    if att.status is MIDSTREAM_ERROR:
        full = json.dumps(_body(api, rid, name, inp, att.request.output_tokens)).encode()
        share = att.generated / att.request.output_tokens if att.request.output_tokens else 0.0
        return BrokenBody(full, int(len(full) * share * 0.9), headers)
    return JSONResponse(wire.error_body(api, att), status_code=att.http_status, headers=headers)


def _opening(api: str, rid: str, name: str, inp: int) -> bytes:
    if api == "anthropic":
        return wire.message_start(rid, name, inp)
    if api == "responses":
        created = wire.response_object(rid, name, inp, 0, "in_progress")
        return wire.sse({"type": "response.created", "response": created, "sequence_number": 0})
    return wire.chat_chunk(rid, name, {"role": "assistant", "content": ""}, None)


def _delta(api: str, rid: str, name: str, text: str, seq: int) -> bytes:
    if api == "anthropic":
        return wire.text_delta(text)
    if api == "responses":
        return wire.sse(
            {
                "type": "response.output_text.delta",
                "item_id": "msg_" + rid,
                "output_index": 0,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
                "sequence_number": seq,
            }
        )
    return wire.chat_chunk(rid, name, {"content": text}, None)


def _closing(api: str, rid: str, name: str, inp: int, out: int, usage: bool, seq: int) -> bytes:
    if api == "anthropic":
        return wire.message_end(out)
    if api == "responses":
        done = wire.response_object(rid, name, inp, out, "completed")
        return wire.sse({"type": "response.completed", "response": done, "sequence_number": seq})
    tail = wire.chat_chunk(rid, name, {}, "stop")
    if usage:
        counts = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}
        tail += wire.chat_chunk(rid, name, {}, None, usage=counts)
    return tail + wire.sse("[DONE]")


def _stream(
    model: ProviderModel, served: Served, api: str, rid: str, name: str, usage: bool
) -> AsyncIterator[bytes]:
    """The events of a started attempt: its tokens as the model generates them (token k is
    complete at start + ttft + k * pace), then the end or the mid-stream error."""

    async def events() -> AsyncIterator[bytes]:
        att = served.att
        inp = att.request.input_tokens
        try:
            yield _opening(api, rid, name, inp)
            n = att.generated
            first = att.start + att.first_token
            pace = (att.service - att.first_token) / n if n else 0.0
            sent = 0
            seq = 1
            while sent < n:
                now = model.sim_time()
                due = n if pace <= 0 else min(n, max(0, math.floor((now - first) / pace + 1e-9)))
                if due > sent:
                    yield _delta(api, rid, name, wire.filler(sent, due - sent), seq)
                    seq += 1
                    sent = due
                if sent < n:
                    wait = (first + (sent + 1) * pace - now) / model.speedup
                    await asyncio.sleep(max(MIN_GAP, wait))
            final: Attempt = await served.done
            if final.status is OK:
                yield _closing(api, rid, name, inp, final.generated, usage, seq)
            else:
                yield wire.stream_error(api, final)
        finally:
            # The client hung up (or the server stops): a timeout at the provider.
            if not served.done.done():
                model.cancel(served)

    return events()
