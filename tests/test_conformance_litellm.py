"""The litellm-router preset and the litellm-cooldown breaker against LiteLLM's own rules.

LiteLLM is too heavy for the dev extras, so its rules are pinned here, transcribed from the
source of one release; upgrading is a visible change of the lines below (and of the preset):

- ``LITELLM_VERSION`` and ``CONSTANTS``: ``litellm/constants.py``;
- ``calculate_retry_after``: ``litellm/utils.py`` (the router's sleep before a retry when no
  other deployment of the group is healthy, which is always the case for a provider here);
- ``should_cooldown``: ``litellm/router_utils/cooldown_handlers.py``,
  ``_should_cooldown_deployment`` with no ``allowed_fails`` set (its "BASE CASE"), and
  ``_is_cooldown_required`` (which statuses are considered at all).

When litellm happens to be installed, the pins are also checked against it.
"""

from __future__ import annotations

import importlib.util
import math
import random
from collections.abc import Iterator

import numpy as np
import pytest
from scipy.stats import ks_2samp

from llmtraffic.client.breaker import OPEN, CircuitBreaker
from llmtraffic.client.retry import RetryPolicy, as_decision, controller_for
from llmtraffic.client.waits import RetryState, WaitExponential
from llmtraffic.config.policy import Policy

LITELLM_VERSION = "1.110.2"
CONSTANTS = {
    "DEFAULT_MAX_RETRIES": 2,
    "INITIAL_RETRY_DELAY": 0.5,
    "MAX_RETRY_DELAY": 8.0,
    "JITTER": 0.75,
    "DEFAULT_COOLDOWN_TIME_SECONDS": 5,
    "SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD": 1000,
    "DEFAULT_FAILURE_THRESHOLD_PERCENT": 0.5,
    "DEFAULT_FAILURE_THRESHOLD_MINIMUM_REQUESTS": 5,
}


def retry_after_header(value: str | None) -> int:
    """``_get_retry_after_from_exception_header``: ``int(header)``, -1 when absent or not an
    integer (an HTTP date is also read; a provider here sends seconds)."""
    try:
        return int(value) if value is not None else -1
    except ValueError:
        return -1


def calculate_retry_after(
    remaining_retries: int, max_retries: int, retry_after: str | None, rng: random.Random
) -> float:
    """litellm/utils.py ``calculate_retry_after`` (min_timeout = 0, the router's default)."""
    header = retry_after_header(retry_after)
    jitter = CONSTANTS["JITTER"] * rng.random()
    if 0 < header <= 60:
        return header + jitter
    num_retries = max_retries - remaining_retries
    sleep_seconds = CONSTANTS["INITIAL_RETRY_DELAY"] * 2.0**num_retries
    sleep_seconds = max(sleep_seconds, 0)
    sleep_seconds = min(sleep_seconds, CONSTANTS["MAX_RETRY_DELAY"])
    return sleep_seconds + jitter


def should_retry(status: int) -> bool:
    """litellm/utils.py ``should_retry``: 408, 409, 429, >= 500."""
    return status in (408, 409, 429) or status >= 500


def cooldown_required(status: int) -> bool:
    """``_is_cooldown_required``: of the 4xx, only 429, 401, 402, 404 and 408 are considered."""
    if 400 <= status < 500:
        return status in (429, 401, 402, 408, 404)
    return True


def should_cooldown(successes: int, fails: int, status: int, single: bool) -> bool:
    """Whether a failure with ``status`` cools the deployment down, the failure already counted
    in ``fails`` (``record_failure`` increments before it asks), no allowed_fails set."""
    if not cooldown_required(status):
        return False
    if single and status == 402:
        return False
    total = successes + fails
    percent = fails / total if total > 0 else 0.0
    if status == 429 and not single:
        return True
    if percent == 1.0 and total >= CONSTANTS["SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD"]:
        return True
    if (
        percent > CONSTANTS["DEFAULT_FAILURE_THRESHOLD_PERCENT"]
        and total >= CONSTANTS["DEFAULT_FAILURE_THRESHOLD_MINIMUM_REQUESTS"]
        and not single
    ):
        return True
    return not should_retry(status)


# Waits ----------------------------------------------------------------------------------------

SAMPLES = 4_000
RETRIES = 8


def preset(max_retries: int = 2) -> RetryPolicy:
    return controller_for(
        Policy.model_validate({"preset": "litellm-router", "retry": {"max_retries": max_retries}})
    )


def uniforms(seed: int) -> Iterator[float]:
    return iter(np.random.default_rng(seed).random(10 * SAMPLES * RETRIES).tolist())


def retry_state(attempt: int, status: str, code: int, retry_after: float) -> RetryState:
    return RetryState(attempt, status, code, retry_after, 1.0, 0.0, 100.0, attempt)


def litellm_waits(n: int, retry_after: str | None, seed: int) -> np.ndarray:
    rng = random.Random(seed)
    return np.array(
        [calculate_retry_after(RETRIES - n, RETRIES, retry_after, rng) for _ in range(SAMPLES)]
    )


def preset_waits(n: int, status: str, code: int, retry_after: float, seed: int) -> np.ndarray:
    controller, u = preset(RETRIES), uniforms(seed)
    out = []
    for _ in range(SAMPLES):
        decision = as_decision(controller.decide(retry_state(n + 1, status, code, retry_after), u))
        assert decision.wait is not None
        out.append(decision.wait)
    return np.array(out)


def test_backoff_is_litellms_distribution() -> None:
    for n in range(RETRIES):
        ours = preset_waits(n, "server_error", 500, math.nan, seed=20 + n)
        theirs = litellm_waits(n, None, seed=40 + n)
        assert ks_2samp(ours, theirs).pvalue > 1e-3, n


def test_the_sdks_proportional_jitter_is_told_apart() -> None:
    """What the preset used before (the SDKs' w (1 - 0.25 U)) has a KS statistic of 1 against
    LiteLLM's w + 0.75 U: the two ranges do not even overlap."""
    u = uniforms(3)
    sdk = WaitExponential(0.5, 2.0, 8.0, "proportional", 0.25)
    for n in range(RETRIES):
        s = retry_state(n + 1, "server_error", 500, math.nan)
        ours = np.array([sdk(s, u) for _ in range(SAMPLES)])
        result = ks_2samp(ours, litellm_waits(n, None, seed=60 + n))
        assert result.statistic == 1.0 and result.pvalue < 1e-9, n


@pytest.mark.parametrize("header", ["1", "7", "30", "60", "61", "120", "0"])
def test_retry_after_plus_jitter_up_to_60_s(header: str) -> None:
    """A 429's retry-after of 1..60 s is waited plus U(0, 0.75); 0 or above 60, the backoff."""
    ours = preset_waits(0, "rate_limited", 429, float(header), seed=80)
    theirs = litellm_waits(0, header, seed=81)
    assert ks_2samp(ours, theirs).pvalue > 1e-3, header
    low = float(header) if 0 < int(header) <= 60 else 0.5
    assert ours.min() >= low and ours.max() < low + 0.75


def test_constants_are_pinned_in_the_preset() -> None:
    policy = Policy.model_validate({"preset": "litellm-router"})
    retry = policy.retry
    assert retry.kind == "exponential" and retry.jitter == "additive"
    assert retry.max_retries == CONSTANTS["DEFAULT_MAX_RETRIES"]
    assert retry.base == CONSTANTS["INITIAL_RETRY_DELAY"]
    assert retry.cap == CONSTANTS["MAX_RETRY_DELAY"]
    assert retry.jitter_added == retry.retry_after_jitter == CONSTANTS["JITTER"]
    assert retry.retry_after_max == 60.0 and retry.retry_after_beyond_max == "backoff"
    breaker = policy.breaker
    assert breaker is not None
    assert breaker.open_duration == CONSTANTS["DEFAULT_COOLDOWN_TIME_SECONDS"]
    assert breaker.minimum_calls == CONSTANTS["SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD"]
    # allowed_fails applies only when set; by default no failure count opens it.
    assert breaker.failure_count_threshold is None


# Cooldown -------------------------------------------------------------------------------------


def sim_status(code: int) -> str:
    if code == 429:
        return "rate_limited"
    return "overloaded" if code in (503, 529) else "server_error"


def breaker_opens(outcomes: list[int], span: float = 50.0) -> tuple[bool, bool]:
    """Feed calls (200 = success, else a failure of that status) spread over ``span`` seconds
    to the preset's breaker and to LiteLLM's single-deployment rule; whether each cooled down.

    The spans stay under LiteLLM's minute (its counters start at the first call and expire
    60 s later; the breaker's window slides over the last 60 s): within one minute they count
    the same calls.
    """
    cfg = Policy.model_validate({"preset": "litellm-router"}).breaker
    assert cfg is not None
    breaker = CircuitBreaker(cfg)
    record = set(cfg.record)
    successes = fails = 0
    litellm_cooled = False
    for i, code in enumerate(outcomes):
        now = span * i / len(outcomes)
        assert breaker.allow(now)
        if code == 200:
            successes += 1
            breaker.record(now, breaker.epoch, False, 0.5)
            continue
        fails += 1
        litellm_cooled |= should_cooldown(successes, fails, code, single=True)
        if sim_status(code) in record:
            breaker.record(now, breaker.epoch, True, 0.5)
        if litellm_cooled:
            break
    return breaker.state == OPEN, litellm_cooled


@pytest.mark.parametrize(
    ("outcomes", "cooled"),
    [
        ([500] * 1000, True),  # every call of >= 1,000 failed
        ([500] * 999, False),  # too little traffic to judge
        ([200] + [500] * 1500, False),  # one success in the minute: not 100%
        ([500] * 5, False),  # '> 50% of >= 5' is for groups of several deployments
        ([429] * 20, False),  # so is 'any 429'
        ([529] * 600 + [429] * 400, True),  # every failure kind counts towards the 1,000
        ([200] * 10 + [503] * 990, False),
    ],
)
def test_single_deployment_cooldown(outcomes: list[int], cooled: bool) -> None:
    ours, theirs = breaker_opens(outcomes)
    assert theirs is cooled
    assert ours is cooled


def test_no_slow_call_rule() -> None:
    """LiteLLM has no slow-call rule: 1,000 successes of 70 s each leave it in service (the
    breaker's resilience4j default would open at 100% calls of >= 60 s)."""
    cfg = Policy.model_validate({"preset": "litellm-router"}).breaker
    assert cfg is not None
    breaker = CircuitBreaker(cfg)
    for i in range(1_000):
        breaker.record(0.05 * i, breaker.epoch, False, 70.0)
    assert breaker.state != OPEN


def test_the_several_deployment_rules_are_not_the_presets() -> None:
    """The pinned rule distinguishes the group sizes; the preset follows the single one (a
    provider here is one deployment, with no load balancing across several)."""
    assert should_cooldown(0, 1, 429, single=False) is True
    assert should_cooldown(0, 1, 429, single=True) is False
    assert should_cooldown(2, 3, 500, single=False) is True
    assert should_cooldown(2, 3, 500, single=True) is False
    # A non-retryable status the cooldown considers (401, 404) cools down at once, either way.
    assert should_cooldown(100, 1, 401, single=True) is True
    assert should_cooldown(100, 1, 400, single=True) is False


@pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm not installed")
def test_pins_match_the_installed_litellm() -> None:  # pragma: no cover - not in dev extras
    from importlib.metadata import version

    from litellm import constants  # type: ignore[import-not-found]

    assert version("litellm") == LITELLM_VERSION
    for name, value in CONSTANTS.items():
        assert getattr(constants, name) == value, name
