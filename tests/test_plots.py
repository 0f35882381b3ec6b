"""Plots and the HTML report: files are written, are PNGs of the expected size, and the figures
say what they show (titles, labels, tick formats, panels, limits: checked on the figure's
objects). ``compare`` is tested in tests/test_compare.py."""

from __future__ import annotations

import copy
import math
import struct
import tomllib
from pathlib import Path
from typing import Any

import matplotlib.text
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from llmtraffic import load, run_to_folder, scenario_from_dict
from llmtraffic.cli import main
from llmtraffic.experiment import load_experiment, read_experiment, run_experiment
from llmtraffic.experiment.store import ExperimentData
from llmtraffic.plots import comparison, cost_breakdown, latency_cdf, timeline
from llmtraffic.plots.run import HEADROOM, describe_run
from llmtraffic.plots.ticks import DollarFormatter, dollars
from tests.experiment_config import SCENARIO, write


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (and a check that it is a PNG)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert len(data) > 10_000, f"{path} is suspiciously small"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of the small scenario with every table kept."""
    folder = tmp_path_factory.mktemp("plots") / "run"
    scenario = scenario_from_dict(tomllib.loads(SCENARIO))
    run_to_folder(scenario, folder)
    return folder


@pytest.fixture(scope="module")
def experiment_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small experiment (4 points x 2 replications), time series kept."""
    root = tmp_path_factory.mktemp("exp")
    run_experiment(read_experiment(write(root)), root / "out", workers=1)
    return root / "out"


def test_run_plots_are_written(
    run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plot", str(run_folder), "--out", str(tmp_path / "p")]) == 0
    names = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert names == ["costs.png", "latency_cdf.png", "timeline.png"]
    assert png_size(tmp_path / "p/timeline.png") == (1300, 1300)
    assert png_size(tmp_path / "p/costs.png") == (1100, 480)
    assert png_size(tmp_path / "p/latency_cdf.png") == (900, 500)
    assert "timeline.png" in capsys.readouterr().out


def test_run_figures_are_labelled(run_folder: Path) -> None:
    run = load(run_folder)
    fig = timeline(run)
    axes = fig.get_axes()
    assert fig.get_suptitle().startswith("Timeline of tiny")
    assert [a.get_ylabel() for a in axes[:5]] == [
        "per second",
        "% of requests",
        "per second",
        "cost per minute",
        "attempts (time-weighted mean)",
    ]
    assert axes[4].get_xlabel() == "time since start (min)"
    assert all(a.get_title(loc="left") for a in axes[:5])
    # The failures panel names the kinds that happened; the brownout brings 5xx errors.
    legend = axes[2].get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert "5xx (server error)" in labels
    costs = cost_breakdown(run)
    assert costs.get_axes()[0].get_xlabel() == "cost over the run"
    cdf = latency_cdf(run)
    assert cdf is not None
    assert "log scale" in cdf.get_axes()[0].get_xlabel()


def test_a_run_without_requests_has_no_latency_cdf(experiment_folder: Path) -> None:
    run = load_experiment(experiment_folder).run("p000", 0)
    assert latency_cdf(run) is None


def test_experiment_plots_are_written(experiment_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "e"
    assert main(["plot", str(experiment_folder), "--out", str(out), "--point", "p003"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "comparison.png",
        "p003-policy=backoff-error_rate=0.1-rep-0-costs.png",
        "p003-policy=backoff-error_rate=0.1-rep-0-timeline.png",
    ]
    # Six panels: recovery and metastability are undefined in every run of these short runs.
    assert png_size(out / "comparison.png") == (1560, 870)
    assert png_size(out / "p003-policy=backoff-error_rate=0.1-rep-0-timeline.png") == (1300, 1300)


def test_the_comparison_puts_the_numeric_axis_on_x(experiment_folder: Path) -> None:
    fig = comparison(load_experiment(experiment_folder), ["success_rate", "billed_cost"])
    ax = fig.get_axes()[0]
    assert ax.get_xlabel() == "error_rate  (providers.main.failures.error_rate)"
    assert ax.get_ylabel() == "%"
    assert ax.get_title(loc="left") == "Request success rate"
    legend = fig.legends[0]
    assert legend.get_title().get_text() == "policy"
    assert [t.get_text() for t in legend.get_texts()] == ["naive", "backoff"]
    assert "95% confidence interval over 2 paired replications" in fig.get_suptitle()


def test_reports_are_self_contained_html(run_folder: Path, experiment_folder: Path) -> None:
    assert main(["report", str(run_folder)]) == 0
    page = (run_folder / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    assert page.count("data:image/png;base64,") == 3
    assert "Request success rate" in page and "Incidents" in page
    assert main(["report", str(experiment_folder)]) == 0
    page = (experiment_folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # comparison, timeline, costs
    assert "Points: mean [95% confidence interval]" in page
    assert "p000-policy=naive-error_rate=0.01" in page


# Figures that explain themselves (issue 13): checked on the figures' objects, not on pixels.


def _tick_labels(axis: Any) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def test_timelines_of_two_points_have_titles_naming_point_and_values(
    experiment_folder: Path,
) -> None:
    data = load_experiment(experiment_folder)
    titles = {pid: timeline(data.run(pid, 1)).get_suptitle() for pid in data.point_ids}
    assert len(set(titles.values())) == len(titles)  # no two alike
    p003 = titles["p003-policy=backoff-error_rate=0.1"]
    assert "p003" in p003 and "policy=backoff" in p003 and "error_rate=0.1" in p003
    assert "replication 1" in p003
    # The policy is an axis here: named once, as an axis value.
    assert "policy backoff" not in p003
    lone = describe_run(load_experiment(experiment_folder).run("p000", 0))
    assert lone.startswith("tiny p000: policy=naive, error_rate=0.01")


def test_a_lone_run_names_its_policy(run_folder: Path) -> None:
    run = load(run_folder)
    assert describe_run(run) == "tiny (policy backoff, seed 11)"
    assert timeline(run).get_suptitle().startswith("Timeline of tiny (policy backoff, seed 11)")
    assert "tiny (policy backoff, seed 11)" in cost_breakdown(run).get_suptitle()


def test_incident_labels_are_readable_and_above_the_data(run_folder: Path) -> None:
    fig = timeline(load(run_folder))
    fig.draw_without_rendering()
    traffic = fig.get_axes()[0]
    labels = [t for t in traffic.texts if "brownout" in t.get_text()]
    assert [t.get_text() for t in labels] == ["brownout (main)"]  # no underscore, one line
    assert float(labels[0].get_fontsize()) >= 10
    top_of_data = max(float(np.nanmax(line.get_ydata())) for line in traffic.get_lines())
    assert traffic.get_ylim()[1] == pytest.approx(top_of_data * 1.05 * HEADROOM, rel=0.05)
    # In display coordinates the label's box starts above the highest value drawn.
    data_top_px = traffic.transData.transform((0, top_of_data))[1]
    assert labels[0].get_window_extent().y0 > data_top_px


def test_the_timeline_x_axis_ends_with_the_data(run_folder: Path) -> None:
    run = load(run_folder)
    fig = timeline(run)
    ts = run.timeseries
    last_edge = float(ts["time"].iloc[-1]) + float(run.config["run"]["timeseries_bin"])
    end = min(last_edge, float(run.summary["sim_end_time"]))
    for ax in fig.get_axes():
        assert ax.get_xlim() == pytest.approx((0.0, end / 60.0))


def test_money_axes_are_in_dollars_without_an_offset(run_folder: Path) -> None:
    run = load(run_folder)
    fig = timeline(run)
    fig.draw_without_rendering()
    cost_ax = next(a for a in fig.get_axes() if a.get_title(loc="left") == "Cost rate")
    assert isinstance(cost_ax.yaxis.get_major_formatter(), DollarFormatter)
    labels = _tick_labels(cost_ax.yaxis)
    assert labels and all(label.lstrip("-").startswith("$") for label in labels)
    # Millions read as $1.5M on the tick itself, never as a 1e6 in the corner.
    cost_ax.set_ylim(0, 3_200_000)
    fig.draw_without_rendering()
    assert cost_ax.yaxis.get_offset_text().get_text() == ""
    big = _tick_labels(cost_ax.yaxis)
    assert "$1M" in big or "$1.0M" in big, big
    assert all("e" not in label for label in big)
    costs = cost_breakdown(run)
    costs.draw_without_rendering()
    assert all(t.startswith("$") for t in _tick_labels(costs.get_axes()[0].xaxis))


@pytest.mark.parametrize(
    ("ticks", "expected"),
    [
        ([0, 0.05, 0.1, 0.15], ["$0", "$0.05", "$0.10", "$0.15"]),
        ([0, 0.25, 0.5], ["$0", "$0.25", "$0.50"]),
        ([0, 500, 1000, 1500], ["$0", "$500", "$1,000", "$1,500"]),
        ([0, 5e5, 1e6, 1.5e6], ["$0", "$0.5M", "$1.0M", "$1.5M"]),
        ([-2e9, 0, 2e9], ["-$2B", "$0", "$2B"]),
    ],
)
def test_the_dollar_formatter_uses_one_format_per_axis(
    ticks: list[float], expected: list[str]
) -> None:
    formatter = DollarFormatter()
    formatter.set_locs(ticks)
    assert [formatter(t) for t in ticks] == expected


def test_dollars_of_a_single_value() -> None:
    assert dollars(3180.354) == "$3,180.35"
    assert dollars(0.04431) == "$0.0443"
    assert dollars(-7.0428) == "-$7.04"
    assert dollars(math.nan) == "n/a"


def _quiet_scenario() -> dict[str, Any]:
    """The small scenario with nothing going wrong: no errors, no incident, no breaker."""
    config = copy.deepcopy(tomllib.loads(SCENARIO))
    config["providers"]["main"]["failures"] = {"error_rate": 0.0, "midstream_rate": 0.0}
    del config["providers"]["main"]["incidents"]
    del config["policies"]["backoff"]["breaker"]
    config["features"]["chat"]["arrivals"] = {"kind": "poisson", "rate": 2}
    return config


def test_no_empty_panels_in_a_run_where_nothing_failed(tmp_path: Path) -> None:
    folder = tmp_path / "quiet"
    run_to_folder(scenario_from_dict(_quiet_scenario()), folder)
    run = load(folder)
    assert run.summary["attempts"] == run.summary["successes"]  # the premise: no failure
    fig = timeline(run)
    titles = [a.get_title(loc="left") for a in fig.get_axes()]
    assert titles == [
        "Traffic: requests, attempts and retries",
        "Success of the requests arriving in each bin",
        "Cost rate",
        "Provider load",
    ]
    assert not any("breaker" in a.get_ylabel() for a in fig.get_axes())  # no breaker twin


def _synthetic_experiment(
    tmp_path: Path, recovery: list[float], policies: list[Any] | None = None
) -> ExperimentData:
    """An experiment over one axis (categorical unless ``policies`` are numbers) with a given
    recovery time per point (NaN: never recovered), built in memory."""
    policies = policies or ["naive", "backoff", "budget"]
    rows = []
    for i, (policy, rec) in enumerate(zip(policies, recovery, strict=True)):
        for metric, mean in (
            ("success_rate", 0.9 - 0.1 * i),
            ("cost_per_month", 2.5e6 + 1e5 * i),
            ("incident.0.recovery_time", rec),
            ("incident.0.metastable", math.nan),
        ):
            rows.append(
                {
                    "point_id": f"p00{i}-policy={policy}",
                    "policy": policy,
                    "metric": metric,
                    "mean": mean,
                    "ci_low": mean,
                    "ci_high": mean,
                    "n": 2,
                }
            )
    spec = {
        "name": "synthetic",
        "replications": 2,
        "axes": [
            {
                "name": "policy",
                "path": "features.chat.policy",
                "values": policies,
                "labels": policies,
            }
        ],
        "points": [{"id": r["point_id"], "index": i} for i, r in enumerate(rows[::4])],
    }
    data = ExperimentData(tmp_path, spec, {})
    data.__dict__["points"] = pd.DataFrame(rows)  # the cached table, without files
    return data


def test_comparison_marks_undefined_points_n_a(tmp_path: Path) -> None:
    data = _synthetic_experiment(tmp_path, [12.0, math.nan, 30.0])
    fig = comparison(data, ["incident.0.recovery_time", "cost_per_month"])
    assert len(fig.get_axes()) == 2  # one per metric, no blank grid cells
    recovery, money = fig.get_axes()
    assert recovery.get_title(loc="left").endswith("n/a: never recovered")
    marks = [t for t in recovery.texts if t.get_text() == "n/a"]
    assert len(marks) == 1
    assert marks[0].get_position()[0] == pytest.approx(1.0, abs=0.4)  # over backoff's bar
    fig.draw_without_rendering()
    assert isinstance(money.yaxis.get_major_formatter(), DollarFormatter)
    assert money.yaxis.get_offset_text().get_text() == ""
    assert all(t.startswith("$") for t in _tick_labels(money.yaxis))
    assert money.get_ylabel() == "per month"


def test_comparison_leaves_out_default_panels_with_no_data(tmp_path: Path) -> None:
    data = _synthetic_experiment(tmp_path, [math.nan] * 3)
    fig = comparison(data)
    titles = [a.get_title(loc="left") for a in fig.get_axes()]
    assert titles == ["Request success rate", "Projected cost per month"]
    assert "not shown, undefined in every run: recovery time after incident 1, runs " in (
        fig.get_suptitle()
    )
    # Asked for by name, an undefined metric keeps its panel and says why it is empty.
    asked = comparison(data, ["incident.0.recovery_time"])
    (ax,) = asked.get_axes()
    texts = [t.get_text() for t in ax.texts if isinstance(t, matplotlib.text.Text)]
    assert any(t.startswith("n/a at every point") for t in texts)


def test_figures_are_figures(run_folder: Path) -> None:
    assert isinstance(timeline(load(run_folder)), Figure)


def test_plot_metric_takes_table_labels(
    experiment_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = load_experiment(experiment_folder)
    fig = comparison(data, ["success", "per month", "att/req"])
    assert [a.get_title(loc="left") for a in fig.get_axes()] == [
        "Request success rate",
        "Projected cost per month",
        "Attempts per request",
    ]
    out = tmp_path / "p"
    assert main(["plot", str(experiment_folder), "--out", str(out), "--metric", "sucess"]) == 2
    assert "did you mean success_rate" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written


def test_report_metric_takes_table_labels(
    experiment_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "r.html"
    assert main(["report", str(experiment_folder), "--out", str(page), "--metric", "success"]) == 0
    assert "Request success rate" in page.read_text()
    bad = tmp_path / "bad.html"
    assert main(["report", str(experiment_folder), "--out", str(bad), "--metric", "sucess"]) == 2
    assert "did you mean success_rate" in capsys.readouterr().err
    assert not bad.exists()


def test_an_incident_that_outlasts_the_data_is_named_inside_the_panel(tmp_path: Path) -> None:
    config = copy.deepcopy(tomllib.loads(SCENARIO))
    # The brownout starts near the end of arrivals and lasts well past the drain.
    config["providers"]["main"]["incidents"][0].update({"start": "50s", "duration": "10m"})
    folder = tmp_path / "late"
    run_to_folder(scenario_from_dict(config), folder)
    fig = timeline(load(folder))
    fig.draw_without_rendering()
    traffic = fig.get_axes()[0]
    (label,) = [t for t in traffic.texts if "brownout" in t.get_text()]
    box, panel = label.get_window_extent(), traffic.get_window_extent()
    assert panel.x0 <= box.x0 and box.x1 <= panel.x1


def test_a_line_comparison_marks_undefined_points_n_a(tmp_path: Path) -> None:
    data = _synthetic_experiment(tmp_path, [12.0, 20.0, math.nan], policies=[0.01, 0.1, 0.2])
    fig = comparison(data, ["incident.0.recovery_time"])
    (ax,) = fig.get_axes()
    assert ax.get_lines()  # drawn as a line over the numeric axis
    (mark,) = [t for t in ax.texts if t.get_text() == "n/a"]
    assert mark.get_position()[0] == pytest.approx(0.2)
    assert ax.get_title(loc="left").endswith("n/a: never recovered")


def test_a_long_title_is_wrapped_inside_the_figure(tmp_path: Path) -> None:
    """A point's title names its axis values, policy, replication and seed: on one line it ran
    past both edges of the cost figure ('reakdown of article p007: ... wasted $')."""
    from llmtraffic.plots.run import fitted_title

    long = "Cost breakdown of article p007: " + ", ".join(f"axis{i}=value{i}" for i in range(12))
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    fig.subplots()
    title = fitted_title(long + ": billed $1,016.25, wasted $3.20", 11, 13)
    text = fig.suptitle(title, fontsize=13)
    fig.canvas.draw()
    box = text.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width, (box, fig.bbox)
    assert "\n" in text.get_text() and text.get_text().endswith("wasted $3.20")


def test_a_point_without_the_incident_is_na_for_that_reason_and_in_view(tmp_path: Path) -> None:
    """A sweep over incidents (none or an outage): the none points' recovery is n/a because
    they have no incident (the panel said "never recovered"), and the n/a marks sit inside
    the panel (they were left of the y axis)."""
    import llmtraffic

    (tmp_path / "exp.toml").write_text(
        """
name = "na"
[run]
duration = 1200
timeseries_bin = 10
[providers.p]
model = "test-model"
prices = { input = 1.0, output = 2.0 }
service = { kind = "deterministic", value = 0.5 }
[features.f]
provider = "p"
arrivals = { kind = "poisson", rate = 2.0 }
input_tokens = { kind = "fixed", value = 10 }
output_tokens = { kind = "fixed", value = 10 }
[experiment]
labels = { "providers.p.incidents" = ["none", "outage"] }
[sweep]
"providers.p.incidents" = [[], [{ kind = "outage", start = 60, duration = 30 }]]
""",
        encoding="utf-8",
    )
    spec = llmtraffic.read_experiment(tmp_path / "exp.toml")
    llmtraffic.run_experiment(spec, tmp_path / "out", workers=1)
    data = llmtraffic.load_experiment(tmp_path / "out")
    fig = comparison(data, ["incident.0.recovery_time"])
    ax = fig.axes[0]
    recovered = data.points.query("metric == 'incident.0.recovery_time' and n > 0")
    assert list(recovered["incidents"]) == ["outage"], data.points  # only none is n/a
    assert "n/a: no incident 1 at these points" in ax.get_title(loc="left")
    marks = [t for t in ax.texts if t.get_text() == "n/a"]
    assert marks
    low, high = ax.get_xlim()
    assert all(low <= t.get_position()[0] <= high for t in marks)
