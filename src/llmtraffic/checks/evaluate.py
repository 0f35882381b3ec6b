"""Evaluating checks on an experiment's runs.

Each check is judged per grid point, on the mean of the point's replications and its 95%
confidence interval (a t interval):

- **default** (no flakes from noise): a check fails only when the whole interval is on the
  wrong side of the bound, i.e. the violation is larger than the replications' noise; a mean
  on the wrong side with an interval that reaches the bound passes as "within noise";
- **strict**: a check passes only when the whole interval is on the right side;
- with one replication there is no interval and the value decides;
- a metric that is undefined in any replication (a recovery that never happened, a ratio
  with nothing to divide by) fails the check, with the count of such runs.

A **binary** metric (a per-run flag, 0 or 1: ``metastable``; ``BINARY_KEYS``) is a count of
runs, not a quantity with a spread: its mean is the share of runs that raised the flag and its
interval is the exact (Clopper-Pearson) 95% binomial interval of that share, never a t interval
(on [1, 1, 0] a t interval reads -0.77 to 2.10 and lets ``metastable <= 0`` pass). A bound at
the edge of [0, 1] is a **count rule**, the same in both modes: ``<= 0`` (``< 1`` is not an
edge) passes only when no run raised the flag, ``>= 1`` only when every run did; no interval
can prove a share is exactly 0 or 1. Other bounds on a binary metric are judged like any other,
on the binomial interval.

``within`` checks compare with a baseline's mean: ``|mean - baseline| <= tolerance *
|baseline|``. A baseline passed on the command line adds, for each comparison check, a
one-sided regression bound: a ``>=`` metric may not fall more than the tolerance below its
baseline, a ``<=`` metric may not rise more than the tolerance above it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from llmtraffic.checks.spec import Check
from llmtraffic.errors import ConfigError
from llmtraffic.experiment.analysis import _text, binomial_ci, is_binary, mean_ci

if TYPE_CHECKING:
    import pandas as pd

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

Baseline = Mapping[str, Mapping[str, float]]
"""point id -> metric column -> the baseline's mean."""


@dataclass
class CheckResult:
    """One check on one grid point (and one metric column)."""

    check: Check
    point_id: str
    point: dict[str, Any]
    column: str
    kind: str  # "bound", "within" or "baseline"
    bound: str  # how the bound reads: ">= 0.95", "within 5% of 0.912"
    mean: float
    low: float
    high: float
    n: int
    passed: bool
    note: str = ""
    values: list[float] = field(default_factory=list)

    @property
    def where(self) -> str:
        """The point as ``axis=value`` pairs (or its id when there is no sweep)."""
        return ", ".join(f"{k}={_text(v)}" for k, v in self.point.items()) or self.point_id

    @property
    def measured(self) -> str:
        """The mean, with its interval when there is one."""
        if math.isnan(self.mean):
            return "undefined"
        text = f"{self.mean:.4g}"
        if self.n > 1 and math.isfinite(self.low):
            text += f" ({self.low:.4g} to {self.high:.4g})"
        return text

    def message(self) -> str:
        """What failed, by how much, and where: the line a CI log shows."""
        status = "passed" if self.passed else "FAILED"
        text = (
            f"{status}: {self.check.label} [{self.where}]: {self.column} = {self.measured}, "
            f"needs {self.bound}"
        )
        return f"{text}; {self.note}" if self.note else text


def evaluate(
    checks: Sequence[Check],
    summary: pd.DataFrame,
    axes: Sequence[str],
    *,
    baseline: Baseline | None = None,
    tolerance: float | None = None,
    strict: bool = False,
) -> list[CheckResult]:
    """Judge every check on every point it applies to (see the module docstring)."""
    results: list[CheckResult] = []
    for check in checks:
        columns = check.columns(summary.columns)
        points = select_points(summary, axes, check)
        for point_id, group in points:
            point = {a: group[a].iloc[0] for a in axes}
            for column in columns:
                if column in group:
                    values = group[column].to_numpy(dtype=float)
                else:  # a count that no run had (Check.columns lets only those through)
                    values = np.zeros(len(group))
                if check.op == "within":
                    results.append(_within(check, point_id, point, column, values, baseline))
                    continue
                assert check.value is not None
                results.append(
                    _judge(
                        check,
                        point_id,
                        point,
                        column,
                        values,
                        check.op,
                        check.value,
                        "bound",
                        f"{check.op} {check.value:g}",
                        strict,
                    )
                )
                if baseline is not None and tolerance is not None:
                    ref = _baseline_value(baseline, point_id, column)
                    if ref is not None:
                        op, limit = _regression_bound(check.op, ref, tolerance)
                        results.append(
                            _judge(
                                check,
                                point_id,
                                point,
                                column,
                                values,
                                op,
                                limit,
                                "baseline",
                                f"{op} {limit:.4g} (baseline {ref:.4g}, {tolerance:.0%})",
                                strict,
                            )
                        )
    return results


def select_points(
    summary: pd.DataFrame, axes: Sequence[str], check: Check
) -> list[tuple[str, pd.DataFrame]]:
    """The rows of ``summary`` (grouped by point) that ``check.where`` picks; ConfigError
    naming the check when it names an axis or value the experiment does not have."""
    mask = np.ones(len(summary), dtype=bool)
    for axis, wanted in check.where.items():
        if axis not in axes:
            raise ConfigError(
                [
                    f"check {check.label!r}: where names no sweep axis {axis!r}; axes: "
                    f"{', '.join(axes) or '(none: the file has no [sweep])'}"
                ]
            )
        options = wanted if isinstance(wanted, list) else [wanted]
        texts = {_text(v) for v in options}
        column = summary[axis].map(_text)
        unknown = texts - set(column)
        if unknown:
            raise ConfigError(
                [
                    f"check {check.label!r}: {axis} has no value {sorted(unknown)[0]!r}; its "
                    f"values: {', '.join(dict.fromkeys(column))}"
                ]
            )
        mask &= column.isin(texts).to_numpy()
    chosen = summary[mask]
    return list(chosen.groupby("point_id", sort=False))


def _judge(
    check: Check,
    point_id: str,
    point: dict[str, Any],
    column: str,
    values: np.ndarray,
    op: str,
    bound: float,
    kind: str,
    bound_text: str,
    strict: bool,
) -> CheckResult:
    binary = is_binary(column)
    mean, low, high, n = binomial_ci(values) if binary else mean_ci(values)
    result = CheckResult(
        check,
        point_id,
        point,
        column,
        kind,
        bound_text,
        mean,
        low,
        high,
        n,
        False,
        values=[float(v) for v in values],
    )
    undefined = int(np.count_nonzero(~np.isfinite(values)))
    if undefined:
        result.note = f"undefined in {undefined} of {len(values)} runs"
        if column.endswith("recovery_time"):
            result.note += " (not recovered within the horizon, or the run is too short)"
        elif column.endswith("metastable"):
            result.note += " (the run is too short to tell: see metastable_reason)"
        return result
    if binary:
        bad = [v for v in values if v not in (0.0, 1.0)]
        if bad:
            raise ConfigError([f"{column} is a 0/1 flag, but a run has {float(bad[0]):g}"])
        k = int(np.count_nonzero(values == 1.0))
        rule = _count_rule(op, bound)
        if rule is not None:
            result.passed = rule(k, n)
            result.note = f"count rule: {k} of {n} runs raised it" + (
                "" if result.passed else f", needs {'none' if bound <= 0 else 'all'}"
            )
            return result
    compare = OPS[op]
    has_interval = n > 1 and math.isfinite(low)
    # The end of the interval that is most (least) favourable to the check.
    best, worst = (high, low) if op in (">", ">=") else (low, high)
    if not has_interval:
        result.passed = compare(mean, bound)
    elif strict:
        result.passed = compare(worst, bound)
        if not result.passed and compare(mean, bound):
            result.note = "mean passes but the interval reaches the bound (strict)"
    else:
        result.passed = compare(best, bound)
        if result.passed and not compare(mean, bound):
            result.note = "mean is past the bound, within the replications' noise"
    if not result.passed:
        result.note = result.note or f"off by {abs(mean - bound):.4g}"
    return result


def _count_rule(op: str, bound: float) -> Callable[[int, int], bool] | None:
    """For a bound at the edge of [0, 1] on a flag, the rule on k of n runs; else None."""
    if op == "<=" and bound == 0:
        return lambda k, n: k == 0
    if op == ">=" and bound == 1:
        return lambda k, n: k == n
    return None


def _within(
    check: Check,
    point_id: str,
    point: dict[str, Any],
    column: str,
    values: np.ndarray,
    baseline: Baseline | None,
) -> CheckResult:
    assert check.tolerance is not None
    mean, low, high, n = mean_ci(values)
    ref = _baseline_value(baseline, point_id, column) if baseline is not None else None
    if ref is None:
        return CheckResult(
            check,
            point_id,
            point,
            column,
            "within",
            "a baseline",
            mean,
            low,
            high,
            n,
            False,
            note="no baseline value for this point: pass --baseline FILE (saved with "
            "--save-baseline)",
            values=[float(v) for v in values],
        )
    allowed = check.tolerance * abs(ref)
    ok = math.isfinite(mean) and abs(mean - ref) <= allowed + 1e-12
    note = "" if ok else f"moved {mean - ref:+.4g} ({(mean - ref) / ref:+.1%})" if ref else ""
    return CheckResult(
        check,
        point_id,
        point,
        column,
        "within",
        f"within {check.tolerance:.0%} of {ref:.4g}",
        mean,
        low,
        high,
        n,
        ok,
        note,
        [float(v) for v in values],
    )


def _regression_bound(op: str, ref: float, tolerance: float) -> tuple[str, float]:
    """Higher is better for >= checks, lower for <= checks: allow ``tolerance`` worse."""
    if op in (">", ">="):
        return ">=", ref - tolerance * abs(ref)
    return "<=", ref + tolerance * abs(ref)


def _baseline_value(baseline: Baseline, point_id: str, column: str) -> float | None:
    value = baseline.get(point_id, {}).get(column)
    if value is None or not math.isfinite(value):
        return None
    return float(value)
