"""Shared pieces of the config schema: the frozen strict base model and unit-aware field types.

Every number in a config is finite: the base model refuses NaN and infinity in every float
field (``allow_inf_nan=False``), so a field that means "never" or "unbounded" by ``inf`` says
so in its type (``Duration``, ``PositiveDuration``). NaN is refused everywhere.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, AllowInfNan, BaseModel, BeforeValidator, ConfigDict

from llmtraffic.units import parse_duration, parse_rate, parse_rate_or_zero, show_number


class Model(BaseModel):
    """Base of every config section: frozen, strict (no coercion), unknown keys rejected, and
    every float finite (NaN and infinity refused unless the field's type allows infinity)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


Duration = Annotated[float, AllowInfNan(), BeforeValidator(parse_duration)]
"""Seconds >= 0, written as a number of seconds or a string such as "5m"; "inf" allowed, for
the fields that document it (never / unbounded). NaN is refused."""

Rate = Annotated[float, BeforeValidator(parse_rate)]
"""Events per second (> 0, finite); written as a number or a string such as "1200/min"."""

RateOrZero = Annotated[float, BeforeValidator(parse_rate_or_zero)]
"""Events per second, 0 allowed."""


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be > 0, got {show_number(value)} s")
    return value


def _finite(value: float) -> float:
    if math.isinf(value):
        raise ValueError("must be finite, got inf; give a number of seconds or a string like '5m'")
    return value


def _positive_finite(value: float) -> float:
    return _positive(_finite(value))


PositiveDuration = Annotated[
    float, AllowInfNan(), BeforeValidator(parse_duration), AfterValidator(_positive)
]
"""A duration > 0 ("inf" allowed: never)."""

FiniteDuration = Annotated[
    float, AllowInfNan(), BeforeValidator(parse_duration), AfterValidator(_positive_finite)
]
"""A duration > 0 and finite."""

FiniteDurationOrZero = Annotated[
    float, AllowInfNan(), BeforeValidator(parse_duration), AfterValidator(_finite)
]
"""A duration >= 0 and finite (a start time, a latency, a service time)."""
# AllowInfNan on the finite types lets "inf" through pydantic's float check, so the after
# validator, not pydantic's generic "finite number", says what is wrong: one message per type.


def _duration_or_trace(value: object) -> object:
    if value == "trace":
        return value
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f'{exc}; or "trace": until the end of the replayed traces') from None


def _positive_finite_or_trace(value: float | str) -> float | str:
    return value if isinstance(value, str) else _positive_finite(value)


ArrivalSpan = Annotated[
    Annotated[float, AllowInfNan()] | Literal["trace"],
    BeforeValidator(_duration_or_trace),
    AfterValidator(_positive_finite_or_trace),
]
"""A finite duration > 0, or "trace": one pass of the replayed traces (``config.span``)."""


def _http_error_status(value: int) -> int:
    if not 400 <= value <= 599:
        raise ValueError(
            f"must be an HTTP error status from 400 to 599 (e.g. 500, 503 or 529), got {value}"
        )
    return value


HttpErrorStatus = Annotated[int, AfterValidator(_http_error_status)]
"""An HTTP error status, 400-599: what a failed attempt reports."""

SLUG_MAX = 128
"""Longest name a results folder takes (its ``.NAME.partial-PID`` sibling must fit a file
system's 255-byte names)."""

_SLUG = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_slug(value: str) -> str:
    """``value`` when it is a slug: letters, digits, ``-``, ``_`` and ``.``, not starting with
    ``.``, at most ``SLUG_MAX`` characters. A name becomes a folder under ``runs/``, so it may
    not be empty, hidden, ``..``, absolute or hold a ``/``. Raises ``ValueError`` otherwise."""
    if not value:
        problem = "is empty"
    elif len(value) > SLUG_MAX:
        problem = f"has {len(value)} characters, more than {SLUG_MAX}"
    elif "/" in value or "\\" in value:
        problem = "holds a path separator"
    elif value.startswith("."):
        problem = "starts with '.'"
    elif _SLUG.fullmatch(value) is None:
        bad = sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in "._-"))})
        problem = f"holds {', '.join(repr(c) for c in bad)}"
    else:
        return value
    raise ValueError(
        f"{value!r} {problem}; a name becomes a folder under runs/, so use letters, digits, "
        f"'-', '_' and '.' (not first), at most {SLUG_MAX} characters, e.g. 'outage-storm'"
    )


Slug = Annotated[str, AfterValidator(check_slug)]
"""A name that becomes a folder name: see ``check_slug``."""
