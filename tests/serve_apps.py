"""Real client code for the conformance tests: the OpenAI and Anthropic async SDKs with their
own retries, and a tenacity loop around the OpenAI SDK (its retries off), each sending one
logical request per arrival time to ``llmtraffic serve``.

``RETRYING`` is the tenacity configuration the application runs (as ``AsyncRetrying`` with the
same strategy objects) and the simulation runs (``retry = { kind = "tenacity", retrying =
"tests.serve_apps:RETRYING" }``): one object, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anthropic
import openai
import tenacity

WAIT = tenacity.wait_random_exponential(multiplier=0.25, max=1.0)
STOP = tenacity.stop_after_attempt(4)
RETRYING = tenacity.Retrying(wait=WAIT, stop=STOP, reraise=True)

MESSAGES = [{"role": "user", "content": "Say something."}]


def openai_app(base_url: str) -> Callable[[str], Awaitable[Any]]:
    """One chat completion per call, retried by the OpenAI SDK (max_retries=2, its default)."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test-key")

    async def call(key: str) -> Any:
        return await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=200,
            extra_headers={"x-llmtraffic-request": key},
        )

    return call


def anthropic_app(base_url: str) -> Callable[[str], Awaitable[Any]]:
    """One message per call, retried by the Anthropic SDK (max_retries=2, its default)."""
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="test-key")

    async def call(key: str) -> Any:
        return await client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=200,
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"x-llmtraffic-request": key},
        )

    return call


def tenacity_app(base_url: str) -> Callable[[str], Awaitable[Any]]:
    """tenacity around the OpenAI SDK with the SDK's own retries off."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test-key", max_retries=0)

    async def call(key: str) -> Any:
        async for attempt in tenacity.AsyncRetrying(wait=WAIT, stop=STOP, reraise=True):
            with attempt:
                return await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=MESSAGES,  # type: ignore[arg-type]
                    max_tokens=200,
                    extra_headers={"x-llmtraffic-request": key},
                )
        return None  # pragma: no cover - reraise=True: the loop returns or raises

    return call


async def drive(
    apps: dict[str, Callable[[str], Awaitable[Any]]],
    arrivals: Sequence[float],
    wall_at: Callable[[float], float],
) -> dict[str, list[str]]:
    """Call each app once per arrival time (simulated seconds; ``wall_at`` gives the
    monotonic time of each), all concurrently; return each app's outcomes ("ok" or the
    exception's class name)."""
    outcomes: dict[str, list[str]] = {name: [] for name in apps}

    async def one(name: str, app: Callable[[str], Awaitable[Any]], i: int, at: float) -> None:
        await asyncio.sleep(max(0.0, wall_at(at) - time.monotonic()))
        try:
            await app(f"{name}-{i}")
            outcomes[name].append("ok")
        except Exception as exc:
            outcomes[name].append(type(exc).__name__)

    await asyncio.gather(
        *(one(name, app, i, at) for name, app in apps.items() for i, at in enumerate(arrivals))
    )
    return outcomes
