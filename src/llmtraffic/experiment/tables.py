"""Terminal tables of experiments: point means with intervals, and paired differences.

Laid out for 80 columns and printed at that width everywhere (``print_table``): a mean's
interval goes under it, metrics that do not fit one table go to the next (each repeats the
point's labels), and a comparison prints one table per group of points. Numbers never wrap
and are never cut; only labels wrap."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from llmtraffic.plots.labels import metric_label
from llmtraffic.report_table import WIDTH, money, money_decimals, print_fixed, unsigned_zero

if TYPE_CHECKING:
    import pandas as pd

SHORT_NAMES = {
    "success_rate": "success",
    "attempt_amplification": "att/req",
    "attempt_error_rate": "att errors",
    "billed_cost": "billed",
    "wasted_cost": "wasted",
    "cost_amplification": "cost x",
    "cost_per_day": "per day",
    "cost_per_month": "per month",
    "latency_p95": "p95 latency",
    "peak_attempt_rate_ratio": "peak/mean",
    "incident.0.extra_cost": "extra cost",
    "incident.0.recovery_time": "recovery",
    "incident.0.metastable": "metastable",
}

POINT_METRICS = (
    "success_rate",
    "attempt_amplification",
    "cost_amplification",
    "billed_cost",
    "cost_per_day",
    "cost_per_month",
    "latency_p95",
    "peak_attempt_rate_ratio",
    "incident.0.extra_cost",
    "incident.0.recovery_time",
    "incident.0.metastable",
)
"""The metrics of an experiment's printed points table, in order: the projections per day and
per month and the first incident's own extra cost are the article's answer (issue 13)."""


def print_table(console: Console, table: RenderableType) -> None:
    """Print a table laid out for 80 columns, at 80 columns on any wider terminal and in a
    pipe alike (``report_table.print_fixed``): the same lines everywhere."""
    print_fixed(console, table)


def fmt_value(metric: str, value: float) -> str:
    """A metric's value as a reader wants it: %, USD, seconds or a plain number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    unit = metric_label(metric).unit
    if unit == "%":
        return f"{value * 100:.1f}%"
    if unit.startswith("USD"):
        return money(value)
    if unit == "s":
        return "inf" if math.isinf(value) else f"{value:.2f} s"
    if math.isinf(value):
        return "inf"
    return unsigned_zero(f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}")


def fmt_half(metric: str, half: float, mean: float = 0.0, decimals: int | None = None) -> str:
    """An interval's half-width in the metric's unit and the precision of its mean (``±0.4%``,
    ``±$12.30``), or of its column when ``decimals`` is given; empty when unknown."""
    if half is None or not math.isfinite(half):
        return ""
    unit = metric_label(metric).unit
    if unit.startswith("USD"):
        # The precision of the mean (whole dollars from $100,000, cents from $100).
        digits = money_decimals(mean) if decimals is None else decimals
        return f" ±${half:,.{digits}f}"
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
) -> Group:
    """Mean of the key metrics with its ±95% interval half-width under it, one row per
    point; the metrics are split over as many tables as 80 columns need, each table
    repeating the point's axis values."""
    have = set(points["metric"])
    metrics = [m for m in (metrics or POINT_METRICS) if m in have]
    labels: list[list[str]] = []
    cells: list[dict[str, str]] = []
    undetermined = False
    # One money format per column: the decimals of its largest mean, whichever point has it.
    decimals = {m: _money_decimals(m, *points.loc[points["metric"] == m, "mean"]) for m in metrics}
    for point_id, g in points.groupby("point_id", sort=False):
        by = g.set_index("metric")
        runs = int(by.loc["requests", "n"]) if "requests" in by.index else None
        labels.append([escape(str(_plain(g[a].iloc[0]))) for a in axes] or [str(point_id)])
        row: dict[str, str] = {}
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
                row[m] = text
                continue
            half = (float(by.loc[m, "ci_high"]) - float(by.loc[m, "ci_low"])) / 2
            interval = fmt_half(m, half, mean, decimals[m]).lstrip(" ")
            row[m] = _row_value(m, mean, decimals[m]) + ("\n" + interval if interval else "")
        cells.append(row)
    heads = list(axes) or ["point"]

    def build(chunk: Sequence[str], title: str) -> Table:
        t = _table(title or None)
        for a in heads:
            # An axis value is a label: it may wrap; a number never does.
            t.add_column(escape(a), max_width=20)
        for m in chunk:
            if m.endswith(".metastable"):
                # "1 of 2, 1 undetermined" on one line; longer counts wrap between words.
                t.add_column(SHORT_NAMES.get(m, m), justify="right", max_width=22)
            else:
                t.add_column(SHORT_NAMES.get(m, m), justify="right", no_wrap=True)
        # A blank line between points only when a point takes two lines (mean, interval).
        stacked = any("\n" in row[m] for row in cells for m in chunk)
        for label, row in zip(labels, cells, strict=True):
            t.add_row(*label, *(row[m] for m in chunk), end_section=stacked)
        return t

    chunks = _fit(metrics, lambda chunk: build(chunk, ""))
    head = (
        f"Points: mean ±95% CI over {replications} paired replications"
        if replications > 1
        else "Points (one replication: no intervals)"
    )
    if len(chunks) > 1:
        head += f"; {len(chunks)} tables, to fit 80 columns"
    # The heading is a line of its own: as a title it would wrap at a narrow table's width.
    parts: list[RenderableType] = [Text(head, style="table.title")]
    for i, chunk in enumerate(chunks):
        parts += [Text("")] if i else []
        parts.append(build(chunk, ""))
    if undetermined:
        parts.append(Text(UNDETERMINED_NOTE + "; see summary.csv"))
    return Group(*parts)


def _table(title: str | None) -> Table:
    """The compact style of these tables: a rule under the header, a blank line between
    sections, two spaces between columns and none at the edges."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
        pad_edge=False,
    )


def _fit(metrics: Sequence[str], build: Any) -> list[list[str]]:
    """Split ``metrics`` into runs, in order, whose table (``build(run)``) fits ``WIDTH``
    columns; a metric too wide even alone gets a table of its own (its labels then wrap)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    for m in metrics:
        if current and _natural_width(build([*current, m])) > WIDTH:
            chunks.append(current)
            current = []
        current.append(m)
    return [*chunks, current] if current or not chunks else chunks


def print_points(
    console: Console, points: pd.DataFrame, axes: Sequence[str], replications: int
) -> None:
    """Print the points tables at 80 columns (``print_table``)."""
    print_table(console, points_table(points, axes, replications))


def _natural_width(table: RenderableType) -> int:
    """The width a table takes when nothing limits it."""
    wide = Console(file=io.StringIO(), width=1000, no_color=True)
    with wide.capture() as capture:
        wide.print(table)
    return max((len(line.rstrip()) for line in capture.get().splitlines()), default=0)


def differences_table(diffs: pd.DataFrame, others: Sequence[str], title: str) -> Group:
    """Paired differences, one table per group (the other axes' values and the compared
    value): base and value means, mean difference, its 95% interval (under it when one line
    would not fit 80 columns), relative difference and pairs."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for _, row in diffs.iterrows():
        key = (*(_plain(row[a]) for a in others), row.get("value", ""))
        groups.setdefault(key, []).append(row)
    undetermined = False
    for rows in groups.values():
        for row in rows:
            if str(row["metric"]).endswith("metastable"):
                means = (fmt_value(str(row["metric"]), row[c]) for c in ("base_mean", "value_mean"))
                undetermined |= "-" in means or int(row["pairs"]) == 0

    def build(key: tuple[Any, ...], rows: list[Any], stacked: bool) -> Table:
        where = ", ".join(f"{a}={v}" for a, v in zip(others, key, strict=False))
        value = str(key[-1])
        name = f"{value} minus the base" if value else "difference from the base"
        t = _table(escape(name + (f" ({where})" if where else "")))
        # A long column name folds onto a second line rather than being cut.
        t.add_column("metric", max_width=16, overflow="fold")
        t.add_column("base", justify="right", no_wrap=True)
        t.add_column(escape(value) or "value", justify="right", max_width=14)
        t.add_column("difference", justify="right", no_wrap=True)
        # One replication gives no interval: no empty column.
        with_ci = any(math.isfinite(row["ci_low"]) for row in rows)
        if with_ci:
            t.add_column("95% CI", justify="right", no_wrap=True)
        t.add_column("relative", justify="right", no_wrap=True)
        t.add_column("pairs", justify="right", no_wrap=True)
        for row in rows:
            m = str(row["metric"])
            low, high = row["ci_low"], row["ci_high"]
            dec = _money_decimals(m, row["base_mean"], row["value_mean"])
            if not math.isfinite(low):
                interval = ""
            elif stacked:
                interval = f"{_signed(m, low, dec)} to\n{_signed(m, high, dec)}"
            else:
                interval = f"[{_signed(m, low, dec)}, {_signed(m, high, dec)}]"
            rel = row["relative"]
            base = _row_value(m, row["base_mean"], dec)
            val = _row_value(m, row["value_mean"], dec)
            if m.endswith("metastable"):
                # A verdict the runs could not give is not a missing number: say so.
                base, val = (_undetermined(v) for v in (base, val))
            t.add_row(
                SHORT_NAMES.get(m, escape(m)),
                base,
                val,
                _signed(m, row["diff"], dec),
                *([interval] if with_ci else []),
                unsigned_zero(f"{rel * 100:+.1f}%") if math.isfinite(rel) else "-",
                str(int(row["pairs"])),
            )
        return t

    # One line per metric when every group's table fits 80 columns; else every interval goes
    # under its difference (the same layout for all groups).
    stacked = any(_natural_width(build(key, rows, False)) > WIDTH for key, rows in groups.items())
    parts: list[RenderableType] = [Text(title, style="table.title")]
    for key, rows in groups.items():
        parts += [Text(""), build(key, rows, stacked)]
    if undetermined:
        parts.append(
            Text(
                UNDETERMINED_NOTE + "; a metastable difference pairs only runs with a verdict, "
                "and its interval comes from the two exact binomial intervals"
            )
        )
    return Group(*parts)


def _undetermined(text: str) -> str:
    return "undetermined" if text == "-" else text


def _signed(metric: str, value: float, decimals: int | None = None) -> str:
    """A signed difference; a difference of shares is in percentage points; money with
    ``decimals`` when given (those of its row)."""
    if not math.isfinite(value):
        return "-"
    if metric_label(metric).unit == "%":
        return unsigned_zero(f"{value * 100:+.1f} pp")
    text = _row_value(metric, abs(value), decimals)
    return unsigned_zero(("-" if value < 0 else "+") + text)


def _money_decimals(metric: str, *values: float) -> int | None:
    """One number of decimals for a row of money (its base, value, difference, interval):
    those of its largest value, so that ``$3,180.35`` never stands beside ``+$7.0428``. None
    for a metric that is not money."""
    if not metric_label(metric).unit.startswith("USD"):
        return None
    return money_decimals(*values)


def _row_value(metric: str, value: float, decimals: int | None) -> str:
    """``fmt_value``, with a row's money decimals when given."""
    if decimals is None or not math.isfinite(value):
        return fmt_value(metric, value)
    return unsigned_zero(("-" if value < 0 else "") + f"${abs(value):,.{decimals}f}")


def _plain(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
