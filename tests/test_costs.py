"""Costs on small cases computed by hand (prices: $2 / $8 per million input / output tokens)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from llmtraffic import Scenario, Simulation
from tests.conftest import make_scenario

IN, OUT = 2e-6, 8e-6  # USD per token
ONE_CALL = 1000 * IN + 500 * OUT  # 0.006


def hand_case(**overrides: Any) -> Scenario:
    base: dict[str, Any] = {
        "run.duration": 100.0,
        "providers.p.prices": {"input": 2.0, "output": 8.0},
        "providers.p.service": {"kind": "deterministic", "value": 1.0},
        "features.f.arrivals": {"kind": "times", "at": [1.0]},
        "features.f.input_tokens": {"kind": "fixed", "value": 1000},
        "features.f.output_tokens": {"kind": "fixed", "value": 500},
    }
    base.update(overrides)
    return make_scenario(**base)


def test_successes_bill_input_plus_output() -> None:
    r = Simulation(hand_case(**{"features.f.arrivals": {"kind": "times", "at": [0, 1, 2]}})).run()
    s = r.summary
    assert s["billed_cost"] == pytest.approx(3 * ONE_CALL)
    assert s["useful_cost"] == pytest.approx(3 * ONE_CALL)
    assert s["baseline_cost"] == pytest.approx(3 * ONE_CALL)
    assert s["wasted_cost"] == pytest.approx(0.0, abs=1e-15)
    assert s["cost_per_success"] == pytest.approx(ONE_CALL)
    assert s["latency_p50"] == pytest.approx(1.0)


def test_retries_through_an_outage_cost_nothing_extra() -> None:
    """Request at t=1 during an outage (0-5 s): 503 after 0.05 s, retry 3 s later (4.05),
    503 again at 4.10, retry at 7.10 succeeds at 8.10. Fast errors are not billed."""
    sc = hand_case(
        **{
            "providers.p.incidents": [{"kind": "outage", "start": 0.0, "duration": 5.0}],
            "providers.p.failures": {"error_latency": 0.05},
            "policies": {"pol": {"retry": {"kind": "fixed", "max_retries": 2, "delay": 3.0}}},
        }
    )
    r = Simulation(sc).run()
    att = r.df("attempts")
    assert list(att.status) == ["server_error", "server_error", "ok"]
    assert list(att.http_status) == [503, 503, 200]
    assert np.allclose(att.send_time, [1.0, 4.05, 7.10])
    assert np.allclose(att.end_time, [1.05, 4.10, 8.10])
    assert np.allclose(att.cost, [0.0, 0.0, ONE_CALL])
    req = r.df("requests").iloc[0]
    assert req.attempts == 3
    assert req.latency == pytest.approx(7.10)
    assert r.summary["cost_amplification"] == pytest.approx(1.0)
    assert r.summary["attempt_amplification"] == 3.0


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("partial", 1000 * IN + 200 * OUT), ("full", ONE_CALL), ("none", 0.0)],
)
def test_timeout_billing(rule: str, expected: float) -> None:
    """Service takes 10 s, the client gives up at 4 s: by then 40% of the 500 output tokens
    were generated. The provider keeps working (and holding the slot) until 10 s."""
    sc = hand_case(
        **{
            "providers.p.service": {"kind": "deterministic", "value": 10.0},
            "providers.p.billing": {"timeout": rule},
            "features.f.arrivals": {"kind": "times", "at": [0.0]},
            "policies": {"pol": {"timeout": 4.0}},
        }
    )
    r = Simulation(sc).run()
    att = r.df("attempts").iloc[0]
    assert att.status == "timeout"
    assert att.end_time == pytest.approx(4.0)
    assert att.cost == pytest.approx(expected)
    s = r.summary
    assert s["billed_cost"] == pytest.approx(expected)
    assert s["useful_cost"] == 0.0
    assert s["wasted_cost"] == pytest.approx(expected)
    assert s["outcomes"] == {"exhausted": 1}
    # The abandoned attempt held its slot for the whole 10 s (bins are 10 s wide).
    ts = r.df("timeseries")
    assert ts.busy_slots.iloc[0] == pytest.approx(1.0)
    assert ts.in_flight.iloc[0] == pytest.approx(0.4)


def test_abandoned_attempt_can_free_its_slot_at_once() -> None:
    sc = hand_case(
        **{
            "providers.p.service": {"kind": "deterministic", "value": 10.0},
            "providers.p.billing": {"abandoned_keeps_running": False},
            "features.f.arrivals": {"kind": "times", "at": [0.0]},
            "policies": {"pol": {"timeout": 4.0}},
        }
    )
    ts = Simulation(sc).run().df("timeseries")
    assert ts.busy_slots.iloc[0] == pytest.approx(0.4)


def test_midstream_errors_bill_what_was_generated() -> None:
    sc = hand_case(
        **{
            "providers.p.failures": {"midstream_rate": 1.0},
            "features.f.arrivals": {"kind": "times", "at": [float(t) for t in range(20)]},
        }
    )
    att = Simulation(sc).run().df("attempts")
    assert set(att.status) == {"midstream_error"}
    # Service is 1 s for 500 tokens: the failure time says how much was generated.
    generated = np.floor(500 * (att.end_time - att.start_time) + 1e-9)
    assert np.array_equal(att.output_tokens, generated)
    assert np.allclose(att.cost, 1000 * IN + att.output_tokens * OUT)


def test_cached_input_rag_and_max_tokens() -> None:
    """100 prompt + 900 retrieved tokens, half cached at $1/M; output 500 capped at 300."""
    sc = hand_case(
        **{
            "providers.p.prices": {"input": 2.0, "output": 8.0, "cached_input": 1.0},
            "features.f.input_tokens": {"kind": "fixed", "value": 100},
            "features.f.rag_tokens": {"kind": "fixed", "value": 900},
            "features.f.cached_fraction": 0.5,
            "features.f.max_tokens": 300,
        }
    )
    r = Simulation(sc).run()
    req = r.df("requests").iloc[0]
    assert req.input_tokens == 1000
    assert req.output_tokens == 300
    assert req.billed_cost == pytest.approx(500 * IN + 500 * 1e-6 + 300 * OUT)


def test_projections_and_roi() -> None:
    """Ten calls of $0.001 in 10 s: $86.40 a day, 30 days a month; value $0.01 per success."""
    sc = hand_case(
        **{
            "run.duration": 10.0,
            "providers.p.prices": {"input": 1.0, "output": 0.0},
            "features.f.arrivals": {"kind": "times", "at": [float(t) for t in range(10)]},
            "features.f.value_per_success": 0.01,
        }
    )
    s = Simulation(sc).run().summary
    assert s["billed_cost"] == pytest.approx(0.01)
    assert s["cost_per_hour"] == pytest.approx(0.01 / 10 * 3600)
    assert s["cost_per_day"] == pytest.approx(86.4)
    assert s["cost_per_month"] == pytest.approx(86.4 * 30)
    assert s["value"] == pytest.approx(0.1)
    assert s["roi"] == pytest.approx((0.1 - 0.01) / 0.01)
    assert s["goodput_rps"] == pytest.approx(1.0)


def test_the_articles_figures() -> None:
    """1M daily users x 5 requests at $0.001 a call: $5,000 a day, $150,000 a month."""
    sc = hand_case(
        **{
            "run.duration": 600.0,
            "run.records": "summary",
            "providers.p.prices": {"input": 1.0, "output": 0.0},
            "providers.p.capacity": {"slots": 500, "queue_limit": 0},
            "providers.p.service": {"kind": "deterministic", "value": 0.5},
            "features.f.arrivals": {"kind": "dau", "users": 1_000_000, "requests_per_user": 5},
        }
    )
    s = Simulation(sc).run().summary
    assert s["cost_per_day"] == pytest.approx(s["requests"] * 0.001 / 600 * 86400)
    assert s["cost_per_month"] == pytest.approx(30 * s["cost_per_day"])
    # Poisson count over 10 minutes: 34,722 expected, sd 186, so within 3% of the article.
    assert s["cost_per_day"] == pytest.approx(5000, rel=0.03)
    assert s["cost_per_month"] == pytest.approx(150_000, rel=0.03)
