"""Latency as users see it (docs/metrics.md, "Latency"): time to first token and time per output
token per attempt and per feature, streamed or not; the SDKs' timeouts (total, first token, idle
between chunks); stalled streams; SLO attainment and goodput. Hand-computed cases.

The provider of these cases serves with the token model and no noise: generation starts after
``ttft`` = 0.5 s, then 50 tokens/s (0.02 s per token), 100 output tokens, so an attempt runs
0.5 + 100 * 0.02 = 2.5 s, and its first token is complete at 0.5 + 0.02 = 0.52 s (the rule
partial billing counts tokens by). One slot: a second request at the same time waits 2.5 s.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from llmtraffic import ConfigError, Simulation, scenario_from_dict

TTFT, TPOT, OUTPUT = 0.5, 0.02, 100
E2E = TTFT + OUTPUT * TPOT  # 2.5 s
FIRST = TTFT + TPOT  # 0.52 s: the first token, streamed


def run(
    times: list[float],
    *,
    stream: bool,
    policy: dict[str, Any] | None = None,
    failures: dict[str, Any] | None = None,
    slo: dict[str, Any] | None = None,
    decode_tps: float = 1 / TPOT,
    billing: dict[str, Any] | None = None,
    duration: float | None = None,
    incidents: list[dict[str, Any]] | None = None,
    drain: float | None = None,
) -> Any:
    feature: dict[str, Any] = {
        "provider": "p",
        "arrivals": {"kind": "times", "at": times},
        "input_tokens": {"kind": "fixed", "value": 1000},
        "output_tokens": {"kind": "fixed", "value": OUTPUT},
        "policy": "pol",
        "stream": stream,
    }
    if slo is not None:
        feature["slo"] = slo
    raw = {
        "run": {
            "duration": duration if duration is not None else max(times) + 1,
            "seed": 3,
            "timeseries_bin": 1,
            **({"drain": drain} if drain is not None else {}),
        },
        "providers": {
            "p": {
                "model": "m",
                "prices": {"input": 1.0, "output": 2.0},
                "capacity": {"slots": 1},
                "service": {
                    "kind": "tokens",
                    "ttft": TTFT,
                    "decode_tps": decode_tps,
                    "noise_sigma": 0,
                },
                "failures": failures or {},
                "billing": billing or {},
                "incidents": incidents or [],
            }
        },
        "features": {"f": feature},
        "policies": {"pol": {"retry": {"kind": "none"}, **(policy or {})}},
    }
    return Simulation(scenario_from_dict(raw)).run()


def attempts(result: Any) -> Any:
    return result.df("attempts").sort_values(["request_id", "attempt"]).reset_index(drop=True)


def test_a_streamed_answer_shows_its_first_token_before_the_end() -> None:
    """Two requests at t = 0 on one slot: the first sees its first token after 0.52 s, the
    second after its 2.5 s wait plus 0.52 s; both generate at 0.02 s per token."""
    result = run([0.0, 0.0], stream=True)
    a = attempts(result)
    assert list(a["status"]) == ["ok", "ok"]
    assert a["ttft"].tolist() == pytest.approx([FIRST, E2E + FIRST])
    assert a["tpot"].tolist() == pytest.approx([TPOT, TPOT])
    # vLLM's TPOT: (end - first token) / (tokens - 1)
    assert pytest.approx(TPOT) == (E2E - FIRST) / (OUTPUT - 1)
    f = result.summary["features"]["f"]
    assert f["ttft_p50"] == pytest.approx((FIRST + E2E + FIRST) / 2)
    assert f["tpot_p99"] == pytest.approx(TPOT)
    assert f["latency_p50"] == pytest.approx((E2E + 2 * E2E) / 2)


def test_a_non_streamed_answer_arrives_whole() -> None:
    """Not streamed, the first token the user sees is the whole answer: ttft = latency."""
    result = run([0.0, 0.0], stream=False)
    a = attempts(result)
    assert a["ttft"].tolist() == pytest.approx([E2E, 2 * E2E])
    assert a["tpot"].tolist() == pytest.approx([TPOT, TPOT])  # the provider's pace all the same


def test_ttft_counts_from_arrival_through_retries() -> None:
    """The summary's ttft is the user's: a first attempt that fails fast in an outage (error
    latency 0.05 s) and a retry after a fixed 1 s wait give ttft = 0.05 + 1 + 0.52 from the
    request's arrival."""
    result = run(
        [0.0],
        stream=True,
        policy={"retry": {"kind": "fixed", "delay": 1.0, "max_retries": 1}},
        incidents=[{"kind": "outage", "start": 0, "duration": 0.5}],
        duration=60,
    )
    a = attempts(result)
    assert list(a["status"]) == ["server_error", "ok"]
    assert a["ttft"].iloc[1] == pytest.approx(FIRST)  # from that attempt's send
    assert result.summary["ttft_p50"] == pytest.approx(0.05 + 1.0 + FIRST)


def test_a_slow_but_steady_stream_is_not_cut_by_the_idle_timeout() -> None:
    """1 token/s for 100 tokens (100.5 s in all) under a 2 s idle timeout: the first token at
    1.5 s, then a gap of 1 s each, so the stream completes although it runs far longer than
    the idle timeout."""
    result = run([0.0], stream=True, decode_tps=1.0, policy={"idle_timeout": 2.0}, duration=200)
    (status,) = attempts(result)["status"]
    assert status == "ok"
    assert result.summary["latency_p50"] == pytest.approx(TTFT + 100.0)


def test_a_stream_slower_than_the_idle_timeout_is_cut_before_its_first_token() -> None:
    """1 token/s under a 0.8 s idle timeout: the silence before the first token (0.5 s of
    prefill and 1 s for the token) outlasts it, so the client gives up at 0.8 s, before any
    token (at an even pace that silence is the longest of the stream)."""
    result = run(
        [0.0],
        stream=True,
        decode_tps=1.0,
        policy={"idle_timeout": 0.8},
        billing={"abandoned_keeps_running": False},
        duration=200,
    )
    a = attempts(result)
    assert a["status"].tolist() == ["timeout"]
    assert a["end_time"].iloc[0] == pytest.approx(0.8)
    assert math.isnan(a["ttft"].iloc[0])  # no token reached the user
    # Stopped at the disconnect, 0.3 s into generation at 1 token/s: no whole token.
    assert int(a["output_tokens"].iloc[0]) == 0


def test_a_non_streamed_call_is_one_read_for_the_idle_timeout() -> None:
    """Not streamed, nothing arrives until the end (100.5 s), so a 50 s idle timeout (httpx's
    read timeout) bounds the whole call: cut at 50 s."""
    result = run([0.0], stream=False, decode_tps=1.0, policy={"idle_timeout": 50.0}, duration=200)
    a = attempts(result)
    assert a["status"].tolist() == ["timeout"]
    assert a["end_time"].iloc[0] == pytest.approx(50.0)
    assert math.isnan(a["ttft"].iloc[0])


@pytest.mark.parametrize(
    ("stream", "limit", "cut"),
    [(True, 0.5, 0.5), (True, 0.6, None), (False, 1.0, 1.0), (False, 3.0, None)],
    ids=["streamed-cut", "streamed-in-time", "whole-answer-cut", "whole-answer-in-time"],
)
def test_first_token_timeout(stream: bool, limit: float, cut: float | None) -> None:
    """The first token comes at 0.52 s streamed, at 2.5 s (the whole answer) not streamed."""
    result = run([0.0], stream=stream, policy={"first_token_timeout": limit})
    a = attempts(result)
    if cut is None:
        assert a["status"].tolist() == ["ok"]
        assert a["end_time"].iloc[0] == pytest.approx(E2E)
    else:
        assert a["status"].tolist() == ["timeout"]
        assert a["end_time"].iloc[0] == pytest.approx(cut)


def test_a_queued_streamed_attempt_is_cut_by_the_first_token_timeout() -> None:
    """The second of two requests at t = 0 waits 2.5 s for the slot; a 2 s first-token timeout
    cuts it at 2 s, while the first (first token at 0.52 s) completes: 2.5 s > 2 s total is
    fine once the first token came."""
    result = run([0.0, 0.0], stream=True, policy={"first_token_timeout": 2.0})
    a = attempts(result)
    assert a["status"].tolist() == ["ok", "timeout"]
    assert a["end_time"].tolist() == pytest.approx([E2E, 2.0])


def test_the_total_timeout_still_bounds_a_streamed_attempt() -> None:
    """A first-token limit of 1 s (met at 0.52 s) does not lift the 2 s total timeout."""
    result = run([0.0], stream=True, policy={"first_token_timeout": 1.0, "timeout": 2.0})
    a = attempts(result)
    assert a["status"].tolist() == ["timeout"]
    assert a["end_time"].iloc[0] == pytest.approx(2.0)


def test_a_stalled_stream_is_cut_one_idle_timeout_after_its_last_token() -> None:
    """Every response stalls part-way (stall_rate = 1): the stream stops after k tokens with no
    error. A 3 s idle timeout cuts it 3 s after the last token; the provider bills the input
    and the k tokens (billing.timeout = partial) and frees the slot then."""
    result = run(
        [0.0, 2.5],
        stream=True,
        failures={"stall_rate": 1.0},
        policy={"idle_timeout": 3.0},
        duration=60,
    )
    a = attempts(result)
    assert a["status"].tolist() == ["timeout", "timeout"]
    k = a["output_tokens"].to_numpy()
    assert (k < OUTPUT).all()
    # The last token of the first stream at 0.5 + 0.02 k (k >= 1), or the 3 s limit on the
    # silence before a first token that never comes.
    last = TTFT + TPOT * k[0] if k[0] >= 1 else 0.0
    assert a["end_time"].iloc[0] == pytest.approx(last + 3.0)
    assert a["cost"].tolist() == pytest.approx((1000 * 1e-6 + k * 2e-6).tolist())
    # The second (sent at 2.5 s) waited for the slot until the first was cut, at most 2.5 s
    # after 0.5 + 0.02 * 99: within its own 3 s limit on the silence before a first token.
    assert a["start_time"].iloc[1] == pytest.approx(a["end_time"].iloc[0])


def test_a_stalled_stream_without_a_timeout_hangs_to_the_end_of_the_run() -> None:
    """No timeout at all: the stalled request never ends on its own; a finite drain ends it
    as unfinished, and it holds the slot, so the second request never starts."""
    raw_policy = {"timeout": "inf"}
    with pytest.raises(ConfigError, match=r"stalled stream never ends.*idle_timeout"):
        run([0.0, 0.0], stream=True, failures={"stall_rate": 1.0}, policy=raw_policy)
    result = run(
        [0.0, 0.0],
        stream=True,
        failures={"stall_rate": 1.0},
        policy=raw_policy,
        duration=60,
        drain=100,
    )
    requests = result.df("requests")
    assert requests["outcome"].tolist() == ["unfinished", "unfinished"]
    assert requests["end_time"].tolist() == pytest.approx([160.0, 160.0])


def test_slo_attainment_counts_failures_as_misses() -> None:
    """Four requests at t = 0, 10, 20, 30 on an idle provider, streamed; the first fails
    (a stall cut by the idle timeout). SLO ttft <= 0.6 s and e2e <= 3 s: the three
    successes meet it, so attainment 3/4 and goodput 3 per 40 s."""
    times = [0.0, 10.0, 20.0, 30.0]
    result = run(
        times,
        stream=True,
        slo={"ttft": 0.6, "e2e": 3.0},
        duration=40,
        policy={"idle_timeout": 1.0},
        failures={"stall_rate": 0.25},
    )
    s = result.summary
    ok = s["successes"]
    assert s["slo_attainment"] == pytest.approx(ok / 4)
    assert s["slo_goodput_rps"] == pytest.approx(ok / 40)
    assert s["features"]["f"]["slo_attainment"] == s["slo_attainment"]


def test_an_slo_tighter_than_the_service_is_missed_by_every_request() -> None:
    result = run([0.0, 5.0], stream=True, slo={"tpot": 0.01}, duration=10)
    assert result.summary["success_rate"] == 1.0
    assert result.summary["slo_attainment"] == 0.0


def test_a_run_without_slo_has_no_slo_metrics() -> None:
    result = run([0.0], stream=True)
    assert "slo_attainment" not in result.summary


@pytest.mark.parametrize(
    ("slo", "words"),
    [({}, "at least one of ttft, tpot, e2e"), ({"ttft": "inf"}, "finite")],
)
def test_a_bad_slo_names_the_field(slo: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        run([0.0], stream=True, slo=slo)


def test_midstream_and_stall_rates_cannot_exceed_one() -> None:
    with pytest.raises(ConfigError, match="midstream_rate \\+ stall_rate"):
        run([0.0], stream=True, failures={"midstream_rate": 0.7, "stall_rate": 0.5})


def test_a_service_time_distribution_has_no_time_per_token() -> None:
    """An exponential service ignores the tokens: tpot is undefined (NaN) in the rows and the
    summary, ttft of a non-streamed answer is its latency, and a tpot SLO is refused."""
    raw: dict[str, Any] = {
        "run": {"duration": 20, "seed": 1},
        "providers": {
            "p": {
                "model": "m",
                "prices": {"input": 1.0, "output": 1.0},
                "service": {"kind": "exponential", "mean": 0.5},
            }
        },
        "features": {
            "f": {
                "provider": "p",
                "arrivals": {"kind": "poisson", "rate": 2.0},
                "input_tokens": {"kind": "fixed", "value": 10},
                "output_tokens": {"kind": "fixed", "value": 10},
            }
        },
    }
    result = Simulation(scenario_from_dict(raw)).run()
    assert result.df("attempts")["tpot"].isna().all()
    assert math.isnan(result.summary["tpot_p50"])
    assert result.summary["ttft_p95"] == result.summary["latency_p95"]
    raw["features"]["f"]["slo"] = {"tpot": 0.05}
    with pytest.raises(ConfigError, match=r"slo\.tpot: .*no time per token"):
        scenario_from_dict(raw)
