"""Client-side rate limiting: attempts wait locally until the client's own limits admit them,
so that a team can pace itself under its tier instead of collecting 429s.

Each limit is a bucket kept as the time it is full again (the generic cell rate algorithm, as
the provider's limiter): an attempt costing ``c`` can go at the earliest time t with
``max(full_at, t) + c / rate - t <= 60 s``, and reserving it moves ``full_at`` on.
Only attempts that will be sent keep a reservation: the client asks ``earliest`` first,
commits when it accepts the wait, and releases the reservation of a request that ends before
its attempt goes out (otherwise refused requests would pace everyone else out of existence).
"""

from __future__ import annotations

WINDOW = 60.0


def _costs(input_tokens: int, max_tokens: int) -> tuple[float, float, float, float]:
    """An attempt's cost under each kind of limit: requests; tokens, max(input, max_tokens), the
    rule of the provider's ``tpm`` (OpenAI's, provider/ratelimit.py), so that a client paced at
    its tier's TPM sends what the tier admits, not half of it; input; output (max_tokens: the
    client cannot know before sending what will be generated)."""
    tokens = input_tokens if input_tokens > max_tokens else max_tokens
    return (1.0, float(tokens), float(input_tokens), float(max_tokens))


class ClientPacer:
    """The client's limits per minute: requests, tokens (max(input, max_tokens)), input tokens,
    output tokens (max_tokens)."""

    def __init__(
        self, rpm: float | None, tpm: float | None, itpm: float | None, otpm: float | None
    ) -> None:
        # (seconds per unit, which cost) for each limit given; costs: 0 requests, 1 tokens,
        # 2 input, 3 output (max_tokens).
        self._limits = [
            (WINDOW / limit, kind)
            for limit, kind in ((rpm, 0), (tpm, 1), (itpm, 2), (otpm, 3))
            if limit is not None
        ]
        self._full_at = [0.0] * len(self._limits)
        self.reserved = 0  # reservations held: committed and not released (for audits)

    def earliest(self, now: float, input_tokens: int, max_tokens: int) -> float:
        """When an attempt of these tokens could be sent (>= now); reserves nothing."""
        costs = _costs(input_tokens, max_tokens)
        send = now
        full_at = self._full_at
        for i, (per_unit, kind) in enumerate(self._limits):
            # Earliest t with max(full_at, t) + need - t <= WINDOW.
            send = max(send, full_at[i] + costs[kind] * per_unit - WINDOW)
        return send

    def commit(self, send: float, input_tokens: int, max_tokens: int) -> None:
        """Reserve the attempt's share for its send time ``send`` (from ``earliest``)."""
        costs = _costs(input_tokens, max_tokens)
        full_at = self._full_at
        for i, (per_unit, kind) in enumerate(self._limits):
            full_at[i] = max(full_at[i], send) + costs[kind] * per_unit
        self.reserved += 1

    def release(self, input_tokens: int, max_tokens: int) -> None:
        """Give back a reservation whose attempt was never sent (its request ended while it
        waited): the share it held becomes free again (a ``full_at`` in the past only means
        a full bucket)."""
        costs = _costs(input_tokens, max_tokens)
        full_at = self._full_at
        for i, (per_unit, kind) in enumerate(self._limits):
            full_at[i] -= costs[kind] * per_unit
        self.reserved -= 1
