"""The request source of a feature with a system prompt or reasoning tokens, or whose primary
provider bills by the prompt cache: ``FeatureSource`` plus those (docs/billing.md).

A system prompt adds its tokens at the start of every prompt. Reasoning tokens are drawn from
their own stream (so the traffic's other draws stay where they were), generated before the
answer and capped with it by ``max_tokens`` (reasoning first): ``output_tokens`` is then what
the provider generates and bills, of which ``reasoning`` is not shown to the user. The
baseline of a request on a caching provider comes from that provider's shadow cache
(``PricedEndpoint.baseline_cost``), visited in arrival order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from heapq import heappush
from itertools import islice
from typing import TYPE_CHECKING

import numpy as np

from llmtraffic.config.workload import Feature
from llmtraffic.engine.entities import Request
from llmtraffic.engine.kernel import NORMAL, Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.workload.source import SCHEDULE_BATCH, FeatureSource
from llmtraffic.workload.tokens import TokenSampler, token_sampler

if TYPE_CHECKING:
    from llmtraffic.client.client import Client


class PricedFeatureSource(FeatureSource):
    """``FeatureSource`` with a system prompt, reasoning tokens and cache-aware baselines."""

    def __init__(
        self,
        name: str,
        cfg: Feature,
        client: Client,
        kernel: Kernel,
        streams: Streams,
        horizon: float,
        start_hour: float,
        next_id: Callable[[], int],
        times: Iterator[np.ndarray] | None = None,
    ) -> None:
        super().__init__(name, cfg, client, kernel, streams, horizon, start_hour, next_id, times)
        self._system = cfg.system_prompt_tokens
        self._reasoning: TokenSampler | None = None
        if cfg.reasoning_tokens is not None:
            rng = streams.generator(f"feature/{name}/reasoning")
            self._reasoning = token_sampler(cfg.reasoning_tokens, rng)
        self._priced_chunk: Iterator[tuple[float, int, int, int, float, int]] = iter(())

    def _load(self) -> bool:
        """The next chunk of arrivals with their system prompt, reasoning and baselines."""
        from llmtraffic.provider.pricing import PricedEndpoint

        for times, inp, out in self._draws:
            n = len(times)
            inp = inp + self._system
            if self._reasoning is not None:
                # Reasoning comes first: max_tokens caps reasoning + answer, the answer last.
                reasoning = np.minimum(self._reasoning(n), self._max_tokens)
                out = np.minimum(out + reasoning, self._max_tokens)
            else:
                reasoning = np.zeros(n, dtype=np.int64)
                out = np.minimum(out, self._max_tokens)
            cached = np.rint(inp * self._cached_fraction).astype(np.int64)
            ep = self.client.endpoint
            if isinstance(ep, PricedEndpoint):
                name = self.name
                baseline = [
                    ep.baseline_cost(name, t, i, c, o)
                    for t, i, c, o in zip(
                        times.tolist(), inp.tolist(), cached.tolist(), out.tolist(), strict=True
                    )
                ]
            else:
                baseline = (
                    (inp - cached) * ep.price_input
                    + cached * ep.price_cached
                    + out * ep.price_output
                ).tolist()
            self.client.tally.baseline += float(sum(baseline))
            self._priced_chunk = zip(
                times.tolist(),
                inp.tolist(),
                cached.tolist(),
                out.tolist(),
                baseline,
                reasoning.tolist(),
                strict=True,
            )
            return True
        return False

    def _schedule_batch(self, last: Request | None = None) -> None:
        """``FeatureSource._schedule_batch`` that also sets each request's reasoning."""
        items = list(islice(self._priced_chunk, SCHEDULE_BATCH))
        if not items:
            if not self._load():
                return
            items = list(islice(self._priced_chunk, SCHEDULE_BATCH))
        queue, eid, deadline, next_id = self._queue, self._eid, self.deadline, self.next_id
        callbacks = self._arrive_callbacks
        req = None
        for t, inp, cached, out, baseline, reasoning in items:
            req = Request(next_id(), t, inp, cached, out, t + deadline, baseline)
            req.reasoning = reasoning
            req.callbacks = callbacks
            heappush(queue, (t, NORMAL, next(eid), req))
        assert req is not None
        req.callbacks = self._last_callbacks
