"""Properties every run must have, whatever the scenario (design.md "Correctness", style.md 11).

Hypothesis draws small random scenarios (1-3 features, 1-2 providers, a few hundred requests
at most over 30-300 simulated seconds) that mix every arrival kind, token distribution, rate
limit style, capacity limit, failure rate, incident kind, billing rule and retry policy, with
small capacities and limits so that overload, 429s, timeouts and deadlines really happen. Each
property is checked on the records of the run:

- each request ends in exactly one terminal outcome, consistent with its last attempt;
- attempts never exceed the policy's bound;
- billed cost is never below useful cost (per request and in total);
- simulated time never goes back;
- retry waits stay within the policy's bounds;
- the records agree with each other, with the billing rules (docs/metrics.md) and with the
  time series, bin by bin (docs/records.md);
- the same seed gives identical records, and two simulations in one process do not interfere.

Focused examples follow, then regression tests for the engine problems these tests found.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmtraffic import Scenario, Simulation, scenario_from_dict
from llmtraffic.config.policy import (
    ExponentialRetry,
    FixedRetry,
    NaiveRetry,
    Policy,
)
from llmtraffic.engine.entities import ATTEMPT_STATUSES, REQUEST_OUTCOMES
from llmtraffic.simulation import RunResult
from llmtraffic.testing.strategies import scenarios

FAST_FAILURES = (
    "rate_limited",
    "server_error",
    "overloaded",
    "quota_exhausted",
    "context_length_exceeded",
)
"""Statuses that never reach generation, so bill nothing."""

TABLES = ("requests", "attempts", "events", "timeseries")
EPS = 1e-9
"""Absolute slack on simulated times (seconds)."""


def close(a: float, b: float) -> bool:
    """Equal up to float summation error on costs or times."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


# Checks ----------------------------------------------------------------------------------------


def build(raw: dict[str, Any]) -> Scenario:
    return scenario_from_dict(copy.deepcopy(raw))


def max_attempts(policy: Policy) -> int:
    """The most attempts the policy allows a request."""
    return policy.attempt_bound()


def frames(result: RunResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    return result.df("requests"), result.df("attempts")


def check_terminal_outcomes(sc: Scenario, result: RunResult) -> None:
    req, att = frames(result)
    summary = result.summary
    assert req.request_id.is_unique
    assert len(req) == summary["requests"]
    assert set(req.outcome) <= set(REQUEST_OUTCOMES), set(req.outcome)
    assert sum(summary["outcomes"].values()) == summary["requests"]
    counts = req.outcome.value_counts().to_dict()
    assert counts == {k: v for k, v in summary["outcomes"].items() if v}
    assert summary["successes"] == counts.get("ok", 0)
    assert set(att.request_id) <= set(req.request_id)
    assert set(att.status) <= set(ATTEMPT_STATUSES), set(att.status)
    per_req = att.groupby("request_id").size()
    rows = per_req.reindex(req.request_id, fill_value=0).to_numpy()
    sent = req.attempts.to_numpy()
    done = (req.outcome != "unfinished").to_numpy()
    assert (sent[done] == rows[done]).all(), "attempts column != attempt rows"
    # A request cut off by the end of the drain may have one attempt in flight: `attempts`
    # counts it (attempts sent) but it has no row (rows are written when the client sees the
    # outcome; docs/records.md).
    assert ((sent[~done] == rows[~done]) | (sent[~done] == rows[~done] + 1)).all()
    assert len(att) == summary["attempts"]
    assert sum(summary["attempt_statuses"].values()) == summary["attempts"]

    # The outcome agrees with the last attempt.
    last = att.sort_values("attempt").groupby("request_id").last()
    for r in req.itertuples():
        policy = sc.policy_of(str(r.feature))
        if r.attempts == 0:
            # Only a client that holds requests back (pacing, a local queue) can reach the
            # user's deadline or the end of the drain before sending the first attempt.
            holds = policy.rate_limit is not None or policy.concurrency is not None
            unsent = ("deadline", "unfinished") if holds else ()
            # A route refuses when every deployment is cooling down (or over its limits).
            routed = ("rejected_route",) if policy.route is not None else ()
            assert r.outcome in ("rejected_breaker", "rejected_throttle", *routed, *unsent), r
        if r.outcome == "rejected_throttle":
            limits = (policy.throttle, policy.rate_limit, policy.concurrency)
            assert any(x is not None for x in limits), r
        if r.outcome == "rejected_breaker":
            assert policy.breaker is not None
        if r.outcome == "rejected_route":
            assert policy.route is not None
        if r.outcome == "unfinished":
            assert math.isfinite(sc.run.drain)
            assert r.end_time == pytest.approx(sc.run.seconds + sc.run.drain), r
        if r.attempts == 0 or r.outcome == "unfinished":
            continue
        status = last.loc[r.request_id, "status"]
        assert (r.outcome == "ok") == (status == "ok"), (r, status)
        if r.outcome == "non_retryable":
            assert status not in policy.retryable, (r, status)
        if r.outcome == "exhausted":
            assert status in policy.retryable, (r, status)
            retry = policy.retry
            gave_up = (
                isinstance(retry, NaiveRetry | FixedRetry | ExponentialRetry)
                and retry.honor_retry_after
                and retry.retry_after_beyond_max == "give_up"
                and status == "rate_limited"
                and last.loc[r.request_id, "retry_after"] > retry.retry_after_max
            )
            assert r.attempts == max_attempts(policy) or gave_up, r
        if r.outcome == "rejected_budget":
            # A retry was refused, so the policy's bound was not reached.
            assert policy.budget is not None and r.attempts < max_attempts(policy), r
        if r.outcome == "deadline":
            assert r.latency == pytest.approx(policy.deadline, abs=1e-6), r


def check_records_agree(sc: Scenario, result: RunResult) -> None:
    """Attempts belong to their request's feature and provider; a success costs the baseline."""
    req, att = frames(result)
    merged = att.merge(req, on="request_id", suffixes=("", "_r"))
    assert (merged.feature == merged.feature_r).all()
    assert (merged.input_tokens == merged.input_tokens_r).all()
    sent = req.attempts > 0
    # The provider of the last attempt: the feature's, or (routed) one of its deployments.
    chains = {n: set(sc.chain_names(n)) for n in sc.features}
    assert all(
        p in chains[f] for f, p in zip(req.feature[sent], req.final_provider[sent], strict=True)
    )
    model = req.final_provider[sent].map({n: p.model for n, p in sc.providers.items()})
    assert (req.final_model[sent] == model).all()
    assert (req.final_provider[~sent] == "").all() and (req.final_model[~sent] == "").all()
    max_tokens = req.feature.map({n: f.max_tokens for n, f in sc.features.items()}).astype("int64")
    assert (req.output_tokens <= max_tokens).all()
    # final_provider is the provider of the request's last attempt.
    last = merged.sort_values("attempt").groupby("request_id").last()
    assert (last.provider == last.final_provider).all()
    assert (req.baseline_cost >= 0).all()
    ok = req[req.outcome == "ok"]
    # On the feature's own provider (no fallback, no other deployment here) a success bills
    # exactly the baseline.
    home = ok.final_provider == ok.feature.map({n: f.provider for n, f in sc.features.items()})
    assert np.allclose(ok.useful_cost[home], ok.baseline_cost[home], rtol=1e-9, atol=1e-15)
    assert close(req.baseline_cost.sum(), result.summary["baseline_cost"])
    if len(ok):
        assert result.summary["latency_max"] == ok.latency.max()


BREAKER_MOVES = {
    ("closed", "open"),
    ("open", "half_open"),
    ("open", "closed"),  # a cooldown (half_open_calls = 0)
    ("half_open", "open"),
    ("half_open", "closed"),
}


def check_events(sc: Scenario, result: RunResult) -> None:
    """Breaker transitions chain legally, incidents start and end, and breaker rejections
    happen only while that breaker is not closed."""
    req = result.df("requests")
    ev = result.df("events")
    assert ev.time.is_monotonic_increasing
    # Incident events are scheduled up front, so the run lasts until the last one unless a
    # finite drain stops it first (events at the stop time itself are not run).
    until = sc.run.seconds + sc.run.drain
    for pname, cfg in sc.providers.items():
        starts = ev[(ev.kind == "incident_start") & (ev.provider == pname)]
        ends = ev[(ev.kind == "incident_end") & (ev.provider == pname)]
        want_starts = sorted(i.start for i in cfg.incidents if i.start < until)
        want_ends = sorted(i.start + i.duration for i in cfg.incidents)
        want_ends = [t for t in want_ends if t < until]
        for got, want in ((starts.time, want_starts), (ends.time, want_ends)):
            assert len(got) == len(want) and np.allclose(sorted(got), want), (list(got), want)
    for fname in sc.features:
        mine = ev[(ev.kind == "breaker") & (ev.feature == fname)]
        if sc.policy_of(fname).breaker is None:
            assert mine.empty
        state = "closed"
        times: list[float] = []
        states: list[str] = []
        for t, detail in zip(mine.time, mine.detail, strict=True):
            frm, to = str(detail).split("->")
            assert frm == state and (frm, to) in BREAKER_MOVES, (state, detail)
            state = to
            times.append(float(t))
            states.append(to)
        rejected = req[(req.feature == fname) & (req.outcome == "rejected_breaker")]
        for t in rejected.end_time:
            i = int(np.searchsorted(times, t, side="left"))  # transitions strictly before t
            before = states[i - 1] if i else "closed"
            same_time = i < len(times) and times[i] == t
            assert before != "closed" or same_time, (fname, t)
        budget = ev[ev.feature == fname].kind
        budget = budget[budget.str.startswith("budget_")]
        expect = ["budget_exhausted", "budget_recovered"] * len(budget)
        assert list(budget) == expect[: len(budget)]
    # A spend cap is reached, then reset by its period, in turn; its rows name the provider,
    # or the account of a cap several providers share.
    caps = {
        cfg.quota.account or pname: cfg.quota.spend_cap
        for pname, cfg in sc.providers.items()
        if cfg.quota is not None
    }
    quota_rows = ev[ev.kind.isin(["quota_exhausted", "quota_reset"])]
    assert set(quota_rows.provider) <= set(caps)
    for label, cap in caps.items():
        quota = quota_rows[quota_rows.provider == label]
        expect = ["quota_exhausted", "quota_reset"] * len(quota)
        assert list(quota.kind) == expect[: len(quota)]
        assert (quota.value[quota.kind == "quota_exhausted"] >= cap).all()


def check_attempt_bound(sc: Scenario, result: RunResult) -> None:
    req, att = frames(result)
    for name in sc.features:
        bound = max_attempts(sc.policy_of(name))
        assert (req.attempts[req.feature == name] <= bound).all(), (name, bound)
        assert (att.attempt[att.feature == name] < bound).all(), (name, bound)


def check_costs(sc: Scenario, result: RunResult) -> None:
    check_money(result)
    req, att = frames(result)
    # No attempt costs more than a full success would on its provider, and none generates
    # more output than its request asked for.
    asked = att.request_id.map(req.set_index("request_id").output_tokens)
    assert (att.output_tokens <= asked).all()
    if len(att):
        full = row_prices(sc, att, asked)
        assert (att.cost.to_numpy() <= full * (1 + 1e-9) + 1e-15).all()


def check_money(result: RunResult) -> None:
    """The books balance: attempts, requests and the summary agree, useful <= billed."""
    req, att = frames(result)
    s = result.summary
    assert (att.cost >= 0).all()
    assert (att.cost[att.status.isin(FAST_FAILURES)] == 0).all(), "a fast failure was billed"
    assert s["billed_cost"] >= s["useful_cost"] - 1e-12
    assert s["wasted_cost"] >= -1e-12
    assert close(s["wasted_cost"], s["billed_cost"] - s["useful_cost"])
    assert close(att.cost.sum(), s["billed_cost"])
    assert close(req.billed_cost.sum(), s["billed_cost"])
    assert close(req.useful_cost.sum(), s["useful_cost"])
    per_req = att.groupby("request_id").cost.sum().reindex(req.request_id, fill_value=0.0)
    assert np.allclose(req.billed_cost.to_numpy(), per_req.to_numpy(), rtol=1e-9, atol=1e-15)
    assert (req.billed_cost >= req.useful_cost - 1e-15).all()
    assert (req.useful_cost >= 0).all()
    assert (req.useful_cost[req.outcome != "ok"] == 0).all(), "useful cost on a failed request"
    # The useful cost of a success is the cost of its one successful attempt.
    ok_att = att[att.status == "ok"].set_index("request_id").cost
    ok_req = req[req.outcome == "ok"].set_index("request_id").useful_cost
    assert np.allclose(ok_req.to_numpy(), ok_att.reindex(ok_req.index).to_numpy())


def price(sc: Scenario, provider: str, feature: str, inp: int, out: int) -> float:
    """What ``inp`` input and ``out`` output tokens of ``feature`` cost on ``provider``."""
    p = sc.providers[provider].prices
    cached = int(np.rint(inp * sc.features[feature].cached_fraction))
    cached_price = p.cached_input if p.cached_input is not None else p.input
    return ((inp - cached) * p.input + cached * cached_price + out * p.output) * 1e-6


def by_provider(sc: Scenario, att: pd.DataFrame, value: Any) -> pd.Series:
    """A column of ``value(provider config)`` for each attempt row."""
    return att.provider.map({name: value(cfg) for name, cfg in sc.providers.items()})


def row_prices(sc: Scenario, att: pd.DataFrame, out: pd.Series | int) -> np.ndarray:
    """``price`` of each attempt row's input tokens and ``out`` output tokens."""
    p_in = by_provider(sc, att, lambda c: c.prices.input).to_numpy(float)
    p_cached = by_provider(
        sc,
        att,
        lambda c: c.prices.input if c.prices.cached_input is None else c.prices.cached_input,
    ).to_numpy(float)
    p_out = by_provider(sc, att, lambda c: c.prices.output).to_numpy(float)
    frac = att.feature.map({n: f.cached_fraction for n, f in sc.features.items()})
    inp = att.input_tokens.to_numpy()
    cached = np.rint(inp * frac.to_numpy(float))
    k = out.to_numpy() if isinstance(out, pd.Series) else out
    return np.asarray(((inp - cached) * p_in + cached * p_cached + k * p_out) * 1e-6)


def check_billing(sc: Scenario, result: RunResult) -> None:
    """Each attempt is billed by the rules of docs/metrics.md, "Billing"."""
    req, att = frames(result)
    if att.empty:
        return
    asked = att.request_id.map(req.set_index("request_id").output_tokens)
    out = att.output_tokens
    started = att.start_time.notna().to_numpy()
    cost = att.cost.to_numpy()
    status = att.status.to_numpy()
    full = row_prices(sc, att, asked)  # as if it had succeeded
    made = row_prices(sc, att, out)  # input + the output the row reports
    bare = row_prices(sc, att, 0)  # input only
    mid = by_provider(sc, att, lambda c: c.billing.midstream).to_numpy()
    tmo = by_provider(sc, att, lambda c: c.billing.timeout).to_numpy()
    keep = by_provider(sc, att, lambda c: c.billing.abandoned_keeps_running).to_numpy(bool)

    def near(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(np.isclose(a, b, rtol=1e-9, atol=1e-15))

    def holds(mask: np.ndarray, ok: np.ndarray, what: str) -> None:
        bad = mask & ~ok
        assert not bad.any(), (what, att[bad].head(3).to_dict("records"))

    is_ok = status == "ok"
    holds(is_ok, started & (out == asked).to_numpy() & near(cost, made), "ok bills in + out")
    fast = np.isin(status, FAST_FAILURES)
    holds(fast, ~started & (out == 0).to_numpy() & (cost == 0), "fast failures bill nothing")
    is_mid = status == "midstream_error"
    holds(is_mid, started & (out <= asked).to_numpy(), "mid-stream errors started")
    want = np.where(mid == "none", 0.0, np.where(mid == "partial", made, full))
    holds(is_mid, near(cost, want), "billing.midstream")
    is_tmo = status == "timeout"
    assert (is_ok | fast | is_mid | is_tmo).all()
    # Not started when the client left: a provider that stops it bills nothing; one that keeps
    # running it serves it later and bills what it generates (the row's output: partial) or
    # the whole answer (full), or nothing if it never got to it (docs/billing.md).
    served_later = near(cost, made) | ((tmo == "full") & near(cost, full))
    holds(is_tmo & ~started & ~keep, cost == 0, "billing.timeout, stopped before it started")
    holds(is_tmo & ~started & keep, (cost == 0) | served_later, "billing.timeout, kept running")
    want = np.where(tmo == "none", 0.0, full)
    holds(is_tmo & started & (tmo != "partial"), near(cost, want), "billing.timeout")
    # Partial: input + the output generated by the disconnect.
    within = (cost >= bare * (1 - 1e-9)) & (cost <= made * (1 + 1e-9) + 1e-15)
    holds(is_tmo & started & (tmo == "partial"), within, "billing.timeout partial")


def check_statuses(sc: Scenario, result: RunResult) -> None:
    """HTTP statuses and retry_after as docs/records.md describes them."""
    att = result.df("attempts")
    status = att.status
    ra = att.retry_after
    assert ra[status != "rate_limited"].isna().all()
    assert (att.http_status[status.isin(["ok", "midstream_error"])] == 200).all()
    assert (att.http_status[status.isin(["rate_limited", "quota_exhausted"])] == 429).all()
    assert (att.http_status[status == "context_length_exceeded"] == 400).all()
    assert (att.http_status[status == "timeout"] == 0).all()
    for name, cfg in sc.providers.items():
        mine = att[att.provider == name]
        shed = mine.http_status[mine.status == "overloaded"]
        # Without a capacity table nothing is shed (docs/providers.md).
        assert shed.empty if cfg.capacity is None else (shed == cfg.capacity.overload_status).all()
        codes = {cfg.failures.error_status} | {k.status for k in cfg.failures.errors}
        codes |= {int(getattr(i, "status", 0)) for i in cfg.incidents}
        # An exhausted quota comes from the provider's quota or a quota incident only.
        if (mine.status == "quota_exhausted").any():
            assert cfg.quota is not None or any(i.kind == "quota_exhausted" for i in cfg.incidents)
        too_long = mine[mine.status == "context_length_exceeded"]
        if len(too_long):
            window = cfg.context_window
            assert isinstance(window, int)
            asked = too_long.feature.map(lambda f: sc.features[f].max_tokens)
            assert (too_long.input_tokens + asked > window).all()
        assert mine.http_status[mine.status == "server_error"].isin(codes).all(), codes
        limited = mine.retry_after[mine.status == "rate_limited"].dropna()
        if len(mine[mine.status == "rate_limited"]):
            assert cfg.rate_limit is not None
        if len(limited):
            assert (limited > 0).all()
            assert cfg.rate_limit is not None
            res = cfg.rate_limit.retry_after_resolution
            if res > 0:
                steps = limited / res
                assert (np.abs(steps - np.rint(steps)) < 1e-6).all(), (res, list(limited))


def check_time(sc: Scenario, result: RunResult) -> None:
    req, att = frames(result)
    duration = sc.run.duration
    assert ((req.arrival_time >= 0) & (req.arrival_time < duration)).all()
    assert (req.end_time >= req.arrival_time).all()
    assert np.allclose(req.latency, req.end_time - req.arrival_time)
    assert (att.send_time <= att.end_time).all()
    started = att[att.start_time.notna()]
    assert (started.start_time >= started.send_time).all()
    assert (started.start_time <= started.end_time).all()
    assert (att.start_time.notna() | (att.status != "ok")).all(), "an ok attempt never started"
    assert np.allclose(started.queue_wait, started.start_time - started.send_time)
    assert att.queue_wait[att.start_time.isna()].isna().all()
    # No request outlives its deadline.
    for name in sc.features:
        deadline = sc.policy_of(name).deadline
        lat = req.latency[(req.feature == name) & (req.outcome != "unfinished")]
        assert (lat <= deadline + 1e-6).all(), (name, deadline, lat.max())
    merged = att.merge(
        req[["request_id", "arrival_time", "end_time"]], on="request_id", suffixes=("", "_req")
    )
    assert (merged.send_time >= merged.arrival_time).all()
    assert (merged.end_time <= merged.end_time_req).all()
    # Attempts are numbered 0..k-1 in send order, and go one at a time: the next is sent
    # after the previous answer.
    seq = att.sort_values(["request_id", "send_time", "attempt"], kind="stable")
    by_req = seq.groupby("request_id")
    assert (seq.attempt.to_numpy() == by_req.cumcount().to_numpy()).all()
    prev_end = by_req.end_time.shift(1)
    has_prev = prev_end.notna()
    assert (seq.send_time[has_prev] >= prev_end[has_prev]).all()


def check_waits(sc: Scenario, result: RunResult) -> None:
    """Each retry waits what its policy says: honoured retry_after, or the backoff's bounds."""
    att = result.df("attempts").sort_values(["request_id", "attempt"])
    prev = att.groupby("request_id").shift(1)
    assert (att.wait_before[att.attempt == 0] == 0).all()
    for i in np.flatnonzero((att.attempt > 0).to_numpy()):
        row = att.iloc[i]
        before = prev.iloc[i]
        wait = float(row.wait_before)
        retry = sc.policy_of(row.feature).retry
        assert isinstance(retry, NaiveRetry | FixedRetry | ExponentialRetry)
        assert wait >= 0
        policy = sc.policy_of(row.feature)
        if policy.rate_limit is None and policy.concurrency is None:
            assert row.send_time == pytest.approx(before.end_time + wait, abs=1e-6), (row, before)
        else:
            # Pacing and a local queue may hold the attempt after its wait.
            assert row.send_time >= before.end_time + wait - 1e-6, (row, before)
        ra = float(before.retry_after)
        if (
            retry.honor_retry_after
            and before.status == "rate_limited"
            and not math.isnan(ra)
            and ra <= retry.retry_after_max
        ):
            assert wait == ra, (wait, ra)
            continue
        if isinstance(retry, NaiveRetry):
            assert wait == 0.0
        elif isinstance(retry, FixedRetry):
            assert wait == retry.delay
        elif isinstance(retry, ExponentialRetry):
            n = int(row.attempt) - 1  # retries made before this one's wait was drawn
            ceiling = min(retry.cap, retry.base * retry.multiplier**n)
            lo, hi = {
                "none": (ceiling, ceiling),
                "full": (0.0, ceiling),
                "equal": (ceiling / 2, ceiling),
                "decorrelated": (retry.base, retry.cap),
            }[retry.jitter]
            assert lo * (1 - 1e-12) <= wait <= hi * (1 + 1e-12), (retry, n, wait)
            assert wait <= retry.cap * (1 + 1e-12)


def check_aggregates(sc: Scenario, result: RunResult) -> None:
    """The time series counts what the rows hold."""
    req, att = frames(result)
    ts = result.df("timeseries")
    assert ts.arrivals.sum() == len(req)
    # The time series counts attempts sent (some may be in flight when a finite drain ends).
    assert ts.attempts.sum() == req.attempts.sum()
    assert ts.retries.sum() == (req.attempts - 1).clip(lower=0).sum()
    for status in ATTEMPT_STATUSES:
        assert ts[status].sum() == (att.status == status).sum(), status
    assert ts.requests_ok.sum() == (req.outcome == "ok").sum()
    assert ts.requests_ok.sum() + ts.requests_failed.sum() == len(req)
    assert close(ts.billed_cost.sum(), result.summary["billed_cost"])
    assert close(ts.wasted_cost.sum(), result.summary["wasted_cost"])
    assert (ts[["in_flight", "busy_slots", "queue_length", "breakers_open"]] >= -1e-9).all().all()
    # Bin by bin: each tally counts the rows whose time falls in the bin. Unless some row's
    # time is on a bin edge (it may then be counted on either side, by event order), or an
    # attempt is still in flight when a finite drain ends.
    width = sc.run.timeseries_bin
    times = np.concatenate([req.arrival_time, req.end_time, att.send_time, att.end_time]) / width
    if np.any(np.abs(times - np.rint(times)) < 1e-9) or len(att) != req.attempts.sum():
        return
    n = len(ts)

    def per_bin(t: pd.Series, weights: pd.Series | None = None) -> np.ndarray:
        idx = (t.to_numpy() // width).astype(int)
        assert (idx < n).all()
        w = None if weights is None else weights.to_numpy()
        return np.bincount(idx, weights=w, minlength=n)

    assert (ts.arrivals.to_numpy() == per_bin(req.arrival_time)).all()
    assert (ts.attempts.to_numpy() == per_bin(att.send_time)).all()
    assert (ts.retries.to_numpy() == per_bin(att.send_time[att.attempt > 0])).all()
    for status in ATTEMPT_STATUSES:
        assert (ts[status].to_numpy() == per_bin(att.end_time[att.status == status])).all()
    ok = req.outcome == "ok"
    assert (ts.requests_ok.to_numpy() == per_bin(req.end_time[ok])).all()
    assert (ts.requests_failed.to_numpy() == per_bin(req.end_time[~ok])).all()
    assert (ts.arrived_ok.to_numpy() == per_bin(req.arrival_time[ok])).all()
    # "Have ended": an unfinished request (cut off by the drain) has not.
    ended = req.arrival_time[req.outcome != "unfinished"]
    assert (ts.arrived_done.to_numpy() == per_bin(ended)).all()
    assert np.allclose(ts.billed_cost, per_bin(att.end_time, att.cost), rtol=1e-9, atol=1e-12)
    failed = att.status != "ok"
    wasted = per_bin(att.end_time[failed], att.cost[failed])
    assert np.allclose(ts.wasted_cost, wasted, rtol=1e-9, atol=1e-12)


# Properties ------------------------------------------------------------------------------------

PROPERTY = settings(
    max_examples=int(os.environ.get("LLMTRAFFIC_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run(raw: dict[str, Any]) -> tuple[Scenario, RunResult]:
    sc = build(raw)
    return sc, Simulation(sc).run()


@PROPERTY
@given(scenarios())
def test_each_request_ends_in_exactly_one_terminal_outcome(raw: dict[str, Any]) -> None:
    check_terminal_outcomes(*run(raw))


@PROPERTY
@given(scenarios())
def test_attempts_never_exceed_the_policy_bound(raw: dict[str, Any]) -> None:
    check_attempt_bound(*run(raw))


@PROPERTY
@given(scenarios())
def test_billed_is_never_below_useful(raw: dict[str, Any]) -> None:
    sc, result = run(raw)
    check_costs(sc, result)
    check_billing(sc, result)


@PROPERTY
@given(scenarios())
def test_time_is_monotone(raw: dict[str, Any]) -> None:
    check_time(*run(raw))


@PROPERTY
@given(scenarios())
def test_records_agree_with_each_other(raw: dict[str, Any]) -> None:
    sc, result = run(raw)
    check_records_agree(sc, result)
    check_events(sc, result)
    check_statuses(sc, result)


@PROPERTY
@given(scenarios())
def test_backoff_stays_within_bounds(raw: dict[str, Any]) -> None:
    check_waits(*run(raw))


@PROPERTY
@given(scenarios())
def test_time_series_agrees_with_rows(raw: dict[str, Any]) -> None:
    check_aggregates(*run(raw))


def assert_same_records(a: RunResult, b: RunResult) -> None:
    for name in TABLES:
        pd.testing.assert_frame_equal(a.df(name), b.df(name))
    sa = {k: v for k, v in a.summary.items() if k != "wall_time_s"}
    sb = {k: v for k, v in b.summary.items() if k != "wall_time_s"}
    # NaN metrics (undefined ratios) compare unequal to themselves; compare their repr.
    assert repr(sa) == repr(sb)


@settings(PROPERTY, max_examples=25)
@given(scenarios())
def test_same_seed_gives_identical_records(raw: dict[str, Any]) -> None:
    sc = build(raw)
    assert_same_records(Simulation(sc).run(), Simulation(sc).run())


@settings(PROPERTY, max_examples=25)
@given(scenarios(), st.integers(0, 2**32 - 1))
def test_another_seed_gives_other_arrivals(raw: dict[str, Any], other: int) -> None:
    sc = build(raw)
    a = Simulation(sc).run().df("requests")
    b = Simulation(sc, seed=other ^ 0x5EED).run().df("requests")
    if other ^ 0x5EED == sc.run.seed or (a.empty and b.empty):
        return
    ta = np.sort(a.arrival_time.to_numpy())
    tb = np.sort(b.arrival_time.to_numpy())
    assert len(ta) != len(tb) or not np.array_equal(ta, tb)


@settings(PROPERTY, max_examples=15)
@given(scenarios(), scenarios())
def test_two_simulations_in_one_process_do_not_interfere(
    raw_a: dict[str, Any], raw_b: dict[str, Any]
) -> None:
    sc_a, sc_b = build(raw_a), build(raw_b)
    alone = Simulation(sc_a).run()
    sim_a = Simulation(sc_a)
    sim_b = Simulation(sc_b)
    sim_b.run()
    assert_same_records(alone, sim_a.run())


# Focused examples ------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "run": {"duration": 120.0, "seed": 3, "timeseries_bin": 10.0},
    "providers": {
        "p": {
            "model": "m",
            "prices": {"input": 1.0, "output": 2.0},
            "capacity": {"slots": 20, "queue_limit": 50},
            "service": {"kind": "deterministic", "value": 0.5},
        }
    },
    "features": {
        "f": {
            "provider": "p",
            "arrivals": {"kind": "poisson", "rate": 2.0},
            "input_tokens": {"kind": "fixed", "value": 100},
            "output_tokens": {"kind": "fixed", "value": 50},
        }
    },
}


def test_a_request_held_by_the_client_when_the_run_is_cut_is_unfinished_unsent() -> None:
    """Found by the terminal-outcome property: with one attempt at a time (the slot busy 10 s)
    and no drain, the requests waiting in the client's local queue at the end were never
    sent; they are unfinished with 0 attempts, ending at duration + drain."""
    raw = copy.deepcopy(BASE)
    raw["run"]["drain"] = 0.0
    raw["providers"]["p"]["service"] = {"kind": "deterministic", "value": 10.0}
    raw["policies"] = {"one": {"timeout": "inf", "concurrency": {"limit": 1}}}
    sc, result = run(raw)
    req = result.df("requests")
    held = req[req.attempts == 0]
    assert len(held) > 100 and (held.outcome == "unfinished").all()
    assert np.allclose(held.end_time, sc.run.seconds)
    assert (req.attempts <= 1).all() and (req.outcome == "ok").sum() == 11


def test_breaker_rejects_without_attempts() -> None:
    raw = copy.deepcopy(BASE)
    raw["providers"]["p"]["incidents"] = [
        {"kind": "outage", "start": 20.0, "duration": 60.0, "status": 503}
    ]
    raw["policies"] = {
        "b": {
            "retry": {"kind": "none"},
            "breaker": {
                "window": "count",
                "window_size": 10,
                "minimum_calls": 5,
                "open_duration": 200.0,
            },
        }
    }
    sc, result = run(raw)
    req, att = frames(result)
    rejected = req[req.outcome == "rejected_breaker"]
    assert len(rejected) > 50  # open from ~22 s until the end of the run
    assert (rejected.attempts == 0).all()
    assert not att.request_id.isin(rejected.request_id).any()
    assert (rejected.billed_cost == 0).all()
    assert (rejected.latency == 0).all()
    events = result.df("events")
    opened = events[(events.kind == "breaker") & (events.detail == "closed->open")]
    assert len(opened) == 1
    assert (rejected.arrival_time >= opened.time.iloc[0]).all()
    check_terminal_outcomes(sc, result)


def test_no_success_is_slower_than_the_deadline() -> None:
    raw = copy.deepcopy(BASE)
    raw["providers"]["p"]["service"] = {"kind": "exponential", "mean": 1.5}
    raw["providers"]["p"]["capacity"] = {"slots": 6, "queue_limit": "unbounded"}
    raw["policies"] = {
        "d": {
            "deadline": 3.0,
            "timeout": 2.5,
            "retry": {"kind": "exponential", "max_retries": 5, "base": 0.1, "cap": 1.0},
        }
    }
    sc, result = run(raw)
    req, _ = frames(result)
    ok = req[req.outcome == "ok"]
    assert len(ok) > 10 and (req.outcome == "deadline").sum() > 10
    assert (ok.latency <= 3.0 + EPS).all(), ok.latency.max()
    assert np.allclose(req.latency[req.outcome == "deadline"], 3.0)
    check_time(sc, result)


# Engine problems found by these properties (fixed) ----------------------------------------------


def test_half_open_breaker_recovers_after_an_unrecorded_trial() -> None:
    raw = copy.deepcopy(BASE)
    raw["run"].update(duration=200.0, seed=1)
    raw["features"]["f"]["arrivals"] = {"kind": "poisson", "rate": 1.0}
    raw["providers"]["p"]["rate_limit"] = {"rpm": 600.0}
    raw["providers"]["p"]["incidents"] = [
        # Server errors open the breaker ...
        {"kind": "outage", "start": 10.0, "duration": 20.0},
        # ... then a half-open trial meets a 429 (nothing is admitted until 50 s).
        {"kind": "rate_limit_change", "start": 30.0, "duration": 20.0, "factor": 0.001},
    ]
    raw["policies"] = {
        "b": {
            "breaker": {
                "window_size": 5,
                "minimum_calls": 5,
                "open_duration": 5.0,
                "half_open_calls": 1,
            }
        }
    }
    _, result = run(raw)
    req = result.df("requests")
    late = req[req.arrival_time > 100.0]  # the provider is healthy again from 50 s
    assert (late.outcome == "ok").mean() > 0.9, late.outcome.value_counts().to_dict()


def test_abandoned_attempt_reports_the_output_generated_by_the_disconnect() -> None:
    raw = copy.deepcopy(BASE)
    raw["run"]["duration"] = 5.0
    raw["providers"]["p"]["service"] = {"kind": "deterministic", "value": 10.0}
    raw["providers"]["p"]["billing"] = {"abandoned_keeps_running": False, "timeout": "partial"}
    raw["policies"] = {"t": {"timeout": 2.0}}
    sc, result = run(raw)
    att = result.df("attempts")
    assert len(att) > 3 and (att.status == "timeout").all()
    # 2 s of a 10 s generation of 50 tokens: 10 tokens, billed as input + 10 output.
    for a in att.itertuples():
        assert a.cost == pytest.approx(price(sc, "p", "f", 100, 10))
        assert a.output_tokens == 10, a


@pytest.mark.parametrize(
    "arrivals",
    [
        # Batches of up to 40 requests at one timestamp, into 20 slots and a queue of 50.
        {"kind": "batch", "rate": 0.2, "mean_size": 12},
        {"kind": "batch", "period": 3.0, "sizes": [0, 0, 1], "jitter": 0.2},
        {"kind": "mmpp", "rates": [0.5, 20.0], "mean_durations": [20.0, 5.0]},
        {"kind": "resample", "trace": {"path": "builtin:azure-conv"}, "rate": 6.0},
    ],
    ids=["batch-poisson", "batch-periodic", "mmpp", "resample"],
)
def test_fitted_arrival_kinds_keep_every_invariant(arrivals: dict[str, Any]) -> None:
    """The arrival kinds ``fit`` writes (not in the generated scenarios: the oracle models
    the others) under overload, errors and retries: every request ends once, attempts within
    the bound, money adds up, time is monotone, records and series agree."""
    raw = copy.deepcopy(BASE)
    raw["features"]["f"]["arrivals"] = arrivals
    raw["providers"]["p"]["failures"] = {"error_rate": 0.1}
    raw["policies"] = {
        "r": {"timeout": 5.0, "retry": {"kind": "exponential", "max_retries": 3, "base": 0.2}}
    }
    sc, result = run(raw)
    assert len(result.df("requests")) > 50
    for check in (
        check_terminal_outcomes,
        check_attempt_bound,
        check_costs,
        check_billing,
        check_time,
        check_records_agree,
        check_events,
        check_statuses,
        check_waits,
        check_aggregates,
    ):
        check(sc, result)


def with_spend_cap(raw: dict[str, Any], usd: float) -> dict[str, Any]:
    """``raw`` with one key's spend cap over all its features, per 30 s (docs/policies.md,
    "Spend caps"): refusals are attempts of status quota_exhausted, so every check holds."""
    capped = copy.deepcopy(raw)
    capped["spend_caps"] = {
        "key": {"usd": usd, "period": "30s", "features": list(capped["features"])}
    }
    return capped


@settings(PROPERTY, max_examples=25)
@given(scenarios(), st.floats(1e-6, 1e-2))
def test_every_invariant_holds_under_a_spend_cap(raw: dict[str, Any], usd: float) -> None:
    """The gateway's spend cap (client/levers.py) keeps the books: one outcome per request,
    attempts within the bound, bills and records in agreement, time monotone, the time series
    equal to the rows; its refusals are unbilled 429s, and the cap's meter saw every bill."""
    sc, result = run(with_spend_cap(raw, usd))
    for check in (
        check_terminal_outcomes,
        check_records_agree,
        check_attempt_bound,
        check_costs,
        check_time,
        check_aggregates,
    ):
        check(sc, result)
    att = result.df("attempts")
    refused = att[att.status == "quota_exhausted"]
    assert (refused.cost == 0).all() and (refused.http_status == 429).all()
    assert close(result.summary["spend_caps"]["key"]["billed_cost"], result.summary["billed_cost"])


# Prices as providers charge them: the same books with a prompt cache, a long-context tier and
# reasoning tokens on every generated scenario (docs/billing.md) --------------------------------


def priced(raw: dict[str, Any], rules: str, system: int, reasoning: int) -> dict[str, Any]:
    """``raw`` with a prompt cache on each provider without batching (which refuses one), a
    long-context tier low enough to be reached, and a system prompt and reasoning tokens on
    every feature (cached_fraction dropped: a prompt cache derives it)."""
    raw = copy.deepcopy(raw)
    for prov in raw["providers"].values():
        prices = prov.setdefault("prices", {"input": 1.0, "output": 2.0})
        if "batching" not in prov:
            prov["prompt_cache"] = {"rules": rules, "ttl": 300.0}
            prices["long_context"] = {"above": 1500, "input": 2.0, "output": 3.0}
    for feat in raw["features"].values():
        feat.pop("cached_fraction", None)
        feat["system_prompt_tokens"] = system
        feat["reasoning_tokens"] = {"kind": "uniform", "low": 0, "high": reasoning}
    return raw


@PROPERTY
@given(
    scenarios(),
    st.sampled_from(["anthropic", "openai"]),
    st.sampled_from([0, 1100, 2000]),
    st.sampled_from([0, 50]),
)
def test_priced_bills_add_up(raw: dict[str, Any], rules: str, system: int, reasoning: int) -> None:
    from llmtraffic.provider.pricing import PricedEndpoint

    raw = priced(raw, rules, system, reasoning)
    try:
        sc = build(raw)
    except Exception as exc:  # a generated batching provider with reachable long prompts
        assume_refused(exc)
        return
    sim = Simulation(sc)
    result = sim.run()
    check_terminal_outcomes(sc, result)
    check_money(result)  # the price bound of check_costs is the plain formula's
    req, att = frames(result)
    asked = att.request_id.map(req.set_index("request_id").output_tokens)
    assert (att.output_tokens <= asked).all()
    for name, ep in sim.endpoints.items():
        if not isinstance(ep, PricedEndpoint):
            continue
        stats = result.summary["pricing"][name]
        # billed = the sum of the parts over this provider's attempts
        parts = sum(stats[f"{k}_cost"] for k in ("input", "cache_write", "cache_read", "output"))
        assert close(parts + stats["reasoning_cost"], stats["billed_cost"])
        assert close(stats["billed_cost"], att.cost[att.provider == name].sum())
        if ep.cache is not None:
            assert stats["cache_hits"] <= stats["cache_lookups"]


def assume_refused(exc: Exception) -> None:
    """Only the documented refusal may stop a priced scenario from being built."""
    assert "batching and long-context prices" in str(exc), exc
