"""Shared pieces of the config schema: the frozen strict base model and unit-aware field types."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from llmtraffic.units import parse_duration, parse_rate, parse_rate_or_zero


class Model(BaseModel):
    """Base of every config section: frozen, strict (no coercion), unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds; written in configs as a number of seconds or a string such as "5m"."""

Rate = Annotated[float, BeforeValidator(parse_rate)]
"""Events per second (> 0); written as a number or a string such as "1200/min"."""

RateOrZero = Annotated[float, BeforeValidator(parse_rate_or_zero)]
"""Events per second, 0 allowed."""


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be > 0, got {value:g} s")
    return value


def _positive_finite(value: float) -> float:
    if math.isinf(value):
        raise ValueError("must be finite")
    return _positive(value)


PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
"""A duration > 0 ("inf" allowed: never)."""

FiniteDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive_finite)]
"""A duration > 0 and finite."""


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
    float | Literal["trace"],
    BeforeValidator(_duration_or_trace),
    AfterValidator(_positive_finite_or_trace),
]
"""A finite duration > 0, or "trace": one pass of the replayed traces (``config.span``)."""
