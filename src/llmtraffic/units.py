"""Parsing of durations ("250ms", "5m") and rates ("1200/min") as written in configs."""

from __future__ import annotations

import math
import re

_DURATION_UNITS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_RATE_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)"
_DURATION_RE = re.compile(rf"^\s*({_NUMBER})\s*([a-z]+)\s*$")
_RATE_RE = re.compile(rf"^\s*({_NUMBER})\s*/\s*([a-z]+)\s*$")


def show_number(value: object) -> str:
    """A number as a message shows it: ``nan``, ``inf``, ``-inf``, ``1e+30``, ``0.5``, ``3``.

    numpy scalars read like Python numbers (never ``np.float64(nan)``); anything else is
    shown by ``repr``.
    """
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        value = item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return repr(value)


DURATION_HELP = "a number of seconds or a string like '250ms', '30s', '5m', '2h', '1d'"
RATE_HELP = "a number per second or a string like '20/s', '1200/min', '5000000/day'"


def parse_duration(value: object) -> float:
    """Return ``value`` as seconds; accept a non-negative number or a string with a unit.

    Raises ``ValueError`` with a message that says what is accepted.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration ({DURATION_HELP}), got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        if value.strip().lower() in {"inf", "infinite", "none", "never"}:
            return math.inf
        match = _DURATION_RE.match(value.lower())
        if match is None or match.group(2) not in _DURATION_UNITS:
            raise ValueError(f"malformed duration {value!r}; use {DURATION_HELP}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration ({DURATION_HELP}), got {value!r}")
    if math.isnan(seconds):
        raise ValueError(f"a duration cannot be NaN; use {DURATION_HELP}")
    if seconds < 0:
        raise ValueError(f"a duration must be >= 0, got {show_number(value)}")
    return seconds


def parse_rate(value: object, allow_zero: bool = False) -> float:
    """Return ``value`` as events per second; accept a number or a string like '1200/min'.

    Zero is refused unless ``allow_zero`` (an idle state of a bursty source).
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a rate ({RATE_HELP}), got {value!r}")
    if isinstance(value, int | float):
        rate = float(value)
    elif isinstance(value, str):
        match = _RATE_RE.match(value.lower())
        if match is None or match.group(2) not in _RATE_UNITS:
            raise ValueError(f"malformed rate {value!r}; use {RATE_HELP}")
        rate = float(match.group(1)) / _RATE_UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a rate ({RATE_HELP}), got {value!r}")
    if not math.isfinite(rate):
        raise ValueError(f"a rate must be finite, got {show_number(value)}; use {RATE_HELP}")
    if rate < 0 or (rate == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"a rate must be {bound}, got {show_number(value)}")
    return rate


def parse_rate_or_zero(value: object) -> float:
    """``parse_rate`` that also accepts 0."""
    return parse_rate(value, allow_zero=True)
