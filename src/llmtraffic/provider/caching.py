"""A provider's prompt cache: entries keyed on a shared prefix, each live for a TTL after its
last use (docs/billing.md, "Prompt caching").

A key names a prefix that requests repeat: a feature's system prompt (every request of the
feature starts with it) or a session's transcript (each turn starts with the previous turn's
prompt). An entry remembers how many tokens of that prefix the provider holds and until when.
A request matches ``min(its repeated prefix, the entry's tokens)`` while the entry is live,
rounded down to what the provider can reuse: nothing under ``min_tokens``, then whole
``increment`` blocks above it (OpenAI: 1,024 and 128; Anthropic: the model's minimum, exact).

The cache decides; the endpoint bills (provider/pricing.py). No clock of its own: ``now`` is
passed in.
"""

from __future__ import annotations


class PromptCacheState:
    """The entries of one provider's prompt cache, with counts of what it served."""

    def __init__(self, ttl: float, min_tokens: int, increment: int) -> None:
        self.ttl = ttl
        self.min_tokens = min_tokens
        self.increment = increment
        # key -> (expires at, tokens held)
        self.entries: dict[int, tuple[float, int]] = {}

    def usable(self, tokens: int) -> int:
        """How many of ``tokens`` matching tokens the provider reuses: 0 under the minimum,
        else the minimum plus the whole increments above it (1,500 -> 1,408 with OpenAI's
        1,024 and 128)."""
        low = self.min_tokens
        if tokens < low:
            return 0
        step = self.increment
        return low + (tokens - low) // step * step

    def match(self, key: int, prefix: int, now: float) -> int:
        """Cached tokens for a request whose first ``prefix`` tokens repeat the prefix named
        ``key``, sent at ``now``: 0 when the entry is missing or expired."""
        entry = self.entries.get(key)
        if entry is None:
            return 0
        expires, held = entry
        if now >= expires:
            del self.entries[key]  # evicted: forget it, so ended sessions do not pile up
            return 0
        return self.usable(prefix if prefix < held else held)

    def store(self, key: int, tokens: int, now: float) -> None:
        """A request the provider accepted at ``now`` puts its prompt up to the cache
        breakpoint (``tokens``) in the cache, or refreshes the entry (a hit renews the TTL);
        a prompt under the minimum is not cached."""
        if tokens < self.min_tokens:
            return
        entry = self.entries.get(key)
        if entry is not None and now < entry[0] and entry[1] > tokens:
            tokens = entry[1]  # a live, longer entry stays whole
        self.entries[key] = (now + self.ttl, tokens)
