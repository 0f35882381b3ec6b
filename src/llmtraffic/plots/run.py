"""Plots of one run, from its saved results: a timeline, the cost breakdown, latency CDFs.

Figures are built with matplotlib's object API (``Figure``, no pyplot), so nothing here
touches the global backend: the PNGs render with Agg, and a notebook shows the figures
inline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from llmtraffic.errors import LLMTrafficError, OutputError
from llmtraffic.plots.labels import status_label
from llmtraffic.results.load import RunData

FAILURE_COLOURS = {
    "rate_limited": "#e6a817",
    "server_error": "#d62728",
    "overloaded": "#9467bd",
    "timeout": "#8c564b",
    "midstream_error": "#e377c2",
}
INCIDENT_COLOUR = "#969696"
BREAKER_COLOUR = "#b2182b"


_OUTSIDE: dict[str, Any] = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 9}
"""Legends beside the panels, where they hide no data."""


def usd(value: float) -> str:
    """USD for a plot text: the dollar sign escaped, since matplotlib reads $...$ as maths."""
    return f"\\${value:,.2f}" if abs(value) >= 100 else f"\\${value:,.4f}"


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


def timeline(run: RunData) -> Figure:
    """Traffic, request success, failed attempts by kind, cost rate, and provider load over
    time, with incidents shaded and the end of arrivals marked."""
    ts = run.timeseries
    if ts.empty:
        raise LLMTrafficError(f"{run.folder}: the time series is empty")
    s = run.summary
    bin_width = float(run.config["run"]["timeseries_bin"])
    t = ts["time"].to_numpy(dtype=float)
    end = float(s.get("sim_end_time") or (t[-1] + bin_width))
    widths = np.minimum(bin_width, np.maximum(end - t, 1e-9))
    unit, xlabel = _time_axis(end)
    # Bins are drawn as steps over their edges: a value holds for its whole bin.
    x = np.append(t, t[-1] + widths[-1]) / unit

    def edges(values: Any) -> np.ndarray:
        v = np.asarray(values, dtype=float)
        return np.append(v, v[-1])

    def rate(col: str) -> np.ndarray:
        return edges(ts[col].to_numpy(dtype=float) / widths)

    fig = Figure(figsize=(13, 13), layout="constrained")
    axes = fig.subplots(5, 1, sharex=True, height_ratios=[1.2, 0.9, 1.0, 0.9, 1.0])
    ax_traffic, ax_success, ax_fail, ax_cost, ax_load = axes
    fig.suptitle(
        f"Timeline of {s.get('scenario', run.folder.name)} (seed {s.get('seed')}), "
        f"{bin_width:g} s bins",
        fontsize=14,
    )

    step = {"drawstyle": "steps-post"}
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
    ax_success.plot(x, share, color="#2ca02c", lw=1.4, label="requests that succeeded", **step)
    ax_success.set_ylim(-3, 103)
    ax_success.set_ylabel("% of requests")
    ax_success.set_title("Success of the requests arriving in each bin", loc="left")

    kinds = [k for k in FAILURE_COLOURS if k in ts and ts[k].sum() > 0]
    if kinds:
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
    else:
        ax_fail.text(0.5, 0.5, "no failed attempts", transform=ax_fail.transAxes, ha="center")
    ax_fail.set_ylabel("per second")
    ax_fail.set_title("Failed attempts by kind (stacked)", loc="left")

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
    ax_cost.set_ylabel("USD per minute")
    ax_cost.set_title("Cost rate", loc="left")

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
    ax_load.set_title("Provider load and circuit breakers", loc="left")
    open_share = edges(ts["breakers_open"])
    if open_share.max(initial=0.0) > 0:
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
        ax_load.legend(**_OUTSIDE)
    ax_load.set_xlabel(xlabel)

    incidents = list(s.get("incidents", []))
    _shade_incidents(list(axes), incidents, unit)
    duration = float(s.get("duration", end))
    for ax in axes:
        ax.axvline(duration / unit, color="black", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
        ax.set_xlim(0, end / unit)
    # The label goes on the side of the line with room for it (the drain is often short).
    right_side = end - duration > 0.1 * end
    ax_traffic.text(
        duration / unit,
        1.01,
        " arrivals stop" if right_side else "arrivals stop ",
        transform=ax_traffic.get_xaxis_transform(),
        va="bottom",
        ha="left" if right_side else "right",
        fontsize=9,
    )
    for inc in incidents:
        ax_traffic.text(
            (inc["start"] + inc["end"]) / 2 / unit,
            0.97,
            f"{inc['kind']}\n{inc['provider']}",
            transform=ax_traffic.get_xaxis_transform(),
            ha="center",
            va="top",
            fontsize=9,
            color="#303030",
            bbox={"facecolor": "white", "alpha": 0.75, "lw": 0, "pad": 1.5},
        )
    for ax in (ax_traffic, ax_success, ax_fail, ax_cost):
        if ax.get_legend_handles_labels()[0]:  # a run without failures has none to explain
            ax.legend(**_OUTSIDE)
    return fig


def cost_breakdown(run: RunData) -> Figure:
    """Useful vs wasted cost per feature; and, when the attempts were kept, what each attempt
    outcome cost."""
    s = run.summary
    feats = s.get("features", {})
    names = list(feats)
    has_attempts = "attempts" in run.manifest.get("tables", [])
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
    ax.set_xlabel("cost over the run (USD)")
    ax.set_title("Cost per feature: useful vs wasted (x = billed / useful)", loc="left")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlim(0, max(float((useful + wasted).max(initial=0.0)) * 1.18, 1e-9))
    if has_attempts:
        att = run.attempts
        by = att.groupby("status")["cost"].sum().sort_values(ascending=False)
        ax2 = axes[1]
        colours = [FAILURE_COLOURS.get(k, "#2ca02c") for k in by.index]
        ax2.bar([status_label(k) for k in by.index], by.to_numpy(), color=colours)
        ax2.set_ylabel("billed cost (USD)")
        ax2.set_title("Billed cost by attempt outcome", loc="left")
        ax2.tick_params(axis="x", labelrotation=20)
        ax2.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"Cost breakdown of {s.get('scenario', '')}: billed {usd(s['billed_cost'])}, "
        f"wasted {usd(s['wasted_cost'])}",
        fontsize=13,
    )
    return fig


def latency_cdf(run: RunData) -> Figure | None:
    """Distribution of end-to-end latency of successful requests, per feature (None when the
    run did not keep its requests table)."""
    if "requests" not in run.manifest.get("tables", []):
        return None
    req = run.requests
    ok = req[req["outcome"] == "ok"]
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
    ax.set_title(f"Latency CDF of {run.summary.get('scenario', '')}", loc="left")
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
