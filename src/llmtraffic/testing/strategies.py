"""Hypothesis strategies for llmtraffic scenarios and policies.

They draw small random scenarios as the plain dicts a TOML file would give: 1-3 features and
1-2 providers over 30-300 simulated seconds, every arrival kind, token distribution, rate-limit
style, capacity limit, failure rate, incident kind and billing rule, and client policies with
every retry rule and gate, sized so that overload, 429s, timeouts and deadlines really happen.
Use them to property-test your own policy:

```python
from hypothesis import given
from llmtraffic import Simulation, scenario_from_dict
from llmtraffic.testing.strategies import scenarios

@given(scenarios(policy={"retry": {"kind": "custom", "class": "mypkg.policies:Mine"}}))
def test_my_policy_never_exceeds_five_attempts(raw):
    result = Simulation(scenario_from_dict(raw)).run()
    assert result.df("requests").attempts.max() <= 5
```

Needs hypothesis (``pip install 'llmtraffic[testing]'``).
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

__all__ = [
    "arrivals",
    "batching_scenarios",
    "batchings",
    "breakers",
    "incidents",
    "policies",
    "providers",
    "rate_limits",
    "retries",
    "scenarios",
    "services",
    "token_dists",
]

FAILURES = ("rate_limited", "server_error", "overloaded", "timeout", "midstream_error")
"""The failed attempt statuses."""


def floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Finite floats in [lo, hi]."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def token_dists(draw: st.DrawFn, hi: int) -> dict[str, Any]:
    """Fixed, uniform or lognormal token counts of order ``hi`` at most."""
    kind = draw(st.sampled_from(["fixed", "uniform", "lognormal_q", "lognormal_m"]))
    if kind == "fixed":
        return {"kind": "fixed", "value": draw(st.integers(0, hi))}
    if kind == "uniform":
        low = draw(st.integers(0, hi))
        return {"kind": "uniform", "low": low, "high": draw(st.integers(low, hi))}
    if kind == "lognormal_q":
        median = draw(floats(1.0, hi / 2))
        return {"kind": "lognormal", "median": median, "p99": median * draw(floats(1.1, 5.0))}
    return {"kind": "lognormal", "mean": draw(floats(1.0, hi / 2)), "sigma": draw(floats(0.1, 1.2))}


@st.composite
def arrivals(draw: st.DrawFn, duration: float) -> dict[str, Any]:
    """Poisson, diurnal or bursty arrivals of about 1-120 requests over ``duration``."""
    rate = draw(st.integers(1, 120)) / duration
    kind = draw(st.sampled_from(["poisson", "diurnal", "bursty"]))
    if kind == "poisson":
        return {"kind": "poisson", "rate": rate}
    if kind == "diurnal":
        out: dict[str, Any] = {
            "kind": "diurnal",
            "mean_rate": rate,
            "peak_to_trough": draw(floats(1.0, 10.0)),
            "peak_hour": draw(floats(0.0, 23.9)),
        }
        if draw(st.booleans()):
            # Weights within a factor 5, so that no hour is more than 5x the mean rate.
            out["profile"] = draw(st.lists(floats(0.2, 1.0), min_size=24, max_size=24))
        return out
    n = draw(st.integers(2, 3))
    return {
        "kind": "bursty",
        # The first state is on; the others may be off (rate 0: an on/off source).
        "rates": [rate * draw(floats(0.05, 3.0))]
        + [rate * draw(st.one_of(st.just(0.0), floats(0.05, 3.0))) for _ in range(n - 1)],
        "mean_durations": [draw(floats(1.0, 60.0)) for _ in range(n)],
    }


@st.composite
def rate_limits(draw: st.DrawFn) -> dict[str, Any]:
    """OpenAI-style (rpm, tpm) or Anthropic-style (rpm, itpm, otpm) limits, tight enough to bite,
    enforced over a minute or a shorter window, with daily limits half the time."""
    keys = ["rpm", "tpm"] if draw(st.booleans()) else ["rpm", "itpm", "otpm"]
    chosen = draw(st.lists(st.sampled_from(keys), min_size=1, unique=True))
    ranges = {
        "rpm": (1.0, 300.0),
        "tpm": (500.0, 200_000.0),
        "itpm": (200.0, 100_000.0),
        "otpm": (100.0, 50_000.0),
    }
    out: dict[str, Any] = {k: draw(floats(*ranges[k])) for k in chosen}
    out["refill"] = draw(st.sampled_from(["continuous", "window"]))
    # Sub-minute enforcement (a smaller burst, or shorter fixed windows), Azure's rpm window
    # and token counting, and daily limits that bite within a short run.
    out["window"] = draw(st.sampled_from([60.0, 60.0, 10.0, 1.0]))
    if "rpm" in out and draw(st.booleans()):
        out["rpm_window"] = draw(st.sampled_from([1.0, 10.0]))
    if "tpm" in out:
        out["tpm_counts"] = draw(st.sampled_from(["max", "sum"]))
    if draw(st.booleans()):
        out["rpd"] = draw(floats(10.0, 5000.0))
        if "tpm" in out and draw(st.booleans()):
            out["tpd"] = draw(floats(2000.0, 2_000_000.0))
        out["daily_refill"] = draw(st.sampled_from(["continuous", "window"]))
        if out["daily_refill"] == "window":
            out["day_starts_at"] = draw(st.sampled_from([0.0, 30.0, 86_000.0]))
    out["count_rejected"] = draw(st.booleans())
    out["retry_after_resolution"] = draw(st.sampled_from([0.0, 0.001, 1.0]))
    return out


@st.composite
def services(draw: st.DrawFn) -> dict[str, Any]:
    """A service-time model: token-based, exponential, deterministic, lognormal or uniform."""
    kind = draw(st.sampled_from(["tokens", "exponential", "deterministic", "lognormal", "uniform"]))
    if kind == "tokens":
        return {
            "kind": "tokens",
            "ttft": draw(floats(0.0, 2.0)),
            "decode_tps": draw(floats(10.0, 300.0)),
            "noise_sigma": draw(floats(0.0, 0.8)),
        }
    if kind == "exponential":
        return {"kind": "exponential", "mean": draw(floats(0.01, 5.0))}
    if kind == "deterministic":
        return {"kind": "deterministic", "value": draw(floats(0.0, 5.0))}
    if kind == "lognormal":
        median = draw(floats(0.01, 3.0))
        return {"kind": "lognormal", "median": median, "p99": median * draw(floats(1.1, 10.0))}
    low = draw(floats(0.0, 3.0))
    return {"kind": "uniform", "low": low, "high": low + draw(floats(0.0, 3.0))}


@st.composite
def incidents(draw: st.DrawFn, duration: float) -> list[dict[str, Any]]:
    """Zero or more incidents, at most two of each kind and never overlapping within a kind."""
    out: list[dict[str, Any]] = []
    kinds = draw(
        st.lists(
            st.sampled_from(
                ["outage", "brownout", "latency_spike", "capacity_drop", "rate_limit_change"]
            ),
            unique=True,
            max_size=3,
        )
    )
    for kind in kinds:
        t = 0.0
        for _ in range(draw(st.integers(1, 2))):
            start = t + draw(floats(0.0, duration / 2))
            if start >= duration:
                break  # an incident must start while requests still arrive (config rule)
            length = draw(floats(0.5, duration / 2))
            inc: dict[str, Any] = {"kind": kind, "start": start, "duration": length}
            t = start + length
            if kind == "outage":
                inc["status"] = draw(st.sampled_from([500, 503]))
            elif kind == "brownout":
                inc["error_rate"] = draw(floats(0.0, 1.0))
                inc["midstream_rate"] = draw(floats(0.0, 1.0))
                if inc["error_rate"] == 0 and inc["midstream_rate"] == 0:
                    inc["error_rate"] = 0.5
            elif kind == "latency_spike":
                inc["factor"] = draw(floats(0.1, 10.0))
            elif kind == "capacity_drop":
                inc["remaining"] = draw(floats(0.01, 0.99))
            else:
                inc["factor"] = draw(floats(0.05, 3.0))
            out.append(inc)
    return out


@st.composite
def providers(draw: st.DrawFn, duration: float) -> dict[str, Any]:
    """A provider with small capacity, rate limits, failures, incidents and billing rules."""
    keeps = draw(st.booleans())
    out: dict[str, Any] = {
        "model": draw(st.sampled_from(["m-small", "m-large"])),
        "prices": {"input": draw(floats(0.0, 10.0)), "output": draw(floats(0.0, 30.0))},
        "capacity": {
            "slots": draw(st.integers(1, 12)),
            "queue_limit": draw(st.one_of(st.integers(0, 20), st.just("unbounded"))),
            "overload_status": draw(st.sampled_from([503, 529])),
        },
        "service": draw(services()),
        "failures": {
            "error_rate": draw(st.one_of(st.just(0.0), floats(0.0, 0.5))),
            "error_status": draw(st.sampled_from([500, 502, 503])),
            "error_latency": draw(floats(0.0, 0.5)),
            "midstream_rate": draw(st.one_of(st.just(0.0), floats(0.0, 0.3))),
            "stall_rate": draw(st.one_of(st.just(0.0), floats(0.0, 0.2))),
        },
        "billing": {
            # "none" bills nothing for abandoned work, which is valid only when the provider
            # stops it at the disconnect (docs/billing.md).
            "timeout": draw(
                st.sampled_from(["partial", "full", "none"] if not keeps else ["partial", "full"])
            ),
            "midstream": draw(st.sampled_from(["partial", "full", "none"])),
            "abandoned_keeps_running": keeps,
        },
        "incidents": draw(incidents(duration)),
    }
    if draw(st.booleans()):
        out["prices"]["cached_input"] = draw(floats(0.0, 5.0))
    if draw(st.booleans()):
        out["rate_limit"] = draw(rate_limits())
    return out


@st.composite
def retries(draw: st.DrawFn) -> dict[str, Any]:
    """A retry rule: none, naive, fixed or exponential with any jitter."""
    kind = draw(st.sampled_from(["none", "naive", "fixed", "exponential"]))
    if kind == "none":
        return {"kind": "none"}
    out: dict[str, Any] = {
        "kind": kind,
        "max_retries": draw(st.integers(0, 5)),
        "honor_retry_after": draw(st.booleans()),
        "retry_after_max": draw(floats(0.0, 60.0)),
        "retry_after_beyond_max": draw(st.sampled_from(["backoff", "give_up"])),
    }
    if kind == "fixed":
        out["delay"] = draw(floats(0.0, 5.0))
    elif kind == "exponential":
        base = draw(floats(0.01, 2.0))
        out.update(
            base=base,
            multiplier=draw(floats(1.0, 4.0)),
            cap=base * draw(floats(1.0, 50.0)),
            jitter=draw(st.sampled_from(["none", "full", "equal", "decorrelated"])),
        )
    return out


@st.composite
def breakers(draw: st.DrawFn) -> dict[str, Any]:
    """A circuit breaker with a count or time window, thresholds, probes or a cooldown."""
    window = draw(st.sampled_from(["count", "time"]))
    size = draw(st.integers(1, 40))
    return {
        "window": window,
        "window_size": size,
        "minimum_calls": draw(st.integers(1, size if window == "count" else 40)),
        "failure_rate_threshold": draw(floats(0.05, 1.0)),
        "slow_call_rate_threshold": draw(floats(0.05, 1.0)),
        "slow_call_duration": draw(floats(0.1, 30.0)),
        "open_duration": draw(floats(0.0, 30.0)),
        "half_open_calls": draw(st.integers(0, 5)),
        "record": draw(st.lists(st.sampled_from(FAILURES), unique=True)),
        "failure_count_threshold": draw(st.one_of(st.none(), st.integers(1, 10))),
    }


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    """A client policy: timeouts, a retry rule and any of the gates (breaker, budget,
    throttling, pacing, concurrency)."""
    out: dict[str, Any] = {"retry": draw(retries())}
    timeout = draw(st.one_of(st.none(), floats(0.05, 10.0), floats(10.0, 600.0)))
    if timeout is not None:
        out["timeout"] = timeout
    if draw(st.booleans()):
        out["deadline"] = draw(floats(0.5, 120.0))
    if draw(st.integers(0, 3)) == 0:
        out["first_token_timeout"] = draw(floats(0.05, 30.0))
    if draw(st.integers(0, 2)) == 0:
        out["idle_timeout"] = draw(floats(0.05, 60.0))
    if draw(st.booleans()):
        out["retryable"] = draw(st.lists(st.sampled_from(FAILURES), unique=True))
    if draw(st.booleans()):
        out["breaker"] = draw(breakers())
    if draw(st.booleans()):
        out["budget"] = draw(
            st.sampled_from(
                [
                    {"ratio": draw(floats(0.01, 2.0)), "max_tokens": draw(floats(1.0, 20.0))},
                    {
                        "kind": "finagle",
                        "percent": draw(floats(0.0, 1.0)),
                        "min_per_second": draw(floats(0.0, 5.0)),
                        "ttl": draw(floats(1.0, 20.0)),
                    },
                    {
                        "kind": "envoy",
                        "percent": draw(floats(0.0, 1.0)),
                        "min_concurrency": draw(st.integers(0, 5)),
                    },
                ]
            )
        )
    if draw(st.integers(0, 3)) == 0:
        out["throttle"] = {"k": draw(floats(1.0, 3.0)), "window": draw(floats(5.0, 120.0))}
    if draw(st.integers(0, 3)) == 0:
        out["rate_limit"] = {
            "rpm": draw(floats(30.0, 600.0)),
            "max_wait": draw(st.one_of(st.just(float("inf")), floats(0.5, 30.0))),
        }
    if draw(st.integers(0, 3)) == 0:
        out["concurrency"] = {
            "limit": draw(st.integers(1, 10)),
            "queue_limit": draw(st.one_of(st.none(), st.integers(0, 20))),
        }
    return out


@st.composite
def scenarios(draw: st.DrawFn, policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """A small random scenario, as the plain dict a TOML file would give.

    With ``policy`` (a policy table, e.g. your own ``{"retry": {"kind": "custom", ...}}``)
    every feature runs that policy, so the properties you assert are about it.
    """
    duration = draw(floats(30.0, 300.0))
    n_prov = draw(st.integers(1, 2))
    provs = {f"p{i}": draw(providers(duration)) for i in range(n_prov)}
    n_feat = draw(st.integers(1, 3))
    n_pol = draw(st.integers(0, n_feat))
    pols = {f"pol{i}": draw(policies()) for i in range(n_pol)}
    feats: dict[str, Any] = {}
    for i in range(n_feat):
        feat: dict[str, Any] = {
            "provider": f"p{draw(st.integers(0, n_prov - 1))}",
            "arrivals": draw(arrivals(duration)),
            "input_tokens": draw(token_dists(2000)),
            "output_tokens": draw(token_dists(800)),
            "max_tokens": draw(st.integers(1, 1024)),
        }
        if n_pol > 1:
            feat["policy"] = f"pol{draw(st.integers(0, n_pol - 1))}"
        if draw(st.booleans()):
            feat["rag_tokens"] = draw(token_dists(3000))
        if draw(st.booleans()):
            feat["cached_fraction"] = draw(floats(0.0, 1.0))
        if draw(st.booleans()):
            feat["stream"] = True
        if draw(st.integers(0, 3)) == 0:
            feat["slo"] = {"ttft": draw(floats(0.05, 10.0)), "e2e": draw(floats(0.1, 60.0))}
        feats[f"f{i}"] = feat
    run: dict[str, Any] = {
        "duration": duration,
        "seed": draw(st.integers(0, 2**32 - 1)),
        "timeseries_bin": draw(floats(1.0, 30.0)),
        "start_hour": draw(floats(0.0, 23.9)),
    }
    if draw(st.integers(0, 3)) == 0 or any(p["failures"]["stall_rate"] for p in provs.values()):
        # A stalled stream with no timeout would hold its request forever: a finite drain
        # ends the run (the config is refused without one when the policy has no timeout).
        run["drain"] = draw(floats(0.0, 60.0))
    if policy is not None:
        pols = {"under-test": copy.deepcopy(policy)}
        for feat in feats.values():
            feat["policy"] = "under-test"
    return {"run": run, "providers": provs, "features": feats, "policies": pols}


@st.composite
def batchings(draw: st.DrawFn) -> dict[str, Any]:
    """A continuous-batching table: a load factor or rising per-token points, and sometimes
    a prefill speed."""
    out: dict[str, Any]
    if draw(st.booleans()):
        out = {"load_factor": draw(floats(1.0, 5.0))}
    else:
        n, sec, points = 0, 0.0, []
        for _ in range(draw(st.integers(1, 3))):
            n += draw(st.integers(1, 8))
            sec += draw(floats(0.001, 0.05))
            points.append([n, sec])
        out = {"tpot": points}
    if draw(st.booleans()):
        out["prefill_tps"] = draw(floats(200.0, 50_000.0))
    return out


@st.composite
def batching_scenarios(draw: st.DrawFn, policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """``scenarios`` whose providers all serve by continuous batching (token service)."""
    raw = draw(scenarios(policy))
    for prov in raw["providers"].values():
        batching = draw(batchings())
        service: dict[str, Any] = {
            "kind": "tokens",
            "ttft": draw(floats(0.0, 2.0)),
            "noise_sigma": draw(floats(0.0, 0.8)),
        }
        if "load_factor" in batching:
            service["decode_tps"] = draw(floats(10.0, 300.0))
        prov["service"] = service
        prov["batching"] = batching
    return raw
