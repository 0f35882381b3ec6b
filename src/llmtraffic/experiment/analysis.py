"""Statistics over replications: flat summary rows, means with 95% confidence intervals per
grid point, and paired differences between the values of an axis.

Replications of different points share seeds (common random numbers), so a comparison pairs
the runs with the same replication index: the difference of each pair removes the traffic's
own variance, and the interval is a t interval on those differences.

A per-run 0/1 flag (``metastable``: ``BINARY_KEYS``) is a count of runs, not a quantity with a
spread: its mean is the share of runs that raised it, with the exact (Clopper-Pearson)
binomial interval, never a t interval (on [1, 1, 0] a t interval reads -0.77 to 2.10). The
difference of two shares gets the conservative interval from the two sides' exact intervals
(``paired_diff_ci``). ``llmtraffic check`` judges flags with the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from llmtraffic.results.metrics import BINARY_KEYS

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "KEY_METRICS",
    "binomial_ci",
    "fill_counts",
    "flatten_summary",
    "is_binary",
    "mean_ci",
    "metric_ci",
    "metric_columns",
    "paired_diff_ci",
    "paired_differences",
    "paired_runs",
    "point_stats",
]

ID_COLUMNS = ("point_id", "replication", "seed")
"""Columns of the summary table that identify a run rather than measure it."""

NOT_METRICS = frozenset({"replication", "seed", "schema_version"})
"""Numeric columns that are not metrics (no mean or interval is computed for them)."""

COUNT_PREFIXES = ("outcomes.", "attempt_statuses.")
"""Count columns that summary.json leaves out when zero (filled with 0 in the table)."""

KEY_METRICS = (
    "success_rate",
    "attempt_amplification",
    "attempt_error_rate",
    "billed_cost",
    "wasted_cost",
    "cost_amplification",
    "cost_per_month",
    "latency_p95",
    "peak_attempt_rate_ratio",
)
"""The metrics tables and comparisons show unless asked for others."""


def flatten_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One flat row of a run's summary.json: every scalar metric, nested counts as
    ``outcomes.<outcome>``, per-feature metrics as ``feature.<name>.<metric>`` and per-incident
    ones as ``incident.<i>.<metric>``.

    Nulls (undefined ratios) become NaN, "inf" becomes infinity, and ``metastable`` becomes
    1.0 / 0.0 / NaN so that its mean is the share of runs that did not recover.
    """
    row: dict[str, Any] = {}
    for key, value in summary.items():
        if key == "features" and isinstance(value, Mapping):
            for feature, metrics in value.items():
                for k, v in _flat(metrics, f"feature.{feature}.").items():
                    row[k] = v
        elif key == "incidents" and isinstance(value, list):
            for i, incident in enumerate(value):
                row.update(_flat(incident, f"incident.{i}."))
        else:
            row.update(_flat({key: value}, ""))
    return row


def _flat(obj: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, name + "."))
        elif isinstance(value, list):
            continue  # no metric is a list at this level; incidents are handled by the caller
        else:
            out[name] = _scalar(value)
    return out


def _scalar(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    return value


def fill_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Missing counts (a status no attempt had) as 0 rather than NaN."""
    cols = [c for c in df.columns if any(part in c for part in COUNT_PREFIXES)]
    if cols:
        df[cols] = df[cols].fillna(0)
    return df


def metric_columns(df: pd.DataFrame, axes: Sequence[str] = ()) -> list[str]:
    """The numeric metric columns of a summary table (not ids, axes or seeds)."""
    skip = set(ID_COLUMNS) | set(axes) | NOT_METRICS
    return [c for c in df.columns if c not in skip and df[c].dtype.kind in "fiub"]


def mean_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float, int]:
    """Mean and two-sided t confidence interval of the finite values: (mean, low, high, n).

    With one value the bounds are NaN (no spread to estimate); with none, everything is.
    The interval is ``mean -+ t(1 - alpha/2, n - 1) * s / sqrt(n)`` with ``s`` the sample
    standard deviation.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    from scipy import stats  # imported on use: it is slow to import

    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half, n


def is_binary(column: str) -> bool:
    """Whether a summary column is a per-run 0/1 flag (``metastable``, per incident too)."""
    return column.rsplit(".", 1)[-1] in BINARY_KEYS


def binomial_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float, int]:
    """Share of the finite 0/1 values that are 1, with its exact (Clopper-Pearson) interval:
    (share, low, high, n). With one value there is an interval too (1 of 1: 0.025 to 1)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    from scipy import stats  # imported on use: it is slow to import

    k = int(np.count_nonzero(x == 1.0))
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return k / n, float(ci.low), float(ci.high), n


def metric_ci(
    column: str, values: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of a metric over runs: the binomial interval of a flag's share,
    the t interval of anything else."""
    return binomial_ci(values, confidence) if is_binary(column) else mean_ci(values, confidence)


def paired_diff_ci(
    column: str, a: np.ndarray, b: np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of ``b - a`` over paired runs.

    A t interval on the pairs' differences; for a 0/1 flag, the difference of the two shares
    (pairs where both are defined) with the interval ``[low_b - high_a, high_b - low_a]`` of
    the two exact intervals at ``1 - (1 - confidence) / 2`` each, so that both hold together
    with at least ``confidence`` (Bonferroni): conservative, within [-1, 1], and never the t
    interval a few 0/1 differences would give (on [1, 0, 0] vs [0, 0, 0]: -0.77 to 1.43).
    """
    if not is_binary(column):
        return mean_ci(b - a, confidence)
    both = np.isfinite(a) & np.isfinite(b)
    each = 1 - (1 - confidence) / 2
    share_a, low_a, high_a, n = binomial_ci(a[both], each)
    share_b, low_b, high_b, _ = binomial_ci(b[both], each)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    return share_b - share_a, low_b - high_a, high_b - low_a, n


def point_stats(
    summary: pd.DataFrame, axes: Sequence[str], confidence: float = 0.95
) -> pd.DataFrame:
    """Per point and metric: the axis values, mean, ci_low, ci_high and n (long format: one
    row per point and metric); a flag's interval is binomial (``metric_ci``)."""
    import pandas as pd

    metrics = metric_columns(summary, axes)
    rows = []
    for point_id, group in summary.groupby("point_id", sort=False):
        head = {"point_id": point_id, **{a: group[a].iloc[0] for a in axes}}
        for metric in metrics:
            values = group[metric].to_numpy(dtype=float)
            mean, low, high, n = metric_ci(metric, values, confidence)
            rows.append(
                {**head, "metric": metric, "mean": mean, "ci_low": low, "ci_high": high, "n": n}
            )
    columns = ["point_id", *axes, "metric", "mean", "ci_low", "ci_high", "n"]
    return pd.DataFrame(rows, columns=columns)


def paired_differences(
    summary: pd.DataFrame,
    axis: str,
    base: Any,
    metrics: Sequence[str],
    axes: Sequence[str],
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Differences ``value - base`` along ``axis``, paired by replication and by the values of
    every other axis: one row per other-axis group, value and metric, with the mean of each
    side, the mean difference, its t interval, the relative difference and the pairs used."""
    import pandas as pd

    if axis not in summary.columns:
        raise KeyError(f"no axis {axis!r} in the summary table; axes: {', '.join(axes)}")
    key = summary[axis].map(_text)
    base_text = _text(base)
    if base_text not in set(key):
        choices = ", ".join(dict.fromkeys(key))
        raise KeyError(f"{axis} has no value {base!r}; its values: {choices}")
    others = [a for a in axes if a != axis]
    keyed = summary.assign(_key=key)
    rows = []
    groups = keyed.groupby(others, sort=False, dropna=False) if others else [((), keyed)]
    for group_key, group in groups:
        labels = dict(
            zip(others, group_key if isinstance(group_key, tuple) else (group_key,), strict=True)
        )
        left = group[group["_key"] == base_text].set_index("replication")
        for value in dict.fromkeys(group["_key"]):
            if value == base_text:
                continue
            right = group[group["_key"] == value].set_index("replication")
            common = left.index.intersection(right.index)
            for metric in metrics:
                a = left.loc[common, metric].to_numpy(dtype=float)
                b = right.loc[common, metric].to_numpy(dtype=float)
                mean, low, high, n = paired_diff_ci(metric, a, b, confidence)
                base_mean = _nanmean(a)
                rows.append(
                    {
                        **labels,
                        "value": value,
                        "metric": metric,
                        "base_mean": base_mean,
                        "value_mean": _nanmean(b),
                        "diff": mean,
                        "ci_low": low,
                        "ci_high": high,
                        "relative": mean / base_mean if base_mean else math.nan,
                        "pairs": n,
                    }
                )
    columns = [
        *others,
        "value",
        "metric",
        "base_mean",
        "value_mean",
        "diff",
        "ci_low",
        "ci_high",
        "relative",
        "pairs",
    ]
    return pd.DataFrame(rows, columns=columns)


def paired_runs(
    left: pd.DataFrame, right: pd.DataFrame, metrics: Sequence[str], confidence: float = 0.95
) -> pd.DataFrame:
    """Differences ``right - left`` between two experiments' runs, paired by point id and
    replication where the seeds agree (by replication alone when each has a single point)."""
    import pandas as pd

    on = ["replication", "seed"]
    if left["point_id"].nunique() > 1 or right["point_id"].nunique() > 1:
        on = ["point_id", *on]
    merged = left.merge(right, on=on, suffixes=("_a", "_b"))
    if merged.empty:
        raise ValueError(
            "no runs pair up: the two experiments share no (point, replication, seed); "
            "paired differences need the same seeds"
        )
    rows = []
    group_cols = ["point_id"] if "point_id" in on else []
    groups = merged.groupby(group_cols, sort=False) if group_cols else [((), merged)]
    for gkey, g in groups:
        head = {"point_id": gkey[0] if isinstance(gkey, tuple) else gkey} if group_cols else {}
        for metric in metrics:
            if f"{metric}_a" not in g or f"{metric}_b" not in g:
                continue
            a = g[f"{metric}_a"].to_numpy(dtype=float)
            b = g[f"{metric}_b"].to_numpy(dtype=float)
            mean, low, high, n = paired_diff_ci(metric, a, b, confidence)
            base_mean = _nanmean(a)
            rows.append(
                {
                    **head,
                    "metric": metric,
                    "base_mean": base_mean,
                    "value_mean": _nanmean(b),
                    "diff": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "relative": mean / base_mean if base_mean else math.nan,
                    "pairs": n,
                }
            )
    return pd.DataFrame(rows)


def _nanmean(x: np.ndarray) -> float:
    """Mean of the finite values; NaN (without numpy's warning) when there are none."""
    finite = x[np.isfinite(x)]
    return float(finite.mean()) if finite.size else math.nan


def _text(value: Any) -> str:
    """A value as compared with what a user types (``0.05``, ``naive``, ``true``)."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, float | np.floating):
        f = float(value)
        return str(int(f)) if f.is_integer() else f"{f:g}"
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)
