"""Size estimates and limits (``llmtraffic.limits``): expected arrivals per arrival process,
time-series bins, runs of an experiment; what is refused without ``--allow-large`` and what
``validate`` prints; the seed range, checked before anything runs."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llmtraffic import limits, load, scenario_from_dict
from llmtraffic.cli import main
from llmtraffic.config.scenario import MAX_SEED
from llmtraffic.experiment import load_experiment, read_experiment
from llmtraffic.results import recorder
from tests.experiment_config import EXPERIMENT, SCENARIO

BASE: dict[str, Any] = {
    "name": "size",
    "run": {"duration": 600, "timeseries_bin": 10},
    "providers": {"p": {"model": "m", "prices": {"input": 1.0, "output": 2.0}}},
    "features": {
        "f": {
            "provider": "p",
            "arrivals": {"kind": "poisson", "rate": 5.0},
            "input_tokens": {"kind": "fixed", "value": 10},
            "output_tokens": {"kind": "fixed", "value": 10},
        }
    },
}


def scenario(arrivals: dict[str, Any] | None = None, **run: Any) -> Any:
    raw: dict[str, Any] = {**BASE, "run": {**BASE["run"], **run}}
    if arrivals is not None:
        raw["features"] = {"f": {**BASE["features"]["f"], "arrivals": arrivals}}
    return scenario_from_dict(raw)


def flat(text: str) -> str:
    return " ".join(text.split())


# --- estimates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arrivals", "expected"),
    [
        ({"kind": "poisson", "rate": 5.0}, 5.0 * 600),
        # 1M users x 5 requests a day, flat: the article's example, per 600 s.
        ({"kind": "dau", "users": 1e6, "requests_per_user": 5}, 1e6 * 5 / 86400 * 600),
        # Peak to trough 3: the peak is 1.5 x the mean (mean x 2 x 3 / 4).
        ({"kind": "diurnal", "mean_rate": 2.0, "peak_to_trough": 3.0}, 2.0 * 1.5 * 600),
        ({"kind": "diurnal", "mean_rate": 2.0, "profile": [1.0] * 12 + [3.0] * 12}, 3.0 * 600),
        ({"kind": "ramp", "start_rate": 0.0, "end_rate": 10.0}, 5.0 * 600),
        # On 10/s for 1 s, off for 3 s on average: 2.5/s.
        ({"kind": "bursty", "rates": [10.0, 0.0], "mean_durations": [1.0, 3.0]}, 2.5 * 600),
        ({"kind": "times", "at": [1.0, 2.0, 3.0]}, 3.0),
        # pi = (3, 1) / 4 (a state lasts 3x longer in the first): 0.75 x 2 + 0.25 x 6 = 3/s.
        ({"kind": "mmpp", "rates": [2.0, 6.0], "mean_durations": [30.0, 10.0]}, 3.0 * 600),
        # Half a batch a second, 4 requests a batch on average.
        ({"kind": "batch", "rate": 0.5, "mean_size": 4}, 2.0 * 600),
        ({"kind": "resample", "trace": {"path": "builtin:azure-conv"}, "rate": 3.0}, 3.0 * 600),
    ],
)
def test_expected_arrivals_of_each_arrival_process(
    arrivals: dict[str, Any], expected: float
) -> None:
    assert limits.estimate(scenario(arrivals)).arrivals == pytest.approx(expected)


def test_a_replayed_trace_counts_its_rows_and_a_looping_one_its_passes(tmp_path: Path) -> None:
    rows = "\n".join(f"{t},10,20" for t in range(0, 100, 2))  # 50 rows over 100 s
    (tmp_path / "t.csv").write_text("timestamp,input_tokens,output_tokens\n" + rows + "\n")
    pd.read_csv(tmp_path / "t.csv").to_parquet(tmp_path / "t.parquet")
    for name in ("t.csv", "t.parquet"):
        raw = {**BASE, "features": {"f": {"provider": "p", "trace": {"path": name}}}}
        once = scenario_from_dict({**raw, "run": {"timeseries_bin": 10}}, base_dir=tmp_path)
        assert limits.estimate(once).arrivals == 50
        raw["features"]["f"]["trace"]["loop"] = True
        looped = scenario_from_dict(raw, base_dir=tmp_path)
        # 50 rows a pass of 100 s (the last arrival plus the mean gap), over 600 s: 6 passes.
        assert limits.estimate(looped).arrivals == pytest.approx(300)


def test_time_series_bins_and_series() -> None:
    size = limits.estimate(scenario(duration=60, timeseries_bin=0.5))
    assert size.bins == math.ceil(60 * 1.1 / 0.5) + 2  # as the recorder allocates them
    assert size.series == limits.BASE_SERIES + limits.SERIES_PER_FEATURE + 1
    # The counts follow the recorder's columns.
    assert (
        sum(
            len(c)
            for c in (
                recorder.COUNT_COLUMNS,
                recorder.COST_COLUMNS,
                recorder.LEVEL_COLUMNS,
                recorder.SAMPLE_COLUMNS,
            )
        )
        == limits.BASE_SERIES
    )
    assert (
        len(recorder.FEATURE_COLUMNS) + len(recorder.ARRIVAL_COLUMNS) == limits.SERIES_PER_FEATURE
    )


def test_memory_and_time_grow_with_arrivals_and_bins() -> None:
    small = limits.estimate(scenario())
    more = limits.estimate(scenario({"kind": "poisson", "rate": 500.0}))
    finer = limits.estimate(scenario(timeseries_bin=0.01))
    assert more.memory - small.memory == pytest.approx(
        (more.arrivals - small.arrivals) * limits.BYTES_PER_REQUEST
    )
    assert finer.cpu_seconds > small.cpu_seconds and finer.memory > small.memory


# --- what is refused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("features.chat.arrivals.rate=1e9", "features.chat.arrivals.rate"),
        (
            'features.chat.arrivals={kind="dau", users=1e15, requests_per_user=5}',
            "features.chat.arrivals.users",
        ),
        ("run.timeseries_bin=1e-6", "run.timeseries_bin"),
        ("run.duration=1e12", "run.duration"),
    ],
)
def test_a_run_too_large_is_refused_naming_the_field_unless_allowed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    override: str,
    field: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(SCENARIO, encoding="utf-8")
    for command in (["validate"], ["run", "-q"]):
        started = time.monotonic()
        assert main([*command[:1], "c.toml", *command[1:], "--set", override]) == 2
        assert time.monotonic() - started < 10  # refused up front, not after trying
        err = flat(capsys.readouterr().err)
        assert "too large to run" in err and field in err and "--allow-large" in err
        assert "a run may take 2 GB and 1 h" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]  # no folder made
    assert main(["validate", "c.toml", "--set", override, "--allow-large"]) == 0
    assert "size: about" in flat(capsys.readouterr().out)


def test_validate_prints_the_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(SCENARIO, encoding="utf-8")
    (tmp_path / "e.toml").write_text(EXPERIMENT, encoding="utf-8")
    assert main(["validate", "c.toml"]) == 0
    out = flat(capsys.readouterr().out)
    # 8 requests a second for 60 s; 5 s bins over 66 s (+2).
    assert "size: about 480 arrivals and 16 time-series bins x 29 series per run" in out
    assert main(["validate", "e.toml"]) == 0
    out = flat(capsys.readouterr().out)
    assert "size: 8 runs, about 3,840 arrivals" in out and "the largest run: about 480" in out


def test_ten_million_replications_are_refused_before_the_grid_is_built(tmp_path: Path) -> None:
    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT, encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(limits.SizeError) as info:
        read_experiment(path, ["experiment.replications=10000000"])
    assert time.monotonic() - started < 5  # 2 GB and minutes when the runs were built
    text = flat(str(info.value))
    assert (
        "experiment.replications: 4 grid points x 10,000,000 replications make 4.0e+07 runs" in text
    )
    assert "100,000" in text and "--allow-large" in text


def test_an_experiment_of_too_much_cpu_time_in_all_is_refused(tmp_path: Path) -> None:
    # Each run is fine on its own (an hour of 1000/s: about 22 s), but 4,400 of them are not.
    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT, encoding="utf-8")
    sets = ["features.chat.arrivals.rate=1000", "run.duration=3600", "run.timeseries_bin=60"]
    spec = read_experiment(path, ["experiment.replications=1100", *sets])
    with pytest.raises(
        limits.SizeError,
        match=r"4400 runs .* take about 26 h of CPU time; an experiment may take 24 h",
    ):
        limits.check_experiment(((p.id, p.scenario) for p in spec.points), spec.replications)


# --- seeds ----------------------------------------------------------------------------------


def test_seeds_beyond_the_range_are_refused_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "e.toml").write_text(EXPERIMENT, encoding="utf-8")
    with pytest.raises(SystemExit) as code:
        main(["run", "e.toml", "--seed", str(2**70)])
    assert code.value.code == 2
    assert "2**63 - 1" in capsys.readouterr().err
    cases = [
        (f"experiment.seeds=[1, {2**63}]", "experiment.seeds"),
        (f"run.seed={MAX_SEED}", "run.seed"),  # the second replication's seed overflows
    ]
    for override, field in cases:
        assert main(["run", "e.toml", "-q", "--set", override]) == 2
        err = flat(capsys.readouterr().err)
        assert field in err and "2**63 - 1" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.toml"]


def test_the_largest_seed_works_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(SCENARIO, encoding="utf-8")
    (tmp_path / "e.toml").write_text(EXPERIMENT, encoding="utf-8")
    assert main(["run", "c.toml", "-q", "--out", "one", "--seed", str(MAX_SEED)]) == 0
    assert load("one").summary["seed"] == MAX_SEED
    (tmp_path / "e.toml").write_text(
        EXPERIMENT.replace("replications = 2", f"seeds = [{MAX_SEED}]"), encoding="utf-8"
    )
    assert main(["run", "e.toml", "-q", "--out", "exp", "--workers", "1"]) == 0
    data = load_experiment("exp")
    assert data.summary["seed"].tolist() == [MAX_SEED] * 4
    assert main(["compare", "exp", "exp"]) == 0
