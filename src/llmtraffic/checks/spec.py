"""``[[check]]`` entries: a metric, a bound, and the runs they apply to.

```toml
[[check]]
name = "users get answers"          # optional; defaults to "metric op value"
metric = "success_rate"             # a column of the experiment's summary table
op = ">="                           # <, <=, >, >= against `value`; or "within" a baseline
value = 0.99
where = { scenario = ["brownout", "outage"] }   # optional: sweep axis -> value(s)
```

Metrics are the columns of ``summary.csv``: every summary metric (``docs/metrics.md``),
per-feature ones as ``feature.<name>.<metric>``, per-incident ones as
``incident.<i>.<metric>`` (``incident = "any"`` applies a check to every incident's column:
``metric = "recovery_time", incident = "any"``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from llmtraffic.checks.columns import is_count_column
from llmtraffic.config.base import Model
from llmtraffic.config.loader import format_errors
from llmtraffic.errors import ConfigError

Op = Literal["<", "<=", ">", ">=", "within"]


def parse_tolerance(value: object) -> float:
    """A relative tolerance: ``0.05`` or ``"5%"``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a tolerance such as 0.05 or '5%', got {value!r}")
    if isinstance(value, int | float):
        tol = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            tol = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(
                f"malformed tolerance {value!r}; use a fraction (0.05) or a percentage ('5%')"
            ) from None
    else:
        raise ValueError(f"expected a tolerance such as 0.05 or '5%', got {value!r}")
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"a tolerance must be >= 0, got {value!r}")
    return tol


class Check(Model):
    """One regression check."""

    name: str | None = Field(None, description="label in the table and the JUnit report")
    metric: str = Field(description="a column of the summary table (docs/metrics.md)")
    op: Op = Field(description="comparison with value, or 'within' a baseline's value")
    value: float | None = Field(None, description="the bound (not for 'within')")
    tolerance: float | None = Field(
        None, description="for 'within': allowed relative change from the baseline"
    )
    incident: int | Literal["any"] | None = Field(
        None,
        description="for incident metrics: the incident's index, from 0 as in the column "
        "names incident.0.* (the tables' incident 1), or 'any'",
    )
    where: dict[str, Any] = Field(
        default_factory=dict, description="sweep axis -> the value(s) of the points it checks"
    )

    @field_validator("tolerance", mode="before")
    @classmethod
    def _tolerance(cls, value: object) -> object:
        return None if value is None else parse_tolerance(value)

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        # A NaN bound fails every comparison and an infinite one passes every one: neither
        # checks anything.
        if value is not None and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value

    @model_validator(mode="after")
    def _check(self) -> Check:
        if self.op == "within":
            if self.tolerance is None:
                raise ValueError("'within' needs a tolerance (e.g. tolerance = '5%')")
            if self.value is not None:
                raise ValueError("'within' compares with a baseline: give tolerance, not value")
        elif self.value is None:
            raise ValueError(f"op {self.op!r} needs a value to compare with")
        return self

    @property
    def label(self) -> str:
        """The check's name, or a description of it."""
        if self.name:
            return self.name
        # An incident's check is named by the column it reads (incident.0.recovery_time): its
        # `incident` is that index, from 0, where tables number incidents from 1.
        what = self.metric if self.incident is None else f"incident.{self._index}.{self.metric}"
        if self.op == "within":
            return f"{what} within {self.tolerance:.0%} of baseline"
        return f"{what} {self.op} {self.value:g}"

    @property
    def _index(self) -> str:
        return "*" if self.incident == "any" else str(self.incident)

    def columns(self, available: Iterable[str]) -> list[str]:
        """The summary columns this check reads (several for ``incident = "any"``).

        A count by outcome or status (``outcomes.rejected_budget``) may be missing from
        ``available``: summary.json leaves zero counts out, and such a column reads 0.
        """
        cols = list(available)
        if self.incident is None:
            wanted = [self.metric]
        elif self.incident == "any":
            wanted = sorted(
                c for c in cols if c.startswith("incident.") and c.endswith(f".{self.metric}")
            )
        else:
            wanted = [f"incident.{self.incident}.{self.metric}"]
        missing = [c for c in wanted if c not in cols and not is_count_column(c)]
        if missing or not wanted:
            name = missing[0] if missing else f"incident.*.{self.metric}"
            close = difflib.get_close_matches(name, cols, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                [
                    f"check {self.label!r}: no metric {name!r} in the results{hint} (metrics are "
                    "the columns of summary.csv: docs/metrics.md, docs/ci.md)"
                ]
            )
        return wanted


def parse_checks(raw: Sequence[Mapping[str, Any]], source: str | None = None) -> list[Check]:
    """Validate ``[[check]]`` entries; errors name ``check[i].field``."""
    checks: list[Check] = []
    problems: list[str] = []
    for i, entry in enumerate(raw):
        try:
            checks.append(Check.model_validate(dict(entry)))
        except ValidationError as exc:
            for line in format_errors(exc, dict(entry), Check):
                head, sep, rest = line.partition(": ")
                # Field errors start with their path; checks of the whole entry do not.
                if sep and " " not in head and "'" not in head:
                    problems.append(f"check[{i}].{head}: {rest}")
                else:
                    problems.append(f"check[{i}]: {line}")
    if problems:
        raise ConfigError(problems, source=source)
    return checks
