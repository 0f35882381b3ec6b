"""``llmtraffic calibrate``: the fit on hand-computed tables, both table layouts, and the
snippet's round trip through a simulation (docs/providers.md, "Calibrating from a load
test")."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from llmtraffic import Simulation, scenario_from_dict
from llmtraffic.calibrate import BenchRow, calibrate, fit_line, read_bench
from llmtraffic.cli import main

DATA = Path(__file__).parent / "data" / "bench"


def test_a_line_is_fitted_exactly() -> None:
    """tpot = 0.01 + 0.0002 n at n = 1, 4, 16, 64; TTFT = 0.1 + 0.002 n."""
    rows = [
        BenchRow(n, 0.1 + 0.002 * n, 0.01 + 0.0002 * n, i) for i, n in enumerate([1, 4, 16, 64])
    ]
    cal = calibrate(rows)
    assert cal.tpot.intercept == pytest.approx(0.01)
    assert cal.tpot.slope == pytest.approx(0.0002)
    assert cal.tpot.r2 == pytest.approx(1.0)
    assert cal.tpot.worst == pytest.approx(0.0, abs=1e-12)
    (n0, s0), (n1, s1) = cal.points()
    assert (n0, n1) == (1, 64)
    assert s0 == pytest.approx(0.0102) and s1 == pytest.approx(0.0228)
    assert cal.ttft_at_one() == pytest.approx(0.102)


def test_fit_quality_on_a_hand_computed_case() -> None:
    """y = 1, 3, 2 at x = 0, 1, 2: slope 0.5, intercept 1.5, residuals -0.5, 1, -0.5:
    R^2 = 1 - 1.5 / 2 = 0.25; the worst miss is 0.5 / 1 at x = 0."""
    fit = fit_line([0.0, 1.0, 2.0], [1.0, 3.0, 2.0])
    assert fit.intercept == pytest.approx(1.5) and fit.slope == pytest.approx(0.5)
    assert fit.r2 == pytest.approx(0.25)
    assert fit.worst == pytest.approx(0.5)


def test_a_curve_the_line_misses_keeps_its_measured_points() -> None:
    """Flat then steep: the line misses by more than 10%, so the points are used as they are."""
    rows = [BenchRow(n, 0.1, t, i) for i, (n, t) in enumerate([(1, 0.01), (8, 0.01), (16, 0.05)])]
    cal = calibrate(rows)
    assert cal.line_points() is None
    assert cal.points() == [(1, 0.01), (8, 0.01), (16, 0.05)]
    assert "measured points are used" in cal.snippet()


def test_the_vllm_table_is_read_in_milliseconds() -> None:
    rows = read_bench(DATA / "vllm_levels.csv")
    assert [r.concurrency for r in rows] == [1, 8, 16, 32, 64]
    assert rows[0].ttft == pytest.approx(0.0182) and rows[0].tpot == pytest.approx(0.0068)
    assert [r.line for r in rows] == [2, 3, 4, 5, 6]


def test_the_guidellm_table_uses_the_measured_concurrency() -> None:
    rows = read_bench(DATA / "guidellm_benchmarks.csv")
    assert [r.concurrency for r in rows] == [0.99, 7.96, 31.7, 63.2]
    assert rows[-1].ttft == pytest.approx(0.0902) and rows[-1].tpot == pytest.approx(0.0151)


def test_guidellm_without_a_concurrency_column_reads_the_strategy(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text(
        "Benchmark,Time to First Token,Time per Output Token\n"
        "Strategy,Successful ms,Successful ms\n"
        ",Mean,Mean\n"
        "synchronous,18,6.8\n"
        "concurrent@16,33,8.9\n",
        encoding="utf-8",
    )
    assert [r.concurrency for r in read_bench(path)] == [1.0, 16.0]


def snippet_scenario(snippet: str, n: int) -> dict[str, Any]:
    """The snippet's provider (64 batch places, no noise) with ``n`` requests of 100 output
    tokens at once."""
    provider = tomllib.loads(snippet)["providers"]["NAME"]
    provider["service"]["noise_sigma"] = 0
    provider["service"]["ttft"] = 0.0
    return {
        "run": {"duration": 1, "seed": 1},
        "providers": {
            "p": {
                "model": "m",
                "prices": {"input": 1.0, "output": 1.0},
                "capacity": {"slots": 64},
                **provider,
            }
        },
        "features": {
            "f": {
                "provider": "p",
                "arrivals": {"kind": "times", "at": [0.0] * n},
                "input_tokens": {"kind": "fixed", "value": 10},
                "output_tokens": {"kind": "fixed", "value": 100},
            }
        },
    }


@pytest.mark.parametrize("level", range(5))
def test_the_snippet_reproduces_the_tables_per_token_times(level: int) -> None:
    """Paste the snippet, run ``n`` sequences together: each token takes the table's per-token
    time at ``n`` within the fit's worst miss (1.8% on this table)."""
    rows = read_bench(DATA / "vllm_levels.csv")
    cal = calibrate(rows)
    row = rows[level]
    n = int(row.concurrency)
    result = Simulation(scenario_from_dict(snippet_scenario(cal.snippet(), n))).run()
    att = result.df("attempts")
    per_token = float((att.end_time / att.output_tokens).max())
    assert per_token == pytest.approx(row.tpot, rel=cal.tpot.worst + 1e-9)


def test_the_command_prints_a_snippet_within_80_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", str(DATA / "vllm_levels.csv"), "--provider", "gpu"]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines())
    snippet = out[out.index("# llmtraffic calibrate") :]
    parsed = tomllib.loads(snippet)["providers"]["gpu"]
    assert parsed["batching"]["tpot"][0][0] == 1 and parsed["batching"]["tpot"][-1][0] == 64
    assert "R^2 0.999" in snippet
