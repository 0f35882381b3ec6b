"""Continuous batching (docs/providers.md, "Continuous batching") on hand-computed cases.

Unless a test says otherwise: no noise, no time to first token, 10 tokens/s for one sequence
(``decode_tps = 10``), and ``load_factor = 3`` over 3 slots, so the per-token time is 0.1 s
with one sequence decoding, 0.2 s with two and 0.3 s with three (llm-d-inference-sim's
``1 + (F - 1) (n - 1) / (slots - 1)``). Prices: 1 USD per million input tokens, 2 per million
output; 1,000 input tokens, 100 output tokens.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtraffic import ConfigError, Simulation, scenario_from_dict
from llmtraffic.config.provider import Batching
from llmtraffic.provider.batching import tpot_table

INPUT, OUTPUT = 1000, 100
INPUT_COST = INPUT * 1e-6
PER_TOKEN = 2e-6


def scenario(
    times: list[float],
    batching: dict[str, Any] | None = None,
    *,
    slots: int = 3,
    queue_limit: int | str = 10,
    service: dict[str, Any] | None = None,
    timeout: float = 100.0,
    billing: dict[str, Any] | None = None,
    output: int = OUTPUT,
    incidents: list[dict[str, Any]] | None = None,
    failures: dict[str, Any] | None = None,
) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "model": "m",
        "prices": {"input": 1.0, "output": 2.0},
        "capacity": {"slots": slots, "queue_limit": queue_limit},
        "service": service or {"kind": "tokens", "ttft": 0.0, "decode_tps": 10, "noise_sigma": 0},
        "billing": billing or {},
        "incidents": incidents or [],
        "failures": failures or {},
    }
    if batching is not None:
        provider["batching"] = batching
    return {
        "run": {"duration": max(times) + 1, "seed": 1, "timeseries_bin": 1},
        "providers": {"p": provider},
        "features": {
            "f": {
                "provider": "p",
                "arrivals": {"kind": "times", "at": times},
                "input_tokens": {"kind": "fixed", "value": INPUT},
                "output_tokens": {"kind": "fixed", "value": output},
                "policy": "pol",
            }
        },
        "policies": {"pol": {"timeout": timeout, "retry": {"kind": "none"}}},
    }


def attempts(raw: dict[str, Any]) -> Any:
    return Simulation(scenario_from_dict(raw)).run().df("attempts").sort_values("request_id")


LOAD3 = {"load_factor": 3.0}


# The per-token curve --------------------------------------------------------------------------


def test_load_factor_curve_is_llm_d_inference_sims() -> None:
    table = tpot_table(Batching(load_factor=3.0), 5, 10.0)
    # 0.1 s at one sequence, 0.3 s at five, linear in between: 0.1 * (1 + 2 (n - 1) / 4).
    assert table[1:] == pytest.approx([0.1, 0.15, 0.2, 0.25, 0.3])


def test_points_are_interpolated_and_extended_along_the_last_segment() -> None:
    table = tpot_table(Batching(tpot=[[2, 0.01], [4, 0.02], [8, 0.03]]), 10, 60.0)
    # Flat below the first point; 0.005 s per sequence up to 4, then 0.0025; past 8 the last
    # segment goes on (a two-point table is the linear step model a + b * batch).
    want = [0.01, 0.01, 0.015, 0.02, 0.0225, 0.025, 0.0275, 0.03, 0.0325, 0.035]
    assert table[1:] == pytest.approx(want)


# Hand-computed runs ---------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "tpot"), [(1, 0.1), (2, 0.2), (3, 0.3)])
def test_a_constant_batch_decodes_at_its_per_token_time(n: int, tpot: float) -> None:
    """``n`` sequences start together and end together after 100 tokens at tpot(n)."""
    att = attempts(scenario([0.0] * n, LOAD3))
    assert list(att.status) == ["ok"] * n
    assert att.end_time.to_numpy() == pytest.approx([OUTPUT * tpot] * n)


def test_a_sequence_joining_halfway_slows_the_other() -> None:
    """A decodes alone 0-5 s (50 tokens at 0.1 s); B joins at 5 s and both run at 0.2 s: A's
    last 50 tokens take 10 s (ends at 15 s, not 10 s); B then has 50 left alone: 5 s, 20 s."""
    att = attempts(scenario([0.0, 5.0], LOAD3))
    assert att.end_time.to_numpy() == pytest.approx([15.0, 20.0])
    assert list(att.output_tokens) == [OUTPUT, OUTPUT]


def test_a_third_of_the_batch_leaving_speeds_the_rest() -> None:
    """A and B at 0 s, C at 3 s. 0-3 s: two at 0.2 s, 15 tokens each. From 3 s three at
    0.3 s: A and B have 85 left, 25.5 s, so they end at 28.5 s, when C has made 85; C's last
    15, alone at 0.1 s, take 1.5 s: 30 s."""
    att = attempts(scenario([0.0, 0.0, 3.0], LOAD3))
    assert att.end_time.to_numpy() == pytest.approx([28.5, 28.5, 30.0])


def test_a_single_sequence_is_todays_token_service() -> None:
    """One sequence at a time (load_factor over one slot): the same draws and the same times
    as the plain endpoint, noise and time to first token included."""
    service = {"kind": "tokens", "ttft": 0.5, "decode_tps": 40, "noise_sigma": 0.4}
    times = [float(t) for t in range(0, 400, 20)]
    common: dict[str, Any] = {"slots": 1, "service": service, "failures": {"midstream_rate": 0.5}}
    plain = attempts(scenario(times, None, **common))
    batched = attempts(scenario(times, {"load_factor": 2.0}, **common))
    assert list(batched.status) == list(plain.status)
    assert "midstream_error" in set(plain.status)
    assert batched.output_tokens.tolist() == plain.output_tokens.tolist()
    assert batched.end_time.to_numpy() == pytest.approx(plain.end_time.to_numpy(), abs=1e-9)
    assert batched.cost.to_numpy() == pytest.approx(plain.cost.to_numpy())


def test_prefill_queue_delays_the_first_token() -> None:
    """prefill_tps = 1,000 and 1,000-token prompts: two attempts at 0 s prefill one after the
    other, so their first tokens come at 1 s and 2 s. With 10 output tokens at 0.1 s alone,
    A decodes alone 1-2 s and B alone 2-3 s."""
    att = attempts(scenario([0.0, 0.0], {"load_factor": 3.0, "prefill_tps": 1000}, output=10))
    assert att.end_time.to_numpy() == pytest.approx([2.0, 3.0])


def test_prefill_ahead_counts_only_the_prompts_queued_ahead() -> None:
    """An attempt that arrives after the prefill queue has drained waits only its own."""
    raw = scenario([0.0, 5.0], {"load_factor": 3.0, "prefill_tps": 1000}, output=10)
    att = attempts(raw)
    assert att.end_time.to_numpy() == pytest.approx([2.0, 7.0])


def test_a_disconnect_bills_the_tokens_generated_at_the_batch_speed() -> None:
    """A and B at 0 s, per-token 0.2 s together; the provider stops at the disconnect. With a
    6 s timeout both are cut at 6 s after 30 tokens each: input + 30 tokens."""
    billing = {"abandoned_keeps_running": False}
    att = attempts(scenario([0.0, 0.0], LOAD3, timeout=6.0, billing=billing))
    assert list(att.status) == ["timeout", "timeout"]
    assert list(att.output_tokens) == [30, 30]
    assert att.cost.to_numpy() == pytest.approx([INPUT_COST + 30 * PER_TOKEN] * 2)


def test_a_stopped_sequence_leaves_the_batch_faster() -> None:
    """A at 0 s with a 6 s timeout; B at 1 s (another feature, 100 s timeout). 0-1 s A alone
    makes 10 tokens, 1-6 s two at 0.2 s make 25 each. A is stopped at 6 s with 35 tokens; B
    has 75 left, alone at 0.1 s: it ends at 13.5 s."""
    raw = scenario([0.0, 1.0], LOAD3, timeout=6.0, billing={"abandoned_keeps_running": False})
    raw["run"]["duration"] = 2
    raw["features"]["g"] = {**raw["features"]["f"], "policy": "long"}
    raw["features"]["f"]["arrivals"] = {"kind": "times", "at": [0.0]}
    raw["features"]["g"]["arrivals"] = {"kind": "times", "at": [1.0]}
    raw["policies"]["long"] = {"timeout": 100.0, "retry": {"kind": "none"}}
    att = attempts(raw).sort_values("send_time")
    assert list(att.status) == ["timeout", "ok"]
    assert list(att.output_tokens) == [35, OUTPUT]
    assert att.end_time.to_numpy() == pytest.approx([6.0, 13.5])


def test_abandoned_work_that_keeps_running_holds_its_batch_place() -> None:
    """Default billing: A and B at 0 s time out at 6 s but keep decoding, and both bill their
    whole output; C (another feature) at 7 s joins a batch of three."""
    raw = scenario([0.0, 0.0], LOAD3, timeout=6.0)
    raw["run"]["duration"] = 8
    raw["features"]["g"] = {
        **raw["features"]["f"],
        "policy": "long",
        "arrivals": {"kind": "times", "at": [7.0]},
    }
    raw["policies"]["long"] = {"timeout": 100.0, "retry": {"kind": "none"}}
    att = attempts(raw).sort_values("send_time")
    assert list(att.status) == ["timeout", "timeout", "ok"]
    assert att.cost.to_numpy() == pytest.approx([INPUT_COST + OUTPUT * PER_TOKEN] * 3)
    # A, B: 0-7 s at 0.2 s = 35 tokens; 7 s on at 0.3 s: 65 left, 19.5 s: end at 26.5 s.
    # C: 65 tokens by 26.5 s; 35 alone at 0.1 s: 3.5 s, ends at 30 s.
    assert att.end_time.to_numpy() == pytest.approx([6.0, 6.0, 30.0])


def test_a_latency_spike_slows_the_attempts_that_start_in_it() -> None:
    """factor 2 from 0 s: one sequence takes 100 tokens x 0.1 s x 2 = 20 s."""
    spike = [{"kind": "latency_spike", "start": 0.0, "duration": 1.0, "factor": 2.0}]
    att = attempts(scenario([0.0], LOAD3, incidents=spike))
    assert att.end_time.to_numpy() == pytest.approx([20.0])


def test_a_midstream_failure_ends_after_its_last_token() -> None:
    att = attempts(scenario([0.0, 0.0], LOAD3, failures={"midstream_rate": 1.0}))
    assert set(att.status) == {"midstream_error"}
    out = sorted(att.output_tokens)
    # Two decode at 0.2 s until the shorter ends; the longer then runs alone at 0.1 s.
    short, long = out
    assert att.end_time.min() == pytest.approx(short * 0.2)
    assert att.end_time.max() == pytest.approx(short * 0.2 + (long - short) * 0.1)


# Overload: slower tokens, then timeouts, then shedding ---------------------------------------


def overload(rate: float) -> dict[str, float]:
    """Poisson arrivals at ``rate`` on 16 batch places (per-token 0.02 s alone, 0.06 s at a
    full batch), 50 output tokens, a 6 s timeout without retries, 100 queue places."""
    raw = scenario([0.0], {"load_factor": 3.0}, slots=16, queue_limit=100, timeout=6.0)
    raw["run"] = {"duration": 600, "seed": 3, "timeseries_bin": 10}
    raw["providers"]["p"]["service"]["decode_tps"] = 50
    raw["features"]["f"]["arrivals"] = {"kind": "poisson", "rate": rate}
    raw["features"]["f"]["output_tokens"] = {"kind": "fixed", "value": 50}
    att = Simulation(scenario_from_dict(raw)).run().df("attempts")
    ok = att[att.status == "ok"]
    n = len(att)
    return {
        "tpot": float(((ok.end_time - ok.start_time) / ok.output_tokens).mean()),
        "timeouts": float((att.status == "timeout").sum() / n),
        "shed": float((att.status == "overloaded").sum() / n),
    }


def test_overload_shows_as_slower_tokens_then_timeouts_then_shedding() -> None:
    """The batch serves at most 16 / (50 x 0.06 s) = 5.33 attempts/s. At 1/s tokens come near
    0.02 s. At 4/s (75% of that) the batch fills: tokens slow to about twice that, and nothing
    times out or is shed. At 5/s the queue wait passes the 6 s timeout at times, well before
    100 wait (18 s of work): timeouts, no shedding. At 8/s the queue fills: load is shed."""
    light, busy, late, over = (overload(r) for r in (1.0, 4.0, 5.0, 8.0))
    assert light["tpot"] < 0.025 and light["timeouts"] == 0 and light["shed"] == 0
    assert busy["tpot"] > 1.5 * light["tpot"]
    assert busy["timeouts"] == 0 and busy["shed"] == 0
    assert late["timeouts"] > 0.05 and late["shed"] == 0
    assert over["shed"] > 0.1
    # No token is ever slower than the curve's full-batch time.
    assert max(x["tpot"] for x in (light, busy, late, over)) <= 0.06 + 1e-9


# Config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"batching": {"load_factor": 2.0}, "capacity": None}, "needs capacity.slots"),
        ({"batching": {}}, "exactly one of tpot"),
        ({"batching": {"load_factor": 2.0, "tpot": [[1, 0.01]]}}, "exactly one of tpot"),
        ({"batching": {"tpot": [[1, 0.01]]}}, "decode_tps is not used"),
        (
            {
                "batching": {"load_factor": 2.0},
                "service": {"kind": "deterministic", "value": 1.0},
            },
            'service.kind = "tokens"',
        ),
    ],
)
def test_bad_batching_configs_are_refused(change: dict[str, Any], phrase: str) -> None:
    raw = scenario([0.0])
    provider = raw["providers"]["p"]
    for key, value in change.items():
        if value is None:
            del provider[key]
        else:
            provider[key] = value
    with pytest.raises(ConfigError, match=phrase.replace(".", r"\.")):
        scenario_from_dict(raw)


def test_points_that_fall_to_zero_before_the_batch_limit_are_refused() -> None:
    raw = scenario([0.0], {"tpot": [[1, 0.035], [2, 0.025]]}, slots=8)
    raw["providers"]["p"]["service"] = {"kind": "tokens", "ttft": 0.0, "noise_sigma": 0}
    with pytest.raises(ConfigError, match="<= 0 at concurrency 5"):
        scenario_from_dict(raw)


def test_the_summary_reports_how_full_the_batch_ran() -> None:
    """A and B at 0 s, C at 3 s (ends at 28.5, 28.5 and 30 s, above). Sequence-seconds: 2 x 3
    + 3 x 25.5 + 1 x 1.5 = 84; per-token time weighted by them: (2 x 3 x 0.2 + 3 x 25.5 x 0.3
    + 1.5 x 0.1) / 84 = 24.3 / 84 s; one sequence alone: 0.1 s."""
    summary = Simulation(scenario_from_dict(scenario([0.0, 0.0, 3.0], LOAD3))).run().summary
    b = summary["batching"]["p"]
    assert b["max_batch"] == 3
    assert b["mean_batch"] == pytest.approx(84 / 30)  # something decodes from 0 s to 30 s
    assert b["tpot_mean"] == pytest.approx(24.3 / 84)
    assert b["tpot_slowdown"] == pytest.approx(24.3 / 84 / 0.1)


def test_providers_without_batching_have_no_batching_summary() -> None:
    summary = Simulation(scenario_from_dict(scenario([0.0]))).run().summary
    assert "batching" not in summary


# Against a plain reference ------------------------------------------------------------------


def reference_ends(
    arrivals: list[float],
    outputs: list[int],
    slots: int,
    tpot: list[float],
    ttft: float,
    prefill_s: float,
) -> list[float]:
    """End times by brute force, as docs/providers.md states the model: ``slots`` batch
    places and a FIFO queue; a started attempt waits for the prompts ahead (``prefill_s``
    seconds each) and ``ttft``, then decodes; every decoding sequence makes one token per
    ``tpot[n]`` seconds, ``n`` the sequences decoding. Steps from event to event, updating
    every sequence's tokens left (no virtual clock, no heap)."""
    t = 0.0
    prefill_free = 0.0
    queue: list[int] = []
    pre: dict[int, float] = {}  # request -> time it starts decoding
    left: dict[int, float] = {}  # request -> tokens left while decoding
    ends = [math.nan] * len(arrivals)
    todo = sorted(range(len(arrivals)), key=lambda i: arrivals[i])

    def start(i: int) -> None:
        nonlocal prefill_free
        begin = max(t, prefill_free)
        prefill_free = begin + prefill_s
        pre[i] = prefill_free + ttft

    while todo or queue or pre or left:
        n = len(left)
        candidates = [arrivals[todo[0]]] if todo else []
        candidates += list(pre.values())
        if left:
            candidates.append(t + min(left.values()) * tpot[n])
        nxt = min(candidates)
        if n:
            for i in left:
                left[i] -= (nxt - t) / tpot[n]
        t = nxt
        for i in [i for i, k in left.items() if k <= 1e-9]:
            del left[i]
            ends[i] = t
            if queue:
                start(queue.pop(0))
        for i in [i for i, at in pre.items() if at <= t]:
            del pre[i]
            if outputs[i] == 0:
                ends[i] = t
                if queue:
                    start(queue.pop(0))
            else:
                left[i] = float(outputs[i])
        while todo and arrivals[todo[0]] <= t:
            i = todo.pop(0)
            if len(pre) + len(left) < slots:
                start(i)
            else:
                queue.append(i)
    return ends


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 20.0), min_size=1, max_size=15),
    st.data(),
    st.integers(1, 5),
    st.floats(1.0, 4.0),
    st.sampled_from([0.0, 0.3]),
    st.sampled_from([None, 2000.0]),
)
def test_the_engine_matches_a_brute_force_reference(
    arrivals: list[float],
    data: st.DataObject,
    slots: int,
    factor: float,
    ttft: float,
    prefill_tps: float | None,
) -> None:
    outputs = data.draw(
        st.lists(st.integers(0, 60), min_size=len(arrivals), max_size=len(arrivals))
    )
    batching: dict[str, Any] = {"load_factor": factor}
    if prefill_tps is not None:
        batching["prefill_tps"] = prefill_tps
    service = {"kind": "tokens", "ttft": ttft, "decode_tps": 10, "noise_sigma": 0}
    raw = scenario(arrivals, batching, slots=slots, queue_limit="unbounded", service=service)
    raw["features"]["f"]["output_tokens"] = {"kind": "fixed", "value": 0}
    raw["run"]["duration"] = 21.0
    # One feature per request, so each gets its own output size.
    base = raw["features"].pop("f")
    for i, (at, out) in enumerate(zip(arrivals, outputs, strict=True)):
        raw["features"][f"f{i}"] = {
            **base,
            "arrivals": {"kind": "times", "at": [at]},
            "output_tokens": {"kind": "fixed", "value": out},
        }
    att = Simulation(scenario_from_dict(raw)).run().df("attempts")
    got = dict(zip(att.feature, att.end_time, strict=True))
    table = tpot_table(Batching(load_factor=factor), slots, 10.0)
    prefill_s = INPUT / prefill_tps if prefill_tps else 0.0
    want = reference_ends(arrivals, outputs, slots, table, ttft, prefill_s)
    for i, end in enumerate(want):
        assert got[f"f{i}"] == pytest.approx(end, rel=1e-9, abs=1e-9), (i, got, want)


def test_the_terminal_summary_says_how_much_batching_slowed_tokens() -> None:
    from llmtraffic.report_table import batching_lines

    s = {
        "batching": {
            "gpu": {
                "mean_batch": 59.04,
                "max_batch": 64.0,
                "tpot_mean": 0.0144,
                "tpot_slowdown": 2.087,
            }
        }
    }
    (line,) = batching_lines(s)
    assert "59.0 sequences decoding at once while busy (peak 64)" in line
    assert "tokens 2.09x the time of one sequence alone (14.4 ms per token)" in line
    idle = {
        "batching": {
            "gpu": {
                "mean_batch": math.nan,
                "max_batch": 0.0,
                "tpot_mean": math.nan,
                "tpot_slowdown": math.nan,
            }
        }
    }
    assert batching_lines(idle) == []


def test_points_of_very_different_sizes_do_not_cancel() -> None:
    """1e30 s at one sequence and 0.02 s at four: at four the curve is 0.02, not 0 (the
    config fuzz found ``s0 + (s1 - s0) * 1`` rounding to zero)."""
    table = tpot_table(Batching(tpot=[[1, 1e30], [4, 0.02]]), 4, 60.0)
    assert table[4] == 0.02 and table[3] > 0


# Streams: first-token limits and stalls -------------------------------------------------------


def test_a_first_token_limit_counts_the_batch_and_the_prefill_queue() -> None:
    """Streamed, first-token timeout 2 s, total 100 s. prefill_tps = 1,000 and 1,000-token
    prompts: A decodes from 1 s, alone: its first token is done at 1.1 s, in time, so the
    client holds it to the total timeout. B decodes from 2 s beside A (0.2 s a token): its
    first token would be done at 2.2 s, so its client gives up at 2 s; the provider keeps
    running it (default billing), so A shares the batch from 2 s on."""
    raw = scenario([0.0, 0.0], {"load_factor": 3.0, "prefill_tps": 1000})
    raw["features"]["f"]["stream"] = True
    raw["policies"]["pol"] = {
        "timeout": 100.0,
        "first_token_timeout": 2.0,
        "retry": {"kind": "none"},
    }
    att = attempts(raw).sort_values("send_time", kind="stable")
    statuses = sorted(att.status)
    assert statuses == ["ok", "timeout"]
    a = att[att.status == "ok"].iloc[0]
    b = att[att.status == "timeout"].iloc[0]
    assert b.end_time == pytest.approx(2.0)
    # A: 10 tokens alone (1-2 s); B decodes from 2 s too and keeps running after its client
    # left: two at 0.2 s until A's 90 left are done: 18 s, A ends at 20 s.
    assert a.end_time == pytest.approx(20.0)


def test_a_stalled_stream_holds_its_batch_place_until_the_timeout() -> None:
    """stall_rate = 1 on one batch place: A stops after g tokens (g from the stall point) at
    0.1 g s and holds its place until its 30 s timeout cuts it; it bills input + g tokens.
    B, sent at 1 s, waits for the place until 30 s."""
    raw = scenario([0.0, 1.0], {"load_factor": 2.0}, slots=1, timeout=30.0)
    raw["providers"]["p"]["failures"] = {"stall_rate": 1.0}
    raw["run"]["duration"] = 2
    att = attempts(raw).sort_values("send_time")
    a, b = att.iloc[0], att.iloc[1]
    assert a.status == "timeout" and a.end_time == pytest.approx(30.0)
    assert a.output_tokens < OUTPUT
    assert a.cost == pytest.approx(INPUT_COST + a.output_tokens * PER_TOKEN)
    assert b.start_time == pytest.approx(30.0)


def test_a_spend_cap_counts_what_the_batch_bills() -> None:
    """Error kinds and batching together (``BatchingEndpoint`` extends ``ErrorEndpoint``):
    each answer bills input
    + 100 tokens = 0.0012 USD; with a 0.002 cap the first two (at 0 s and 20 s) reach it, and
    the third (40 s) is refused with quota_exhausted. The same with a 5 s timeout: the
    abandoned attempts, billed when the client leaves, fill the cap as well."""
    raw = scenario([0.0, 20.0, 40.0], LOAD3)
    raw["providers"]["p"]["quota"] = {"spend_cap": 0.002}
    att = attempts(raw)
    assert list(att.status) == ["ok", "ok", "quota_exhausted"]
    raw = scenario([0.0, 20.0, 40.0], LOAD3, timeout=5.0)
    raw["providers"]["p"]["quota"] = {"spend_cap": 0.002}
    att = attempts(raw)
    assert list(att.status) == ["timeout", "timeout", "quota_exhausted"]
