"""``llmtraffic compare``: paired differences that explain themselves (issue 13).

--metric takes what the tables show (``success``, ``per month``, ``att/req``) as well as
column names, and suggests close names for a typo; a difference of shares is in percentage
points; money has one format across a row; the title names the sides in the columns' order;
no numpy warning reaches the user, even where a metric is infinite or undefined.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmtraffic import run_to_folder, scenario_from_dict
from llmtraffic.cli import main
from llmtraffic.experiment import read_experiment, run_experiment
from llmtraffic.experiment.commands import compare_cells
from llmtraffic.experiment.tables import SHORT_NAMES, fmt_value
from llmtraffic.plots.labels import resolve_metric
from tests.experiment_config import SCENARIO, write


@pytest.fixture(scope="module")
def experiment_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small experiment (policy naive/backoff x two error rates, 2 replications)."""
    root = tmp_path_factory.mktemp("exp")
    run_experiment(read_experiment(write(root)), root / "out", workers=1)
    return root / "out"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two single runs of the small scenario, seeds 11 and 99."""
    root = tmp_path_factory.mktemp("runs")
    scenario = scenario_from_dict(tomllib.loads(SCENARIO))
    run_to_folder(scenario, root / "a")
    run_to_folder(scenario, root / "b", seed=99)
    return root / "a", root / "b"


def _compare(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["compare", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("label", "column"),
    [
        ("success", "success_rate"),
        ("per month", "cost_per_month"),
        ("per_month", "cost_per_month"),
        ("att/req", "attempt_amplification"),
        ("p95 latency", "latency_p95"),
        ("Request success rate", "success_rate"),
        ("feature.chat.success", "feature.chat.success_rate"),
        ("billed_cost", "billed_cost"),
    ],
)
def test_metric_accepts_the_labels_the_tables_show(
    experiment_folder: Path, capsys: pytest.CaptureFixture[str], label: str, column: str
) -> None:
    folder = str(experiment_folder)
    code, by_label, err = _compare(capsys, folder, "--axis", "policy", "--metric", label)
    assert code == 0, err
    code, by_column, _ = _compare(capsys, folder, "--axis", "policy", "--metric", column)
    assert code == 0
    assert by_label == by_column  # the same table, whichever name was typed


def test_every_short_name_of_the_tables_resolves_to_its_column() -> None:
    columns = [*SHORT_NAMES, "successes", "goodput_rps"]
    for column, short in SHORT_NAMES.items():
        assert resolve_metric(short, columns, SHORT_NAMES).column == column


@pytest.mark.parametrize(
    ("typo", "suggested"),
    [
        ("sucess", "success_rate"),
        ("per_mnth", "cost_per_month"),
        ("p95", "latency_p95"),
        ("billed_cots", "billed_cost"),
    ],
)
def test_a_misspelt_metric_exits_2_suggesting_close_names(
    experiment_folder: Path, capsys: pytest.CaptureFixture[str], typo: str, suggested: str
) -> None:
    code, out, err = _compare(capsys, str(experiment_folder), "--metric", typo)
    assert code == 2
    message = _flat(err)
    assert f"--metric {typo}: no such metric" in message
    assert f"did you mean {suggested}" in message or f", {suggested}" in message
    assert "Traceback" not in err and out == ""


def test_a_label_of_several_metrics_names_them(
    experiment_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _compare(capsys, str(experiment_folder), "--metric", "goodput")
    assert code == 2
    assert "fits several metrics: goodput_rps, goodput_tokens_per_s" in _flat(err)


def test_compare_prints_paired_differences(
    experiment_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _compare(
        capsys,
        str(experiment_folder),
        "--axis",
        "policy",
        "--base",
        "naive",
        "--metric",
        "success",
        "--metric",
        "billed",
    )
    assert code == 0
    flat = _flat(out)
    assert "differences paired by replication" in flat or "paired by replication" in flat
    assert "backoff" in out
    assert " pp" in out  # a difference of shares is in percentage points
    assert "$" in out
    code, _, err = _compare(capsys, str(experiment_folder), "--axis", "policy", "--base", "budget")
    assert code == 2
    assert "policy has no value 'budget'" in err


def test_success_differences_are_in_percentage_points(
    experiment_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmtraffic.experiment import load_experiment

    summary = load_experiment(experiment_folder).summary
    code, out, _ = _compare(
        capsys, str(experiment_folder), "--axis", "policy", "--base", "naive", "--metric", "success"
    )
    assert code == 0
    # The difference of the first error rate's means, in points, as the table must show it.
    low = summary[summary["error_rate"] == summary["error_rate"].min()]
    naive = low[low["policy"] == "naive"].set_index("replication")["success_rate"]
    backoff = low[low["policy"] == "backoff"].set_index("replication")["success_rate"]
    points = float((backoff - naive).mean()) * 100
    assert f"{points:+.1f} pp" in out
    assert f"{points:+.1f}%" not in out


def test_the_title_names_the_sides_in_the_columns_order(
    experiment_folder: Path,
    two_runs: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = _compare(capsys, str(experiment_folder), "--axis", "policy", "--base", "naive")
    title = _flat(out)
    assert title.startswith(
        "tiny: policy=naive (base) and each other policy: difference other minus base"
    )
    a, b = two_runs
    _, out, _ = _compare(capsys, str(a), str(b), "--metric", "success")
    flat = _flat(out)
    assert flat.startswith(f"A = {a} (seed 11), B = {b} (seed 99): difference B minus A")
    header = next(line for line in out.splitlines() if line.strip().startswith("metric"))
    assert header.split() == ["metric", "A", "B", "B", "-", "A", "relative"]


def test_two_runs_show_points_and_one_money_format(
    two_runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_runs
    code, out, _ = _compare(
        capsys, str(a), str(b), "--metric", "success", "--metric", "billed", "--metric", "requests"
    )
    assert code == 0
    row = next(line for line in out.splitlines() if line.strip().startswith("success"))
    assert row.split()[4] == "pp"  # 'success 98.1% 97.9% -0.2 pp -0.2%'
    billed = next(line for line in out.splitlines() if line.strip().startswith("billed"))
    decimals = {len(cell.split(".")[1]) for cell in billed.split()[1:4]}
    assert len(decimals) == 1, billed  # the two values and their difference alike


@pytest.mark.parametrize(
    ("metric", "a", "b", "expected"),
    [
        ("cost_per_month", 3180.35, 3187.3928, ("$3,180.35", "$3,187.39", "+$7.04", "+0.2%")),
        ("billed_cost", 95.5, 105.25, ("$95.50", "$105.25", "+$9.75", "+10.2%")),
        ("wasted_cost", 0.0443, 0.0503, ("$0.0443", "$0.0503", "+$0.0060", "+13.5%")),
        ("success_rate", 0.255, 0.92, ("25.5%", "92.0%", "+66.5 pp", "+260.8%")),
        ("incident.0.recovery_time", math.nan, 20.0, ("-", "20.00 s", "-", "-")),
        ("requests", 469.0, 482.0, ("469", "482", "+13", "+2.8%")),
        ("cost_amplification", math.inf, math.inf, ("inf", "inf", "-", "-")),
        # A difference that rounds to zero is 0, not -0.000 or +0.0 pp.
        ("attempt_amplification", 1.0003, 1.0001, ("1.000", "1.000", "0.000", "0.0%")),
        ("success_rate", 0.9931, 0.99305, ("99.3%", "99.3%", "0.0 pp", "0.0%")),
        ("billed_cost", 28.80001, 28.8, ("$28.8000", "$28.8000", "$0.0000", "0.0%")),
        # Whole dollars from $100,000, as everywhere money is shown.
        ("cost_per_month", 987_554.2, 987_560.0, ("$987,554", "$987,560", "+$6", "0.0%")),
    ],
)
def test_the_cells_of_two_runs(
    metric: str, a: float, b: float, expected: tuple[str, str, str, str]
) -> None:
    assert compare_cells(metric, a, b, fmt_value) == expected


@pytest.mark.filterwarnings("error")
def test_no_numpy_warning_where_metrics_are_infinite_or_undefined(
    experiment_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A copy of the experiment whose runs never recovered (inf) or have no verdict (NaN):
    # inf - inf and means of nothing are where numpy warns.
    import shutil

    folder = tmp_path / "exp"
    shutil.copytree(experiment_folder, folder)
    summary = pd.read_parquet(folder / "summary.parquet")
    summary["cost_amplification"] = np.inf
    summary["latency_p95"] = np.nan
    summary.to_parquet(folder / "summary.parquet")
    code, out, err = _compare(
        capsys,
        str(folder),
        "--axis",
        "policy",
        "--metric",
        "cost_amplification",
        "--metric",
        "latency_p95",
        "--metric",
        "success",
    )
    assert code == 0, err
    assert "nan" not in out.lower() and "Warning" not in out + err


def test_no_numpy_warning_under_python_w_error(
    experiment_folder: Path, two_runs: tuple[Path, Path]
) -> None:
    """As a user runs it: a fresh interpreter with every warning an error."""
    a, b = two_runs
    for args in (
        [str(experiment_folder), "--axis", "policy"],
        [str(experiment_folder), str(experiment_folder)],
        [str(a), str(b), "--metric", "incident.0.recovery_time", "--metric", "success"],
    ):
        done = subprocess.run(
            [sys.executable, "-W", "error", "-m", "llmtraffic.cli", "compare", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "Warning" not in done.stderr and "Traceback" not in done.stderr


def test_compare_two_folders(
    two_runs: tuple[Path, Path], experiment_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_runs
    code, out, _ = _compare(capsys, str(a), str(b), "--metric", "requests")
    assert code == 0
    assert "single runs: no interval" in _flat(out)
    code, out, _ = _compare(capsys, str(experiment_folder), str(experiment_folder))
    assert code == 0
    assert "paired by replication" in _flat(out)
    # A folder against itself: every difference is zero, printed unsigned.
    assert "0.0 pp" in out and "+0.0 pp" not in out and "-0.0" not in out


def test_money_has_one_format_across_a_row_of_differences() -> None:
    """Base $3,180.35 and a difference of $7.04: the row shows cents throughout, not
    '+$7.0428' beside '$3,180.35'."""
    import pandas as pd
    from rich.console import Console

    from llmtraffic.experiment.tables import differences_table

    diffs = pd.DataFrame(
        [
            {
                "metric": "cost_per_month",
                "value": "sdk",
                "base_mean": 3180.3512,
                "value_mean": 3187.3940,
                "diff": 7.0428,
                "ci_low": -4.0616,
                "ci_high": 18.1473,
                "relative": 7.0428 / 3180.3512,
                "pairs": 3,
            }
        ]
    )
    console = Console(width=80, record=True)
    console.print(differences_table(diffs, [], "t"))
    text = console.export_text()
    assert "$3,180.35" in text and "+$7.04" in text and "-$4.06" in text and "+$18.15" in text
    assert "7.0428" not in text and "4.0616" not in text


def test_a_difference_that_rounds_to_zero_prints_0() -> None:
    """A paired difference of -0.0001 attempts per request, -0.01 pp of success and -$0.00001:
    each reads 0 in its format, never -0.000 (nor its interval's bounds, nor the relative)."""
    from rich.console import Console

    from llmtraffic.experiment.tables import differences_table

    rows = [
        ("attempt_amplification", 1.0002, 1.0001, -0.0001, -0.0003, 0.0001),
        ("success_rate", 0.9931, 0.99309, -0.00001, -0.00004, 0.00002),
        ("billed_cost", 28.80001, 28.8, -0.00001, -0.00003, 0.00001),
    ]
    diffs = pd.DataFrame(
        [
            {"metric": m, "value": "sdk", "base_mean": base, "value_mean": value, "diff": d,
             "ci_low": low, "ci_high": high, "relative": d / base, "pairs": 3}
            for m, base, value, d, low, high in rows
        ]
    )  # fmt: skip
    console = Console(width=80, record=True)
    console.print(differences_table(diffs, [], "t"))
    text = console.export_text()
    cells = {line.split()[0]: line.split() for line in text.splitlines() if line.split()}
    assert cells["att/req"][3:6] == ["0.000", "[0.000,", "0.000]"], text
    assert cells["success"][3:7] == ["0.0", "pp", "[0.0", "pp,"], text
    assert cells["billed"][3] == "$0.0000", text
    for line in (cells["att/req"], cells["success"], cells["billed"]):
        assert line[-2] == "0.0%", text  # the relative difference
    assert "-0.0" not in text and "+0.0" not in text and "-$0.0" not in text, text


def test_a_long_metric_name_folds_rather_than_being_cut() -> None:
    from rich.console import Console

    from llmtraffic.experiment.tables import differences_table

    m = "incident.0.unserved_requests"
    diffs = pd.DataFrame(
        [{"metric": m, "value": "sdk", "base_mean": 15_892.0, "value_mean": 3_312.0,
          "diff": -12_580.0, "ci_low": -12_700.0, "ci_high": -12_460.0,
          "relative": -12_580 / 15_892, "pairs": 2}]
    )  # fmt: skip
    console = Console(width=80, record=True)
    console.print(differences_table(diffs, [], "t"))
    text = console.export_text()
    assert "…" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    first = next(j for j, line in enumerate(lines) if line.startswith("incident."))
    assert (lines[first].split()[0] + lines[first + 1].split()[0]) == m, text
