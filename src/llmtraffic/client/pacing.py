"""Client-side rate limiting: attempts wait locally until the client's own limits admit them,
so that a team can pace itself under its tier instead of collecting 429s.

Each limit is a bucket kept as the time it is full again (the generic cell rate algorithm, as
the provider's limiter): an attempt costing ``c`` can go at the earliest time t with
``max(full_at, t) + c / rate - t <= 60 s``, and reserving it moves ``full_at`` on.
"""

from __future__ import annotations

WINDOW = 60.0


class ClientPacer:
    """The client's limits: requests, tokens (input + max_tokens), input, output per minute."""

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

    def reserve(self, now: float, input_tokens: int, max_tokens: int) -> float:
        """Reserve the attempt's share and return when it may be sent (>= now)."""
        costs = (1.0, float(input_tokens + max_tokens), float(input_tokens), float(max_tokens))
        send = now
        for i, (per_unit, kind) in enumerate(self._limits):
            need = costs[kind] * per_unit
            # Earliest t with max(full_at, t) + need - t <= WINDOW.
            send = max(send, self._full_at[i] + need - WINDOW)
        for i, (per_unit, kind) in enumerate(self._limits):
            self._full_at[i] = max(self._full_at[i], send) + costs[kind] * per_unit
        return send
