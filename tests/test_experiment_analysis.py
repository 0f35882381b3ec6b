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
