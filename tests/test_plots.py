"""Plots, the HTML report and compare: files are written, are PNGs of the expected size, and
the commands print what they should."""

from __future__ import annotations

import struct
import tomllib
from pathlib import Path

import pytest

from llmtraffic import load, run_to_folder, scenario_from_dict
from llmtraffic.cli import main
from llmtraffic.experiment import load_experiment, read_experiment, run_experiment
from llmtraffic.plots import comparison, cost_breakdown, latency_cdf, timeline
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
        "USD per minute",
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
    assert costs.get_axes()[0].get_xlabel() == "cost over the run (USD)"
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
    assert png_size(out / "comparison.png") == (1560, 1260)
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


def test_compare_prints_paired_differences(
    experiment_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "compare",
            str(experiment_folder),
            "--axis",
            "policy",
            "--base",
            "naive",
            "--metric",
            "success_rate",
            "--metric",
            "billed_cost",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "differences paired by replication" in out
    assert "difference [95% CI]" in out
    lines = [line for line in out.splitlines() if "backoff" in line]
    assert len(lines) == 2  # one group per error rate
    assert " pp [" in out  # a difference of shares is in percentage points
    assert main(["compare", str(experiment_folder), "--axis", "policy", "--base", "budget"]) == 2
    assert "policy has no value 'budget'" in capsys.readouterr().err


def test_compare_two_folders(
    run_folder: Path, experiment_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = run_folder.parent / "run2"
    if not other.exists():
        run_to_folder(scenario_from_dict(tomllib.loads(SCENARIO)), other, seed=99)
    assert main(["compare", str(run_folder), str(other), "--metric", "requests"]) == 0
    assert "single runs: no interval" in capsys.readouterr().out
    assert main(["compare", str(experiment_folder), str(experiment_folder)]) == 0
    out = capsys.readouterr().out
    assert "paired by replication" in out and "+0.0 pp" in out
