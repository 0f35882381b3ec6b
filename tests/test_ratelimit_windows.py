"""Rate limits enforced as providers do: sub-minute windows, daily limits, Azure deployments,
and the x-ratelimit-* values a client reads. Every expected number is worked by hand in the
comments (docs/providers.md, "Rate limits", gives the sources)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from rich.console import Console

from llmtraffic import Simulation, scenario_from_dict
from llmtraffic.provider.ratelimit import DAY, RateLimiter
from llmtraffic.report_table import print_summary
from tests.conftest import make_scenario
from tests.test_gate_compositions import audit, provider


def rpm_limiter(rpm: float, window: float, refill: str, **kw: Any) -> RateLimiter:
    return RateLimiter(rpm, None, None, None, refill, False, 0.0, window=window, **kw)


def admit(lim: RateLimiter, now: float, inp: int = 10, max_tokens: int = 10) -> float | None:
    return lim.admit(now, inp, 0, max_tokens)


# --- sub-minute windows ------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "per_window"), [(1.0, 10), (10.0, 100)])
def test_600_rpm_over_fixed_windows_admits_a_windows_share_then_refuses(
    window: float, per_window: int
) -> None:
    """Azure: "rate limiting will occur for a 600-RPM deployment if more than 10 requests are
    received during each 1-second period"; over 10 s windows, more than 100."""
    lim = rpm_limiter(600, window, "window")
    times = [window * k / (2 * per_window) for k in range(per_window)]  # the first half
    assert all(admit(lim, t) is None for t in times)
    late = 0.9 * window
    assert admit(lim, late) == pytest.approx(window - late)  # "until the next period"
    assert admit(lim, window - 1e-6) is not None  # still the same window
    assert all(admit(lim, window) is None for _ in range(per_window))  # a new window: full
    assert admit(lim, window) is not None


@pytest.mark.parametrize(("window", "per_window"), [(1.0, 10), (10.0, 100)])
def test_600_rpm_in_a_continuous_bucket_of_one_windows_share(
    window: float, per_window: int
) -> None:
    """OpenAI: 60,000 RPM "may be enforced as 1,000 requests/second". A continuous bucket of
    capacity 600 x window / 60 that refills at 10 per second: a burst of ``per_window``, then
    one every 0.1 s; not the whole minute's 600 at once."""
    lim = rpm_limiter(600, window, "continuous")
    assert all(admit(lim, 0.0) is None for _ in range(per_window))
    assert admit(lim, 0.0) == pytest.approx(0.1)  # the 11th (101st): one refills in 0.1 s
    assert admit(lim, 0.1) is None
    assert admit(lim, 0.1) is not None
    # Full again ``window`` s later, and no fuller (whole requests, as the header counts
    # them: ten steps of 0.1 s need not add up to exactly 1 s in floats).
    assert lim.headers(0.1 + window)[0] == per_window
    assert lim.headers(0.1 + 10 * window)[0] == per_window


def test_a_one_minute_window_is_todays_limiter_and_takes_the_fast_path() -> None:
    """No new key: the same buckets, on the unrolled path (no new per-attempt work)."""
    plain = RateLimiter(600, 10_000, None, None, "continuous", False, 1.0)
    assert plain._continuous
    for kw in ({"window": 1.0}, {"rpm_window": 10.0}, {"rpd": 1000.0}, {"tpm_counts": "sum"}):
        assert not RateLimiter(600, 10_000, None, None, "continuous", False, 1.0, **kw)._continuous
    # The generic path gives the fast path's answers. 512 RPM: one every 60/512 s, a binary
    # fraction, so that no float noise decides a boundary (the fast path itself refuses the
    # 600th of a 600 RPM burst by 6e-13 s: ten steps of 0.1 do not add up to 1).
    slow = RateLimiter(512, None, None, None, "continuous", False, 0.0, rpd=1e9)
    fast = RateLimiter(512, None, None, None, "continuous", False, 0.0)
    step = 60 / 512
    for t in [0.0] * 513 + [step / 2, step, step, 3.5 * step, 10.0]:
        assert admit(slow, t) == admit(fast, t)


def test_rpm_window_applies_to_requests_only() -> None:
    """Azure: RPM over 10 s, TPM over the minute. 600 RPM, 6,000 TPM, 10-token attempts:
    the 101st request in 10 s is refused by the rpm window though the tpm has room."""
    lim = RateLimiter(600, 6000, None, None, "window", False, 0.0, rpm_window=10.0)
    assert all(admit(lim, 0.0) is None for _ in range(100))  # 1,000 tokens of 6,000
    assert admit(lim, 0.0) == pytest.approx(10.0)
    assert lim.rejected[:2] == [1, 0]


# --- daily limits -------------------------------------------------------------------------------


def test_a_daily_window_refuses_for_the_rest_of_the_day_with_the_time_to_reset() -> None:
    """rpd 5 reset once a day: the 6th request at 01:00 waits 23 h, rounded up to whole
    seconds as the header is; at 23:59:59 still 1 s; at midnight 5 more."""
    lim = RateLimiter(
        None, None, None, None, "continuous", False, 1.0, rpd=5, daily_refill="window"
    )
    assert all(admit(lim, 3600.0) is None for _ in range(5))
    assert admit(lim, 3600.0) == 23 * 3600
    assert admit(lim, 50_000.3) == math.ceil(DAY - 50_000.3)
    assert admit(lim, DAY - 1.0) == 1.0
    assert all(admit(lim, DAY) is None for _ in range(5))
    assert admit(lim, DAY) == DAY
    assert lim.rejected == [0, 0, 0, 0, 4, 0]


def test_the_day_starts_when_configured() -> None:
    """A run that starts at 08:00 with a reset at midnight: day_starts_at = 16 h."""
    lim = RateLimiter(
        None,
        None,
        None,
        None,
        "continuous",
        False,
        0.0,
        rpd=1,
        daily_refill="window",
        day_starts_at=16 * 3600.0,
    )
    assert admit(lim, 0.0) is None
    assert admit(lim, 3600.0) == pytest.approx(15 * 3600.0)
    assert admit(lim, 16 * 3600.0) is None  # midnight: a new day


def test_a_continuous_daily_bucket_refills_one_request_every_day_over_rpd() -> None:
    """OpenAI's headers: 200 RPD, one used, "x-ratelimit-reset-requests: 7m12s" = 86,400 /
    200 s: the day's requests come back continuously. 1,440 RPD: one per minute."""
    lim = RateLimiter(None, None, None, None, "continuous", False, 1.0, rpd=1440)
    assert all(admit(lim, 0.0) is None for _ in range(1440))
    assert admit(lim, 0.0) == 60.0
    assert admit(lim, 30.0) == 30.0
    assert admit(lim, 60.0) is None
    one = RateLimiter(None, None, None, None, "continuous", False, 1.0, rpd=200)
    assert admit(one, 0.0) is None
    assert one.headers(0.0)[::2] == pytest.approx((199, 432.0))  # 7m12s


def test_tpd_counts_tokens_as_tpm_does() -> None:
    """tpd 1,000 (reset daily): max(300 input, 400 max_tokens) = 400 charged, twice; then a
    third needs 400 of the 200 left."""
    lim = RateLimiter(
        None, None, None, None, "continuous", False, 1.0, tpd=1000, daily_refill="window"
    )
    assert admit(lim, 10.0, 300, 400) is None
    assert admit(lim, 10.0, 300, 400) is None
    assert admit(lim, 10.0, 300, 400) == DAY - 10.0
    assert admit(lim, 10.0, 150, 200) is None  # 200 fit exactly
    assert lim.rejected == [0, 0, 0, 0, 0, 1]


def test_the_summary_names_the_daily_limit_that_bound_the_run() -> None:
    """5 requests/s for 600 s without retries against rpd 1,000 reset daily: the first 1,000
    are admitted, every later attempt is refused by the rpd, and the summary says so, in
    summary.json and in the failure table the terminal prints."""
    sc = make_scenario(**{"providers.p.rate_limit": {"rpd": 1000, "daily_refill": "window"}})
    s = Simulation(sc).run().summary
    limited = s["attempt_statuses"]["rate_limited"]
    assert s["attempts"] - limited == 1000
    assert s["rate_limited_by"] == {"p.rpd": limited}
    console = Console(record=True, width=80)
    print_summary(console, s)
    lines = [line.split() for line in console.export_text().splitlines()]
    assert ["by", "p's", "rpd", f"{limited:,}", f"{limited / s['attempts']:.2%}"] in lines


# --- Azure deployments --------------------------------------------------------------------------


def azure(**rate_limit: Any) -> Any:
    sc = make_scenario(**{"providers.p.rate_limit": {"tier": "azure/standard", **rate_limit}})
    return sc.providers["p"].rate_limit


def test_an_azure_deployment_gets_6_rpm_per_1000_tpm_checked_over_10_s() -> None:
    rl = azure(tpm=100_000)
    assert (rl.rpm, rl.tpm, rl.rpm_window, rl.window) == (600, 100_000, 10.0, 60.0)
    assert (rl.refill, rl.tpm_counts, rl.count_rejected) == ("window", "sum", False)
    assert azure(tpm=20_000).rpm == 120  # Microsoft's example: 20K TPM, 120 RPM
    assert azure(tpm=100_000, rpm=300).rpm == 300  # explicit keys win
    assert azure(tpm=100_000, rpm_window="1s").rpm_window == 1.0


def test_an_azure_deployment_charges_prompt_plus_max_tokens() -> None:
    """Azure's estimate adds max_tokens to the prompt: 300 + 400 = 700 of a 1,000 TPM
    window; OpenAI's rule would have charged 400 and admitted a second."""
    lim = RateLimiter(None, 1000, None, None, "window", False, 0.0, tpm_counts="sum")
    assert admit(lim, 1.0, 300, 400) is None
    assert admit(lim, 1.0, 300, 400) == pytest.approx(59.0)
    assert admit(lim, 1.0, 200, 100) is None  # 300 fit exactly


def test_an_azure_tier_without_its_quota_names_the_fix() -> None:
    from llmtraffic.errors import ConfigError

    with pytest.raises(ConfigError, match=r"give the quota next to it, e\.g\. tpm = 100000"):
        azure()


# --- x-ratelimit-* values -----------------------------------------------------------------------


def test_headers_on_a_hand_worked_sequence() -> None:
    """rpm 60 and tpm 1,000, continuous. One attempt of 100 input and max_tokens 200 at t=0:
    1 request and 200 tokens used; requests refill at 1/s (full in 1 s), tokens at 1000/60
    per s (full in 12 s). At t=0.5: 59.5 requests (headers say 59), 808.3 tokens (808)."""
    lim = RateLimiter(60, 1000, None, None, "continuous", False, 0.0)
    assert lim.headers(0.0) == (60, 1000, 0.0, 0.0)
    assert admit(lim, 0.0, 100, 200) is None
    assert lim.headers(0.0) == pytest.approx((59, 800, 1.0, 12.0))
    assert lim.headers(0.5) == pytest.approx((59, 808, 0.5, 11.5))
    # A daily limit binds when it has fewer left: rpd 50 after one request has 49 (< 59),
    # full again in 86,400 / 50 = 1,728 s.
    daily = RateLimiter(60, None, None, None, "continuous", False, 0.0, rpd=50)
    assert admit(daily, 0.0) is None
    left, tokens, reset, tokens_reset = daily.headers(0.0)
    assert (left, reset) == pytest.approx((49, 1728.0))
    assert math.isnan(tokens) and math.isnan(tokens_reset)  # no token limit: no header


def test_headers_of_a_fixed_window() -> None:
    """600 RPM over 1 s windows, three requests by t=0.25: 7 left, reset in 0.75 s."""
    lim = rpm_limiter(600, 1.0, "window")
    for t in (0.0, 0.1, 0.25):
        assert admit(lim, t) is None
    assert lim.headers(0.25)[::2] == pytest.approx((7, 0.75))
    assert lim.headers(1.0)[::2] == pytest.approx((10, 1.0))  # a new window: all left


def test_a_policy_reads_the_reset_and_waits_for_it() -> None:
    """rpm 2 in one-minute windows, ~5 requests/s for 10 s: every 429 the policy sees says
    0 requests left and a reset at the next minute (60 - now); retried then, two of them
    per minute get through."""
    raw = make_scenario().model_dump(mode="json")
    raw["run"]["duration"] = 10
    raw["providers"]["p"]["rate_limit"] = {"rpm": 2, "refill": "window"}
    raw["features"]["f"]["policy"] = "reads"
    raw["policies"] = {
        "reads": {
            "retry": {
                "kind": "custom",
                "class": "tests.policy_plugins:WaitsForRateLimitReset",
                "params": {"retries": 3},
            },
            "deadline": 600,
        }
    }
    sim = Simulation(scenario_from_dict(raw))
    sim.run()
    seen = sim.clients["f"].controller.seen  # type: ignore[attr-defined]
    limited = [s for s in seen if s[1] == "rate_limited"]
    assert len(limited) > 20
    for now, _, requests_left, tokens_left, reset in limited:
        assert requests_left == 0
        assert reset == pytest.approx(60 * math.ceil(now / 60) - now)
        assert math.isnan(tokens_left)  # no token limit: no header


def test_without_limits_the_state_carries_no_values() -> None:
    from llmtraffic.client.waits import RetryState

    state = RetryState(1, "server_error", 500, math.nan, 1.0, 0.0, 1.0)
    assert math.isnan(state.ratelimit_remaining_requests)
    assert math.isnan(state.ratelimit_reset_tokens)


# --- composition through an incident ------------------------------------------------------------


def test_windows_and_daily_limits_through_a_tier_change_conserve_everything() -> None:
    """An Azure-like provider (600 RPM over 1 s windows, a daily request limit) whose limits
    halve for two minutes, with retries and a breaker: every request ends once, money adds
    up, and no fixed window ever admitted more than its share (10 a second, 5 while halved;
    rpd at most 5,000, 2,500 while halved, over the run: both bind)."""
    p = provider(
        rate_limit={
            "rpm": 600,
            "refill": "window",
            "rpm_window": "1s",
            "rpd": 5000,
            "daily_refill": "window",
        },
        incidents=[{"kind": "rate_limit_change", "start": 200, "duration": 120, "factor": 0.5}],
    )
    raw = {
        "run": {"duration": 600, "seed": 3, "timeseries_bin": 10},
        "providers": {"p": p},
        "features": {
            "f": {
                "provider": "p",
                "arrivals": {"kind": "poisson", "rate": 12.0},
                "input_tokens": {"kind": "fixed", "value": 100},
                "output_tokens": {"kind": "fixed", "value": 50},
                "policy": "pol",
            }
        },
        "policies": {
            "pol": {
                "timeout": 30,
                "retry": {"kind": "exponential", "max_retries": 3, "base": 0.5, "cap": 8},
                "breaker": "resilience4j",
            }
        },
    }
    sim = Simulation(scenario_from_dict(raw))
    result = sim.run()
    audit(sim, result)
    att = result.df("attempts")
    admitted = att[att["status"] != "rate_limited"]
    per_second = admitted.groupby(admitted["send_time"] // 1.0).size()
    halved = (per_second.index >= 200) & (per_second.index < 320)
    assert per_second[~halved].max() <= 10 and per_second[halved].max() <= 5
    assert per_second.max() == 10  # the limit bound: 12/s offered
    assert len(admitted) <= 5000
    s = result.summary
    assert set(s["rate_limited_by"]) <= {"p.rpm", "p.rpd"}
    assert sum(s["rate_limited_by"].values()) == s["attempt_statuses"]["rate_limited"]
