"""Means, 95% confidence intervals and paired differences, against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from llmtraffic.experiment.analysis import (
    fill_counts,
    flatten_summary,
    mean_ci,
    paired_differences,
    paired_runs,
    point_stats,
)

# Student t quantiles (0.975) from a printed table: 3 and 2 degrees of freedom.
T975_3 = 3.182446
T975_2 = 4.302653


def test_mean_ci_of_a_hand_case() -> None:
    # 1, 2, 3, 4: mean 2.5, sample sd sqrt(5/3) = 1.290994; half-width t * sd / sqrt(4).
    mean, low, high, n = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = T975_3 * math.sqrt(5 / 3) / 2
    assert n == 4
    assert mean == 2.5
    assert low == pytest.approx(2.5 - half, abs=1e-5)
    assert high == pytest.approx(2.5 + half, abs=1e-5)
    assert half == pytest.approx(2.0543, abs=1e-4)


def test_mean_ci_edge_cases() -> None:
    mean, low, high, n = mean_ci([7.0])
    assert (mean, n) == (7.0, 1)
    assert math.isnan(low) and math.isnan(high)
    mean, _, _, n = mean_ci([])
    assert n == 0 and math.isnan(mean)
    # NaN and infinite values are left out (an undefined ratio in one run).
    assert mean_ci([1.0, math.nan, 3.0, math.inf])[0] == 2.0
    assert mean_ci([1.0, math.nan, 3.0])[3] == 2
    # No spread, no width.
    assert mean_ci([2.0, 2.0, 2.0])[1:3] == (2.0, 2.0)


def test_flatten_summary() -> None:
    summary = {
        "requests": 10,
        "cost_amplification": None,
        "latency_max": "inf",
        "scenario": "s",
        "outcomes": {"ok": 9, "exhausted": 1},
        "features": {"chat": {"requests": 10, "outcomes": {"ok": 9}}},
        "incidents": [{"kind": "outage", "metastable": True, "recovery_time": None}],
    }
    row = flatten_summary(summary)
    assert row["requests"] == 10
    assert math.isnan(row["cost_amplification"])
    assert row["latency_max"] == math.inf
    assert row["scenario"] == "s"
    assert row["outcomes.ok"] == 9 and row["outcomes.exhausted"] == 1
    assert row["feature.chat.requests"] == 10
    assert row["feature.chat.outcomes.ok"] == 9
    assert row["incident.0.metastable"] == 1.0
    assert math.isnan(row["incident.0.recovery_time"])
    assert row["incident.0.kind"] == "outage"
    df = fill_counts(pd.DataFrame([row, {"requests": 5, "outcomes.ok": 5}]))
    assert df["outcomes.exhausted"].tolist() == [1, 0]


def two_policies() -> pd.DataFrame:
    """Three paired replications of two policies at two loads; rows shuffled on purpose."""
    rows = []
    base = {0: 10.0, 1: 12.0, 2: 11.0}
    gain = {0: 1.0, 1: 2.0, 2: 3.0}  # backoff - naive, per replication
    for load in (1, 2):
        for r in range(3):
            rows.append(
                {
                    "point_id": f"n{load}",
                    "policy": "naive",
                    "load": load,
                    "replication": r,
                    "seed": r,
                    "cost": base[r] * load,
                }
            )
            rows.append(
                {
                    "point_id": f"b{load}",
                    "policy": "backoff",
                    "load": load,
                    "replication": r,
                    "seed": r,
                    "cost": base[r] * load + gain[r],
                }
            )
    df = pd.DataFrame(rows)
    return df.sample(frac=1.0, random_state=3).reset_index(drop=True)


def test_paired_differences_pair_by_replication() -> None:
    diffs = paired_differences(two_policies(), "policy", "naive", ["cost"], ["policy", "load"])
    assert set(diffs["load"]) == {1, 2}
    for _, row in diffs.iterrows():
        assert row["value"] == "backoff"
        # Differences 1, 2, 3: mean 2, sd 1, half-width t(2) / sqrt(3).
        assert row["diff"] == pytest.approx(2.0)
        half = T975_2 / math.sqrt(3)
        assert row["ci_low"] == pytest.approx(2.0 - half, abs=1e-5)
        assert row["ci_high"] == pytest.approx(2.0 + half, abs=1e-5)
        assert row["pairs"] == 3
        assert row["base_mean"] == pytest.approx(11.0 * row["load"])
        assert row["relative"] == pytest.approx(2.0 / (11.0 * row["load"]))


def test_paired_differences_name_a_missing_base() -> None:
    with pytest.raises(KeyError, match="policy has no value 'budget'; its values: "):
        paired_differences(two_policies(), "policy", "budget", ["cost"], ["policy", "load"])


def test_numeric_axis_values_match_what_a_user_types() -> None:
    diffs = paired_differences(two_policies(), "load", "1", ["cost"], ["policy", "load"])
    assert set(diffs["value"]) == {"2"}
    naive = diffs[diffs["policy"] == "naive"].iloc[0]
    assert naive["diff"] == pytest.approx(11.0)


def test_point_stats_long_format() -> None:
    stats = point_stats(two_policies(), ["policy", "load"])
    assert list(stats.columns) == [
        "point_id",
        "policy",
        "load",
        "metric",
        "mean",
        "ci_low",
        "ci_high",
        "n",
    ]
    row = stats[(stats["point_id"] == "b1") & (stats["metric"] == "cost")].iloc[0]
    values = np.array([11.0, 14.0, 14.0])
    assert row["mean"] == pytest.approx(values.mean())
    half = T975_2 * values.std(ddof=1) / math.sqrt(3)
    assert row["ci_high"] - row["mean"] == pytest.approx(half, abs=1e-5)
    assert row["n"] == 3
    assert set(stats["metric"]) == {"cost"}  # ids, seeds and axes are not metrics


def test_paired_runs_of_two_experiments() -> None:
    df = two_policies()
    left = df[df["point_id"] == "n1"]
    right = df[df["point_id"] == "b1"]
    out = paired_runs(left, right, ["cost"])
    assert out.iloc[0]["diff"] == pytest.approx(2.0)
    assert out.iloc[0]["pairs"] == 3
    with pytest.raises(ValueError, match="no runs pair up"):
        paired_runs(left, right.assign(seed=right["seed"] + 100), ["cost"])


def flags(values: dict[str, list[float]]) -> pd.DataFrame:
    """A summary table of one axis (policy) with a per-run flag and a cost per replication."""
    rows = [
        {"point_id": p, "policy": p, "replication": r, "seed": r, "cost": 1.0 + r, **{m: v}}
        for p, vals in values.items()
        for r, v in enumerate(vals)
        for m in ("incident.0.metastable",)
    ]
    return pd.DataFrame(rows)


def test_a_flag_gets_the_exact_binomial_interval_not_a_t_interval() -> None:
    """[1, 1, 1]: a t interval has no width (1 to 1); Clopper-Pearson's lower end is
    (alpha/2)^(1/n) = 0.025^(1/3). [1, 1, 0]: the t interval is -0.77 to 2.10; the exact one
    stays in [0, 1]. An undetermined run (NaN) is left out of n."""
    stats = point_stats(flags({"a": [1, 1, 1], "b": [1, 1, 0], "c": [1, math.nan, 0]}), ["policy"])
    by = stats[stats["metric"] == "incident.0.metastable"].set_index("point_id")
    assert by.loc["a", "mean"] == 1.0 and by.loc["a", "ci_high"] == pytest.approx(1.0)
    assert by.loc["a", "ci_low"] == pytest.approx(0.025 ** (1 / 3), rel=1e-9)
    assert 0.0 < by.loc["b", "ci_low"] < 2 / 3 < by.loc["b", "ci_high"] < 1.0
    assert by.loc["c", "n"] == 2 and by.loc["c", "mean"] == 0.5
    cost = stats[(stats["metric"] == "cost") & (stats["point_id"] == "a")].iloc[0]
    assert cost["ci_low"] < cost["mean"] < cost["ci_high"]  # other metrics keep the t interval


def test_a_flag_difference_uses_the_two_exact_intervals() -> None:
    """0 of 3 vs 3 of 3: the difference of shares is 1; each side's exact interval at 97.5%
    (so both hold together at 95%) is [0, 1 - 0.0125^(1/3)] and [0.0125^(1/3), 1], so the
    difference's interval is [2 * 0.0125^(1/3) - 1, 1]. A t interval on the differences
    [1, 1, 1] would be [1, 1]."""
    summary = flags({"plain": [0, 0, 0], "naive": [1, 1, 1]})
    column = "incident.0.metastable"
    row = paired_differences(summary, "policy", "plain", [column], ["policy"]).iloc[0]
    edge = 0.0125 ** (1 / 3)
    assert (row["diff"], row["pairs"]) == (1.0, 3)
    assert row["ci_low"] == pytest.approx(2 * edge - 1, rel=1e-9)
    assert row["ci_high"] == pytest.approx(1.0)
    left, right = summary[summary["policy"] == "plain"], summary[summary["policy"] == "naive"]
    runs = paired_runs(left, right, [column]).iloc[0]
    assert runs["ci_low"] == pytest.approx(2 * edge - 1, rel=1e-9)
    # Pairs where either run is undetermined are left out.
    summary = flags({"plain": [0, math.nan, 0], "naive": [1, 1, math.nan]})
    row = paired_differences(summary, "policy", "plain", [column], ["policy"]).iloc[0]
    assert row["pairs"] == 1 and row["diff"] == 1.0


def test_undetermined_verdicts_are_shown_as_such() -> None:
    from rich.console import Console

    from llmtraffic.experiment.tables import differences_table, fmt_count, points_table
    from llmtraffic.report_table import incidents_table

    assert fmt_count(0.5, 2, 3) == "1 of 2, 1 undetermined"
    assert fmt_count(math.nan, 0, 3) == "3 undetermined"
    assert fmt_count(math.nan, 0) == "-"
    summary = flags({"plain": [math.nan, math.nan], "naive": [1, math.nan]})
    summary["requests"] = 10
    console = Console(width=200, record=True)
    console.print(points_table(point_stats(summary, ["policy"]), ["policy"], 2))
    column = "incident.0.metastable"
    diffs = paired_differences(summary, "policy", "plain", [column], ["policy"])
    console.print(differences_table(diffs, [], "t"))
    incident = {
        "provider": "p",
        "kind": "outage",
        "start": 10.0,
        "end": 20.0,
        "success_rate_before": 1.0,
        "success_rate_during": 0.5,
        "attempt_amplification_during": 2.0,
        "extra_cost": 0.1,
        "recovery_time": None,
        "metastable": None,
        "metastable_reason": "the arrivals stop 5 s after the end",
    }
    console.print(incidents_table({"incidents": [incident]}))
    text = " ".join(console.export_text().split())
    assert "2 undetermined" in text and "1 of 1, 1 undetermined" in text
    assert "metastable undetermined" in text  # the differences table's base cell
    assert "undetermined (1)" in text and "1. incident 1: the arrivals stop 5 s" in text
    assert "too short to tell" in text


def test_a_point_without_the_incident_has_no_verdict_not_an_undetermined_one() -> None:
    """A sweep over incidents ("none" or an outage): the points without one show "-" for
    metastable, not "2 undetermined" (they were shown as undetermined)."""
    from rich.console import Console

    from llmtraffic.experiment.tables import points_table

    summary = flags({"none": [math.nan, math.nan], "outage": [0, math.nan]})
    summary["requests"] = 10
    summary["incident.0.start"] = [math.nan, math.nan, 600.0, 600.0]
    console = Console(width=200, record=True)
    console.print(points_table(point_stats(summary, ["policy"]), ["policy"], 2))
    rows = {line.split()[0]: line for line in console.export_text().splitlines() if line.strip()}
    assert rows["none"].rstrip().endswith("-"), rows["none"]
    assert "undetermined" not in rows["none"]
    assert "0 of 1, 1 undetermined" in rows["outage"]
