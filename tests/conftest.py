"""Shared fixtures: small scenarios built in Python."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llmtraffic import Scenario, scenario_from_dict

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
