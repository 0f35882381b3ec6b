"""Experiment files: the grid, point ids, seeds, and exact messages for bad experiment tables."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from llmtraffic import ConfigError
from llmtraffic.cli import main
from llmtraffic.experiment import experiment_from_dict, is_experiment, read_experiment
from llmtraffic.experiment.spec import split_experiment
from tests.experiment_config import EXPERIMENT, SCENARIO, write


def raw(extra: str = "", base: str = SCENARIO) -> dict[str, Any]:
    """The test scenario plus experiment tables written as TOML."""
    return tomllib.loads(base + "\n" + extra)


def problems(extra: str) -> str:
    """The message of the ConfigError that ``extra`` raises."""
    with pytest.raises(ConfigError) as info:
        experiment_from_dict(raw(extra))
    return str(info.value)


def test_the_grid_is_the_cartesian_product_with_readable_stable_ids() -> None:
    spec = experiment_from_dict(tomllib.loads(EXPERIMENT))
    assert [a.name for a in spec.axes] == ["policy", "error_rate"]
    assert [p.id for p in spec.points] == [
        "p000-policy=naive-error_rate=0.01",
        "p001-policy=naive-error_rate=0.1",
        "p002-policy=backoff-error_rate=0.01",
        "p003-policy=backoff-error_rate=0.1",
    ]
    assert spec.points[3].values == {
        "features.chat.policy": "backoff",
        "providers.main.failures.error_rate": 0.1,
    }
    assert spec.points[3].raw["providers"]["main"]["failures"]["error_rate"] == 0.1
    # The same file gives the same ids (and config hashes) every time.
    again = experiment_from_dict(tomllib.loads(EXPERIMENT))
    assert [(p.id, p.config_hash) for p in again.points] == [
        (p.id, p.config_hash) for p in spec.points
    ]
    assert len(spec.runs()) == 8


def test_default_seeds_records_and_name() -> None:
    spec = experiment_from_dict(raw('[experiment]\nreplications = 3\nname = "x"'))
    assert spec.seeds == (11, 12, 13)  # run.seed + r
    assert spec.records == "timeseries"
    assert spec.name == "x"
    assert all(p.raw["run"]["records"] == "timeseries" for p in spec.points)
    assert spec.axes == ()
    assert [p.id for p in spec.points] == ["p000"]


def test_explicit_seeds_records_and_the_seed_flag() -> None:
    spec = experiment_from_dict(raw('[experiment]\nseeds = [5, 9]\nrecords = "all"'))
    assert spec.seeds == (5, 9)
    assert spec.records == "all"
    spec = experiment_from_dict(raw("[experiment]\nreplications = 2"), seed=100)
    assert spec.seeds == (100, 101)


def test_a_scenario_that_sets_its_records_keeps_them() -> None:
    text = SCENARIO.replace('timeseries_bin = "5s"', 'timeseries_bin = "5s"\nrecords = "all"')
    spec = experiment_from_dict(raw("[experiment]\nreplications = 2", base=text))
    assert spec.records == "all"


def test_nested_tables_and_quoted_dotted_keys_mean_the_same() -> None:
    quoted = experiment_from_dict(raw('[sweep]\n"features.chat.policy" = ["naive", "backoff"]'))
    nested = experiment_from_dict(raw('[sweep]\nfeatures.chat.policy = ["naive", "backoff"]'))
    assert [p.id for p in quoted.points] == [p.id for p in nested.points]


def test_table_values_are_labelled_by_kind_or_by_given_labels() -> None:
    spec = experiment_from_dict(
        raw(
            "[sweep]\n"
            '"policies.backoff.retry" = [{ kind = "none" }, { kind = "naive", max_retries = 2 }]'
        )
    )
    assert [p.id for p in spec.points] == ["p000-retry=none", "p001-retry=naive"]
    spec = experiment_from_dict(
        raw(
            '[experiment]\nlabels = { "providers.main.capacity" = ["small", "big"] }\n'
            "[sweep]\n"
            '"providers.main.capacity" = [{ slots = 4 }, { slots = 40, queue_limit = 80 }]'
        )
    )
    assert [p.id for p in spec.points] == ["p000-capacity=small", "p001-capacity=big"]
    assert spec.points[1].raw["providers"]["main"]["capacity"]["slots"] == 40


def test_axis_names_are_told_apart_and_avoid_metric_names() -> None:
    two = SCENARIO.replace(
        "[policies.backoff]",
        '[features.rag]\nprovider = "main"\npolicy = "naive"\narrivals = { kind = "poisson", '
        'rate = 1 }\ninput_tokens = { kind = "fixed", value = 10 }\noutput_tokens = { kind = '
        '"fixed", value = 10 }\n\n[policies.backoff]',
    )
    spec = experiment_from_dict(
        raw(
            '[sweep]\n"features.chat.policy" = ["naive"]\n"features.rag.policy" = ["backoff"]\n'
            '"run.duration" = [30, 60]',
            base=two,
        )
    )
    assert [a.name for a in spec.axes] == ["chat.policy", "rag.policy", "run.duration"]
    assert spec.points[0].id == "p000-chat.policy=naive-rag.policy=backoff-run.duration=30"


def test_checks_are_kept_untouched() -> None:
    spec = experiment_from_dict(
        raw('[[check]]\nmetric = "success_rate"\nmin = 0.9\n\n[[check]]\nanything = [1, 2]')
    )
    assert spec.checks == ({"metric": "success_rate", "min": 0.9}, {"anything": [1, 2]})
    assert spec.to_json()["checks"] == [dict(c) for c in spec.checks]


def test_experiment_tables_are_stripped_and_detected() -> None:
    data = raw('[experiment]\nreplications = 2\n[sweep]\n"run.seed" = [1]\n[[check]]\nx = 1')
    scenario, extra = split_experiment(data)
    assert set(extra) == {"experiment", "sweep", "check"}
    assert not {"experiment", "sweep", "check"} & set(scenario)
    assert is_experiment(data)
    assert not is_experiment(raw())


def test_an_unknown_key_in_experiment_names_it_and_the_allowed_keys() -> None:
    msg = problems("[experiment]\nreplicatons = 3")
    assert "experiment.replicatons: unknown key" in msg
    assert "replications" in msg and "seeds" in msg


def test_bad_experiment_values_name_their_field() -> None:
    assert "experiment.replications: must be >= 1, got 0" in problems(
        "[experiment]\nreplications = 0"
    )
    assert "experiment.records: expected" in problems('[experiment]\nrecords = "some"')
    assert "experiment.seeds: seeds must differ" in problems("[experiment]\nseeds = [1, 1]")
    msg = problems("[experiment]\nreplications = 3\nseeds = [1, 2]")
    assert "experiment.replications: 3, but experiment.seeds lists 2 seeds" in msg


def test_a_sweep_path_that_does_not_exist_is_named() -> None:
    msg = problems('[sweep]\n"providers.main.failures.eror_rate" = [0.1]')
    assert 'sweep."providers.main.failures.eror_rate": no such setting' in msg
    assert "providers.main.failures has no key 'eror_rate'" in msg
    assert "error_rate" in msg  # the keys it has
    msg = problems('[sweep]\n"providers.mian.failures.error_rate" = [0.1]')
    assert "providers has no entry 'mian'; defined: main" in msg
    msg = problems('[sweep]\n"features.chat.policy.name" = ["x"]')
    assert "features.chat.policy is a value, not a table" in msg


def test_an_invalid_sweep_value_names_the_path_and_the_value() -> None:
    msg = problems('[sweep]\n"providers.main.failures.error_rate" = [0.1, 1.5]')
    assert 'sweep."providers.main.failures.error_rate" = 1.5: must be <= 1.0, got 1.5' in msg
    assert "0.1" not in msg.replace("1.5", "")  # the good value is not blamed
    msg = problems('[sweep]\n"features.chat.policy" = ["naive", "nope"]')
    assert 'sweep."features.chat.policy" = "nope"' in msg
    assert "unknown policy 'nope'" in msg
    msg = problems('[sweep]\n"policies.naive.retry" = [{ kind = "naive", max_retries = -1 }]')
    value = '{ kind = "naive", max_retries = -1 }'
    assert f'sweep."policies.naive.retry" = {value} (at max_retries)' in msg


def test_an_invalid_value_is_reported_once_however_many_points_have_it() -> None:
    msg = problems('[sweep]\n"providers.main.failures.error_rate" = [2.0]\n"run.seed" = [1, 2, 3]')
    assert msg.count("= 2.0") == 1


def test_empty_and_non_list_sweep_values() -> None:
    assert 'sweep."features.chat.policy": empty list of values' in problems(
        '[sweep]\n"features.chat.policy" = []'
    )
    msg = problems('[sweep]\n"features.chat.policy" = "naive"')
    assert "sweep.\"features.chat.policy\": expected a list of values, got 'naive'" in msg
    assert "sweep: no axes" in problems("[sweep]")


def test_overlapping_paths_and_bad_labels() -> None:
    msg = problems(
        '[sweep]\n"policies.naive.retry" = [{ kind = "none" }]\n'
        '"policies.naive.retry.max_retries" = [1]'
    )
    assert 'inside the swept table "policies.naive.retry"' in msg
    msg = problems(
        '[experiment]\nlabels = { "features.chat.policy" = ["a"] }\n'
        '[sweep]\n"features.chat.policy" = ["naive", "backoff"]'
    )
    assert 'experiment.labels."features.chat.policy": 1 labels for 2 values' in msg


def test_checks_must_be_an_array_of_tables() -> None:
    data = raw()
    data["check"] = 3
    with pytest.raises(ConfigError, match="check: expected an array of tables"):
        experiment_from_dict(data)


def test_an_error_in_the_base_scenario_is_not_blamed_on_the_sweep() -> None:
    base = SCENARIO.replace("rate = 8", "rate = -8")
    with pytest.raises(ConfigError) as info:
        experiment_from_dict(raw('[sweep]\n"features.chat.policy" = ["naive"]', base=base))
    assert "features.chat.arrivals.rate" in str(info.value)
    assert "sweep" not in str(info.value)


def test_read_experiment_applies_overrides_and_keeps_the_text(tmp_path: Path) -> None:
    path = write(tmp_path)
    spec = read_experiment(path, ["experiment.replications=3", "run.seed=40"])
    assert spec.seeds == (40, 41, 42)
    assert spec.text == EXPERIMENT
    assert spec.overrides == ("experiment.replications=3", "run.seed=40")


def test_validate_an_experiment_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path)
    assert main(["validate", "exp.toml"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "valid experiment 'tiny'" in out
    assert "4 points x 2 replications = 8 runs" in out
    # One of each: singular ("1 replication", not "1 replications").
    one = EXPERIMENT.replace("[0.01, 0.1]", "[0.01]").replace('["naive", "backoff"]', '["naive"]')
    write(tmp_path, one.replace("replications = 2", "replications = 1"))
    assert main(["validate", "exp.toml"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 point x 1 replication = 1 run" in out, out
    write(tmp_path, EXPERIMENT.replace("[0.01, 0.1]", "[0.01, -1]"))
    assert main(["validate", "exp.toml"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert 'sweep."providers.main.failures.error_rate" = -1: must be >= 0.0, got -1' in err
