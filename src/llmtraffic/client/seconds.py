"""Per-second counters over a sliding window, as the throttle and Finagle's budget keep them:
a deque of ``[second, count, count]`` lists, oldest first."""

from __future__ import annotations

import math
from collections import deque


def take_back(seconds: deque[list[float]], at: float, column: int) -> bool:
    """Subtract one from ``column`` of the bucket of the second of ``at``; False when that
    second has already left the window (nothing is counted there any more)."""
    sec = math.floor(at)
    for bucket in reversed(seconds):
        if bucket[0] == sec:
            bucket[column] -= 1.0
            return True
        if bucket[0] < sec:
            return False
    return False
