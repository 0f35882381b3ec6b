"""``llmtraffic fit``: known parameters are recovered; the Azure trace's figures are reported;
the emitted scenario reproduces the trace's load."""

from __future__ import annotations

import argparse
import itertools
import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmtraffic import Simulation, TraceError, load_config, scenario_from_dict
from llmtraffic.cli import main
from llmtraffic.config.trace import Trace
from llmtraffic.fit import KS_MAX, fit_trace
from llmtraffic.workload.tokens import empirical_sampler


def synthetic(
    tmp_path: Path, times: np.ndarray, inp: np.ndarray, out: np.ndarray, name: str = "log.csv"
) -> Trace:
    path = tmp_path / name
    pd.DataFrame({"timestamp": times, "input_tokens": inp, "output_tokens": out}).to_csv(
        path, index=False
    )
    return Trace.model_validate({"path": str(path)})


@pytest.mark.parametrize(("mu", "sigma"), [(6.5, 0.6), (4.0, 1.1)])
def test_the_fitter_recovers_lognormal_parameters(tmp_path: Path, mu: float, sigma: float) -> None:
    rng = np.random.default_rng(11)
    n = 20_000
    times = np.cumsum(rng.exponential(0.1, n))
    inp = np.maximum(1, np.rint(rng.lognormal(mu, sigma, n))).astype(int)
    out = np.maximum(1, np.rint(rng.lognormal(mu - 1, sigma / 2, n))).astype(int)
    fit = fit_trace(synthetic(tmp_path, times, inp, out))
    # Standard errors: sigma / sqrt(n) for mu (0.008 at most), sigma / sqrt(2n) for sigma.
    tf = fit.input_tokens
    assert tf.mu == pytest.approx(mu, abs=0.04)
    assert tf.sigma == pytest.approx(sigma, abs=0.03)
    assert tf.ks < KS_MAX and tf.kind == "lognormal"
    cfg = tf.config()
    assert cfg["kind"] == "lognormal"
    assert cfg["median"] == pytest.approx(math.exp(mu), rel=0.05)
    assert cfg["p99"] == pytest.approx(math.exp(mu + 2.3263 * sigma), rel=0.1)
    assert fit.output_tokens.sigma == pytest.approx(sigma / 2, abs=0.03)


def test_a_poor_lognormal_fit_falls_back_to_empirical_quantiles(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 10_000
    # Two modes (short answers and long ones): no lognormal fits this.
    out = np.where(rng.random(n) < 0.5, rng.integers(20, 40, n), rng.integers(380, 420, n))
    fit = fit_trace(synthetic(tmp_path, np.arange(n) * 0.1, out, out))
    tf = fit.output_tokens
    assert tf.ks > KS_MAX and tf.kind == "empirical"
    cfg = tf.config()
    q, levels = cfg["quantiles"], cfg["levels"]
    # p0..p99, the tail levels 10,000 values tell apart (below 1 - 1/n), and the maximum.
    assert levels[50] == 0.5 and levels[100:] == [0.995, 0.999, 0.9995, 1.0]
    assert len(q) == len(levels) == 104
    assert q[0] == out.min() and q[-1] == out.max()
    assert q[50] == pytest.approx(np.median(out), abs=1)
    draws = empirical_sampler(q, np.random.default_rng(1), levels)(200_000)
    assert draws.mean() == pytest.approx(out.mean(), rel=0.01)
    assert np.quantile(draws, 0.25) == pytest.approx(np.quantile(out, 0.25), abs=2)


def test_poisson_arrivals_are_called_poisson(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.exponential(1 / 8.0, 40_000))
    a = fit_trace(synthetic(tmp_path, times, np.ones(40_000, int), np.ones(40_000, int))).arrivals
    assert a.mean_rate == pytest.approx(8.0, rel=0.02)
    assert a.gap_cv == pytest.approx(1.0, abs=0.03)
    assert a.dispersion_second == pytest.approx(1.0, abs=0.1)
    assert a.dispersion_minute == pytest.approx(1.0, abs=0.6)
    assert a.config == {"kind": "poisson", "rate": pytest.approx(8.0, rel=0.02)}


def test_bursty_arrivals_get_an_mmpp_candidate_and_a_model_that_reproduces_them(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(4)
    parts, t0 = [], 0.0
    for minute in range(60):
        rate = 2.0 if (minute // 5) % 2 == 0 else 10.0  # five quiet minutes, five busy ones
        k = rng.poisson(rate * 60)
        parts.append(np.sort(rng.uniform(t0, t0 + 60, k)))
        t0 += 60
    times = np.concatenate(parts)
    ones = np.ones(times.size, int)
    a = fit_trace(synthetic(tmp_path, times, ones, ones)).arrivals
    assert a.dispersion_minute > 10
    assert a.choice is not None
    # BIC finds the two states; EM recovers their rates and five-minute stays.
    mmpp = next(c for c in a.choice.candidates if c.name.startswith("mmpp"))
    assert mmpp.name == "mmpp-2"
    rates, q = mmpp.config["rates"], mmpp.config["generator"]
    assert rates[0] == pytest.approx(2.0, rel=0.1) and rates[1] == pytest.approx(10.0, rel=0.1)
    assert [-1 / q[0][0], -1 / q[1][1]] == pytest.approx([300, 300], rel=0.2)
    # pi . lambda is the trace's mean rate: pi = (q10, q01) / (q01 + q10).
    mean = (rates[0] * q[1][0] + rates[1] * q[0][1]) / (q[0][1] + q[1][0])
    assert mean == pytest.approx(a.mean_rate, rel=1e-3)
    # Exponential stays give an hour less per-minute variance than strict five-minute
    # alternation; the chosen model is within 25% on every figure.
    assert a.choice.model.worst <= 0.25


# The figures of the bundled trace in the project's reference notes (data/README.md).
def test_the_azure_trace_figures() -> None:
    fit = fit_trace(Trace.model_validate({"path": "builtin:azure-conv"}))
    a = fit.arrivals
    assert fit.time_unit == "datetime"
    assert a.requests == fit.rows == 19_366
    assert a.span == pytest.approx(3501.7, abs=0.05)
    assert a.mean_rate == pytest.approx(5.53, abs=0.005)
    assert a.gap_cv == pytest.approx(1.09, abs=0.005)
    assert (a.per_minute_min, a.per_minute_max) == (191, 507)
    assert a.peak_to_mean == pytest.approx(1.52, abs=0.005)
    assert a.dispersion_minute == pytest.approx(16.13, abs=0.005)
    assert a.choice is not None
    real = a.choice.real
    assert real["idc_1"] == pytest.approx(1.385, abs=0.001)
    assert real["idc_10"] == pytest.approx(3.857, abs=0.001)
    assert real["idc_60"] == pytest.approx(a.dispersion_minute, rel=1e-12)
    assert real["empty"] == 0.0
    assert a.choice.batching is not None and a.choice.batching.zero_share == 0.0
    i, o = fit.input_tokens, fit.output_tokens
    assert i.mean == pytest.approx(1154.7, abs=0.05)
    assert (i.p50, i.p99, i.maximum) == (1020, 4142, 14_050)
    assert o.mean == pytest.approx(211.1, abs=0.05)
    assert (o.p50, o.p99, o.maximum) == (129, 601, 1000)
    assert i.kind == o.kind == "empirical"  # KS 0.16 and 0.18: no lognormal fits


def test_the_fitted_scenario_reproduces_the_traces_load(tmp_path: Path) -> None:
    fit = fit_trace(Trace.model_validate({"path": "builtin:azure-conv"}))
    text = fit.scenario(feature="chat", model="openai/gpt-4o")
    raw = tomllib.loads(text)
    raw["providers"]["main"]["capacity"] = {"slots": 500, "queue_limit": 0}
    req = Simulation(scenario_from_dict(raw), seed=2).run().df("requests")
    assert raw["run"]["duration"] == 3502
    # Bursty arrivals with five-minute states: the hour's count varies by a few percent.
    assert len(req) == pytest.approx(19_366, rel=0.08)
    assert req.input_tokens.mean() == pytest.approx(1154.7, rel=0.03)
    assert req.output_tokens.mean() == pytest.approx(211.1, rel=0.03)
    assert req.output_tokens.max() <= 1000
    # The snippet names the replay alternative, which validates as it is.
    assert Trace.model_validate(replay_table(text)).timestamp == "TIMESTAMP"


def replay_table(snippet: str) -> dict[str, object]:
    """The commented-out ``[features.X.trace]`` table of a fitted snippet, parsed."""
    lines = snippet.splitlines()
    start = next(j for j, ln in enumerate(lines) if ln.startswith("#   [features."))
    table = itertools.takewhile(lambda ln: ln.startswith("#   "), lines[start:])
    raw = tomllib.loads("\n".join(ln.removeprefix("#   ") for ln in table))
    (feature,) = raw["features"].values()
    return dict(feature["trace"])


def test_the_fitted_snippet_keeps_to_80_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The TOML `fit` prints keeps to 80 columns like its tables, in a pipe or a wide
    terminal: comments wrap, and a token column in the tens of thousands has its percentiles
    five to a line. Only a path longer than a line (TOML cannot break it) runs past."""
    rng = np.random.default_rng(3)
    n = 400
    times = np.cumsum(rng.exponential(0.5, n))
    inp = rng.integers(10_000, 99_000, n)  # long contexts: bimodal, so no lognormal fits
    inp[: n // 2] = rng.integers(20, 40, n // 2)
    out = rng.integers(1, 500, n)
    folder = tmp_path / ("a-folder-with-a-long-name-" * 4)
    folder.mkdir()
    for where, columns in ((tmp_path, "80"), (tmp_path, "200"), (folder, "80")):
        path = synthetic(where, times, inp, out).path
        monkeypatch.setenv("COLUMNS", columns)
        assert main(["fit", path, "--name", "a-rather-long-feature-name"]) == 0
        text = capsys.readouterr().out
        snippet = text[text.index("# Fitted by") :]
        assert "quantiles = [" in snippet  # the long lists are in it
        assert "…" not in text  # the token table too: nothing cut
        for line in text.splitlines():
            # A path alone on its line, with at most the replay table's `#   path = ""`.
            line = line.rstrip()
            assert len(line) <= 80 or (path in line and len(line) <= len(path) + 13), line
        # The wrapped snippet still runs, and its replay alternative names the trace.
        sc = scenario_from_dict(tomllib.loads(snippet))
        assert sc.features["a-rather-long-feature-name"].input_tokens is not None
        assert replay_table(snippet)["path"] == path


def test_fit_command_prints_the_tables_and_writes_the_scenario(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    rows = "ts,prompt,completion\n" + "".join(f"{1700000000 + i * 0.5},{100 + i},{10}\n"
                                               for i in range(200))  # fmt: skip
    (tmp_path / "log.csv").write_text(rows, encoding="utf-8")
    args = ["fit", "log.csv", "--timestamp", "ts", "--input-tokens", "prompt"]
    args += ["--output-tokens", "completion", "--snippet", "fitted.toml", "--name", "bot"]
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "mean rate 2.010 /s" in out, out  # 200 requests over 99.5 s
    assert "time unit s " in out and "scenario written to fitted.toml" in out
    sc = load_config(tmp_path / "fitted.toml")
    assert list(sc.features) == ["bot"]
    assert sc.providers["main"].prices.input == 0.15  # the default model's preset


def test_fit_command_reports_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "builtin:azure-conv", "--timestamp", "time"]) == 2
    assert "did you mean 'TIMESTAMP'" in capsys.readouterr().err
    assert main(["fit", "builtin:azure-conv", "--window", "10", "5"]) == 2
    assert "--window: 'from' (10 s) must be before 'to' (5 s)" in capsys.readouterr().err
    assert main(["fit", "missing.csv"]) == 2
    assert "trace file not found" in capsys.readouterr().err


def test_fit_errors_name_the_argument_and_flags_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """fit has no --path flag: the file is the TRACE argument; fields with underscores are
    named as the flags they are; an unknown --model is refused before the trace is read."""
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "missing.csv"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "TRACE: trace file not found" in err and "--path" not in err, err
    assert main(["fit", "builtin:azure-conv", "--feature-value", "x"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--feature-value: needs --feature-column" in err, err
    assert main(["fit", "missing.csv", "--model", "openai/gpt-4o-mimi"]) == 2  # the file first
    assert main(["fit", "builtin:azure-conv", "--model", "openai/gpt-4o-mimi"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--model: model 'openai/gpt-4o-mimi' is not a preset" in err, err
    assert "did you mean 'openai/gpt-4o-mini'" in err and "known models:" in err


def test_a_huge_gap_is_refused_without_allocating(tmp_path: Path) -> None:
    """A stray row 5e9 s after the rest asked for a 37 GiB array of per-second counts; the
    span is now bounded (MAX_SPAN) and the counts kept only for busy seconds."""
    cfg = synthetic(tmp_path, np.array([0.0, 1.0, 5e9]), np.array([1, 2, 3]), np.array([1, 1, 1]))
    with pytest.raises(TraceError, match=r"spans more than 10 years.*--window FROM TO"):
        fit_trace(cfg)
    # Just under the bound: a long quiet stretch costs nothing (a year, three requests).
    year = 366 * 86_400.0
    cfg = synthetic(tmp_path, np.array([0.0, 1.0, year]), np.array([1, 2, 3]), np.array([1, 1, 1]))
    arrivals = fit_trace(cfg).arrivals
    assert arrivals.requests == 3 and arrivals.full_minutes == 527_040
    assert arrivals.per_minute_max == 2 and arrivals.per_minute_min == 0


def test_sparse_counts_give_the_dense_dispersion(tmp_path: Path) -> None:
    """The per-second index of dispersion from the busy seconds alone equals numpy's on the
    dense counts (zeros included)."""
    rng = np.random.default_rng(3)
    times = np.sort(rng.uniform(0, 500, 2_000) ** 1.3)  # bunched early, sparse late
    cfg = synthetic(tmp_path, times, np.ones(2_000, int), np.ones(2_000, int))
    arrivals = fit_trace(cfg).arrivals
    rel = times - times[0]
    dense = np.bincount(np.floor(rel).astype(int))[: math.floor(rel[-1])]
    assert arrivals.dispersion_second == pytest.approx(dense.var() / dense.mean(), rel=1e-12)
    minutes = dense[: arrivals.full_minutes * 60].reshape(-1, 60).sum(axis=1)
    assert arrivals.dispersion_minute == pytest.approx(minutes.var() / minutes.mean(), rel=1e-12)


def test_a_trace_without_a_span_and_a_bad_name_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fitted scenario must run as written: one request (or all at one time) gives no
    rate and a duration of 0, and --name becomes the feature and the scenario's folder name."""
    cfg = synthetic(tmp_path, np.array([5.0, 5.0]), np.array([1, 2]), np.array([1, 1]))
    with pytest.raises(TraceError, match="all arrive at the same time, so there is no rate"):
        fit_trace(cfg)
    monkeypatch.chdir(tmp_path)
    times = np.arange(10.0)
    synthetic(tmp_path, times, np.full(10, 5), np.full(10, 7), name="ok.csv")
    assert main(["fit", "ok.csv", "--name", "my bot", "--snippet", "s.toml"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--name: 'my bot' holds ' '" in err and not (tmp_path / "s.toml").exists()
    assert main(["fit", "ok.csv", "--name", "my-bot", "--snippet", "s.toml"]) == 0
    assert list(load_config(tmp_path / "s.toml").features) == ["my-bot"]


# --- public trace layouts, --snippet, help ---------------------------------------------------

DATA = Path(__file__).parent / "data" / "traces"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("azure2023_conv.csv", "CSV, Azure LLM inference 2023 (Splitwise)"),
        ("splitwise_code.csv", "CSV, Azure LLM inference 2023 (Splitwise)"),
        ("azure2024_code.csv", "CSV, Azure LLM inference 2024 (DynamoLLM)"),
        ("burstgpt.csv", "CSV, BurstGPT"),
        ("mooncake.jsonl", "JSON Lines, Mooncake"),
        ("splitwisesim.csv", "CSV, SplitwiseSim"),
    ],
)
def test_fit_reads_a_public_layout_with_no_flags_and_names_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    says: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", str(DATA / name), "--snippet", "fitted.toml"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"format: {says};" in out, out
    # Every row is read, and the scenario's input tokens are the file's own (by a reading of
    # the file that does not go through the trace reader).
    if name.endswith(".jsonl"):
        inp = pd.read_json(DATA / name, lines=True).input_length
    else:
        df = pd.read_csv(DATA / name)
        inp = df[next(c for c in df if c in ("ContextTokens", "Request tokens", "prompt_size"))]
    assert f"rows read / replayed {len(inp)} / {len(inp)}" in out, out
    text = (tmp_path / "fitted.toml").read_text(encoding="utf-8")
    flat = " ".join(line.removeprefix("#") for line in text.splitlines())  # comments wrap
    assert f"mean {inp.mean():,.1f}" in " ".join(flat.split())
    assert load_config(tmp_path / "fitted.toml").features["replayed"].trace is None


def test_fit_flags_still_win_over_a_recognised_layout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["fit", str(DATA / "burstgpt.csv"), "--output-tokens", "Total tokens"]
    assert main([*args, "--model-column", "Model", "--model-value", "ChatGPT"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "output 'Total tokens'" in out and "rows read / replayed 6 / 4" in out, out
    assert "format: CSV;" in out  # Total tokens: not the BurstGPT layout's own columns


def test_snippet_is_checked_before_the_trace_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --snippet that cannot be written is refused first (a long fit is not lost), as a
    problem with the flag, not an invalid config."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    # A trace file that does not exist: had it been read first, that would be the error.
    for snippet, why in [
        ("out", "out: it is a folder; give a file name, such as out/fitted.toml"),
        ("nowhere/s.toml", f"nowhere/s.toml: the folder {tmp_path / 'nowhere'} does not exist"),
    ]:
        assert main(["fit", "missing.csv", "--snippet", snippet]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"--snippet: cannot write the scenario to {why}" in err, err
        assert "invalid config" not in err and "trace file not found" not in err
    (tmp_path / "file").write_text("", encoding="utf-8")
    assert main(["fit", "missing.csv", "--snippet", "file/s.toml"]) == 2
    assert f"{tmp_path / 'file'} is not a folder" in capsys.readouterr().err


def test_every_fit_flag_has_help() -> None:
    from llmtraffic.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    fit = sub.choices["fit"]
    flags = [a for a in fit._actions if not isinstance(a, argparse._HelpAction)]
    assert len(flags) > 15
    assert [a.dest for a in flags if not (a.help or "").strip()] == []
