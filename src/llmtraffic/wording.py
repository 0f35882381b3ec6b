"""Counts in the words people read: ``1 replication``, ``2 replications``."""

from __future__ import annotations

__all__ = ["counted"]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, singular for exactly one (``1 run``, ``0 runs``, ``1,200 runs``);
    ``plural`` when adding an s is wrong (``axis``, ``axes``)."""
    word = noun if n == 1 else plural or noun + "s"
    return f"{n:,} {word}"
