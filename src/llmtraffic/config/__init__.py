"""Typed, frozen, validated scenario configuration (one schema; built from TOML or Python)."""

from llmtraffic.config.loader import apply_overrides, load_config, read_toml, scenario_from_dict
from llmtraffic.config.policy import Breaker, Budget, Policy
from llmtraffic.config.provider import Provider
from llmtraffic.config.scenario import RunSettings, Scenario
from llmtraffic.config.workload import Feature

__all__ = [
    "Breaker",
    "Budget",
    "Feature",
    "Policy",
    "Provider",
    "RunSettings",
    "Scenario",
    "apply_overrides",
    "load_config",
    "read_toml",
    "scenario_from_dict",
]
