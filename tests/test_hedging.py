"""Hedged requests (docs/policies.md, "Hedged requests"), against closed forms and hand-computed
cases.

With no capacity limit attempts are independent, so with one hedge at delay d a request's
latency is min(S1, d + S2) for two independent service times: its tail matches the closed form
P(L > t) = P(S > t) P(S > t - d), and the share of requests hedged is P(S > d). Deterministic
cases by hand: a latency spike makes the first attempt slow and the hedge wins; a hedge that
fails while the first is in flight triggers no retry; when both time out the retry policy
decides once. Through incidents, with a capacity limit and both abandon rules, every request
ends once, every attempt reaches the client once, slots and queues empty, and money adds up
(tests/test_invariants.py's checks). Hedging is not in the generated scenarios of
tests/test_oracle.py (the oracle does not model it).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from scipy import optimize, stats

from llmtraffic import Simulation
from llmtraffic.client.client import Client
from llmtraffic.client.hedging import HedgedClient
from llmtraffic.errors import ConfigError
from llmtraffic.report_table import hedges_table
from tests.conftest import make_scenario
from tests.test_invariants import (
    check_attempt_bound,
    check_billing,
    check_costs,
    check_records_agree,
)

IN, OUT = 100, 50
FULL = IN * 1e-6 + OUT * 2e-6
"""USD of one whole answer at the base scenario's prices (1 and 2 USD per million)."""


def hedged(policy: dict[str, Any], **overrides: Any) -> Any:
    return make_scenario(**{"policies": {"pol": policy}, **overrides})


def test_tail_and_hedge_share_match_the_closed_form() -> None:
    # Token service, fixed output: S = c X with X mean-one lognormal (sigma 0.5), c = 2.5 s.
    sigma, c, d = 0.5, 0.5 + 100 / 50, 3.0
    sc = hedged(
        {"hedge": {"delay": d}},
        **{
            "run.duration": 2000,
            "providers.p.capacity": None,
            "providers.p.service": {
                "kind": "tokens",
                "ttft": 0.5,
                "decode_tps": 50,
                "noise_sigma": sigma,
            },
            "features.f.output_tokens": {"kind": "fixed", "value": 100},
        },
    )
    result = Simulation(sc).run()
    lat = result.df("requests").latency.to_numpy()
    n = len(lat)
    assert n > 9000
    x = stats.lognorm(s=sigma, scale=math.exp(-(sigma**2) / 2))

    def surv(t: float) -> float:
        return float(x.sf(t / c) * (x.sf((t - d) / c) if t > d else 1.0))

    for q in (0.1, 0.01):
        t = optimize.brentq(lambda t, q=q: surv(t) - q, 0.01, 100.0)
        sd = math.sqrt(q * (1 - q) / n)
        assert abs((lat > t).mean() - q) < 4 * sd, (q, t, (lat > t).mean())
    # The tail gained: the hedged p99 is well below the unhedged one (c times X's p99).
    p99 = optimize.brentq(lambda t: surv(t) - 0.01, 0.01, 100.0)
    assert p99 < 0.85 * c * x.ppf(0.99)
    # Hedged requests: P(S > d); their share of attempts sent: P / (1 + P).
    f = result.summary["features"]["f"]
    p = float(x.sf(d / c))
    assert abs(f["hedges"] / n - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert f["hedge_share"] == pytest.approx(f["hedges"] / result.summary["attempts"])
    assert f["hedge_share"] == pytest.approx(p / (1 + p), rel=0.05)
    # A hedge wins when d + S2 < S1.
    rng = np.random.default_rng(0)
    s1, s2 = c * x.rvs(size=400_000, random_state=rng), c * x.rvs(size=400_000, random_state=rng)
    wins = float((d + s2 < s1).mean())
    assert abs(f["hedge_wins"] / n - wins) < 4 * math.sqrt(wins * (1 - wins) / n) + 0.002


def spike_scenario(keeps_running: bool) -> Any:
    # Arrivals at 1 and 5; a 10x latency spike on [4.9, 5.2); service 1 s; hedge after 2 s.
    return hedged(
        {"hedge": {"delay": 2}},
        **{
            "run.duration": 20,
            "providers.p.capacity": None,
            "providers.p.billing": {"abandoned_keeps_running": keeps_running},
            "providers.p.incidents": [
                {"kind": "latency_spike", "start": 4.9, "duration": 0.3, "factor": 10}
            ],
            "features.f.arrivals": {"kind": "times", "at": [1.0, 5.0]},
        },
    )


@pytest.mark.parametrize("keeps_running", [True, False])
def test_hedge_wins_over_a_slow_first_attempt_hand_computed(keeps_running: bool) -> None:
    result = Simulation(spike_scenario(keeps_running)).run()
    req = result.df("requests").sort_values("arrival_time").set_index("request_id")
    att = result.df("attempts").sort_values(["request_id", "attempt"])
    # The first request: 1 s, no hedge. The second: its first attempt takes 10 s (until 15);
    # the hedge goes out at 7, ends at 8; the first is cancelled at 8.
    assert req.latency.tolist() == pytest.approx([1.0, 3.0])
    assert req.attempts.tolist() == [1, 2]
    assert req.outcome.tolist() == ["ok", "ok"]
    second = att[att.request_id == req.index[1]]
    assert second.send_time.tolist() == pytest.approx([5.0, 7.0])
    assert second.end_time.tolist() == pytest.approx([8.0, 8.0])
    assert second.status.tolist() == ["timeout", "ok"]
    # Billing of the cancelled attempt as of an abandoned one: kept running, "partial" bills
    # all it generates (the whole answer); stopped at 8, 3 s into 10, it made 15 of 50 tokens.
    cancelled = FULL if keeps_running else IN * 1e-6 + 15 * 2e-6
    assert second.cost.tolist() == pytest.approx([cancelled, FULL])
    assert req.billed_cost.iloc[1] == pytest.approx(cancelled + FULL)
    assert req.useful_cost.iloc[1] == pytest.approx(FULL)
    f = result.summary["features"]["f"]
    assert (f["hedges"], f["hedge_wins"], f["hedges_cancelled"]) == (1, 1, 1)
    assert f["hedge_share"] == pytest.approx(1 / 3)
    assert result.summary["billed_cost"] == pytest.approx(2 * FULL + cancelled)


def test_a_failed_hedge_while_the_first_runs_triggers_no_retry() -> None:
    # Arrival at 5, service 1 s, hedge after 0.2 s into an outage (fast 503s) on [5.1, 6):
    # the hedge fails at once, the first attempt still answers at 6; no retry is sent.
    sc = hedged(
        {"hedge": {"delay": 0.2}, "retry": {"kind": "naive", "max_retries": 3}},
        **{
            "run.duration": 20,
            "providers.p.capacity": None,
            "providers.p.failures": {"error_latency": 0.05},
            "providers.p.incidents": [{"kind": "outage", "start": 5.1, "duration": 0.9}],
            "features.f.arrivals": {"kind": "times", "at": [5.0]},
        },
    )
    result = Simulation(sc).run()
    req = result.df("requests")
    att = result.df("attempts").sort_values("attempt")
    assert req.outcome.tolist() == ["ok"] and req.attempts.tolist() == [2]
    assert req.latency.tolist() == pytest.approx([1.0])
    assert att.status.tolist() == ["ok", "server_error"]
    assert att.end_time.tolist() == pytest.approx([6.0, 5.25])
    assert result.summary["retry_share"] == 0.0


def test_when_every_attempt_in_flight_fails_the_retry_policy_decides_once() -> None:
    # Service 10 s, timeout 3 s, hedge after 1 s, one retry after 0.5 s. Arrival t = 2:
    # sends 2 and 3, timeouts 5 and 6; the retry at 6.5 and its hedge at 7.5 time out at
    # 9.5 and 10.5: exhausted at 10.5, four attempts, two of them hedges.
    sc = hedged(
        {
            "hedge": {"delay": 1},
            "timeout": 3,
            "retry": {"kind": "fixed", "max_retries": 1, "delay": 0.5},
        },
        **{
            "run.duration": 20,
            "providers.p.capacity": None,
            "providers.p.service": {"kind": "deterministic", "value": 10.0},
            "features.f.arrivals": {"kind": "times", "at": [2.0]},
        },
    )
    result = Simulation(sc).run()
    req = result.df("requests")
    att = result.df("attempts").sort_values("attempt")
    assert req.outcome.tolist() == ["exhausted"] and req.attempts.tolist() == [4]
    assert req.end_time.tolist() == pytest.approx([10.5])
    assert att.send_time.tolist() == pytest.approx([2.0, 3.0, 6.5, 7.5])
    assert att.end_time.tolist() == pytest.approx([5.0, 6.0, 9.5, 10.5])
    assert att.wait_before.tolist() == pytest.approx([0.0, 0.0, 0.5, 0.0])
    assert set(att.status) == {"timeout"}
    f = result.summary["features"]["f"]
    assert (f["hedges"], f["hedge_wins"], f["hedges_cancelled"]) == (2, 0, 0)
    assert result.summary["retry_share"] == pytest.approx(1 / 4)


@pytest.mark.parametrize(
    ("keeps_running", "stream"), [(True, False), (False, False), (True, True), (False, True)]
)
def test_conservation_through_incidents(keeps_running: bool, stream: bool) -> None:
    # Streamed: token service, first-token and idle timeouts (limits lifted at the first
    # token, stalls cut by the idle timeout) on top of the cancellations.
    limits = {"first_token_timeout": 2.5, "idle_timeout": 1.5} if stream else {}
    service = (
        {"kind": "tokens", "ttft": 0.3, "decode_tps": 100, "noise_sigma": 0.6}
        if stream
        else {"kind": "lognormal", "median": 0.8, "p99": 4.0}
    )
    sc = hedged(
        {
            "hedge": {"delay": 0.9, "max_hedges": 2},
            "timeout": 4,
            "deadline": 12,
            "retry": {"kind": "exponential", "max_retries": 3, "base": 0.5},
            **limits,
        },
        **{
            "run.duration": 300,
            "providers.p.capacity": {"slots": 12, "queue_limit": 20},
            "providers.p.billing": {"abandoned_keeps_running": keeps_running},
            "providers.p.service": service,
            "features.f.stream": stream,
            "providers.p.failures": {
                "error_rate": 0.02,
                "midstream_rate": 0.02,
                "stall_rate": 0.02,
            },
            "providers.p.incidents": [
                {"kind": "outage", "start": 60, "duration": 20},
                {"kind": "latency_spike", "start": 150, "duration": 40, "factor": 4},
            ],
            "features.f.arrivals": {"kind": "poisson", "rate": 6.0},
        },
    )
    sim = Simulation(sc)
    result = sim.run()
    req = result.df("requests")
    att = result.df("attempts")
    f = result.summary["features"]["f"]
    assert f["hedges"] > 100 and set(req.outcome) > {"ok"}
    # Every request ends once; every attempt sent reached the client once; at most one
    # success per request, and a request is ok exactly when one of its attempts is.
    assert req.request_id.is_unique and len(req) == result.summary["requests"]
    assert len(att) == req.attempts.sum() == result.summary["attempts"]
    client = sim.clients["f"]
    assert isinstance(client, HedgedClient)
    assert client.tally.sent == client.tally.attempts and not client.hedging
    # A cancelled attempt ends with its request's success, as a timeout.
    end = att.request_id.map(req.set_index("request_id").end_time)
    won = att.request_id.map(req.set_index("request_id").outcome) == "ok"
    at_end = att[won & (att.status == "timeout") & np.isclose(att.end_time, end, atol=1e-12)]
    assert f["hedges_cancelled"] <= len(at_end) and f["hedges_cancelled"] > 50
    oks = att[att.status == "ok"].groupby("request_id").size()
    assert (oks == 1).all()
    assert set(oks.index) == set(req.request_id[req.outcome == "ok"])
    # No attempt outlives its request; numbers run 0..k-1 per request.
    ends = att.groupby("request_id").end_time.max()
    assert (ends.reindex(req.request_id).to_numpy() <= req.end_time.to_numpy() + 1e-9).all()
    per = att.sort_values(["request_id", "attempt"]).groupby("request_id").attempt
    assert (per.max() + 1 == per.size()).all()
    # Slots and queues are all given back once the run drains.
    endpoint = sim.endpoints["p"]
    assert endpoint.busy == 0 and not endpoint.queue
    for check in (check_costs, check_billing, check_records_agree, check_attempt_bound):
        check(sc, result)
    check_hedged_aggregates(result)


def check_hedged_aggregates(result: Any) -> None:
    """tests/test_invariants.py's ``check_aggregates`` with hedges: a request's attempts are
    its first, its retries and its hedges (the time series counts retries, not hedges)."""
    req, att = result.df("requests"), result.df("attempts")
    ts = result.df("timeseries")
    hedges = result.summary["features"]["f"]["hedges"]
    assert ts.arrivals.sum() == len(req)
    assert ts.attempts.sum() == req.attempts.sum()
    assert ts.retries.sum() + hedges == (req.attempts - 1).clip(lower=0).sum()
    for status in set(att.status):
        assert ts[status].sum() == (att.status == status).sum(), status
    assert ts.requests_ok.sum() == (req.outcome == "ok").sum()
    assert ts.requests_ok.sum() + ts.requests_failed.sum() == len(req)
    assert ts.billed_cost.sum() == pytest.approx(result.summary["billed_cost"], rel=1e-9)
    assert ts.wasted_cost.sum() == pytest.approx(result.summary["wasted_cost"], rel=1e-9)
    assert result.summary["billed_cost"] == pytest.approx(att.cost.sum(), rel=1e-9)


def test_only_hedging_policies_get_the_hedged_client() -> None:
    plain = Simulation(make_scenario(**{"run.duration": 5}))
    plain.run()
    assert type(plain.clients["f"]) is Client
    sim = Simulation(hedged({"hedge": {"delay": "2s"}}, **{"run.duration": 5}))
    sim.run()
    assert type(sim.clients["f"]) is HedgedClient
    assert sim.clients["f"].hedge_delay == 2.0


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"breaker": {}}, "breaker"),
        ({"concurrency": {"limit": 4}}, "concurrency"),
        ({"layers": [{"preset": "langchain-retry"}]}, "layers"),
    ],
)
def test_unsupported_combinations_are_refused(extra: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=f"hedge cannot be combined with {named}"):
        hedged({"hedge": {"delay": 1}, **extra})


def test_attempt_bound_counts_hedges() -> None:
    # Each of the retry rule's 3 attempts may have 2 hedges; max_attempts caps them all.
    retry = {"kind": "naive", "max_retries": 2}
    assert (
        hedged({"hedge": {"delay": 1, "max_hedges": 2}, "retry": retry})
        .policy_of("f")
        .attempt_bound()
        == 9
    )
    capped = {"hedge": {"delay": 1, "max_hedges": 2}, "retry": retry, "max_attempts": 5}
    assert hedged(capped).policy_of("f").attempt_bound() == 5


def test_the_terminal_output_shows_the_hedges() -> None:
    summary = Simulation(spike_scenario(True)).run().summary
    table = hedges_table(summary)
    assert table is not None
    console = Console(width=100, record=True)
    console.print(table)
    out = console.export_text()
    assert "Hedged requests" in out
    assert re.search(r"f\s+1\s+33\.33%\s+1\s", out), out
    assert hedges_table(Simulation(make_scenario(**{"run.duration": 5})).run().summary) is None


def test_a_percentile_delay_is_the_quantile_of_the_latencies_seen_so_far() -> None:
    # Hedge at the p90 of the last 200 successful attempt latencies, once 20 were seen.
    q, window, minimum = 0.9, 200, 20
    sc = hedged(
        {"hedge": {"delay": "p90", "samples": window, "min_samples": minimum}},
        **{
            "run.duration": 600,
            "providers.p.capacity": None,
            "providers.p.service": {
                "kind": "tokens",
                "ttft": 0.5,
                "decode_tps": 50,
                "noise_sigma": 0.5,
            },
            "features.f.output_tokens": {"kind": "fixed", "value": 100},
        },
    )
    result = Simulation(sc).run()
    att = result.df("attempts")
    ok = att[att.status == "ok"].sort_values("end_time")
    ok_end = ok.end_time.to_numpy()
    ok_lat = (ok.end_time - ok.send_time).to_numpy()
    hedged_n = checked = 0
    for _, rows in att.sort_values("attempt").groupby("request_id"):
        first = rows.iloc[0]
        s = float(first.send_time)
        seen = ok_lat[ok_end < s][-window:]  # the successes answered before it was sent
        if len(seen) < minimum:
            assert len(rows) == 1, "a hedge before min_samples latencies were seen"
            continue
        delay = float(np.sort(seen)[math.ceil(q * len(seen)) - 1])  # nearest rank
        if len(rows) > 1:
            hedged_n += 1
            assert float(rows.iloc[1].send_time) == pytest.approx(s + delay, abs=1e-9)
        else:
            # No hedge: the first attempt answered before the delay ran out.
            assert float(first.end_time) <= s + delay + 1e-9
        checked += 1
    assert checked > 2500
    # The p90 of the latencies seen: about 10% of requests are hedged, a little more since the
    # slow first attempts a hedge beats are cancelled, not seen (their latency is censored).
    assert 0.08 < hedged_n / checked < 0.2, hedged_n / checked
