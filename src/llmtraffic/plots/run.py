"""Plots of one run, from its saved results: a timeline, the cost breakdown, latency CDFs.

Figures are built with matplotlib's object API (``Figure``, no pyplot), so nothing here
touches the global backend: the PNGs render with Agg, and a notebook shows the figures
inline.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from llmtraffic.errors import LLMTrafficError, OutputError
from llmtraffic.plots.labels import status_label
from llmtraffic.plots.ticks import money_axis
from llmtraffic.results.load import RunData

FAILURE_COLOURS = {
    "rate_limited": "#e6a817",
    "server_error": "#d62728",
    "overloaded": "#9467bd",
    "timeout": "#8c564b",
    "midstream_error": "#e377c2",
    "quota_exhausted": "#17becf",
    "context_length_exceeded": "#7f7f7f",
}
INCIDENT_COLOUR = "#969696"
BREAKER_COLOUR = "#b2182b"


_OUTSIDE: dict[str, Any] = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 9}
"""Legends beside the panels, where they hide no data."""


def usd(value: float) -> str:
    """USD for a plot text: the dollar sign escaped, since matplotlib reads $...$ as maths."""
    return f"\\${value:,.2f}" if abs(value) >= 100 else f"\\${value:,.4f}"


def describe_run(run: RunData) -> str:
    """What a figure of one run shows, for its title: the scenario, and for a run of an
    experiment its point id and axis values (``outage-storm p004: incidents=capacity-drop,
    policy=naive``), the policy of each feature unless an axis already names it, the
    replication and the seed. Two runs of one experiment never get the same title."""
    s = run.summary
    name = str(s.get("scenario") or Path(str(getattr(run, "folder", "run"))).name)
    point = _experiment_point(run)
    parts = []
    axis_paths: list[str] = []
    if point is not None:
        values = point.get("values", {})
        axis_paths = [str(p) for p in point.get("_axis_paths", [])]
        short = str(point["id"]).split("-", 1)[0]
        name += f" {short}" + (
            ": " + ", ".join(f"{k}={v}" for k, v in values.items()) if values else ""
        )
    if not any(re.fullmatch(r"features\.[^.]+\.policy|policies(\..*)?", p) for p in axis_paths):
        policies = _policies(run)
        if policies:
            parts.append(policies)
    if point is not None:
        parts.append(f"replication {point['_replication']}")
    parts.append(f"seed {s.get('seed')}")
    return f"{name} ({', '.join(parts)})"


def _policies(run: RunData) -> str:
    """``policy naive`` when every feature has one policy, else ``policies chat=a, rag=b``."""
    features = run.config.get("features", {}) if isinstance(run.config, dict) else {}
    by_feature = {
        str(f): str(c["policy"])
        for f, c in features.items()
        if isinstance(c, dict) and c.get("policy")
    }
    if not by_feature:
        return ""
    if len(set(by_feature.values())) == 1:
        return f"policy {next(iter(by_feature.values()))}"
    return "policies " + ", ".join(f"{f}={p}" for f, p in by_feature.items())


def _experiment_point(run: RunData) -> dict[str, Any] | None:
    """The point of experiment.json a run folder belongs to (``<experiment>/runs/<point
    id>/rep-<r>``), with ``_replication`` and ``_axis_paths`` added; None for a lone run or
    when experiment.json cannot be read (the title then just has less to say)."""
    folder = getattr(run, "folder", None)
    if folder is None:
        return None
    folder = Path(folder)
    m = re.fullmatch(r"rep-(\d+)", folder.name)
    spec_file = folder.parent.parent.parent / "experiment.json"
    if m is None or folder.parent.parent.name != "runs" or not spec_file.is_file():
        return None
    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
        for p in spec["points"]:
            if p["id"] == folder.parent.name:
                paths = [a["path"] for a in spec.get("axes", [])]
                return {**p, "_replication": int(m.group(1)), "_axis_paths": paths}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def _time_axis(end: float) -> tuple[float, str]:
    """Divisor and axis label for times up to ``end`` seconds."""
    if end <= 2 * 3600:
        return 60.0, "time since start (min)"
    if end <= 3 * 86400:
        return 3600.0, "time since start (h)"
    return 86400.0, "time since start (days)"


def _shade_incidents(axes: list[Any], incidents: list[dict[str, Any]], unit: float) -> None:
    for k, ax in enumerate(axes):
        for inc in incidents:
            ax.axvspan(
                inc["start"] / unit,
                inc["end"] / unit,
                color=INCIDENT_COLOUR,
                alpha=0.22,
                lw=0,
                label="incident" if k == 0 and inc is incidents[0] else None,
            )


HEADROOM = 1.3
"""The traffic panel's y axis reaches this many times its highest value: incident labels go
in the band above the data, never over it."""


def incident_label(inc: dict[str, Any]) -> str:
    """An incident as its timeline label reads: ``capacity drop (llm)``."""
    return f"{str(inc.get('kind', 'incident')).replace('_', ' ')} ({inc.get('provider', '?')})"


def _label_anchor(start: float, end: float, data_end: float) -> tuple[float, str]:
    """Where an incident's label goes (seconds) and how it is aligned: over the middle of the
    part of the incident the plot shows, but flush with that part's outer edge near either
    end of the axis, so that the text stays inside the panel (an incident can outlast the
    data, or start at 0)."""
    lo, hi = max(0.0, start), min(end, data_end)
    if hi <= lo:  # nothing of it is visible: name it at the axis's end
        return (data_end, "right") if start >= data_end else (0.0, "left")
    middle = (lo + hi) / 2
    if middle > 0.8 * data_end:
        return hi - 0.005 * data_end, "right"
    if middle < 0.2 * data_end:
        return lo + 0.005 * data_end, "left"
    return middle, "center"


def _has_breaker(run: RunData) -> bool:
    """True when a policy some feature uses has a circuit breaker (a config may define
    policies no feature uses: an experiment's other choices)."""
    config = run.config if isinstance(run.config, dict) else {}
    policies = config.get("policies", {})
    used = {c.get("policy") for c in config.get("features", {}).values() if isinstance(c, dict)}
    return any(isinstance(policies.get(u), dict) and policies[u].get("breaker") for u in used)


def timeline(run: RunData) -> Figure:
    """Traffic, request success, failed attempts by kind, cost rate, and provider load over
    time, with incidents shaded and named and the end of arrivals marked.

    A panel with nothing to show is left out (no failed attempts: no failures panel); the
    x axis ends where the data ends.
    """
    ts = run.timeseries
    if ts.empty:
        raise LLMTrafficError(f"{run.folder}: the time series is empty")
    s = run.summary
    bin_width = float(run.config["run"]["timeseries_bin"])
    t = ts["time"].to_numpy(dtype=float)
    end = float(s.get("sim_end_time") or (t[-1] + bin_width))
    widths = np.minimum(bin_width, np.maximum(end - t, 1e-9))
    data_end = float(t[-1] + widths[-1])
    unit, xlabel = _time_axis(data_end)
    # Bins are drawn as steps over their edges: a value holds for its whole bin.
    x = np.append(t, data_end) / unit

    def edges(values: Any) -> np.ndarray:
        v = np.asarray(values, dtype=float)
        return np.append(v, v[-1])

    def rate(col: str) -> np.ndarray:
        return edges(ts[col].to_numpy(dtype=float) / widths)

    kinds = [k for k in FAILURE_COLOURS if k in ts and ts[k].sum() > 0]
    panels = ["traffic", "success", *(["failures"] if kinds else []), "cost", "load"]
    heights = {"traffic": 1.2, "success": 0.9, "failures": 1.0, "cost": 0.9, "load": 1.0}
    fig = Figure(figsize=(13, 13 if kinds else 11), layout="constrained")
    axes = list(
        fig.subplots(len(panels), 1, sharex=True, height_ratios=[heights[p] for p in panels])
    )
    ax = dict(zip(panels, axes, strict=True))
    fig.suptitle(
        fitted_title(
            f"Timeline of {describe_run(run)}, {bin_width:g} s bins", fig.get_figwidth(), 14
        ),
        fontsize=14,
    )

    step = {"drawstyle": "steps-post"}
    ax_traffic = ax["traffic"]
    ax_traffic.plot(x, rate("arrivals"), label="requests arriving", color="#1f77b4", lw=1.6, **step)
    ax_traffic.plot(x, rate("attempts"), label="attempts sent", color="#ff7f0e", lw=1.6, **step)
    ax_traffic.plot(
        x, rate("retries"), label="of which retries", color="#d62728", lw=1.0, ls="--", **step
    )
    ax_traffic.plot(x, rate("ok"), label="successful attempts", color="#2ca02c", lw=1.2, **step)
    ax_traffic.set_ylabel("per second")
    ax_traffic.set_title("Traffic: requests, attempts and retries", loc="left")

    done = edges(ts["arrived_done"])
    ok = edges(ts["arrived_ok"])
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(done > 0, 100.0 * ok / done, np.nan)
    ax["success"].plot(x, share, color="#2ca02c", lw=1.4, label="requests that succeeded", **step)
    ax["success"].set_ylim(-3, 103)
    ax["success"].set_ylabel("% of requests")
    ax["success"].set_title("Success of the requests arriving in each bin", loc="left")

    if kinds:
        ax_fail = ax["failures"]
        # Stacked by hand: stackplot has no step drawing, and bins are steps, not ramps.
        bottom = np.zeros_like(x)
        for k in kinds:
            top = bottom + rate(k)
            ax_fail.fill_between(
                x,
                bottom,
                top,
                step="post",
                color=FAILURE_COLOURS[k],
                alpha=0.85,
                lw=0,
                label=status_label(k),
            )
            bottom = top
        ax_fail.set_ylabel("per second")
        ax_fail.set_title("Failed attempts by kind (stacked)", loc="left")

    ax_cost = ax["cost"]
    per_min = 60.0
    ax_cost.plot(x, rate("billed_cost") * per_min, color="#1f77b4", lw=1.4, label="billed", **step)
    ax_cost.fill_between(
        x,
        rate("wasted_cost") * per_min,
        step="post",
        color="#d62728",
        alpha=0.5,
        lw=0,
        label="wasted",
    )
    ax_cost.set_ylabel("cost per minute")
    money_axis(ax_cost.yaxis)
    ax_cost.set_title("Cost rate", loc="left")

    ax_load = ax["load"]
    ax_load.plot(
        x, edges(ts["busy_slots"]), color="#17becf", lw=1.4, label="busy serving slots", **step
    )
    ax_load.plot(
        x, edges(ts["queue_length"]), color="#9467bd", lw=1.4, label="attempts queued", **step
    )
    ax_load.plot(
        x,
        edges(ts["in_flight"]),
        color="#7f7f7f",
        lw=1.0,
        ls=":",
        label="client attempts in flight",
        **step,
    )
    ax_load.set_ylabel("attempts (time-weighted mean)")
    open_share = edges(ts["breakers_open"]) if "breakers_open" in ts else np.zeros_like(x)
    if open_share.max(initial=0.0) > 0:
        ax_load.set_title("Provider load and circuit breakers", loc="left")
        twin = ax_load.twinx()
        twin.fill_between(
            x, open_share, step="post", color=BREAKER_COLOUR, alpha=0.2, lw=0, label="breakers open"
        )
        twin.set_ylabel("circuit breakers open", color=BREAKER_COLOUR)
        twin.set_ylim(0, max(1.0, float(open_share.max())) * 1.05)
        twin.tick_params(axis="y", colors=BREAKER_COLOUR)
        h1, l1 = ax_load.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax_load.legend(h1 + h2, l1 + l2, **{**_OUTSIDE, "bbox_to_anchor": (1.07, 1.0)})
    else:
        # A breaker that never opened is worth saying; a run without one needs no mention.
        never = " (circuit breakers never opened)" if _has_breaker(run) else ""
        ax_load.set_title(f"Provider load{never}", loc="left")
        ax_load.legend(**_OUTSIDE)
    ax_load.set_xlabel(xlabel)

    incidents = list(s.get("incidents", []))
    _shade_incidents(axes, incidents, unit)
    duration = float(s.get("duration", end))
    for a in axes:
        if duration < data_end:
            a.axvline(duration / unit, color="black", lw=0.8, ls="--")
        a.grid(alpha=0.3)
        a.set_xlim(0, data_end / unit)
    if duration < data_end:
        # The label goes on the side of the line with room for it (the drain is often short).
        right_side = data_end - duration > 0.1 * data_end
        ax_traffic.text(
            duration / unit,
            1.01,
            " arrivals stop" if right_side else "arrivals stop ",
            transform=ax_traffic.get_xaxis_transform(),
            va="bottom",
            ha="left" if right_side else "right",
            fontsize=9,
        )
    if incidents:
        # Labels sit in a band above the highest value, so they never cover a line.
        _low, high = ax_traffic.get_ylim()
        ax_traffic.set_ylim(0, max(high, 1e-9) * HEADROOM)
        for inc in incidents:
            x_label, align = _label_anchor(float(inc["start"]), float(inc["end"]), data_end)
            ax_traffic.text(
                x_label / unit,
                0.97,
                incident_label(inc),
                transform=ax_traffic.get_xaxis_transform(),
                ha=align,
                va="top",
                fontsize=10,
                color="#202020",
                # Over a marker line (the end of arrivals) the text stays legible.
                bbox={"facecolor": "white", "alpha": 0.85, "lw": 0, "pad": 1.5},
            )
    for a in (ax_traffic, ax["success"], ax.get("failures"), ax_cost):
        if a is not None and a.get_legend_handles_labels()[0]:
            a.legend(**_OUTSIDE)
    return fig


def fitted_title(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` wrapped to the figure's width: a title that names the point, its axis values,
    the policy and the seed runs past the edges of one line (an average glyph is about 0.55
    of the font size wide)."""
    chars = max(20, int(width_inches * 72 / (0.55 * fontsize) * 0.95))
    return textwrap.fill(text, chars)


def cost_breakdown(run: RunData) -> Figure:
    """Useful vs wasted cost per feature; and, when the attempts were kept, what each attempt
    outcome cost."""
    s = run.summary
    feats = s.get("features", {})
    names = list(feats)
    # A panel of attempt outcomes only when there are attempts to show: no empty panel.
    att = run.attempts if "attempts" in run.manifest.get("tables", []) else None
    has_attempts = att is not None and not att.empty
    fig = Figure(figsize=(11, 4.8 if has_attempts else 4.2), layout="constrained")
    axes = fig.subplots(1, 2 if has_attempts else 1, squeeze=False)[0]
    ax = axes[0]
    y = np.arange(len(names))
    useful = np.array([feats[n]["useful_cost"] for n in names], dtype=float)
    wasted = np.array([feats[n]["wasted_cost"] for n in names], dtype=float)
    ax.barh(y, useful, color="#2ca02c", label="useful (answers used)")
    ax.barh(y, wasted, left=useful, color="#d62728", label="wasted (failed, abandoned)")
    for i, n in enumerate(names):
        amp = feats[n].get("cost_amplification")
        text = f"  x{amp:.2f}" if isinstance(amp, float) else ""
        ax.text(useful[i] + wasted[i], i, text, va="center", fontsize=9)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("cost over the run")
    money_axis(ax.xaxis)
    ax.set_title("Cost per feature: useful vs wasted (x = billed / useful)", loc="left")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlim(0, max(float((useful + wasted).max(initial=0.0)) * 1.18, 1e-9))
    if att is not None and has_attempts:
        by = att.groupby("status")["cost"].sum().sort_values(ascending=False)
        ax2 = axes[1]
        colours = [FAILURE_COLOURS.get(k, "#2ca02c") for k in by.index]
        ax2.bar([status_label(k) for k in by.index], by.to_numpy(), color=colours)
        ax2.set_ylabel("billed cost")
        money_axis(ax2.yaxis)
        ax2.set_title("Billed cost by attempt outcome", loc="left")
        ax2.tick_params(axis="x", labelrotation=20)
        ax2.grid(axis="y", alpha=0.3)
    title = (
        f"Cost breakdown of {describe_run(run)}: billed {usd(s['billed_cost'])}, "
        f"wasted {usd(s['wasted_cost'])}"
    )
    fig.suptitle(fitted_title(title, fig.get_figwidth(), 13), fontsize=13)
    return fig


def latency_cdf(run: RunData) -> Figure | None:
    """Distribution of end-to-end latency of successful requests, per feature (None when the
    run did not keep its requests table, or no request succeeded: no empty figure)."""
    if "requests" not in run.manifest.get("tables", []):
        return None
    req = run.requests
    ok = req[req["outcome"] == "ok"]
    if ok.empty:
        return None
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    for feature, group in ok.groupby("feature", sort=True):
        lat = np.sort(group["latency"].to_numpy(dtype=float))
        if lat.size == 0:
            continue
        share = np.arange(1, lat.size + 1) / lat.size * 100
        p95 = float(np.percentile(lat, 95))
        ax.step(
            lat, share, where="post", lw=1.6, label=f"{feature} (p95 {p95:.2f} s, n={lat.size:,})"
        )
    for q in (50, 95, 99):
        ax.axhline(q, color="grey", lw=0.7, ls=":")
        ax.text(1.0, q, f" p{q}", transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    ax.set_xscale("log")
    # Plain numbers (0.5, 1, 2, 5, 10 s) read better than powers of ten.
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("latency of successful requests, retries included (s, log scale)")
    ax.set_ylabel("share of successful requests (%)")
    ax.set_ylim(0, 101)
    ax.set_title(
        fitted_title(f"Latency CDF of {describe_run(run)}", fig.get_figwidth() * 0.85, 12),
        loc="left",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=9)
    return fig


PLOTTED_TABLES = ("timeseries", "requests", "attempts")
"""The tables the run plots read, when the run kept them."""


def check_tables(run: RunData) -> None:
    """Refuse, before any plotting, a run folder that lost tables its run wrote, naming every
    missing one (a run that did not keep a table just gets fewer plots)."""
    missing = run.missing_tables([t for t in PLOTTED_TABLES if t in run.kept_tables])
    if missing:
        raise LLMTrafficError(run.missing_tables_message(missing))


def plot_folder(out: Path, what: str = "the plots folder") -> Path:
    """Create the folder PNGs go into; ``OutputError`` when ``out`` is a file or cannot be
    created (``what`` names it in the message, e.g. the ``--out`` flag)."""
    if out.exists() and not out.is_dir():
        raise OutputError(
            f"{what} {out} is a file, but plots are written into a folder (one PNG per plot); "
            "give a folder path, or leave --out out for FOLDER/plots"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create {what} {out}: {exc.strerror}; give a folder you can write"
        ) from None
    return out


def save_figure(fig: Figure, path: Path) -> Path:
    """Write one figure as PNG; ``OutputError`` naming the file when it cannot be written."""
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    return path


def save_run_plots(run: RunData, out: Path, prefix: str = "") -> list[Path]:
    """Write timeline.png, costs.png and (when requests were kept) latency_cdf.png."""
    check_tables(run)
    # Every figure is drawn before anything is written: a table that cannot be read leaves
    # no folder of partial plots behind.
    figures: dict[str, Figure | None] = {
        "timeline": timeline(run) if "timeseries" in run.kept_tables else None,
        "costs": cost_breakdown(run),
        "latency_cdf": latency_cdf(run),
    }
    plot_folder(out)
    return [
        save_figure(fig, out / f"{prefix}{name}.png")
        for name, fig in figures.items()
        if fig is not None
    ]
