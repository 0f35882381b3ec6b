"""Tick labels that read as what they measure: dollars on money axes.

matplotlib's default formatter puts large or small values over a shared offset (``1e6`` in a
corner of the axis), which a reader of a cost plot misses; a money axis gets its own
formatter with the dollar sign on every tick and one number of decimals for all of them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.ticker import Formatter


class DollarFormatter(Formatter):
    """Ticks as ``$0.05``, ``$1,500``, ``$2.5M``: the same decimals on every tick of an axis
    (enough to tell neighbouring ticks apart), thousands separated, millions and billions
    shortened, never an offset or a power of ten."""

    def __init__(self) -> None:
        super().__init__()
        self._ticks = np.zeros(0)

    def set_locs(self, locs: Any) -> None:
        """Remember the axis's ticks: their spacing sets the decimals, the largest the unit
        (kept here: matplotlib 3.11 deprecates reading ``Formatter.locs``)."""
        super().set_locs(locs)
        ticks = np.asarray(locs, dtype=float)
        self._ticks = ticks[np.isfinite(ticks)]

    def __call__(self, x: float, pos: int | None = None) -> str:
        """The label of the tick at ``x``, given the axis's other ticks."""
        top = float(np.abs(self._ticks).max(initial=0.0))
        return dollars(x, _step(self._ticks), top if self._ticks.size else None)

    def format_data_short(self, value: float) -> str:
        """The cursor readout of an interactive figure: the value in dollars."""
        return dollars(value, abs(value) / 1000 if value else 0.0)


def _step(locs: Any) -> float:
    """The smallest gap between neighbouring ticks (0 when unknown)."""
    values = np.unique(np.asarray(locs, dtype=float))
    values = values[np.isfinite(values)]
    if values.size < 2:
        return 0.0
    return float(np.diff(values).min())


def dollars(value: float, step: float = 0.0, top: float | None = None) -> str:
    """``value`` in dollars, with the decimals a tick ``step`` apart needs (``step`` 0: as
    many as the value itself needs, up to four). Millions and billions are shortened by the
    axis's largest tick ``top`` (default: the value), so that one axis uses one unit."""
    if not math.isfinite(value):
        return "n/a"
    v = abs(value)
    sign = "-" if value < 0 and v >= 1e-12 else ""
    if v < 1e-12:
        return "$0"  # the origin reads the same on any scale
    ref = abs(top) if top is not None and math.isfinite(top) else v
    for size, suffix in ((1e9, "B"), (1e6, "M")):
        if ref >= size:
            return f"{sign}${_number(v / size, step / size)}{suffix}"
    return f"{sign}${_number(v, step)}"


def _number(v: float, step: float) -> str:
    """``v`` with thousands separators and the decimals ``step`` needs (0 to 4)."""
    if step > 0:
        decimals = max(0, -math.floor(math.log10(step) + 1e-9))
        # A step of 0.25 needs two decimals, not one: keep adding while the step is cut.
        while decimals < 4 and abs(round(step, decimals) - step) > step * 1e-6:
            decimals += 1
    else:
        decimals = 2 if v >= 1 else 4
    return f"{v:,.{min(decimals, 4)}f}"


def money_axis(axis: Any) -> None:
    """Give a matplotlib axis (``ax.yaxis``, ``ax.xaxis``) dollar tick labels."""
    axis.set_major_formatter(DollarFormatter())
