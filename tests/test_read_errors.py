"""Reading commands on damaged or misnamed inputs: ``plot``, ``report`` and ``compare`` on run
and experiment folders with missing or truncated files, outputs where a file or a folder is
expected, and names (metrics, points, replications) the results do not have.

Each must exit 2 with one message naming the file, flag or name and what to do, print no
traceback, and write nothing. The damaged folders are copies of real ones (the corpus in
``tests/bad_inputs/`` covers what can be written by hand).
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from llmtraffic import load, run_to_folder, scenario_from_dict
from llmtraffic.cli import main
from llmtraffic.errors import LLMTrafficError
from llmtraffic.experiment import read_experiment, run_experiment
from llmtraffic.experiment.store import ExperimentStore
from llmtraffic.plots.run import save_run_plots
from tests.experiment_config import SCENARIO, write


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of the small scenario with every table kept."""
    folder = tmp_path_factory.mktemp("read") / "run"
    run_to_folder(scenario_from_dict(tomllib.loads(SCENARIO)), folder)
    return folder


@pytest.fixture(scope="module")
def experiment_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small experiment (4 points x 2 replications)."""
    root = tmp_path_factory.mktemp("read-exp")
    run_experiment(read_experiment(write(root)), root / "out", workers=1)
    return root / "out"


def damaged(source: Path, target: Path, name: str, keep: int | None) -> Path:
    """A copy of ``source`` whose file ``name`` is cut to ``keep`` bytes (None: removed)."""
    shutil.copytree(source, target)
    path = target / name
    if keep is None:
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:keep])
    return target


def error_of(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command, which must exit 2 without a traceback; its message, flattened."""
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return " ".join(err.split())


@pytest.mark.parametrize(
    ("name", "keep", "phrases"),
    [
        ("summary.json", None, ["has no summary.json", "run the config again"]),
        ("summary.json", 100, ["summary.json is not valid JSON", "truncated"]),
        ("manifest.json", 40, ["manifest.json is not valid JSON", "line"]),
        ("config.json", 10, ["config.json is not valid JSON"]),
        ("timeseries.parquet", 200, ["timeseries.parquet is not a readable Parquet file"]),
        ("requests.parquet", None, ["missing requests.parquet", "run.records = 'all'"]),
    ],
)
@pytest.mark.parametrize("command", ["plot", "report"])
def test_damaged_run_folders(
    run_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    name: str,
    keep: int | None,
    phrases: list[str],
) -> None:
    folder = damaged(run_folder, tmp_path / "run", name, keep)
    message = error_of([command, str(folder)], capsys)
    for phrase in phrases:
        assert phrase in message, message
    # Nothing half-written beside the damage.
    assert not (folder / "plots").exists() and not (folder / "report.html").exists()


def test_a_run_that_lost_several_tables_names_them_all(
    run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = damaged(run_folder, tmp_path / "run", "timeseries.parquet", None)
    (folder / "attempts.parquet").unlink()
    message = error_of(["plot", str(folder)], capsys)
    assert "missing timeseries.parquet, attempts.parquet" in message, message
    assert "run.records = 'all'" in message


def test_a_run_that_kept_no_tables_is_plotted_without_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tomllib.loads(SCENARIO)
    raw["run"]["records"] = "summary"
    folder = tmp_path / "run"
    run_to_folder(scenario_from_dict(raw), folder)
    paths = save_run_plots(load(folder), tmp_path / "p")
    assert [p.name for p in paths] == ["costs.png"]
    with pytest.raises(LLMTrafficError) as info:
        load(folder).table("timeseries")
    text = str(info.value)
    assert "run.records = 'summary' (no tables)" in text
    assert "run.records = 'all' or run.records = 'timeseries'" in text
    with pytest.raises(LLMTrafficError, match=r"again with run\.records = 'all'$"):
        load(folder).table("attempts")


def test_json_that_is_not_what_llmtraffic_wrote(
    run_folder: Path, experiment_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Valid JSON without the keys the commands read (a hand edit, a file from elsewhere)."""
    run = damaged(run_folder, tmp_path / "run", "summary.json", 0)
    (run / "summary.json").write_text('{"note": "mine"}')
    message = error_of(["report", str(run)], capsys)
    assert "summary.json is not what llmtraffic writes there: it has no requests" in message
    exp = damaged(experiment_folder, tmp_path / "exp", "experiment.json", 0)
    (exp / "experiment.json").write_text("[]")
    message = error_of(["compare", str(exp)], capsys)
    assert "experiment.json is not what llmtraffic writes there: it has no name, axes" in message


@pytest.mark.parametrize("table", ["summary", "points"])
@pytest.mark.parametrize("command", ["compare", "plot", "report"])
def test_a_truncated_experiment_table(
    experiment_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    table: str,
) -> None:
    folder = damaged(experiment_folder, tmp_path / "exp", f"{table}.parquet", 300)
    message = error_of([command, str(folder)], capsys)
    assert f"{table}.parquet is not a readable Parquet file" in message, message
    assert not (folder / "plots").exists() and not (folder / "report.html").exists()


@pytest.mark.parametrize("command", [["compare"], ["plot"], ["report"]])
def test_a_truncated_experiment_json(
    experiment_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    folder = damaged(experiment_folder, tmp_path / "exp", "experiment.json", 150)
    message = error_of([*command, str(folder)], capsys)
    assert "experiment.json is not valid JSON" in message, message
    assert "run the config again" in message


def test_a_truncated_run_in_an_experiment_is_run_again(
    experiment_folder: Path, tmp_path: Path
) -> None:
    """A run whose summary.json was cut short is not done: the experiment's rerun redoes it
    (the reader's error is a ValueError too, which the resume treats as "not done")."""
    folder = tmp_path / "exp"
    shutil.copytree(experiment_folder, folder)
    spec = read_experiment(write(tmp_path))
    run = spec.runs()[0]
    store = ExperimentStore(folder)
    summary = store.run_dir(run.point.id, run.replication) / "summary.json"
    summary.write_text(summary.read_text()[:50])
    assert not store.is_done(run)
    outcome = run_experiment(spec, folder, workers=1)
    assert (outcome.done, outcome.skipped) == (1, len(spec.runs()) - 1)
    assert load(summary.parent).summary["requests"] > 0


def test_outputs_of_the_wrong_kind(
    run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    message = error_of(["plot", str(run_folder), "--out", str(a_file)], capsys)
    assert f"--out {a_file} is a file" in message and "give a folder path" in message
    assert a_file.read_text() == "mine"
    message = error_of(["report", str(run_folder), "--out", str(tmp_path)], capsys)
    assert f"{tmp_path} is a folder" in message
    assert f"{tmp_path / 'report.html'}" in message
    message = error_of(["report", str(run_folder), "--out", str(a_file / "r.html")], capsys)
    assert f"cannot write the report {a_file / 'r.html'}" in message, message
    message = error_of(["plot", str(run_folder), "--out", str(a_file / "plots")], capsys)
    assert f"cannot create the plots folder {a_file / 'plots'}" in message, message


def test_names_the_results_do_not_have(
    run_folder: Path, experiment_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, exp = str(run_folder), str(experiment_folder)
    message = error_of(["compare", run, run, "--metric", "nope"], capsys)
    assert "--metric nope: no such metric" in message
    assert "success_rate" in message and "per feature feature.<name>.<metric>" in message
    message = error_of(["compare", exp, "--metric", "succes_rate"], capsys)
    assert "did you mean success_rate" in message
    message = error_of(["report", exp, "--point", "nope"], capsys)
    assert "--point nope: no point 'nope'" in message
    assert "p000-policy=naive-error_rate=0.01" in message
    for command in ("report", "plot"):
        message = error_of([command, exp, "--rep", "7"], capsys)
        assert "--rep 7" in message and "replications 0 to 1" in message
    message = error_of(["plot", exp, "--point", "p9"], capsys)
    assert "--point p9: no point 'p9'" in message
    assert not (experiment_folder / "report.html").exists()
    assert not (experiment_folder / "plots").exists()
