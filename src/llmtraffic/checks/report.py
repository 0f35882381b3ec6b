"""Showing check results: a table for people, JUnit XML for CI systems, baselines on disk."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.markup import escape
from rich.table import Table

from llmtraffic.checks.evaluate import Baseline, CheckResult
from llmtraffic.errors import LLMTrafficError, OutputError
from llmtraffic.experiment.analysis import metric_columns, point_stats
from llmtraffic.results.jsonio import read_json, write_json

if TYPE_CHECKING:
    import pandas as pd


def results_table(results: Sequence[CheckResult], title: str) -> Table:
    """One row per check and point: result; the check, where and the note; the metric and
    its bound; the measured mean with its 95% CI under it. Laid out for 80 columns: every
    text column has a maximum width, so the table is no wider on a wider console or in a
    CI log, and numbers never wrap."""
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
        pad_edge=False,
    )
    table.add_column("result", no_wrap=True)
    table.add_column("check, where (note)", max_width=26)
    table.add_column("metric, needs", max_width=24)
    table.add_column("measured (95% CI)", justify="right", no_wrap=True)
    for r in sorted(results, key=lambda r: r.passed):
        check = escape(r.check.label) + f"\n[dim]{escape(r.where)}[/dim]"
        if r.note:
            check += f"\n[italic]{escape(r.note)}[/italic]"
        table.add_row(
            "[green]pass[/green]" if r.passed else "[bold red]FAIL[/bold red]",
            check,
            escape(r.column) + "\n" + escape(f"needs {r.bound}"),
            # The interval under the mean: "0.58 (0.57 to 0.59)" on two lines.
            escape(r.measured).replace(" (", "\n(", 1),
            end_section=True,
        )
    return table


def junit_xml(results: Sequence[CheckResult], suite: str, path: Path) -> None:
    """Write JUnit XML: one testcase per check and point, with a failure element when failed."""
    failures = sum(not r.passed for r in results)
    root = ET.Element(
        "testsuites", name="llmtraffic", tests=str(len(results)), failures=str(failures)
    )
    ts = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        skipped="0",
        timestamp=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    for r in results:
        case = ET.SubElement(
            ts, "testcase", classname=f"{suite}.{r.check.label}", name=f"{r.where}: {r.column}"
        )
        if not r.passed:
            fail = ET.SubElement(case, "failure", message=r.message(), type="CheckFailed")
            fail.text = (
                f"{r.column} per replication: {', '.join(f'{v:.6g}' for v in r.values)}\n"
                f"mean {r.measured}; needs {r.bound}"
            )
        else:
            out = ET.SubElement(case, "system-out")
            out.text = r.message()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise OutputError(f"cannot write the JUnit report {path}: {exc.strerror}") from None


def save_baseline(summary: pd.DataFrame, axes: Sequence[str], name: str, path: Path) -> None:
    """Write every metric's mean per point, for later ``--baseline`` comparisons."""
    stats = point_stats(summary, axes)
    points: dict[str, dict[str, float]] = {}
    for row in stats.itertuples():
        points.setdefault(str(row.point_id), {})[str(row.metric)] = float(row.mean)
    data = {
        "kind": "llmtraffic-baseline",
        "experiment": name,
        "saved_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "metrics": metric_columns(summary, axes),
        "points": points,
    }
    try:
        write_json(path, data)
    except OSError as exc:
        raise OutputError(f"cannot write the baseline {path}: {exc.strerror}") from None


def load_baseline(path: Path) -> Baseline:
    """Read a baseline written by ``save_baseline``."""
    try:
        data: Any = read_json(path)
    except FileNotFoundError:
        raise LLMTrafficError(
            f"baseline {path} not found (write one with --save-baseline)"
        ) from None
    except ValueError:
        raise LLMTrafficError(
            f"baseline {path} is not valid JSON (truncated or corrupted); save it again with "
            "llmtraffic check FILE --save-baseline FILE"
        ) from None
    except OSError as exc:
        raise LLMTrafficError(f"cannot read the baseline {path}: {exc.strerror}") from None
    if not isinstance(data, dict) or data.get("kind") != "llmtraffic-baseline":
        raise LLMTrafficError(
            f"{path} is not an llmtraffic baseline (write one with llmtraffic check "
            "--save-baseline FILE)"
        )
    return {
        str(pid): {k: float(v) if v is not None else float("nan") for k, v in metrics.items()}
        for pid, metrics in data["points"].items()
    }
