"""One self-contained HTML page of a results folder: its tables and its plots (as base64 PNGs),
so that it can be mailed or attached to a CI run as a single file."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from llmtraffic.errors import LLMTrafficError, OutputError
from llmtraffic.experiment.store import ExperimentData, is_experiment_folder
from llmtraffic.experiment.tables import POINT_METRICS, SHORT_NAMES, fmt_count, fmt_value
from llmtraffic.plots.experiment import comparison, resolve_metrics
from llmtraffic.plots.labels import metric_label
from llmtraffic.plots.run import check_tables, cost_breakdown, latency_cdf, timeline
from llmtraffic.results.load import RunData, load
from llmtraffic.wording import counted

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2em auto;
       max-width: 1400px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f6f6f6; } td.l, th.l { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.meta { color: #666; font-size: 0.9em; } .bad { color: #b2182b; }
td { white-space: nowrap; } .ci { color: #777; font-size: 0.85em; }
pre { background: #f8f8f8; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""

RUN_METRICS = (
    "requests",
    "success_rate",
    "attempts",
    "attempt_amplification",
    "attempt_error_rate",
    "billed_cost",
    "useful_cost",
    "wasted_cost",
    "cost_amplification",
    "cost_vs_baseline",
    "cost_per_month",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "peak_attempt_rate_ratio",
)


def write_report(
    folder: Path,
    out: Path | None = None,
    *,
    point: str | int = 0,
    replication: int = 0,
    metrics: Sequence[str] | None = None,
) -> Path:
    """Write ``report.html`` (or ``out``) for a run or an experiment folder; return its path.

    ``point`` and ``replication`` pick the experiment's run shown in full; one the experiment
    does not have is refused (``LLMTrafficError`` listing those it has) before anything is
    written. ``out`` must be a file path (``OutputError`` otherwise).
    """
    path = out if out is not None else folder / "report.html"
    check_report_path(path)
    if is_experiment_folder(folder):
        from llmtraffic.experiment.commands import open_experiment

        data = open_experiment(folder)
        check_run_choice(data, point, replication)
        body = experiment_body(data, point, replication, metrics)
        title = f"Experiment {data.name}"
    else:
        run = load(folder)
        check_tables(run)
        body = run_body(run)
        title = f"Run {run.summary.get('scenario', folder.name)}"
    page = (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{STYLE}</style></head><body>\n<h1>{_e(title)}</h1>\n{body}\n</body></html>\n"
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Through a temporary name, so that a failed write leaves no half page.
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write the report {path}: {exc.strerror}") from None
    return path


def check_report_path(path: Path) -> None:
    """Refuse an ``out`` that is a folder: the report is one HTML file."""
    if path.is_dir():
        raise OutputError(
            f"{path} is a folder, but the report is one HTML file; give a file path such as "
            f"{path / 'report.html'} (or leave --out out for FOLDER/report.html)"
        )


def check_run_choice(data: ExperimentData, point: str | int, replication: int) -> None:
    """Refuse a ``--point`` or ``--rep`` the experiment does not have, listing those it has."""
    try:
        data._point_id(point)  # the lookup data.run uses
    except LLMTrafficError as exc:
        raise LLMTrafficError(f"--point {point}: {exc}") from None
    reps = int(data.spec.get("replications", 1))
    if not 0 <= replication < reps:
        raise LLMTrafficError(
            f"--rep {replication}: {data.folder} has replications 0 to {reps - 1}"
        )


def _e(text: Any) -> str:
    return html.escape(str(text))


def _img(fig: Figure, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1, escaped: bool = False
) -> str:
    """An HTML table; the first ``left`` columns are left-aligned. ``escaped``: the cells are
    HTML already."""
    head = "".join(
        f"<th class='l'>{_e(h)}</th>" if i < left else f"<th>{_e(h)}</th>"
        for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='l'>{c if escaped else _e(c)}</td>"
            if i < left
            else f"<td>{c if escaped else _e(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def run_body(run: RunData, heading: str = "h2") -> str:
    """The sections of one run: metrics, features, incidents, plots."""
    from llmtraffic.experiment.analysis import flatten_summary

    s = run.summary
    flat = flatten_summary(s)
    m = run.manifest
    parts = [
        f"<p class='meta'>{_e(run.folder)} &middot; seed {_e(s.get('seed'))} &middot; "
        f"version {_e(s.get('version'))} &middot; git {_e(m.get('git_revision') or '-')} &middot; "
        f"{_e(m.get('started_utc', ''))} &middot; {float(s.get('wall_time_s', 0)):.2f} s wall</p>",
        f"<{heading}>Metrics</{heading}>",
        _table(
            ["metric", "value"],
            [(metric_label(k).title, fmt_value(k, flat[k])) for k in RUN_METRICS if k in flat],
        ),
    ]
    feats = s.get("features", {})
    if len(feats) > 1:
        cols = (
            "requests",
            "success_rate",
            "attempt_amplification",
            "billed_cost",
            "wasted_cost",
            "cost_amplification",
            "latency_p95",
            "cost_per_month",
        )
        parts += [
            f"<{heading}>Per feature</{heading}>",
            _table(
                ["feature", *(SHORT_NAMES.get(c, c) for c in cols)],
                [(n, *(fmt_value(c, _num(f[c])) for c in cols)) for n, f in feats.items()],
            ),
        ]
    if s.get("incidents"):
        notes = [
            (i + 1, str(inc.get("metastable_reason", "")))
            for i, inc in enumerate(s["incidents"])
            if inc["metastable"] is None
        ]
        marks = {i: k + 1 for k, (i, _) in enumerate(notes)}
        parts += [
            f"<{heading}>Incidents</{heading}>",
            _table(
                [
                    "provider",
                    "kind",
                    "window",
                    "ok before",
                    "ok during",
                    "att/req during",
                    "extra cost",
                    "recovery",
                    "metastable",
                ],
                [
                    (
                        i["provider"],
                        i["kind"],
                        f"{i['start']:g}-{i['end']:g} s",
                        fmt_value("success_rate", _num(i["success_rate_before"])),
                        fmt_value("success_rate", _num(i["success_rate_during"])),
                        fmt_value("attempt_amplification", _num(i["attempt_amplification_during"])),
                        fmt_value("billed_cost", _num(i["extra_cost"])),
                        fmt_value("latency_p50", _num(i["recovery_time"])),
                        _verdict(i["metastable"], marks.get(n + 1)),
                    )
                    for n, i in enumerate(s["incidents"])
                ],
                left=2,
            ),
        ]
        if notes:
            parts.append(
                "<p class='meta'>"
                + "<br>".join(
                    f"({marks[i]}) undetermined after incident {i}: {_e(reason)}"
                    for i, reason in notes
                )
                + "</p>"
            )
    parts.append(f"<{heading}>Plots</{heading}>")
    if "timeseries" in m.get("tables", []):
        parts.append(_img(timeline(run), "timeline"))
    parts.append(_img(cost_breakdown(run), "cost breakdown"))
    cdf = latency_cdf(run)
    if cdf is not None:
        parts.append(_img(cdf, "latency CDF"))
    return "\n".join(parts)


def _undetermined_notes(data: ExperimentData, shown: Sequence[str]) -> list[str]:
    """Why the metastable verdicts shown are undetermined: each distinct metastable_reason,
    with the points and how many of their runs give it."""
    summary = data.summary
    lines = []
    for column in shown:
        if not column.endswith(".metastable") or column not in summary:
            continue
        reason_col = column + "_reason"
        undecided = summary[summary[column].isna()]
        if undecided.empty or reason_col not in summary:
            continue
        for reason, g in undecided.groupby(reason_col, sort=False):
            where = ", ".join(
                f"{pid} ({len(runs)} run{'s' if len(runs) != 1 else ''})"
                for pid, runs in g.groupby("point_id", sort=False)
            )
            lines.append(f"{_e(column)} undetermined in {_e(where)}: {_e(reason)}")
    return ["<p class='meta'>" + "<br>".join(lines) + "</p>"] if lines else []


def _verdict(metastable: bool | None, note: int | None) -> str:
    """yes, no, or "undetermined (k)" pointing at footnote k (the run is too short to tell)."""
    if metastable is None:
        return f"undetermined ({note})" if note else "undetermined"
    return "yes" if metastable else "no"


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def experiment_body(
    data: ExperimentData, point: str | int, replication: int, metrics: Sequence[str] | None
) -> str:
    """The sections of an experiment: setup, points table, failures, comparison, one run."""
    spec, m = data.spec, data.manifest
    axes = (
        "".join(
            f"<li><code>{_e(a['path'])}</code> ({_e(a['name'])}): {_e(', '.join(a['labels']))}</li>"
            for a in spec["axes"]
        )
        or "<li>no sweep: replications of one scenario</li>"
    )
    parts = [
        f"<p class='meta'>{_e(data.folder)} &middot; status {_e(m.get('status', '?'))} &middot; "
        f"{_e(m.get('runs_total', '?'))} runs ({_e(m.get('runs_failed', 0))} failed) &middot; "
        f"{_e(m.get('executor', ''))} &middot; version {_e(m.get('version', ''))} &middot; "
        f"git {_e(m.get('git_revision') or '-')} &middot; {_e(m.get('started_utc', ''))}</p>",
        f"<h2>Setup</h2><ul>{axes}</ul><p>{counted(len(spec['points']), 'point')} &times; "
        f"{counted(spec['replications'], 'replication')} (seeds {_e(spec['seeds'])}; every "
        "point uses the "
        "same seeds, so differences between points are paired).</p>",
    ]
    pts = data.points
    if metrics:  # labels as the tables show them (success, per month) mean their columns
        metrics = resolve_metrics(metrics, list(dict.fromkeys(pts["metric"])), data)
    if len(pts):
        shown = [x for x in (metrics or POINT_METRICS) if x in set(pts["metric"])]
        rows = []
        for pid, g in pts.groupby("point_id", sort=False):
            by = g.set_index("metric")
            runs = int(by.loc["requests", "n"]) if "requests" in by.index else None
            cells = [_e(g[a].iloc[0]) for a in data.axes] or [_e(pid)]
            for x in shown:
                if x.endswith(".metastable"):
                    share, n = float(by.loc[x, "mean"]), int(by.loc[x, "n"])
                    cells.append(_e(fmt_count(share, n, runs)))
                    continue
                low, high = float(by.loc[x, "ci_low"]), float(by.loc[x, "ci_high"])
                ci = f"[{fmt_value(x, low)}, {fmt_value(x, high)}]" if math.isfinite(low) else ""
                mean = fmt_value(x, float(by.loc[x, "mean"]))
                cells.append(f"{_e(mean)}<br><span class='ci'>{_e(ci)}</span>")
            rows.append(cells)
        parts += [
            "<h2>Points: mean [95% confidence interval]</h2>",
            _table(
                [*(data.axes or ["point"]), *(SHORT_NAMES.get(x, x) for x in shown)],
                rows,
                left=max(1, len(data.axes)),
                escaped=True,
            ),
        ]
        parts += _undetermined_notes(data, shown)
        parts += [
            "<h2>Comparison</h2>",
            _img(comparison(data, metrics), "comparison"),
        ]
    failures = data.failures()
    if failures:
        parts.append("<h2 class='bad'>Failed runs</h2>")
        for key, text in failures.items():
            parts.append(f"<h3>{_e(key)}</h3><pre>{_e(text)}</pre>")
    try:
        run = data.run(point, replication)
    except Exception as exc:  # the chosen run may have failed: the page still says so
        parts.append(f"<p class='bad'>no run to show: {_e(exc)}</p>")
    else:
        point_id = run.folder.parent.name if run.folder is not None else str(point)
        parts.append(f"<h2>One run: {_e(point_id)} replication {replication}</h2>")
        parts.append(run_body(run, heading="h3"))
    return "\n".join(parts)
