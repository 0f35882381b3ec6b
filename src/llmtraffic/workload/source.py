"""The request source of one feature: schedules each arrival and hands the request to the
feature's client. Arrival times and token sizes come from the feature's own streams, so every
policy sees the same traffic for the same seed (common random numbers), or from a trace."""

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
from llmtraffic.workload.arrivals import arrival_times
from llmtraffic.workload.tokens import TokenSampler, token_sampler
from llmtraffic.workload.trace import TraceChunk, replay

if TYPE_CHECKING:
    from llmtraffic.client.client import Client

SCHEDULE_BATCH = 512


class FeatureSource:
    """Feeds one feature's requests into the simulation.

    Requests are created a batch at a time, each scheduled as its own arrival event whose
    callback is the client's ``arrive``; their baseline cost (first attempt succeeds on the
    primary model) is computed per chunk with numpy.
    """

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
        self.name = name
        self.client = client
        self.kernel = kernel
        self.next_id = next_id
        self.deadline = client.deadline
        rng = streams.generator(f"feature/{name}/tokens")
        self._rag = token_sampler(cfg.rag_tokens, rng) if cfg.rag_tokens is not None else None
        self._draws: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]
        if cfg.trace is not None:
            # Replay: times and token counts from the trace; the RAG add-on, cached_fraction
            # and max_tokens still apply on top.
            self._draws = self._replayed(replay(cfg.trace, horizon, feature=name))
        else:
            # Feature's validator makes these present when there is no trace.
            assert cfg.arrivals is not None
            assert cfg.input_tokens is not None and cfg.output_tokens is not None
            if times is None:
                arrivals = streams.generator(f"feature/{name}/arrivals")
                times = arrival_times(cfg.arrivals, arrivals, horizon, start_hour)
            self._draws = self._sampled(
                times, token_sampler(cfg.input_tokens, rng), token_sampler(cfg.output_tokens, rng)
            )
        self._cached_fraction = cfg.cached_fraction
        self._max_tokens = cfg.max_tokens
        self._chunk: Iterator[tuple[float, int, int, int, float]] = iter(())

    def _sampled(
        self, chunks: Iterator[np.ndarray], input_tokens: TokenSampler, output_tokens: TokenSampler
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Arrival times with token sizes drawn from the distributions (input, RAG, output:
        the order of the draws is part of the seeded traffic)."""
        for times in chunks:
            n = len(times)
            if n == 0:
                continue
            inp = input_tokens(n)
            if self._rag is not None:
                inp = inp + self._rag(n)
            yield times, inp, output_tokens(n)

    def _replayed(
        self, chunks: Iterator[TraceChunk]
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """A trace's arrival times and token counts, plus the RAG add-on when configured."""
        for chunk in chunks:
            n = len(chunk)
            if n == 0:
                continue
            inp = chunk.input_tokens
            if self._rag is not None:
                inp = inp + self._rag(n)
            yield chunk.times, inp, chunk.output_tokens

    def _load(self) -> bool:
        """Fetch the next chunk of arrivals and draw their token sizes; False when done."""
        for times, inp, out in self._draws:
            out = np.minimum(out, self._max_tokens)
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

    def _schedule_batch(self, last: Request | None = None) -> None:
        """Schedule the next ``SCHEDULE_BATCH`` arrivals; the last one schedules the batch after.

        Scheduling a batch at once lets each request's arrival call the client directly, with
        no per-arrival bookkeeping: the heap holds at most one batch per feature.
        """
        items = list(islice(self._chunk, SCHEDULE_BATCH))
        if not items:
            if not self._load():
                return
            items = list(islice(self._chunk, SCHEDULE_BATCH))
        queue, eid, deadline, next_id = self._queue, self._eid, self.deadline, self.next_id
        callbacks = self._arrive_callbacks
        req = None
        for t, inp, cached, out, baseline in items:
            req = Request(next_id(), t, inp, cached, out, t + deadline, baseline)
            # SimPy reads an event's callbacks list without changing it, so one list serves all.
            req.callbacks = callbacks
            heappush(queue, (t, NORMAL, next(eid), req))
        assert req is not None
        req.callbacks = self._last_callbacks

    def start(self) -> None:
        """Schedule the first batch of arrivals."""
        self._queue = self.kernel.queue
        self._eid = self.kernel.eid
        self._arrive_callbacks = [self.client.arrive]
        self._last_callbacks = [self.client.arrive, self._schedule_batch]
        self._schedule_batch()
