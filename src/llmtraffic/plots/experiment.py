"""Plots of an experiment: metrics per grid point with 95% confidence bands."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from llmtraffic.errors import LLMTrafficError
from llmtraffic.experiment.store import ExperimentData
from llmtraffic.plots.labels import MetricLabel, metric_label
from llmtraffic.plots.run import check_tables, plot_folder, save_figure, save_run_plots
from llmtraffic.plots.ticks import money_axis

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_METRICS = (
    "success_rate",
    "attempt_amplification",
    "cost_amplification",
    "cost_per_month",
    "latency_p95",
    "peak_attempt_rate_ratio",
)
INCIDENT_METRICS = ("incident.0.recovery_time", "incident.0.metastable")
COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def default_metrics(data: ExperimentData) -> list[str]:
    """The metrics a comparison shows by default (incident recovery too, when there is one)."""
    have = set(data.points["metric"])
    return [m for m in (*DEFAULT_METRICS, *INCIDENT_METRICS) if m in have]


def _pick_x(data: ExperimentData, x: str | None) -> str | None:
    """The axis on the x axis: the one asked for, else the first numeric axis with several
    values, else the first axis with several values."""
    if x is not None:
        return str(data.axis_info(x)["name"])
    infos = [data.axis_info(a) for a in data.axes]
    several = [a for a in infos if len(a["values"]) > 1]
    numeric = [a for a in several if all(_is_number(v) for v in a["values"])]
    chosen = numeric or several or infos
    return str(chosen[0]["name"]) if chosen else None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def comparison(
    data: ExperimentData, metrics: Sequence[str] | None = None, x: str | None = None
) -> Figure:
    """One panel per metric: its mean per grid point with a 95% confidence band (a line per
    value of the other axes over a numeric ``x`` axis; grouped bars with error bars over a
    categorical one).

    A point where the metric is undefined in every run is marked ``n/a`` (with the reason in
    the panel's title); a default metric undefined everywhere gets no panel (the figure says
    which were left out), while one asked for by name keeps its panel, saying why it is empty.
    """
    pts = data.points
    if pts.empty:
        raise LLMTrafficError(f"{data.folder}: no finished runs to plot")
    asked = bool(metrics)
    metrics = (
        resolve_metrics(metrics, list(dict.fromkeys(pts["metric"])), data)
        if metrics
        else (default_metrics(data))
    )
    left_out: list[str] = []
    if not asked:
        defined = [m for m in metrics if _defined(pts[pts["metric"] == m]).any()]
        left_out = [m for m in metrics if m not in defined]
        metrics = defined or metrics
    x_axis = _pick_x(data, x)
    others = [a for a in data.axes if a != x_axis]
    ncols = 2 if len(metrics) <= 4 else 3
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(5.2 * ncols, 3.9 * nrows + 0.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[len(metrics) :]:
        fig.delaxes(ax)  # an unused grid cell is no panel at all, not a blank one
    numeric = x_axis is not None and all(_is_number(v) for v in data.axis_info(x_axis)["values"])
    handles: dict[str, Any] = {}
    for ax, metric in zip(axes, metrics, strict=False):
        sub = pts[pts["metric"] == metric]
        if numeric and x_axis is not None:
            _lines(ax, sub, x_axis, others, handles)
        else:
            _bars(ax, sub, x_axis, others, handles)
        lab = metric_label(metric)
        title = lab.title
        if not _defined(sub).all():
            title += f"\nn/a: {na_reason(metric, pts, sub)}"
        if not _defined(sub).any():
            ax.text(
                0.5,
                0.5,
                f"n/a at every point\n({na_reason(metric, pts, sub)})",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=12,
                color="#555555",
            )
        elif metric.endswith(".metastable"):
            ax.set_ylim(-3.0, 103.0)  # a share of runs: the whole range reads at a glance
        elif lab.share:
            low, high = ax.get_ylim()
            ax.set_ylim(max(low, -3.0), min(high, 103.0))
        ax.set_title(title, loc="left", fontsize=11)
        if lab.unit.startswith("USD"):
            money_axis(ax.yaxis)
            ax.set_ylabel(lab.unit.replace("USD / ", "per ").replace("USD", "cost"))
        else:
            ax.set_ylabel(lab.unit or metric)
        ax.grid(alpha=0.3)
        if x_axis is not None:
            ax.set_xlabel(_axis_label(data, x_axis))
        if numeric:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _compact(v)))
    reps = data.spec.get("replications", 1)
    dropped = (
        "\nnot shown, undefined in every run: "
        + ", ".join(metric_label(m).title.lower() for m in left_out)
        if left_out
        else ""
    )
    fig.suptitle(
        f"{data.name}: mean per grid point, 95% confidence interval over {reps} paired "
        f"replication{'s' if reps != 1 else ''}{dropped}",
        fontsize=13,
    )
    if len(handles) > 1 or others:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncol=_legend_columns(list(handles), fig.get_figwidth()),
            fontsize=10,
            title=", ".join(others) if others else None,
        )
    return fig


def resolve_metrics(names: Sequence[str], have: list[str], data: ExperimentData) -> list[str]:
    """The metrics ``names`` mean: column names or the labels tables and plots show
    (``success``, ``per month``); ``LLMTrafficError`` naming a name that fits none or several,
    with the closest metrics."""
    from llmtraffic.experiment.tables import SHORT_NAMES
    from llmtraffic.plots.labels import resolve_metric

    out = []
    for name in names:
        match = resolve_metric(name, have, SHORT_NAMES)
        if match.column is not None:
            out.append(match.column)
            continue
        hint = (
            f"it fits several: {', '.join(match.several)}"
            if match.several
            else f"did you mean {', '.join(match.close)}?"
            if match.close
            else "give a column of summary.csv or a table's label (success, per month, att/req)"
        )
        raise LLMTrafficError(f"--metric {name}: no such metric in {data.folder}; {hint}")
    return list(dict.fromkeys(out))


NA_REASONS = {
    "recovery_time": "never recovered",
    "metastable": "run too short to tell",
}
"""Why a metric can be undefined in a run, by its last name part (others: "undefined")."""


def na_reason(metric: str, pts: pd.DataFrame | None = None, sub: pd.DataFrame | None = None) -> str:
    """Why a point shows ``n/a`` for ``metric``: in words a reader of the plot can act on.
    An incident metric is n/a where the point has no such incident (a sweep with incidents =
    none): said so, rather than "never recovered" (``pts``: every metric's point means;
    ``sub``: this metric's)."""
    parts = metric.split(".")
    if pts is not None and sub is not None and parts[0] == "incident" and len(parts) == 3:
        missing = set(sub.loc[~_defined(sub), "point_id"])
        start = pts[(pts["metric"] == f"incident.{parts[1]}.start") & (pts["n"] > 0)]
        # A point without the incident has no start row, or one that counts no run.
        if missing and len(start) and not missing & set(start["point_id"]):
            return f"no incident {int(parts[1]) + 1} at these points"
    return NA_REASONS.get(parts[-1], "undefined in these runs")


def _defined(sub: pd.DataFrame) -> np.ndarray:
    """Per row of a metric's points: True where the mean is a finite number."""
    finite: np.ndarray = np.isfinite(sub["mean"].to_numpy(dtype=float))
    return finite


def _legend_columns(labels: list[str], width_in: float) -> int:
    """As many legend columns as fit across the figure (about 15 characters per inch at 10
    points, plus the marker), at most 4."""
    per_entry = max(len(label) for label in labels) + 6
    return max(1, min(len(labels), 4, int(width_in * 15) // per_entry))


def _axis_label(data: ExperimentData, name: str) -> str:
    path = str(data.axis_info(name)["path"])
    return name if path == name else f"{name}  ({path})"


def _groups(sub: pd.DataFrame, others: list[str]) -> list[tuple[str, pd.DataFrame]]:
    if not others:
        return [("all points", sub)]
    out = []
    for key, g in sub.groupby(others, sort=False):
        keys = key if isinstance(key, tuple) else (key,)
        # The legend's title names the axes; a single axis needs only its values.
        label = (
            _fmt(keys[0])
            if len(others) == 1
            else ", ".join(f"{a}={_fmt(v)}" for a, v in zip(others, keys, strict=True))
        )
        out.append((label, g))
    return out


def _compact(v: float) -> str:
    """300000 -> 300k, 2000000 -> 2M, 0.05 -> 0.05."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{v / size:g}{suffix}"
    return f"{v:g}"


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def _lines(
    ax: Any, sub: pd.DataFrame, x_axis: str, others: list[str], handles: dict[str, Any]
) -> None:
    lab = metric_label(str(sub["metric"].iloc[0]))
    for i, (label, g) in enumerate(_groups(sub, others)):
        g = g.sort_values(x_axis)
        xs = g[x_axis].to_numpy(dtype=float)
        colour = COLOURS[i % len(COLOURS)]
        means = g["mean"].to_numpy(dtype=float) * lab.scale
        (line,) = ax.plot(xs, means, marker="o", ms=4, lw=1.6, color=colour)
        for x_pos in xs[~np.isfinite(means)]:  # a gap in the line says why
            _mark_na(ax, float(x_pos), colour=colour)
        low, high = _clip(
            g["ci_low"].to_numpy(dtype=float) * lab.scale,
            g["ci_high"].to_numpy(dtype=float) * lab.scale,
            lab,
        )
        if np.isfinite(low).any():
            ax.fill_between(xs, low, high, color=colour, alpha=0.18, lw=0)
        handles.setdefault(label, line)


def _mark_na(ax: Any, x: float, *, upright: bool = False, colour: str = "#444444") -> None:
    """An ``n/a`` at the foot of the panel over ``x``: this point has no value to draw."""
    ax.text(
        x,
        0.02,
        "n/a",
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="bottom",
        fontsize=9,
        fontweight="bold",
        color=colour,
        rotation=90 if upright else 0,
    )


def _clip(low: np.ndarray, high: np.ndarray, lab: MetricLabel) -> tuple[np.ndarray, np.ndarray]:
    """An interval cut to the values the metric can take: a t interval on few, spread-out
    values reaches past them (a share below 0% or above 100%, a negative cost)."""
    if lab.share:
        return np.clip(low, 0, 100), np.clip(high, 0, 100)
    if not lab.signed:
        return np.clip(low, 0, None), high
    return low, high


def _bars(
    ax: Any, sub: pd.DataFrame, x_axis: str | None, others: list[str], handles: dict[str, Any]
) -> None:
    lab = metric_label(str(sub["metric"].iloc[0]))
    cats = list(dict.fromkeys(sub[x_axis])) if x_axis is not None else ["all"]
    groups = _groups(sub, others)
    width = 0.8 / max(1, len(groups))
    for i, (label, g) in enumerate(groups):
        rows = [g[g[x_axis] == c] if x_axis is not None else g for c in cats]
        means = np.array([r["mean"].iloc[0] if len(r) else np.nan for r in rows]) * lab.scale
        means = np.where(np.isfinite(means), means, np.nan)  # an infinite bar draws nothing
        low = np.array([r["ci_low"].iloc[0] if len(r) else np.nan for r in rows]) * lab.scale
        high = np.array([r["ci_high"].iloc[0] if len(r) else np.nan for r in rows]) * lab.scale
        low, high = _clip(low, high, lab)
        err = np.vstack([means - low, high - means])
        err = np.clip(np.where(np.isfinite(err), err, 0.0), 0.0, None)
        pos = np.arange(len(cats)) - 0.4 + width * (i + 0.5)
        bars = ax.bar(
            pos,
            means,
            width * 0.92,
            yerr=err,
            capsize=3,
            color=COLOURS[i % len(COLOURS)],
            ecolor="black",
            lw=0,
        )
        handles.setdefault(label, bars)
        for x_pos, mean in zip(pos, means, strict=True):
            if not np.isfinite(mean):  # say so, rather than draw nothing
                _mark_na(ax, float(x_pos), upright=len(groups) > 4)
    ax.set_xticks(np.arange(len(cats)), [_fmt(c) for c in cats])
    # Every category in view, an n/a one included (autoscaling saw no bar there).
    ax.set_xlim(-0.5, len(cats) - 0.5)
    if len(cats) > 4:
        ax.tick_params(axis="x", labelrotation=20)


def save_experiment_plots(
    data: ExperimentData,
    out: Path,
    *,
    metrics: Sequence[str] | None = None,
    x: str | None = None,
    point: str | int | None = 0,
    replication: int = 0,
) -> list[Path]:
    """Write comparison.png and the per-run plots of one run (``point``, ``replication``;
    None for none) as ``<point-id>-rep-<r>-timeline.png`` and so on."""
    run = data.run(point, replication) if point is not None else None
    if run is not None:
        check_tables(run)
    figure = comparison(data, metrics, x)
    plot_folder(out)
    paths = [save_figure(figure, out / "comparison.png")]
    if run is not None:
        point_id = run.folder.parent.name if run.folder is not None else str(point)
        prefix = f"{point_id}-rep-{replication}-"
        paths += save_run_plots(run, out, prefix=prefix)
    return paths
