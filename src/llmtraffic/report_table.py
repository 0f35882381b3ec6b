"""The readable summary tables the CLI prints at the end of a run."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table


def _num(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def money(v: Any) -> str:
    """USD with precision suited to the magnitude."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"${v:,.2f}" if abs(v) >= 100 else f"${v:,.4f}"


def seconds(v: Any) -> str:
    """A duration in s or ms."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def summary_table(s: dict[str, Any], title: str = "Summary") -> Table:
    """The headline metrics of a run."""
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("metric", style="bold")
    t.add_column("value", justify="right")
    t.add_column("metric", style="bold")
    t.add_column("value", justify="right")
    left = [
        ("requests", f"{s['requests']:,}"),
        ("success rate", _num(s["success_rate"], ".2%")),
        ("attempts", f"{s['attempts']:,}"),
        ("attempt amplification", _num(s["attempt_amplification"], ".3f") + "x"),
        ("attempt error rate", _num(s["attempt_error_rate"], ".2%")),
        ("peak attempt rate / mean", _num(s["peak_attempt_rate_ratio"], ".2f") + "x"),
        ("latency p50 / p95", f"{seconds(s['latency_p50'])} / {seconds(s['latency_p95'])}"),
        ("latency p99 / max", f"{seconds(s['latency_p99'])} / {seconds(s['latency_max'])}"),
    ]
    right = [
        ("billed cost", money(s["billed_cost"])),
        ("useful cost", money(s["useful_cost"])),
        ("wasted cost", money(s["wasted_cost"])),
        ("cost amplification", _num(s["cost_amplification"], ".3f") + "x"),
        ("cost vs baseline", _num(s["cost_vs_baseline"], ".3f") + "x"),
        ("cost per success", money(s["cost_per_success"])),
        ("projected per day", money(s["cost_per_day"])),
        ("projected per month", money(s["cost_per_month"])),
    ]
    for (a, b), (c, d) in zip(left, right, strict=True):
        t.add_row(a, b, c, d)
    return t


def features_table(s: dict[str, Any]) -> Table:
    """Per-feature breakdown."""
    t = Table(title="Per feature", title_justify="left", box=None, header_style="bold underline")
    for col in (
        "feature",
        "requests",
        "success",
        "att/req",
        "billed",
        "wasted",
        "cost x",
        "p95 latency",
        "per month",
    ):
        t.add_column(col, justify="left" if col == "feature" else "right", no_wrap=True)
    for name, m in s["features"].items():
        t.add_row(
            name,
            f"{m['requests']:,}",
            _num(m["success_rate"], ".2%"),
            _num(m["attempt_amplification"], ".3f"),
            money(m["billed_cost"]),
            money(m["wasted_cost"]),
            _num(m["cost_amplification"], ".3f"),
            seconds(m["latency_p95"]),
            money(m["cost_per_month"]),
        )
    return t


def incidents_table(s: dict[str, Any]) -> Table:
    """Per-incident success, cost and recovery."""
    t = Table(title="Incidents", title_justify="left", box=None, header_style="bold underline")
    for col in (
        "provider",
        "kind",
        "window",
        "ok before",
        "ok during",
        "att/req",
        "extra cost",
        "recovery",
        "metastable",
    ):
        t.add_column(col, no_wrap=True)
    notes: list[str] = []
    for i, inc in enumerate(s["incidents"]):
        meta = inc["metastable"]
        if meta is None:
            notes.append(f"{len(notes) + 1}. incident {i + 1}: {inc.get('metastable_reason', '?')}")
        t.add_row(
            inc["provider"],
            inc["kind"],
            f"{inc['start']:g}-{inc['end']:g} s",
            _num(inc["success_rate_before"], ".2%"),
            _num(inc["success_rate_during"], ".2%"),
            _num(inc["attempt_amplification_during"], ".2f"),
            money(inc["extra_cost"]),
            seconds(inc["recovery_time"]),
            verdict(meta, len(notes)),
        )
    if notes:
        # The reason is a sentence: a footnote keeps the table one line per incident.
        t.caption = "undetermined: " + "; ".join(notes)
        t.caption_justify = "left"
    return t


def verdict(metastable: bool | None, note: int = 0) -> str:
    """A metastable verdict for a table: yes (in red), no, or undetermined with the number of
    its footnote (the run is too short to tell; the note gives ``metastable_reason``)."""
    if metastable is None:
        return f"undetermined ({note})" if note else "undetermined"
    return "[red]yes[/red]" if metastable else "no"


def print_summary(console: Console, s: dict[str, Any]) -> None:
    """Print every table that has content."""
    console.print(summary_table(s, title=f"Summary: {s.get('scenario', '')} (seed {s['seed']})"))
    if len(s["features"]) > 1:
        console.print(features_table(s))
    if s["incidents"]:
        console.print(incidents_table(s))
    console.print(
        f"[dim]{s['event_count']:,} events in {s['wall_time_s']:.2f} s wall time; "
        f"simulated {s['sim_end_time']:,.0f} s[/dim]"
    )
