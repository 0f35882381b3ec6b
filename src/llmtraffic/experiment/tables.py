"""Terminal tables of experiments: point means with intervals, and paired differences."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from llmtraffic.plots.labels import metric_label

if TYPE_CHECKING:
    import pandas as pd

SHORT_NAMES = {
    "success_rate": "success",
    "attempt_amplification": "att/req",
    "attempt_error_rate": "att errors",
    "billed_cost": "billed",
    "wasted_cost": "wasted",
    "cost_amplification": "cost x",
    "cost_per_month": "per month",
    "latency_p95": "p95 latency",
    "peak_attempt_rate_ratio": "peak/mean",
    "incident.0.recovery_time": "recovery",
    "incident.0.metastable": "metastable",
}

POINT_METRICS = (
    "success_rate",
    "attempt_amplification",
    "cost_amplification",
    "billed_cost",
    "cost_per_month",
    "latency_p95",
    "peak_attempt_rate_ratio",
    "incident.0.recovery_time",
    "incident.0.metastable",
)


def print_table(console: Console, table: Table) -> None:
    """Print a wide table whole: a file or pipe gets the width the table needs (a terminal
    keeps its own width, and rich fits the table into it)."""
    if console.is_terminal:
        console.print(table)
    else:
        # Console.print caps a width at the console's own, so a wider console is needed.
        Console(file=console.file, width=max(console.width, 240), no_color=True).print(table)


def fmt_value(metric: str, value: float) -> str:
    """A metric's value as a reader wants it: %, USD, seconds or a plain number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    unit = metric_label(metric).unit
    if unit == "%":
        return f"{value * 100:.1f}%"
    if unit.startswith("USD"):
        return f"${value:,.2f}" if abs(value) >= 100 else f"${value:,.4f}"
    if unit == "s":
        return "inf" if math.isinf(value) else f"{value:.2f} s"
    if math.isinf(value):
        return "inf"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"


def fmt_half(metric: str, half: float, mean: float = 0.0) -> str:
    """An interval's half-width in the metric's unit and the precision of its mean (``±0.4%``,
    ``±$12.30``), empty when unknown."""
    if half is None or not math.isfinite(half):
        return ""
    unit = metric_label(metric).unit
    if unit.startswith("USD"):
        return f" ±${half:,.2f}" if abs(mean) >= 100 else f" ±${half:,.4f}"
    return " ±" + fmt_value(metric, half)


def fmt_count(share: float, n: int, runs: int | None = None) -> str:
    """A share of runs as a count (``2 of 3``): an interval on a few yes/no runs says little.
    ``runs``, when given, is how many runs the point has: those without a verdict are counted
    as undetermined (``1 of 2, 1 undetermined``; ``3 undetermined``) rather than hidden."""
    undetermined = max(0, runs - n) if runs is not None else 0
    if n == 0 or not math.isfinite(share):
        return f"{undetermined} undetermined" if undetermined else "-"
    text = f"{round(share * n)} of {n}"
    return f"{text}, {undetermined} undetermined" if undetermined else text


UNDETERMINED_NOTE = (
    "undetermined: the run is too short to tell whether the incident's effect outlived it "
    "(each run's metastable_reason says why)"
)
"""The footnote of a table that shows an undetermined metastable verdict."""


def points_table(
    points: pd.DataFrame,
    axes: Sequence[str],
    replications: int,
    metrics: Sequence[str] | None = None,
    *,
    stacked: bool = False,
) -> Table:
    """Mean ± 95% interval half-width of the key metrics, one row per point (``stacked``: the
    half-width on a second line, for narrow terminals)."""
    have = set(points["metric"])
    metrics = [m for m in (metrics or POINT_METRICS) if m in have]
    title = (
        f"Points: mean ±95% CI over {replications} paired replications"
        if replications > 1
        else "Points (one replication: no intervals)"
    )
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for a in axes:
        t.add_column(a, no_wrap=True)
    for m in metrics:
        t.add_column(SHORT_NAMES.get(m, m), justify="right", no_wrap=True)
    if not axes:
        t.add_column("point")
    undetermined = False
    for point_id, g in points.groupby("point_id", sort=False):
        by = g.set_index("metric")
        runs = int(by.loc["requests", "n"]) if "requests" in by.index else None
        cells = [str(_plain(g[a].iloc[0])) for a in axes] or [str(point_id)]
        for m in metrics:
            mean = float(by.loc[m, "mean"])
            if m.endswith(".metastable"):
                # Runs without this incident have no verdict to give: not "undetermined".
                start = m.rsplit(".", 1)[0] + ".start"
                with_incident = int(by.loc[start, "n"]) if start in by.index else runs
                text = (
                    fmt_count(mean, int(by.loc[m, "n"]), with_incident)
                    if with_incident != 0
                    else "-"
                )
                undetermined |= "undetermined" in text
                cells.append(text)
                continue
            half = (float(by.loc[m, "ci_high"]) - float(by.loc[m, "ci_low"])) / 2
            sep = "\n" if stacked else ""
            cells.append(
                fmt_value(m, mean) + sep + fmt_half(m, half, mean).lstrip(" " if stacked else "")
            )
        if axes:
            t.add_row(*cells)
        else:
            t.add_row(*cells[1:], cells[0])
    if undetermined:
        t.caption = UNDETERMINED_NOTE + "; see summary.csv"
        t.caption_justify = "left"
    return t


def print_points(
    console: Console, points: pd.DataFrame, axes: Sequence[str], replications: int
) -> None:
    """Print the points table, stacking each interval under its mean when a terminal is too
    narrow for one line per point."""
    table = points_table(points, axes, replications)
    if console.is_terminal and _natural_width(table) > console.width:
        table = points_table(points, axes, replications, stacked=True)
    print_table(console, table)


def _natural_width(table: Table) -> int:
    """The width a table takes when nothing limits it."""
    wide = Console(file=io.StringIO(), width=1000, no_color=True)
    with wide.capture() as capture:
        wide.print(table)
    return max((len(line.rstrip()) for line in capture.get().splitlines()), default=0)


def differences_table(diffs: pd.DataFrame, others: Sequence[str], title: str) -> Table:
    """Paired differences: base and other means, mean difference with its 95% interval."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for a in others:
        t.add_column(a, no_wrap=True)
    for col, just in (
        ("value", "left"),
        ("metric", "left"),
        ("base", "right"),
        ("value mean", "right"),
        ("difference [95% CI]", "right"),
        ("relative", "right"),
        ("pairs", "right"),
    ):
        t.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    last = None
    undetermined = False
    for _, row in diffs.iterrows():
        m = str(row["metric"])
        group = (*(row[a] for a in others), row.get("value"))
        low, high = row["ci_low"], row["ci_high"]
        interval = f" [{_signed(m, low)}, {_signed(m, high)}]" if math.isfinite(low) else ""
        rel = row["relative"]
        base, value = fmt_value(m, row["base_mean"]), fmt_value(m, row["value_mean"])
        if m.endswith("metastable"):
            # A verdict the runs could not give is not a missing number: say so.
            base, value = (_undetermined(v) for v in (base, value))
            undetermined |= "undetermined" in (base, value) or int(row["pairs"]) == 0
        t.add_row(
            *[str(_plain(row[a])) if group != last else "" for a in others],
            str(row.get("value", "")) if group != last else "",
            SHORT_NAMES.get(m, m),
            base,
            value,
            _signed(m, row["diff"]) + interval,
            f"{rel * 100:+.1f}%" if math.isfinite(rel) else "-",
            str(int(row["pairs"])),
        )
        last = group
    if undetermined:
        t.caption = (
            UNDETERMINED_NOTE + "; a metastable difference pairs only runs with a verdict, and "
            "its interval comes from the two exact binomial intervals"
        )
        t.caption_justify = "left"
    return t


def _undetermined(text: str) -> str:
    return "undetermined" if text == "-" else text


def _signed(metric: str, value: float) -> str:
    """A signed difference; a difference of shares is in percentage points."""
    if not math.isfinite(value):
        return "-"
    if metric_label(metric).unit == "%":
        return f"{value * 100:+.1f} pp"
    text = fmt_value(metric, abs(value))
    return ("-" if value < 0 else "+") + text


def _plain(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
