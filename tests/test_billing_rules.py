"""Billing that follows what the provider does (docs/billing.md), on hand-computed cases.

One request at a time through a one-slot provider with token service: the first token after
``ttft`` = 1 s, then 10 tokens/s, 100 output tokens, so an attempt runs 11 s. Prices: 1 USD per
million input tokens, 2 per million output; 1,000 input tokens. So input alone bills 0.001 and
each output token 0.000002.

On f8966f2: an attempt abandoned while queued was billed 0 although the provider went on to
serve it in full (a storm with 38,146 such attempts reported cost amplification 1.00, and 8.83
with ``timeout = "full"``); and partial billing counted the time to first token as if it had
generated output (a disconnect at 6 s billed 54 tokens instead of 50).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from llmtraffic import ConfigError, Simulation, scenario_from_dict

INPUT, OUTPUT = 1000, 100
INPUT_COST = INPUT * 1e-6
PER_TOKEN = 2e-6


def one_slot(billing: dict[str, Any], timeout: float, times: list[float]) -> Any:
    raw = {
        "run": {"duration": max(times) + 1, "seed": 1, "timeseries_bin": 1},
        "providers": {
            "p": {
                "model": "m",
                "prices": {"input": 1.0, "output": 2.0},
                "capacity": {"slots": 1, "queue_limit": 10},
                "service": {"kind": "tokens", "ttft": 1.0, "decode_tps": 10, "noise_sigma": 0},
                "billing": billing,
            }
        },
        "features": {
            "f": {
                "provider": "p",
                "arrivals": {"kind": "times", "at": times},
                "input_tokens": {"kind": "fixed", "value": INPUT},
                "output_tokens": {"kind": "fixed", "value": OUTPUT},
                "policy": "pol",
            }
        },
        "policies": {"pol": {"timeout": timeout, "retry": {"kind": "none"}}},
    }
    return Simulation(scenario_from_dict(raw)).run()


def costs(result: Any) -> list[float]:
    return [float(c) for c in result.df("attempts").sort_values("request_id")["cost"]]


@pytest.mark.parametrize(
    ("timeout", "tokens"),
    [(6.0, 50), (0.5, 0), (1.0, 0), (10.9, 99)],
    ids=["mid-generation", "before-first-token", "at-first-token", "near-the-end"],
)
def test_partial_billing_counts_only_generated_tokens(timeout: float, tokens: int) -> None:
    """The provider stops at the disconnect: input + the tokens after the first one's time."""
    result = one_slot({"abandoned_keeps_running": False}, timeout, [0.0])
    (cost,) = costs(result)
    assert cost == pytest.approx(INPUT_COST + tokens * PER_TOKEN)
    assert int(result.df("attempts")["output_tokens"].iloc[0]) == tokens


def test_abandoned_work_that_keeps_running_is_billed_for_all_it_generates() -> None:
    """Default billing: the provider keeps running the abandoned attempt to its end (11 s),
    so the bill is input + all 100 tokens, the same as a success."""
    result = one_slot({}, 6.0, [0.0])
    (cost,) = costs(result)
    assert cost == pytest.approx(INPUT_COST + OUTPUT * PER_TOKEN)


def test_abandoned_while_queued_is_billed_when_the_provider_runs_it() -> None:
    """Three requests at t = 0 on one slot, timeout 12 s: A is served 0-11 s (ok); B starts at
    11 s and its client leaves at 12 s, right at its first token; C is still queued at 12 s.
    By default the provider keeps running both and bills them in full (B 11-22 s, C 22-33 s).
    When it stops at the disconnect, B bills its input only and C, never served, nothing."""
    full = INPUT_COST + OUTPUT * PER_TOKEN
    kept = one_slot({}, 12.0, [0.0, 0.0, 0.0])
    assert costs(kept) == pytest.approx([full] * 3)
    starts = kept.df("attempts").sort_values("request_id")["start_time"].tolist()
    assert starts[:2] == pytest.approx([0.0, 11.0]) and math.isnan(starts[2])
    stopped = one_slot({"abandoned_keeps_running": False}, 12.0, [0.0, 0.0, 0.0])
    assert costs(stopped) == pytest.approx([full, INPUT_COST, 0.0])


def test_full_billing_bills_the_whole_answer_of_started_work_only() -> None:
    """``full`` bills as if it succeeded; a queued attempt the provider drops bills nothing."""
    full = INPUT_COST + OUTPUT * PER_TOKEN
    rule = {"timeout": "full", "abandoned_keeps_running": False}
    assert costs(one_slot(rule, 12.0, [0.0, 0.0, 0.0])) == pytest.approx([full, full, 0.0])


def test_a_queued_slot_keeps_being_held_by_abandoned_work() -> None:
    """Default: three requests at t = 0, timeout 5 s: the provider still runs all three, one
    after the other (0-11, 11-22, 22-33 s); a fourth at 30 s waits until 33 s."""
    result = one_slot({}, 60.0, [0.0])
    assert result.summary["success_rate"] == 1.0
    busy = one_slot({}, 5.0, [0.0, 0.0, 0.0, 30.0])
    attempts = busy.df("attempts").sort_values("request_id")
    last = attempts.iloc[-1]
    assert last["start_time"] == pytest.approx(33.0)


def test_billing_none_is_refused_for_work_the_provider_keeps_running() -> None:
    with pytest.raises(ConfigError, match=r"billing.*abandoned_keeps_running"):
        one_slot({"timeout": "none"}, 5.0, [0.0])
    stopped = one_slot({"timeout": "none", "abandoned_keeps_running": False}, 5.0, [0.0])
    assert costs(stopped) == [0.0]


def storm(billing: dict[str, Any]) -> dict[str, Any]:
    """An overloaded provider (capacity 10 slots x 1 s, 15/s offered) with a 2 s timeout and
    naive retries: most attempts are abandoned in the queue, and the provider runs them all."""
    raw = {
        "run": {"duration": 300, "seed": 3, "timeseries_bin": 10},
        "providers": {
            "p": {
                "model": "m",
                "prices": {"input": 1.0, "output": 2.0},
                "capacity": {"slots": 10, "queue_limit": 1000},
                "service": {"kind": "deterministic", "value": 1.0},
                "billing": billing,
            }
        },
        "features": {
            "f": {
                "provider": "p",
                "arrivals": {"kind": "poisson", "rate": 15.0},
                "input_tokens": {"kind": "fixed", "value": 1000},
                "output_tokens": {"kind": "fixed", "value": 100},
                "policy": "pol",
            }
        },
        "policies": {"pol": {"timeout": 2, "retry": {"kind": "naive", "max_retries": 3}}},
    }
    sim = Simulation(scenario_from_dict(raw))
    result = sim.run()
    attempts = result.df("attempts")
    # Money adds up: every attempt the provider runs is billed input + what it generates,
    # and the provider runs at most its capacity: 10 slots x 1 s per attempt.
    endpoint = sim.endpoints["p"]
    served_work = endpoint.busy_integral(float(result.summary["sim_end_time"]))
    ran = attempts[attempts["output_tokens"] > 0]
    assert len(ran) <= served_work + 10  # each run attempt held a slot for 1 s
    expected = (ran["input_tokens"] * 1e-6 + ran["output_tokens"] * 2e-6).sum()
    assert math.isclose(attempts["cost"].sum(), expected, rel_tol=1e-9)
    return dict(result.summary)


def test_a_retry_storm_is_not_free_under_the_default_billing() -> None:
    """Default and ``full`` bill the same storm alike (the provider completes everything it
    runs), and far above the useful cost: cost amplification ~ attempts served / successes."""
    default = storm({})
    full = storm({"timeout": "full"})
    assert default["cost_amplification"] == pytest.approx(full["cost_amplification"], rel=1e-9)
    # 10 slots serve 10 attempts/s; 15 requests/s x up to 4 attempts each are offered, and
    # the successes are those served within 2 s of their send, so most served work is waste.
    assert default["cost_amplification"] > 1.5
