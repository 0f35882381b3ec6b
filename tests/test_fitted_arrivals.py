"""The arrival kinds ``llmtraffic fit`` chooses among, against their closed forms (MMPP mean
rate pi . lambda and index of dispersion, Fischer and Meier-Hellstern 1993; batch Poisson
dispersion E[B^2] / E[B]; a resampled trace keeps its gap distribution), and the fit itself:
on the bundled Azure trace the chosen model is within 25% of every figure, token tails keep
their top percentiles, and a batched trace is reported as batched."""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from llmtraffic import ConfigError, scenario_from_dict
from llmtraffic.cli import main
from llmtraffic.config.trace import Trace
from llmtraffic.config.workload import (
    BatchArrivals,
    BurstyArrivals,
    EmpiricalTokens,
    MmppArrivals,
    ResampleArrivals,
)
from llmtraffic.fit import TraceFit, fit_trace
from llmtraffic.fit_arrivals import FIGURES, TOLERANCE, error, times_figures
from llmtraffic.workload.arrivals import arrival_times, mean_rate
from llmtraffic.workload.fitted import mmpp_dispersion, stationary, trace_gaps
from llmtraffic.workload.tokens import token_sampler
from tests.conftest import BASE


def times_of(cfg: Any, horizon: float, seed: int) -> np.ndarray:
    chunks = list(arrival_times(cfg, np.random.default_rng(seed), horizon))
    t = np.concatenate(chunks) if chunks else np.zeros(0)
    assert np.all(np.diff(t) >= 0) and (t.size == 0 or (t[0] >= 0 and t[-1] < horizon))
    return t


def idc(t: np.ndarray, window: float, horizon: float) -> float:
    counts = np.bincount((t // window).astype(int), minlength=int(horizon // window))
    counts = counts[: int(horizon // window)]
    return float(counts.var() / counts.mean())


# --- mmpp ----------------------------------------------------------------------------------

THREE = MmppArrivals(
    rates=[1.0, 10.0, 0.0],
    generator=[[-0.1, 0.05, 0.05], [0.2, -0.3, 0.1], [0.5, 0.5, -1.0]],
)


def test_mmpp_stationary_distribution_and_mean_rate_by_hand() -> None:
    # pi Q = 0 by hand: column 2 gives p2 = 0.05 p0 + 0.1 p1; column 0, -0.1 p0 + 0.2 p1 +
    # 0.5 p2 = 0, then p1 = 0.3 p0 and p2 = 0.08 p0: pi = (1, 0.3, 0.08) / 1.38.
    pi = stationary(np.asarray(THREE.matrix()))
    assert pi == pytest.approx(np.array([1, 0.3, 0.08]) / 1.38, rel=1e-12)
    assert mean_rate(THREE, 1.0) == pytest.approx((1 * 1 + 0.3 * 10) / 1.38, rel=1e-12)


def test_mmpp_two_state_dispersion_matches_the_cookbook_closed_form() -> None:
    """IDC(inf) = 1 + 2 (l1 - l2)^2 r1 r2 / ((r1 + r2)^2 (l1 r2 + l2 r1)) (the MMPP
    cookbook's two-state form) equals the general deviation-matrix formula."""
    l1, l2, r1, r2 = 20.0, 2.0, 1 / 30, 1 / 90
    q = np.array([[-r1, r1], [r2, -r2]])
    closed = 1 + 2 * (l1 - l2) ** 2 * r1 * r2 / ((r1 + r2) ** 2 * (l1 * r2 + l2 * r1))
    assert mmpp_dispersion(np.array([l1, l2]), q) == pytest.approx(closed, rel=1e-10)
    # The finite-window form rises from 1 at t -> 0 to the limit.
    assert mmpp_dispersion(np.array([l1, l2]), q, 1e-6) == pytest.approx(1.0, abs=1e-3)
    assert mmpp_dispersion(np.array([l1, l2]), q, 1e7) == pytest.approx(closed, rel=1e-3)


def test_mmpp_simulated_rate_and_dispersion_match_the_formulas() -> None:
    horizon = 200_000.0
    rates, q = np.asarray(THREE.rates), np.asarray(THREE.matrix())
    runs = [times_of(THREE, horizon, seed) for seed in range(3)]
    # Count over the horizon: sd sqrt(IDC(inf) * mean * T), 0.7% of the mean here.
    lam = mean_rate(THREE, horizon)
    sd = math.sqrt(mmpp_dispersion(rates, q) * lam * horizon) / (lam * horizon)
    for t in runs:
        assert abs(t.size / (lam * horizon) - 1) < 4 * sd
    for window in (1.0, 10.0, 100.0):
        measured = np.mean([idc(t, window, horizon) for t in runs])
        # 2,000+ windows a run, three runs: the sample IDC is within a few percent.
        assert measured == pytest.approx(mmpp_dispersion(rates, q, window), rel=0.1), window


def test_mmpp_by_mean_durations_is_the_bursty_source_with_two_states() -> None:
    mmpp = MmppArrivals(rates=[20.0, 2.0], mean_durations=[30.0, 90.0])
    bursty = BurstyArrivals(rates=[20.0, 2.0], mean_durations=[30.0, 90.0])
    assert mmpp.matrix() == [[-1 / 30, 1 / 30], [1 / 90, -1 / 90]]
    assert mean_rate(mmpp, 1.0) == pytest.approx(mean_rate(bursty, 1.0), rel=1e-12)
    # Three states: leaving one, the other two are equally likely.
    assert MmppArrivals(rates=[1, 2, 3], mean_durations=[10, 10, 10]).matrix()[0] == [
        pytest.approx(-0.1),
        pytest.approx(0.05),
        pytest.approx(0.05),
    ]
    # One state is Poisson.
    t = times_of(MmppArrivals(rates=[4.0], mean_durations=[5.0]), 10_000.0, 1)
    assert t.size == pytest.approx(40_000, rel=0.02)
    assert idc(t, 10.0, 10_000.0) == pytest.approx(1.0, abs=0.15)


# --- batch ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ({"mean_size": 4.0}, 7.0),  # geometric: E[B^2]/E[B] = (2 - p) / p = 2 * 4 - 1
        ({"sizes": [0.5, 0.3, 0.2]}, 3.5 / 1.7),  # E[B] = 1.7, E[B^2] = .5 + 1.2 + 1.8
    ],
)
def test_batch_poisson_dispersion_is_the_size_moment_ratio(
    sizes: dict[str, Any], expected: float
) -> None:
    cfg = BatchArrivals.model_validate({"kind": "batch", "rate": 1.0, **sizes})
    mean, square = cfg.size_moments()
    assert square / mean == pytest.approx(expected, rel=1e-12)
    horizon = 100_000.0
    t = times_of(cfg, horizon, 3)
    assert t.size / horizon == pytest.approx(mean_rate(cfg, horizon), rel=0.03)
    assert idc(t, 20.0, horizon) == pytest.approx(expected, rel=0.1)
    # Requests of a batch share its timestamp: a share 1 - 1/E[B] of the gaps is zero.
    assert np.mean(np.diff(t) == 0) == pytest.approx(1 - 1 / mean, abs=0.01)


def test_periodic_batches_with_jitter() -> None:
    every4 = {"kind": "batch", "period": 3.0, "sizes": [0, 0, 0, 1]}  # always 4
    t = times_of(BatchArrivals.model_validate(every4), 300.0, 1)
    assert t.size == 400  # 100 batches of 4 in 300 s, whatever the phase
    assert np.diff(np.unique(t)) == pytest.approx(3.0)
    spread = times_of(BatchArrivals.model_validate({**every4, "jitter": 0.5}), 30_000.0, 2)
    # Spread over half a second after each epoch: no two requests share a time, and each
    # lies within 0.5 s after an epoch on the 3 s grid.
    assert np.all(np.diff(spread) > 0)
    offsets = (spread - spread[0]) % 3.0
    assert np.all((offsets < 0.5) | (offsets > 2.5))


# --- resample ------------------------------------------------------------------------------

AZURE = {"path": "builtin:azure-conv"}


def test_resampled_gaps_keep_the_traces_distribution_at_the_new_rate() -> None:
    cfg = ResampleArrivals.model_validate({"trace": AZURE, "rate": 20.0, "mean_block": 300})
    real = trace_gaps(cfg)
    horizon = 5_000.0
    t = times_of(cfg, horizon, 4)
    # The rate is the given one (the blocks carry the trace's slow swings: a few percent).
    assert t.size / horizon == pytest.approx(20.0, rel=0.05)
    gaps = np.diff(t)
    assert gaps.mean() == pytest.approx(1 / 20.0, rel=0.05)
    # The same distribution, rescaled: a two-sample KS test does not tell them apart.
    ks = stats.ks_2samp(real / real.mean(), gaps / gaps.mean())
    assert ks.pvalue > 0.01, ks


def test_resample_block_length_keeps_or_breaks_the_traces_correlation() -> None:
    def lag1(x: np.ndarray) -> float:
        return float(np.corrcoef(x[:-1], x[1:])[0, 1])

    raw = {"trace": AZURE, "rate": 5.53}
    real = lag1(trace_gaps(ResampleArrivals.model_validate(raw)))
    assert real > 0.05  # the trace's gaps are correlated (slow swings of its rate)
    one = np.diff(times_of(ResampleArrivals.model_validate({**raw, "mean_block": 1}), 40_000, 5))
    assert abs(lag1(one)) < 4 / math.sqrt(one.size)  # blocks of 1: independent gaps
    long = np.diff(
        times_of(ResampleArrivals.model_validate({**raw, "mean_block": 5000}), 40_000, 5)
    )
    assert lag1(long) == pytest.approx(real, abs=0.03)


def test_resample_of_a_trace_without_gaps_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("timestamp,input_tokens,output_tokens\n5,1,1\n", encoding="utf-8")
    cfg = ResampleArrivals.model_validate({"trace": {"path": str(path)}, "rate": 1.0})
    with pytest.raises(Exception, match="resample needs at least two requests"):
        times_of(cfg, 10.0, 1)


# --- config errors -------------------------------------------------------------------------


def problem(arrivals: dict[str, Any]) -> str:
    raw = copy.deepcopy(BASE)
    raw["features"]["f"]["arrivals"] = arrivals
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(raw)
    return " ".join(info.value.problems)


@pytest.mark.parametrize(
    ("arrivals", "says"),
    [
        (
            {"kind": "mmpp", "rates": [1, 2], "generator": [[-1, 1]]},
            "features.f.arrivals.generator: must be 2 x 2",
        ),
        (
            {"kind": "mmpp", "rates": [1, 2], "generator": [[-1, 1], [1, -2]]},
            "generator[1][1]: each row must sum to 0",
        ),
        (
            {"kind": "mmpp", "rates": [1, 2], "generator": [[-1, 1], [0, 0]]},
            "the states must all reach each other",
        ),
        (
            {"kind": "mmpp", "rates": [1, 2], "generator": [[0, 0], [0, 0]]},
            "the states must all reach each other",
        ),
        (
            {"kind": "mmpp", "rates": [1, 2], "mean_durations": [1, 2], "generator": [[0]]},
            "give either 'generator'",
        ),
        ({"kind": "mmpp", "rates": [1, 2]}, "give either 'generator'"),
        ({"kind": "mmpp", "rates": [0, 0], "mean_durations": [1, 2]}, "a rate > 0"),
        (
            {"kind": "mmpp", "rates": [1, 2], "generator": [[-1, 1], [-1, 1]]},
            "generator[1][0]: switching rates must be >= 0",
        ),
        ({"kind": "batch", "rate": 1, "period": 2, "mean_size": 2}, "give either 'rate'"),
        ({"kind": "batch", "rate": 1}, "give either 'mean_size'"),
        ({"kind": "batch", "rate": 1, "mean_size": 0.5}, "mean_size: must be >= 1"),
        ({"kind": "batch", "rate": 1, "sizes": [0, 0]}, "weights must not all be zero"),
        ({"kind": "batch", "rate": 1, "sizes": [1, -1]}, "sizes[1]: weights must be >= 0"),
        ({"kind": "resample", "trace": {"path": "nope.csv"}, "rate": 1}, "trace file not found"),
        ({"kind": "resample", "trace": AZURE, "rate": 1, "mean_block": 0.5}, "mean_block"),
    ],
)
def test_bad_fitted_arrivals_name_the_field(arrivals: dict[str, Any], says: str) -> None:
    assert says in problem(arrivals)


def test_empirical_levels_are_checked() -> None:
    ok = EmpiricalTokens(quantiles=[1, 10, 100], levels=[0, 0.9, 1])
    assert ok.grid() == [0, 0.9, 1]
    cases: list[tuple[list[float], str]] = [
        ([0, 1], "'quantiles' has 3 values but 'levels' has 2"),
        ([0.1, 0.5, 1], "must start at 0"),
        ([0, 1, 1], "levels[2]: levels must be strictly increasing"),
    ]
    for levels, says in cases:
        with pytest.raises(ValueError) as info:
            EmpiricalTokens(quantiles=[1, 10, 100], levels=levels)
        assert says in str(info.value)
    # 90% of draws below 10, 10% between 10 and 100.
    draws = token_sampler(ok, np.random.default_rng(1))(100_000)
    assert np.mean(draws <= 10) == pytest.approx(0.9, abs=0.005)


# --- fit on the bundled trace --------------------------------------------------------------


@pytest.fixture(scope="module")
def azure() -> TraceFit:
    return fit_trace(Trace.model_validate(AZURE))


def test_the_fitted_model_reproduces_the_azure_traces_figures(azure: TraceFit) -> None:
    """Each figure of the chosen model's traffic (mean over five fresh seeds, not those the
    fit chose with) is within 25% of the trace's. The trace has no empty minute: a model's
    share of empty minutes counts as within when it is at most 1% (``error``)."""
    a = azure.arrivals
    assert a.choice is not None
    real = a.choice.real
    # The printed scenario's own arrivals table.
    raw = tomllib.loads(azure.scenario())
    (feature,) = raw["features"].values()
    cfg = scenario_from_dict(raw).features["replayed"].arrivals
    assert feature["arrivals"]["kind"] == a.kind == "mmpp"
    runs = [times_figures(times_of(cfg, a.span, seed), a.span) for seed in range(100, 105)]
    for name in FIGURES:
        model = float(np.mean([r[name] for r in runs]))
        assert error(model, real[name], name) <= TOLERANCE, (name, model, real[name])
    assert max(r["empty"] for r in runs) <= 0.01
    # Poisson at the same rate is far off (per-minute dispersion 1 vs 16).
    poisson = a.choice.candidates[0]
    assert poisson.name == "poisson" and poisson.errors["idc_60"] > 0.9


def test_fitted_token_distributions_keep_the_traces_tail(azure: TraceFit) -> None:
    """Mean, p99 and maximum of the fitted distributions match the trace's (the maximum was
    cut to 5,900 input and 810 output tokens before)."""
    n = azure.rows
    for tf, (mean, p99, top) in (
        (azure.input_tokens, (1154.7, 4142, 14_050)),
        (azure.output_tokens, (211.1, 601, 1000)),
    ):
        cfg = EmpiricalTokens.model_validate(tf.config())
        assert cfg.quantiles[-1] == top  # the distribution reaches the trace's maximum
        draws = token_sampler(cfg, np.random.default_rng(1))(2_000_000)
        assert draws.mean() == pytest.approx(mean, rel=0.005)
        assert np.quantile(draws, 0.99) == pytest.approx(p99, rel=0.01)
        # Two million draws reach into the top 0.01% (the last level before 1, or above).
        assert cfg.quantiles[-2] <= draws.max() <= top
        # The largest of a trace-sized sample: the trace's own maximum is its largest of n
        # draws, so a fitted sample of n reaches the same top half the time or so (within 25%).
        maxima = [token_sampler(cfg, np.random.default_rng(s))(n).max() for s in range(9)]
        assert np.median(maxima) >= 0.75 * top


# --- a batched trace -----------------------------------------------------------------------


def test_a_batched_trace_is_reported_with_its_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Batches every 3 s of 5..15 requests (mean 10: 90% of gaps zero)."""
    rng = np.random.default_rng(7)
    epochs = 1_700_000_000.0 + np.arange(0, 3600, 3.0)
    t = np.repeat(epochs, rng.integers(5, 16, epochs.size))
    path = tmp_path / "batched.csv"
    pd.DataFrame({"timestamp": t, "input_tokens": 100, "output_tokens": 10}).to_csv(
        path, index=False
    )
    fit = fit_trace(Trace.model_validate({"path": str(path)}))
    assert fit.arrivals.choice is not None
    b = fit.arrivals.choice.batching
    assert b is not None
    assert b.zero_share == pytest.approx(0.9, abs=0.01) and b.periodic and b.period == 3.0
    assert fit.arrivals.kind == "batch" and fit.arrivals.config["period"] == 3.0
    monkeypatch.chdir(tmp_path)
    assert main(["fit", str(path), "--snippet", "fitted.toml"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Batched timestamps: batches every 3 s, 90% of gaps zero" in out, out
    assert "time unit s (assumed; --time-unit)" in out
    # The fitted batches run.
    sc = scenario_from_dict(tomllib.loads((tmp_path / "fitted.toml").read_text()))
    cfg = sc.features["replayed"].arrivals
    synthetic = times_of(cfg, 3600.0, 1)
    assert np.mean(np.diff(synthetic) == 0) == pytest.approx(0.9, abs=0.01)


def test_a_poisson_trace_is_not_called_batched(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    t = np.cumsum(rng.exponential(0.2, 20_000))
    path = tmp_path / "p.csv"
    pd.DataFrame({"timestamp": t, "input_tokens": 1, "output_tokens": 1}).to_csv(path, index=False)
    a = fit_trace(Trace.model_validate({"path": str(path)})).arrivals
    assert a.choice is not None
    b = a.choice.batching
    assert b is not None and not b.batched
    assert b.describe().startswith("no (0.0% of gaps zero)")
    assert a.kind == "poisson"


def test_a_trace_too_long_to_keep_its_times_is_still_fitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past ``MAX_GAPS`` requests the times are not kept: no batch or resampling candidate,
    and the report says the repeats were not measured."""
    import llmtraffic.fit

    monkeypatch.setattr(llmtraffic.fit, "MAX_GAPS", 1000)
    rng = np.random.default_rng(9)
    t = np.cumsum(rng.exponential(0.1, 5000))
    path = tmp_path / "p.csv"
    pd.DataFrame({"timestamp": t, "input_tokens": 1, "output_tokens": 1}).to_csv(path, index=False)
    a = fit_trace(Trace.model_validate({"path": str(path)})).arrivals
    assert a.choice is not None and a.choice.batching is None
    assert [c.name for c in a.choice.candidates][:1] == ["poisson"]
    assert all(c.config["kind"] in ("poisson", "mmpp") for c in a.choice.candidates)
    assert main(["fit", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Batched timestamps: not measured (over 1,000 requests)" in out
