"""Shared fixtures: small scenarios built in Python; the Hypothesis profiles of the suite.

Hypothesis profiles (docs/ci.md, "Hypothesis in this suite"):

- ``fixed`` (the default, and what CI runs): derandomized, so a property test draws the same
  examples on every run and machine and a red build is never a roll of the dice; no example
  database, so nothing a developer's earlier runs saved changes what CI sees.
- ``explore``: random draws, 10x the examples of a test that does not pin its own count, the
  example database on: for hunting new failures locally
  (``LLMTRAFFIC_HYPOTHESIS=explore pytest tests/test_invariants.py``).

``LLMTRAFFIC_HYPOTHESIS`` (or Hypothesis's own ``HYPOTHESIS_PROFILE``) picks a profile; the
``fixed`` profile is forced whenever ``CI=true``, whatever else is set.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from llmtraffic import Scenario, scenario_from_dict

PROFILES = ("fixed", "explore")
DEFAULT_EXAMPLES = 100
"""Hypothesis's own default number of examples per test."""

settings.register_profile(
    "fixed",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore",
    derandomize=False,
    max_examples=10 * DEFAULT_EXAMPLES,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def hypothesis_profile(env: Mapping[str, str]) -> str:
    """The profile the suite runs under, given the environment (see the module docstring)."""
    if env.get("CI", "").strip().lower() in ("true", "1", "yes"):
        return "fixed"
    name = env.get("LLMTRAFFIC_HYPOTHESIS") or env.get("HYPOTHESIS_PROFILE") or "fixed"
    if name not in PROFILES:
        raise pytest.UsageError(
            f"LLMTRAFFIC_HYPOTHESIS={name!r}: no such Hypothesis profile; use one of "
            f"{', '.join(PROFILES)}"
        )
    return name


settings.load_profile(hypothesis_profile(os.environ))

BASE: dict[str, Any] = {
    "run": {"duration": 600, "seed": 1, "timeseries_bin": 10},
    "providers": {
        "p": {
            "model": "test-model",
            "prices": {"input": 1.0, "output": 2.0},
            "capacity": {"slots": 50, "queue_limit": 100},
            "service": {"kind": "deterministic", "value": 1.0},
        }
    },
    "features": {
        "f": {
            "provider": "p",
            "arrivals": {"kind": "poisson", "rate": 5.0},
            "input_tokens": {"kind": "fixed", "value": 100},
            "output_tokens": {"kind": "fixed", "value": 50},
        }
    },
}


def make_scenario(**overrides: Any) -> Scenario:
    """BASE with dotted-path overrides: make_scenario(**{"run.duration": 60})."""
    raw = copy.deepcopy(BASE)
    for path, value in overrides.items():
        node = raw
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return scenario_from_dict(raw)


@pytest.fixture
def base_raw() -> dict[str, Any]:
    """A deep copy of the base scenario as a dict."""
    return copy.deepcopy(BASE)
