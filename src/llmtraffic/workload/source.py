"""The request source of one feature: schedules each arrival and hands the request to the
feature's client. Arrival times and token sizes come from the feature's own streams, so every
policy sees the same traffic for the same seed (common random numbers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from heapq import heappush
from typing import Any

import numpy as np

from llmtraffic.config.workload import Feature
from llmtraffic.engine.entities import Request
from llmtraffic.engine.kernel import NORMAL, Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.workload.arrivals import arrival_times
from llmtraffic.workload.tokens import token_sampler


class FeatureSource:
    """Feeds one feature's requests into the simulation.

    Each request is created when its arrival is scheduled and is itself the arrival event;
    its baseline cost (first attempt succeeds on the primary model) is computed per chunk.
    """

    def __init__(
        self,
        name: str,
        cfg: Feature,
        client: Any,
        kernel: Kernel,
        streams: Streams,
        horizon: float,
        start_hour: float,
        next_id: Callable[[], int],
        times: Iterator[np.ndarray] | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.kernel = kernel
        self.next_id = next_id
        self.deadline = client.deadline
        self._times = (
            times
            if times is not None
            else arrival_times(
                cfg.arrivals, streams.generator(f"feature/{name}/arrivals"), horizon, start_hour
            )
        )
        rng = streams.generator(f"feature/{name}/tokens")
        self._input = token_sampler(cfg.input_tokens, rng)
        self._output = token_sampler(cfg.output_tokens, rng)
        self._rag = token_sampler(cfg.rag_tokens, rng) if cfg.rag_tokens is not None else None
        self._cached_fraction = cfg.cached_fraction
        self._max_tokens = cfg.max_tokens
        self._chunk: Iterator[tuple[float, int, int, int, float]] = iter(())

    def _load(self) -> bool:
        """Fetch the next chunk of arrivals and draw their token sizes; False when done."""
        for times in self._times:
            n = len(times)
            if n == 0:
                continue
            inp = self._input(n)
            if self._rag is not None:
                inp = inp + self._rag(n)
            out = np.minimum(self._output(n), self._max_tokens)
            cached = np.rint(inp * self._cached_fraction).astype(np.int64)
            ep = self.client.endpoint
            baseline = (
                (inp - cached) * ep.price_input + cached * ep.price_cached + out * ep.price_output
            )
            # Every request of the chunk arrives before the run ends (times < duration).
            self.client.tally.baseline += float(baseline.sum())
            self._chunk = zip(
                times.tolist(),
                inp.tolist(),
                cached.tolist(),
                out.tolist(),
                baseline.tolist(),
                strict=True,
            )
            return True
        return False

    def _schedule_next(self) -> None:
        item = next(self._chunk, None)
        if item is None:
            if not self._load():
                return
            item = next(self._chunk)
        t, inp, cached, out, baseline = item
        req = Request(self.next_id(), t, inp, cached, out, t + self.deadline, baseline)
        # SimPy reads an event's callbacks list without changing it, so one list serves all.
        req.callbacks = self._arrival_callbacks
        heappush(self._queue, (t, NORMAL, next(self._eid), req))

    def start(self) -> None:
        """Schedule the first arrival."""
        self._arrival_callbacks = [self._on_arrival]
        self._queue = self.kernel.queue
        self._eid = self.kernel.eid
        self._schedule_next()

    def _on_arrival(self, req: Request) -> None:
        self._schedule_next()
        self.client.arrive(req)
