"""Regression checks for CI: the fault battery, verdicts with intervals, JUnit, baselines, the
testing API and its Hypothesis strategies."""

from __future__ import annotations

import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from llmtraffic import ConfigError, Simulation, scenario_from_dict
from llmtraffic.checks.command import run_checks
from llmtraffic.checks.evaluate import evaluate
from llmtraffic.checks.report import junit_xml
from llmtraffic.checks.spec import parse_checks
from llmtraffic.cli import main
from llmtraffic.testing import assert_metric, run_scenario
from llmtraffic.testing.strategies import scenarios

ROOT = Path(__file__).resolve().parents[1]
BATTERY = ROOT / "experiments" / "ci.toml"
BAD_POLICY = 'policies.under-test={timeout="30s", retry={kind="naive", max_retries=10}}'


@pytest.fixture(scope="module")
def recommended(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return run_checks(BATTERY, out=tmp_path_factory.mktemp("good") / "ci", workers=2)


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return run_checks(
        BATTERY, out=tmp_path_factory.mktemp("bad") / "ci", workers=2, overrides=[BAD_POLICY]
    )


def test_the_recommended_policy_passes_the_battery(recommended: Any) -> None:
    assert recommended.passed, "\n".join(r.message() for r in recommended.failures)
    # Every check ran on every scenario it names: 9 checks over 4 scenarios make 20 rows.
    scenarios_seen = {r.point["incidents"] for r in recommended.results}
    assert scenarios_seen == {"outage", "429-storm", "brownout", "latency-spike"}
    assert len(recommended.results) == 20


def test_naive_retries_fail_and_say_where_and_by_how_much(bad: Any) -> None:
    """Ten immediate retries storm wherever attempts fail: the outage, the 429 storm and the
    latency spike (10-20x the mean rate; the bound allows 3)."""
    assert not bad.passed
    failed = {(r.check.label, r.point["incidents"]) for r in bad.failures}
    for scenario in ("outage", "429-storm", "latency-spike"):
        assert ("no retry storm", scenario) in failed
    storm = next(r for r in bad.failures if r.check.label == "no retry storm")
    text = storm.message()
    assert text.startswith("FAILED: no retry storm [incidents=")
    assert "peak_attempt_rate_ratio = " in text and "needs <= 3" in text and "off by" in text
    assert storm.mean > 6


METASTABLE = """
name = "metastable"
[experiment]
replications = 2
[sweep]
"features.f.policy" = ["plain", "naive"]
[run]
duration = 1100
seed = 3
records = "summary"
recovery = {{ horizon = "6m", hold = "2m" }}
[providers.p]
model = "m"
prices = {{ input = 1.0, output = 2.0 }}
capacity = {{ slots = 20, queue_limit = 100_000 }}
service = {{ kind = "deterministic", value = 1.0 }}
incidents = [{{ kind = "capacity_drop", start = 300, duration = 300, remaining = 0.25 }}]
[policies.plain]
timeout = 10
[policies.naive]
timeout = 10
retry = {{ kind = "naive", max_retries = 10 }}
[features.f]
provider = "p"
policy = "plain"
arrivals = {{ kind = "poisson", rate = 12.5 }}
input_tokens = {{ kind = "fixed", value = 100 }}
output_tokens = {{ kind = "fixed", value = 50 }}
[[check]]
name = "not metastable"
metric = "metastable"
incident = "any"
op = "<="
value = 0
"""


def test_not_metastable_catches_a_storm_that_outlives_its_trigger(tmp_path: Path) -> None:
    """A capacity drop with a deep queue (tests/test_incidents.py): without retries the
    backlog drains (about 273 s after the end, within the 6-minute horizon); ten immediate
    retries into the abandoned work keep it past capacity. The flag is counted per run."""
    path = tmp_path / "metastable.toml"
    path.write_text(METASTABLE.format(), encoding="utf-8")
    report = run_checks(path, out=tmp_path / "out", workers=2)
    by = {r.point["policy"]: r for r in report.results}
    assert by["plain"].passed, by["plain"].message()
    assert not by["naive"].passed
    assert "count rule: 2 of 2 runs raised it, needs none" in by["naive"].message()


def test_junit_lists_every_check(bad: Any, tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    junit_xml(bad.results, bad.name, path)
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == len(bad.results)
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == len(bad.failures) == int(suite.get("failures", "-1"))
    first = failures[0].find("failure")
    assert first is not None and "FAILED" in first.get("message", "")


def test_check_command_exit_codes_and_junit(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "llmtraffic.cli",
        "check",
        str(BATTERY),
        "--workers",
        "2",
        "--out",
        str(tmp_path / "run"),
    ]
    ok = subprocess.run(
        [*cmd, "--junit", str(tmp_path / "ok.xml")], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "20 checks: 20 passed, 0 failed" in ok.stdout
    ET.parse(tmp_path / "ok.xml")
    bad = subprocess.run(
        [*cmd[:-2], "--out", str(tmp_path / "bad"), "--set", BAD_POLICY],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAILED: no retry storm" in bad.stdout
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmtraffic.cli",
            "check",
            str(ROOT / "experiments/quickstart.toml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and "no [[check]] entries" in missing.stderr


def test_baseline_comparison(tmp_path: Path, recommended: Any) -> None:
    base = tmp_path / "baseline.json"
    first = run_checks(BATTERY, out=recommended.folder, workers=2, save_baseline_to=base)
    assert first.passed and base.exists()
    # Same runs against their own baseline: every regression bound holds.
    same = run_checks(BATTERY, out=recommended.folder, workers=2, baseline=base, tolerance=0.05)
    kinds = {r.kind for r in same.results}
    assert kinds == {"bound", "baseline"} and same.passed
    # A worse policy against the good one's baseline: the regression bounds catch it.
    worse = run_checks(
        BATTERY,
        out=tmp_path / "worse",
        workers=2,
        baseline=base,
        tolerance=0.05,
        overrides=[BAD_POLICY],
    )
    regressions = [r for r in worse.failures if r.kind == "baseline"]
    assert regressions and "baseline" in regressions[0].bound


def frame(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for point, vals in values.items():
        for r, v in enumerate(vals):
            rows.append({"point_id": point, "scenario": point, "replication": r, "m": v})
    return pd.DataFrame(rows)


def test_verdicts_use_the_interval() -> None:
    checks = parse_checks([{"metric": "m", "op": ">=", "value": 0.9}])
    summary = frame(
        {
            "clear-pass": [0.95, 0.96, 0.97],
            "clear-fail": [0.5, 0.52, 0.51],
            "noisy": [0.80, 0.95, 0.86],  # mean 0.87 below 0.9, interval reaches above it
            "undefined": [0.95, math.nan, 0.96],
        }
    )
    lenient = {r.point_id: r for r in evaluate(checks, summary, ["scenario"])}
    assert lenient["clear-pass"].passed and not lenient["clear-fail"].passed
    assert lenient["noisy"].passed and "within the replications' noise" in lenient["noisy"].note
    assert not lenient["undefined"].passed and "undefined in 1 of 3" in lenient["undefined"].note
    strict = {r.point_id: r for r in evaluate(checks, summary, ["scenario"], strict=True)}
    assert strict["clear-pass"].passed and not strict["noisy"].passed
    one = evaluate(checks, frame({"single": [0.89]}), ["scenario"])
    assert not one[0].passed  # one replication: the value decides


def flags(values: dict[str, list[float]]) -> pd.DataFrame:
    return frame(values).rename(columns={"m": "incident.0.metastable"})


def test_a_flag_in_two_of_three_runs_fails_not_metastable() -> None:
    """A t interval on [1, 1, 0] is -0.77 to 2.10 and let `metastable <= 0` pass (f8966f2).
    A flag is a count of runs: `<= 0` passes only when no run raised it, in both modes."""
    check = parse_checks([{"metric": "metastable", "incident": 0, "op": "<=", "value": 0}])
    summary = flags({"two": [1, 1, 0], "one": [0, 1, 0], "none": [0, 0, 0]})
    for strict in (False, True):
        by = {r.point_id: r for r in evaluate(check, summary, ["scenario"], strict=strict)}
        assert not by["two"].passed and not by["one"].passed and by["none"].passed
        assert "count rule: 2 of 3 runs raised it, needs none" in by["two"].note
    # The interval shown is the exact binomial one: 2 of 3 -> 0.0943 to 0.9916.
    assert by["two"].mean == pytest.approx(2 / 3)
    assert by["two"].low == pytest.approx(0.094299, abs=1e-6)
    assert by["two"].high == pytest.approx(0.991596, abs=1e-6)


def test_a_share_of_runs_is_judged_on_the_binomial_interval() -> None:
    """`metastable <= 0.5` over 10 runs: 8 raised (share 0.8, exact interval 0.444 to 0.975)
    is within noise by default and fails --strict; 10 of 10 (0.692 to 1) fails both; 2 of 10
    (0.025 to 0.556) passes by default and fails --strict; 0 of 10 (0 to 0.308) passes both."""
    check = parse_checks([{"metric": "metastable", "incident": 0, "op": "<=", "value": 0.5}])
    summary = flags(
        {"eight": [1.0] * 8 + [0.0] * 2, "ten": [1.0] * 10, "two": [1.0] * 2 + [0.0] * 8,
         "zero": [0.0] * 10}
    )  # fmt: skip
    lenient = {r.point_id: r.passed for r in evaluate(check, summary, ["scenario"])}
    strict = {r.point_id: r.passed for r in evaluate(check, summary, ["scenario"], strict=True)}
    assert lenient == {"eight": True, "ten": False, "two": True, "zero": True}
    eight = evaluate(check, flags({"eight": [1.0] * 8 + [0.0] * 2}), ["scenario"])[0]
    assert (eight.low, eight.high) == pytest.approx((0.443904, 0.974789), abs=1e-6)
    assert strict == {"eight": False, "ten": False, "two": False, "zero": True}


def test_always_is_a_count_rule_too_and_continuous_metrics_keep_t() -> None:
    always = parse_checks([{"metric": "metastable", "incident": 0, "op": ">=", "value": 1}])
    by = {r.point_id: r.passed for r in evaluate(always, flags({"a": [1, 1, 1], "b": [1, 1, 0]}),
                                                 ["scenario"])}  # fmt: skip
    assert by == {"a": True, "b": False}
    # A continuous metric with the same values keeps its t interval (-0.77 to 2.10).
    cont = parse_checks([{"metric": "m", "op": "<=", "value": 0}])
    result = evaluate(cont, frame({"a": [1.0, 1.0, 0.0]}), ["scenario"])[0]
    assert result.low == pytest.approx(-0.7676, abs=1e-3) and result.passed
    # A flag that is not 0 or 1 is a broken summary, not a share.
    with pytest.raises(ConfigError, match=r"0/1 flag, but a run has 0\.5$"):  # not np.float64
        evaluate(always, flags({"a": [1, 0.5, 1]}), ["scenario"])
    # An undetermined verdict (null) fails, with the reason to look for.
    undetermined = evaluate(always, flags({"a": [1, math.nan, 1]}), ["scenario"])[0]
    assert not undetermined.passed and "too short to tell" in undetermined.note


def test_within_a_baseline() -> None:
    checks = parse_checks([{"metric": "m", "op": "within", "tolerance": "5%"}])
    summary = frame({"a": [1.00, 1.02], "b": [1.20, 1.22]})
    results = evaluate(checks, summary, ["scenario"], baseline={"a": {"m": 1.0}, "b": {"m": 1.0}})
    by = {r.point_id: r.passed for r in results}
    assert by == {"a": True, "b": False}
    no_base = evaluate(checks, summary, ["scenario"])
    assert not any(r.passed for r in no_base) and "--baseline" in no_base[0].note


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"metric": "m", "op": "=>", "value": 1}, "check[0].op"),
        ({"metric": "m", "op": ">="}, "needs a value"),
        ({"metric": "m", "op": "within"}, "needs a tolerance"),
        ({"metric": "m", "op": "within", "tolerance": "five"}, "malformed tolerance"),
        ({"metric": "m", "op": ">=", "value": math.nan}, "check[0].value: must be a finite"),
        ({"metric": "m", "op": "<=", "value": math.inf}, "check[0].value: must be a finite"),
        ({"op": ">=", "value": 1}, "check[0].metric: missing"),
        ({"metric": "m", "op": ">=", "value": 1, "wher": {}}, "check[0].wher: unknown key"),
    ],
)
def test_bad_checks_are_reported(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_checks([entry])
    assert message in str(info.value), str(info.value)


WITHIN = """
name = "drift"

[experiment]
replications = 2

[run]
duration = 30
seed = 1

[providers.p]
model = "test/model"
prices = { input = 1.0, output = 2.0 }

[features.f]
provider = "p"
policy = "x"
arrivals = { kind = "poisson", rate = 2.0 }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }

[policies.x]
timeout = "10s"

[[check]]
metric = "success_rate"
op = "within"
tolerance = "5%"
"""


def test_within_needs_a_baseline_before_anything_runs(tmp_path: Path) -> None:
    """Without --baseline a 'within' check can only fail: bad input (exit 2), refused before
    the runs; while saving the first baseline it is left out and counted."""
    path = tmp_path / "drift.toml"
    path.write_text(WITHIN, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"check\[0\].*pass --baseline FILE"):
        run_checks(path, out=tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()
    base = tmp_path / "base.json"
    first = run_checks(path, out=tmp_path / "out", workers=1, save_baseline_to=base)
    assert first.results == [] and first.skipped == 1 and first.passed
    assert "1 'within' checks not judged" in first.summary_line()
    again = run_checks(path, out=tmp_path / "out", workers=1, baseline=base)
    assert [r.kind for r in again.results] == ["within"] and again.passed


def test_unknown_metric_axis_or_value_after_the_run() -> None:
    summary = frame({"a": [1.0]}).rename(columns={"m": "success_rate"})
    with pytest.raises(ConfigError, match="did you mean success_rate"):
        evaluate(
            parse_checks([{"metric": "succes_rate", "op": ">=", "value": 1}]), summary, ["scenario"]
        )
    summary = frame({"a": [1.0]})
    with pytest.raises(ConfigError, match="no sweep axis 'policy'"):
        evaluate(
            parse_checks([{"metric": "m", "op": ">=", "value": 1, "where": {"policy": "x"}}]),
            summary,
            ["scenario"],
        )
    with pytest.raises(ConfigError, match="has no value 'zzz'"):
        evaluate(
            parse_checks([{"metric": "m", "op": ">=", "value": 1, "where": {"scenario": "zzz"}}]),
            summary,
            ["scenario"],
        )


def test_testing_api_messages() -> None:
    # Shortened to 5 minutes, before its brownout (at minute 10): no incident.
    short = ["run.duration=300", "providers.gpt-4o-mini.incidents=[]"]
    runs = run_scenario(ROOT / "experiments" / "quickstart.toml", overrides=short, replications=2)
    assert len(runs.summaries) == 2 and runs.seeds == [7, 8]
    assert_metric(runs, "success_rate", ">=", 0.5)
    with pytest.raises(AssertionError) as info:
        assert_metric(runs, "cost_amplification", "<=", 0.5)
    text = str(info.value)
    assert "cost_amplification = " in text and "needs <= 0.5" in text
    assert "seed 7:" in text and "quickstart.toml" in text and "docs/metrics.md" in text
    with pytest.raises(KeyError, match="did you mean"):
        runs.values("succes_rate")


def test_the_pytest_fixtures(llmtraffic_run: Any) -> None:
    runs = llmtraffic_run(
        ROOT / "experiments" / "quickstart.toml",
        overrides=["run.duration=120", "providers.gpt-4o-mini.incidents=[]"],
    )
    assert runs.summary["requests"] > 0


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(policy={"preset": "recommended", "timeout": 5.0}))
def test_property_the_recommended_policy_bounds_attempts(raw: dict[str, Any]) -> None:
    """Built on the exported strategies, as a team would test its own policy."""
    sc = scenario_from_dict(raw)
    result = Simulation(sc).run()
    req = result.df("requests")
    assert req.request_id.is_unique
    assert (req.attempts <= 4).all()  # 3 retries of the preset
    assert (req.billed_cost >= req.useful_cost - 1e-12).all()


# --- known before the run ---------------------------------------------------------------------

SMALL_CHECKS = """
name = "small"
[experiment]
replications = 2
[sweep]
"features.f.policy" = ["none", "backoff"]
[run]
duration = 60
seed = 1
[providers.p]
model = "m"
prices = {{ input = 1.0, output = 2.0 }}
capacity = {{ slots = 50, queue_limit = 100 }}
service = {{ kind = "deterministic", value = 1.0 }}
incidents = [{{ kind = "outage", start = 20, duration = 5 }}]
[policies.none]
[policies.backoff]
retry = {{ kind = "exponential", max_retries = 2, base = "1s" }}
[features.f]
provider = "p"
policy = "none"
arrivals = {{ kind = "poisson", rate = 5.0 }}
input_tokens = {{ kind = "fixed", value = 100 }}
output_tokens = {{ kind = "fixed", value = 50 }}
value_per_success = 0.01
{checks}
"""


def small(tmp_path: Path, checks: str) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL_CHECKS.format(checks=checks), encoding="utf-8")
    return path


def test_a_count_that_never_happened_reads_zero(tmp_path: Path) -> None:
    """summary.json leaves zero counts out; a check on one reads 0 instead of failing."""
    checks = """
[[check]]
metric = "outcomes.rejected_budget"
op = "<="
value = 0
[[check]]
metric = "feature.f.attempt_statuses.overloaded"
op = "<"
value = 1
"""
    report = run_checks(small(tmp_path, checks), out=tmp_path / "out", workers=1)
    assert report.passed, "\n".join(r.message() for r in report.failures)
    assert len(report.results) == 4
    assert all(r.mean == 0 and r.n == 2 for r in report.results)


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ('metric = "sucess_rate"\nop = ">="\nvalue = 1', "did you mean success_rate"),
        ('metric = "feature.g.success_rate"\nop = ">="\nvalue = 1', "feature.g.success_rate"),
        ('metric = "recovery_time"\nincident = 1\nop = "<"\nvalue = 1', "incident.1.recovery"),
        ('metric = "roi"\nop = ">"\nvalue = 0\nwhere = { polcy = "none" }', "no sweep axis"),
        ('metric = "roi"\nop = ">"\nvalue = 0\nwhere = { policy = "nope" }', "no value 'nope'"),
    ],
)
def test_a_check_the_runs_cannot_answer_fails_before_any_run(
    tmp_path: Path, check: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        run_checks(small(tmp_path, f"[[check]]\n{check}\n"), out=tmp_path / "out", workers=1)
    assert message in str(info.value), str(info.value)
    assert not (tmp_path / "out").exists()


def test_the_expected_columns_are_the_columns_runs_have(tmp_path: Path) -> None:
    """The names known before the run (checks.columns) and those of a real summary.csv agree:
    every real column is expected, and every expected column but the zero counts is real."""
    from llmtraffic.checks.columns import expected_columns, is_count_column
    from llmtraffic.experiment import load_experiment, read_experiment, run_experiment

    spec = read_experiment(small(tmp_path, ""))
    run_experiment(spec, tmp_path / "out", workers=1)
    data = load_experiment(tmp_path / "out")
    real = set(data.summary.columns) - {"point_id", "replication", "policy"}
    expected = expected_columns(p.scenario for p in spec.points)
    assert real - expected == set()
    assert {c for c in expected - real if not is_count_column(c)} == set()
    assert "incident.0.recovery_time" in real and "feature.f.roi" in real


def test_each_battery_file_has_its_own_folder_and_reports_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two battery files no longer share runs/<experiment name> (the second replaced the
    first's runs); check reports progress as runs finish, and -q prints no table."""
    monkeypatch.chdir(tmp_path)
    checks = '[[check]]\nmetric = "success_rate"\nop = ">="\nvalue = 0.5\n'
    first = small(tmp_path, checks)
    second = tmp_path / "other battery.toml"
    second.write_text(first.read_text(encoding="utf-8"), encoding="utf-8")
    seen: list[tuple[int, int, int]] = []
    report = run_checks(first, workers=1, progress=lambda *a: seen.append(a))
    assert report.folder == Path("runs/check-small") and report.passed
    assert seen[-1] == (4, 4, 0)  # 2 points (the policy axis) x 2 replications
    assert main(["check", str(second), "--workers", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "runs/check-other-battery" in out and "success_rate" not in out
    assert (tmp_path / "runs/check-small/summary.csv").exists()
    assert (tmp_path / "runs/check-other-battery/summary.csv").exists()


def test_an_incident_checks_label_names_the_column_it_reads() -> None:
    """A check's `incident` is the column's index (from 0); its label says incident.0.*, not
    "incident 0", which would read as a different incident than the tables' "#1"."""
    from llmtraffic.checks.spec import Check

    one = Check(metric="recovery_time", incident=0, op="<=", value=120)
    every = Check(metric="recovery_time", incident="any", op="<=", value=120)
    assert one.label == "incident.0.recovery_time <= 120"
    assert every.label == "incident.*.recovery_time <= 120"
    assert Check(metric="success_rate", op=">=", value=0.9).label == "success_rate >= 0.9"
