"""Rate limiters: unit behaviour with an injected clock, and long-run admitted rates."""

from __future__ import annotations

import math

import pytest

from llmtraffic import Simulation
from llmtraffic.provider.ratelimit import FixedWindow, RateLimiter, TokenBucket
from llmtraffic.theory import token_bucket_admitted_rate
from tests.conftest import make_scenario


def test_token_bucket_refills_continuously() -> None:
    bucket = TokenBucket(60.0)  # one token per second, 60 at most
    assert bucket.refill(0.0) == 60.0
    bucket.charge(60.0, 0.0)
    assert bucket.refill(0.0) == 0.0
    assert bucket.refill(2.5) == pytest.approx(2.5)  # 2.5 s later: 2.5 tokens back
    assert bucket.wait_for(5.0, 2.5) == pytest.approx(2.5)
    assert bucket.refill(1000.0) == 60.0  # never above capacity
    assert math.isinf(bucket.wait_for(61.0, 1000.0))  # larger than the bucket: never


def test_fixed_window_resets_each_minute() -> None:
    window = FixedWindow(10.0)
    window.refill(5.0)
    window.charge(10.0, 5.0)
    assert window.refill(59.9) == 0.0
    assert window.wait_for(1.0, 59.9) == pytest.approx(0.1)  # until the next window
    assert window.refill(60.0) == 10.0


def test_limiter_retry_after_is_rounded_up_to_whole_seconds() -> None:
    lim = RateLimiter(60.0, None, None, None, "continuous", False, 1.0)
    for _ in range(60):
        assert lim.admit(0.0, 10, 0, 10) is None
    # Empty: the next token comes 1 s later; at t=0.3 that is 0.7 s away, sent as "1".
    assert lim.admit(0.3, 10, 0, 10) == 1.0
    assert lim.admit(1.0, 10, 0, 10) is None


@pytest.mark.parametrize("refill", ["continuous", "window"])
def test_openai_style_tokens_count_the_larger_of_input_and_max_tokens(refill: str) -> None:
    """OpenAI: "the maximum of max_tokens and the estimated number of tokens" (not the sum)."""
    lim = RateLimiter(None, 1000.0, None, None, refill, False, 0.0)
    assert lim.admit(1.0, 300, 0, 400) is None  # charged 400 (the sum would be 700)
    assert lim.admit(1.0, 500, 0, 100) is None  # charged 500: 900 of 1000 used
    ra = lim.admit(1.0, 150, 0, 20)  # needs 150, has 100
    assert ra is not None
    if refill == "continuous":
        assert ra == pytest.approx(50 / (1000 / 60))  # 50 tokens at 1000/60 per second
    else:
        assert ra == pytest.approx(59.0)  # the next window
    assert lim.admit(1.0, 90, 0, 100) is None  # 100 fit


@pytest.mark.parametrize("refill", ["continuous", "window"])
def test_anthropic_input_limit_leaves_out_cache_reads(refill: str) -> None:
    """Claude 4.x: cache_read_input_tokens do not count toward ITPM (unless configured)."""
    free = RateLimiter(None, None, 1000.0, None, refill, False, 0.0)
    counted = RateLimiter(None, None, 1000.0, None, refill, False, 0.0, cache_reads_count=True)
    # 1,000 input tokens of which 900 are cache reads: 100 count, ten of them fill the minute.
    assert all(free.admit(1.0, 1000, 900, 10) is None for _ in range(10))
    assert free.admit(1.0, 1000, 900, 10) is not None
    assert counted.admit(1.0, 1000, 900, 10) is None
    assert counted.admit(1.0, 1000, 900, 10) is not None


@pytest.mark.parametrize("refill", ["continuous", "window"])
def test_anthropic_output_limit_counts_the_output_generated(refill: str) -> None:
    """OTPM counts the tokens generated, when generated; max_tokens does not count."""
    lim = RateLimiter(None, None, None, 1000.0, refill, False, 0.0)
    assert lim.admit(1.0, 100, 0, 4000) is None  # max_tokens above the whole limit: no matter
    lim.charge_output(1.0, 0)  # a fast error or a shed attempt: generated nothing
    assert lim.admit(1.0, 100, 0, 4000) is None
    lim.charge_output(2.0, 1200)  # 200 over the minute's 1000: in debt
    ra = lim.admit(2.0, 100, 0, 10)
    assert ra is not None
    if refill == "continuous":
        assert ra == pytest.approx(200 / (1000 / 60))  # until the debt is repaid: 12 s
        assert lim.admit(2.0 + 12.0 + 1e-9, 100, 0, 10) is None
    else:
        assert ra == pytest.approx(58.0)
        assert lim.admit(60.0, 100, 0, 10) is None


def test_rejected_attempts_count_when_configured() -> None:
    counting = RateLimiter(60.0, None, None, None, "continuous", True, 0.0)
    free = RateLimiter(60.0, None, None, None, "continuous", False, 0.0)
    for lim in (counting, free):
        for _ in range(60):
            lim.admit(0.0, 1, 0, 1)
        for _ in range(30):
            lim.admit(0.0, 1, 0, 1)  # all rejected
    # After 10 s, 10 tokens came back; the counting limiter is still 30 in debt.
    assert free.admit(10.0, 1, 0, 1) is None
    assert counting.admit(10.0, 1, 0, 1) is not None


def admitted(offered: float, rpm: float, refill: str, duration: float) -> tuple[int, int]:
    """(admitted attempts, requests) of a run with no retries."""
    sc = make_scenario(
        **{
            "run.duration": duration,
            "run.seed": 31,
            "run.records": "summary",
            "providers.p.rate_limit": {"rpm": rpm, "refill": refill, "count_rejected": False},
            "providers.p.capacity": {"slots": 1000, "queue_limit": 0},
            "providers.p.service": {"kind": "deterministic", "value": 0.05},
            "features.f.arrivals": {"kind": "poisson", "rate": offered},
        }
    )
    s = Simulation(sc).run().summary
    return s["attempts"] - s["attempt_statuses"].get("rate_limited", 0), s["requests"]


@pytest.mark.parametrize("refill", ["continuous", "window"])
def test_under_the_limit_everything_is_admitted(refill: str) -> None:
    n_admitted, requests = admitted(4.0, 600.0, refill, 1800.0)
    assert n_admitted == requests


@pytest.mark.parametrize("refill", ["continuous", "window"])
def test_over_the_limit_the_admitted_rate_is_the_refill(refill: str) -> None:
    rpm, offered, duration = 600.0, 15.0, 3600.0
    n_admitted, _ = admitted(offered, rpm, refill, duration)
    # A continuous bucket starts full: one minute's worth is a one-off burst, not a rate.
    burst = rpm if refill == "continuous" else 0.0
    rate = (n_admitted - burst) / duration
    assert rate == pytest.approx(token_bucket_admitted_rate(offered, rpm), rel=0.01)


@pytest.mark.parametrize("refill", ["continuous", "window"])
def test_each_429_is_counted_against_the_limit_that_refused_it(refill: str) -> None:
    """rpm 60 and tpm 6,000: 1,000-token attempts are refused by the tpm (room for 6 a
    minute), 10-token ones by the rpm (60); the limit with the longest wait is the one named."""
    lim = RateLimiter(60, 6000, None, None, refill, False, 1.0)
    assert all(lim.admit(0.0, 1000, 0, 10) is None for _ in range(6))
    assert lim.admit(0.0, 1000, 0, 10) is not None
    assert lim.rejected == [0, 1, 0, 0, 0, 0]
    lim = RateLimiter(60, 6000, None, None, refill, False, 1.0)
    assert all(lim.admit(0.0, 10, 0, 10) is None for _ in range(60))
    assert lim.admit(0.0, 10, 0, 10) is not None
    assert lim.rejected == [1, 0, 0, 0, 0, 0]


def test_the_summary_says_which_limit_refused_the_429s() -> None:
    """5 requests/s of 100 tokens against rpm 120 (2/s) and a roomy tpm: every 429 is the rpm's."""
    sc = make_scenario(**{"providers.p.rate_limit": {"rpm": 120, "tpm": 10_000_000}})
    s = Simulation(sc).run().summary
    limited = s["attempt_statuses"]["rate_limited"]
    assert limited > 0 and s["rate_limited_by"] == {"p.rpm": limited}
    assert Simulation(make_scenario()).run().summary["rate_limited_by"] == {}
