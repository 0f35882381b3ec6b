"""Shared pieces of the config schema: the frozen strict base model and unit-aware field types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

from llmtraffic.units import parse_duration, parse_rate


class Model(BaseModel):
    """Base of every config section: frozen, strict (no coercion), unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds; written in configs as a number of seconds or a string such as "5m"."""

Rate = Annotated[float, BeforeValidator(parse_rate)]
"""Events per second; written as a number or a string such as "1200/min"."""
