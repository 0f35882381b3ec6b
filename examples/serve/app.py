"""A small application with its own retry code, as a team would have it: the OpenAI SDK
(its own 2 retries) inside a tenacity loop. It reads OPENAI_BASE_URL and OPENAI_API_KEY as the
SDK does, so pointing it at ``llmtraffic serve`` changes no code (docs/serve.md).

``python examples/serve/app.py --requests 30 --rate 3`` sends 30 summaries at 3 a second and
prints how many the users got. ``--no-retries`` turns both retry layers off (the regression
the verdict must catch).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Awaitable, Callable

import openai
import tenacity


def make_summarize(retries: bool) -> Callable[[str, str], Awaitable[str]]:
    """The application's call: one summary, with the team's retry policy around the SDK."""
    client = openai.AsyncOpenAI(max_retries=2 if retries else 0)
    policy = tenacity.AsyncRetrying(
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=4),
        stop=tenacity.stop_after_attempt(3 if retries else 1),
        retry=tenacity.retry_if_exception_type(openai.APIError),
        reraise=True,
    )

    async def summarize(text: str, request_id: str) -> str:
        # A copy per call: a Retrying object keeps the state of the call it runs, and these
        # calls run concurrently (iterating one shared object mixes their attempts up).
        async for attempt in policy.copy():
            with attempt:
                answer = await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": f"Summarize: {text}"}],
                    max_tokens=500,
                    # Optional: lets the server group this call's attempts into one request.
                    extra_headers={"x-llmtraffic-request": request_id},
                )
                return answer.choices[0].message.content or ""
        raise AssertionError("unreachable: tenacity returns or raises")

    return summarize


async def main(requests: int, rate: float, retries: bool) -> int:
    """Send ``requests`` calls at Poisson times (``rate`` a second); count the answers."""
    summarize = make_summarize(retries)
    rng = random.Random(5)

    async def one(i: int, at: float) -> bool:
        await asyncio.sleep(at)
        try:
            await summarize(f"document {i}", f"req-{i}")
            return True
        except openai.APIError:
            return False

    times, t = [], 0.0
    for _ in range(requests):
        t += rng.expovariate(rate)
        times.append(t)
    ok = sum(await asyncio.gather(*(one(i, at) for i, at in enumerate(times))))
    print(f"app: {ok} of {requests} users got their summary")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--rate", type=float, default=3.0)
    parser.add_argument("--no-retries", action="store_true")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.requests, args.rate, not args.no_retries)))
