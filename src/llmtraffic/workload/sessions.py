"""The session driver of one closed-loop feature: chat sessions or agent tasks.

Sessions arrive by the feature's arrival process. A session sends its first turn when it
arrives and each later turn a pause (think time, tool time) after the previous turn's request
ended: the provider's latency and failures pace the load it gets (a closed loop). Each turn's
prompt is the system prompt, the transcript carried over (every earlier answered turn's prompt
tokens and answer), and the turn's new tokens, cut to ``max_context`` by the overflow rule.

Common random numbers: a session's number of turns, its turns' token sizes and its pauses are
drawn when it arrives, each from its own named stream, in the order sessions arrive (which no
policy changes); so every policy compared on the same seed sees the same sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice

import numpy as np

from llmtraffic.client.session_client import (
    SessionClient,
    SessionHedgedClient,
    SessionLayeredClient,
    SessionRoutedClient,
)
from llmtraffic.config.workload import Feature
from llmtraffic.engine.entities import OK, UNFINISHED, Request
from llmtraffic.engine.kernel import Call, Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.workload.arrivals import arrival_times
from llmtraffic.workload.pauses import count_sampler, delay_sampler, scalars
from llmtraffic.workload.tokens import token_sampler

SessionClients = SessionClient | SessionLayeredClient | SessionHedgedClient | SessionRoutedClient

# How a session ended (one each): every turn answered; every turn sent but some failed (only
# with abandon_on_failure = false); ended early by a failed turn; cut by the end of the run.
COMPLETED = "completed"
PARTIAL = "partial"
ABANDONED = "abandoned"
SESSION_OUTCOMES = (COMPLETED, PARTIAL, ABANDONED, UNFINISHED)


class Conversation:
    """One session (or task) in progress: its draws, where it is, and its transcript."""

    __slots__ = (
        "arrival",
        "carried",
        "failed",
        "id",
        "inputs",
        "k",
        "outputs",
        "pauses",
        "request",
        "transcript",
    )

    def __init__(
        self,
        sid: int,
        arrival: float,
        inputs: list[int],
        outputs: list[int],
        pauses: list[float],
    ) -> None:
        self.id = sid
        self.arrival = arrival
        self.inputs = inputs  # new tokens of each turn
        self.outputs = outputs  # answer tokens of each turn (max_tokens applied)
        self.pauses = pauses  # pause after each turn but the last
        self.k = 0  # the turn in progress (or next)
        self.transcript = 0  # tokens carried into the next turn's prompt
        self.carried = 0  # tokens of the transcript the turn in progress carries
        self.failed = 0  # turns that failed
        self.request: Request | None = None  # the turn in progress


class SessionStats:
    """Per-feature counts of sessions and their turns (results.metrics.session_metrics)."""

    __slots__ = ("cuts", "duration", "ended", "outcomes", "started", "tokens", "turns")

    def __init__(self) -> None:
        self.started = 0
        self.outcomes: dict[str, int] = dict.fromkeys(SESSION_OUTCOMES, 0)
        self.turns = 0  # turn requests sent
        self.tokens = 0  # prompt + answer tokens of the turns sent
        self.duration = 0.0  # sum over sessions that ended (not unfinished) of end - arrival
        self.ended = 0  # sessions that ended (not unfinished)
        self.cuts = 0  # prompts cut to max_context


class SessionDriver:
    """Runs the sessions (``feature.session``) or agent tasks (``feature.agent``) of one
    feature through its client, which must be a session client (``client_class``)."""

    def __init__(
        self,
        name: str,
        cfg: Feature,
        client: SessionClients,
        kernel: Kernel,
        streams: Streams,
        horizon: float,
        start_hour: float,
        next_id: Callable[[], int],
        next_session: Callable[[], int],
    ) -> None:
        conv = cfg.session if cfg.session is not None else cfg.agent
        assert conv is not None and cfg.arrivals is not None
        assert cfg.input_tokens is not None and cfg.output_tokens is not None
        self.name = name
        self.agent = cfg.agent is not None
        self.client = client
        self.kernel = kernel
        self.next_id = next_id
        # Session ids are unique within the run (a counter all features share), so that a
        # provider's prompt cache shared by several features never mixes two sessions.
        self.next_session = next_session
        client.hook = self
        if cfg.session is not None:
            self.abandon = cfg.session.abandon_on_failure
            turns, pause = cfg.session.turns, cfg.session.think_time
        else:
            assert cfg.agent is not None
            self.abandon = True  # a task cannot go on without a call's answer
            turns, pause = cfg.agent.calls, cfg.agent.tool_time
        self.system = conv.system_tokens
        self.max_context = conv.max_context
        self.summarize = conv.on_overflow == "summarize"
        self.summary = conv.summary_tokens or 0
        self.max_tokens = cfg.max_tokens
        self.cached_fraction = cfg.cached_fraction
        ep = client.endpoint
        self.prices = (ep.price_input, ep.price_cached, ep.price_output)
        # A primary provider that bills by the prompt cache or long-context prices prices
        # the baseline itself (provider/pricing.py: its shadow cache); None: the plain sum.
        from llmtraffic.provider.pricing import PricedEndpoint

        self.priced: PricedEndpoint | None = ep if isinstance(ep, PricedEndpoint) else None
        self.deadline = client.deadline
        # One stream per purpose, apart from the open workload's: sessions added to a
        # scenario shift no other feature's draws, and a session's draws no other kind's.
        base = f"feature/{name}/session"
        tokens = streams.generator(f"{base}/tokens")
        self._turns: Iterator[int] = scalars(
            count_sampler(turns, streams.generator(f"{base}/turns"))
        )
        self._pauses: Iterator[float] = scalars(
            delay_sampler(pause, streams.generator(f"{base}/pauses"))
        )
        self._inputs: Iterator[int] = scalars(token_sampler(cfg.input_tokens, tokens))
        self._outputs: Iterator[int] = scalars(token_sampler(cfg.output_tokens, tokens))
        self._rag: Iterator[int] | None = None
        if cfg.rag_tokens is not None:
            rag = streams.generator(f"{base}/rag")
            self._rag = scalars(token_sampler(cfg.rag_tokens, rag))
        arrivals = streams.generator(f"feature/{name}/arrivals")
        self._times = self._flat(arrival_times(cfg.arrivals, arrivals, horizon, start_hour))
        self.live: dict[int, Conversation] = {}
        self.stats = SessionStats()

    @staticmethod
    def _flat(chunks: Iterator[np.ndarray]) -> Iterator[float]:
        for chunk in chunks:
            yield from chunk.tolist()

    @property
    def open(self) -> int:
        """Sessions that arrived and have not ended."""
        return len(self.live)

    def start(self) -> None:
        """Schedule the first session's arrival."""
        self._schedule_next()

    def _schedule_next(self) -> None:
        t = next(self._times, None)
        if t is not None:
            self.kernel.call_at(t, self._on_arrival)

    def _on_arrival(self, ev: Call) -> None:
        now = self.kernel.now
        self._schedule_next()
        n = next(self._turns)
        inputs = list(islice(self._inputs, n))
        if self._rag is not None:
            inputs = [i + r for i, r in zip(inputs, islice(self._rag, n), strict=True)]
        cap = self.max_tokens
        outputs = [min(o, cap) for o in islice(self._outputs, n)]
        pauses = list(islice(self._pauses, n - 1))
        s = Conversation(self.next_session(), now, inputs, outputs, pauses)
        self.live[s.id] = s
        self.stats.started += 1
        self._send(s, now)

    def _on_pause_end(self, ev: Call) -> None:
        self._send(ev._value, self.kernel.now)

    def _send(self, s: Conversation, now: float) -> None:
        """Send turn ``s.k``: its prompt is system + carried transcript + new tokens."""
        new = s.inputs[s.k]
        carried = s.transcript
        cut = False
        if self.max_context is not None:
            room = self.max_context - self.system - new
            if carried > room:
                # Truncation keeps the newest tokens that fit; a summary replaces the whole
                # transcript (and is itself cut when even it does not fit). A prompt whose
                # system part and new tokens alone exceed the cap is sent as it is.
                room = max(0, room)
                carried = min(self.summary, room) if self.summarize else room
                s.transcript = carried
                cut = True
                self.stats.cuts += 1
        s.carried = carried
        inp = self.system + carried + new
        out = s.outputs[s.k]
        cached = round(inp * self.cached_fraction)
        # The prompt repeats the previous prompt's start only when nothing was cut: dropping
        # the oldest tokens or summarising changes the start, so no cache could match it.
        prefix = 0 if cut else carried
        if self.priced is None:
            pi, pc, po = self.prices
            baseline = (inp - cached) * pi + cached * pc + out * po
        else:
            baseline = self.priced.baseline_cost(self.name, now, inp, cached, out, s.id, prefix)
        client = self.client
        client.tally.baseline += baseline
        req = Request(self.next_id(), now, inp, cached, out, now + self.deadline, baseline)
        req.session = s.id
        req.prefix_tokens = prefix
        s.request = req
        stats = self.stats
        stats.turns += 1
        stats.tokens += inp + out
        client.arrive(req)

    def ended(self, req: Request, outcome: str, now: float) -> None:
        """A turn's request ended: extend the transcript, then pause and send the next turn,
        or end the session."""
        s = self.live.get(req.session)
        if s is None or s.request is not req:
            return  # told twice (a hedged first try), or not a turn of a live session
        s.request = None
        # Outcomes compare by value: they come from the (possibly compiled) client.
        if outcome == OK:
            s.transcript = s.carried + s.inputs[s.k] + s.outputs[s.k]
        elif outcome == UNFINISHED:
            self._end(s, UNFINISHED, now)
            return
        else:
            s.failed += 1
            if self.abandon:
                self._end(s, ABANDONED, now)
                return
        s.k += 1
        if s.k == len(s.inputs):
            self._end(s, PARTIAL if s.failed else COMPLETED, now)
            return
        # Through the event queue even for a zero pause: the client is still inside the
        # request's end (``finish``), where a new arrival must not start.
        self.kernel.call_in(s.pauses[s.k - 1], self._on_pause_end, s)

    def _end(self, s: Conversation, outcome: str, now: float) -> None:
        del self.live[s.id]
        stats = self.stats
        stats.outcomes[outcome] += 1
        if outcome != UNFINISHED:
            stats.ended += 1
            stats.duration += now - s.arrival

    def close(self, now: float) -> None:
        """At the end of the run: the sessions still open (pausing between turns; a turn in
        flight has ended as unfinished already) end unfinished."""
        for s in list(self.live.values()):
            self._end(s, UNFINISHED, now)
