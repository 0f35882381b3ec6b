"""docs/workload.md: every example validates, every kind of the schema has one, and the
figures the page states (mean rates, lognormal parameters) are what the code computes."""

from __future__ import annotations

import copy
import math
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

from llmtraffic import scenario_from_dict
from llmtraffic.config.workload import Arrivals, DauArrivals, TokenDist
from llmtraffic.workload.arrivals import mean_rate
from llmtraffic.workload.tokens import lognormal_params
from tests.conftest import BASE

DOC = Path(__file__).resolve().parents[1] / "docs" / "workload.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
TRACE_KEYS = ("arrivals", "input_tokens", "output_tokens")


def kinds(union: Any) -> set[str]:
    """The ``kind`` literals of a discriminated union of config models."""
    members = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(m.model_fields["kind"].annotation)[0] for m in members}


def scenario_with(feature_keys: dict[str, Any]) -> Any:
    """The test base scenario whose feature ``f`` takes these keys."""
    raw = copy.deepcopy(BASE)
    feature = raw["features"]["f"]
    if "trace" in feature_keys:
        for key in TRACE_KEYS:
            feature.pop(key, None)
    feature.update(feature_keys)
    return scenario_from_dict(raw)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_every_example_validates(block: str) -> None:
    data = tomllib.loads(block)
    if "features" in data:  # a whole feature table: give it the provider and policy it names
        raw = copy.deepcopy(BASE)
        raw["features"] = data["features"]
        for name, feature in data["features"].items():
            raw["providers"][feature["provider"]] = raw["providers"]["p"]
            if "policy" in feature:
                raw.setdefault("policies", {})[feature["policy"]] = {"timeout": 60}
            assert name
        scenario_from_dict(raw)
    else:
        scenario_with(data)


def test_every_kind_has_an_example() -> None:
    shown = set(re.findall(r'kind = "([a-z_]+)"', "".join(BLOCKS)))
    assert kinds(Arrivals) <= shown, kinds(Arrivals) - shown
    assert kinds(TokenDist) <= shown, kinds(TokenDist) - shown
    assert any("trace = " in b for b in BLOCKS)


def test_the_figures_the_page_states() -> None:
    # bursty: (2 x 300 + 20 x 30) / 330 = 3.6 per second
    bursty = scenario_with(
        {"arrivals": {"kind": "bursty", "rates": [2.0, 20.0], "mean_durations": ["5m", "30s"]}}
    )
    assert mean_rate(bursty.features["f"].arrivals, 600.0) == pytest.approx(1200 / 330)
    # dau: 1M users x 5 a day = 57.9 per second
    dau = DauArrivals(users=1_000_000, requests_per_user=5)
    assert mean_rate(dau, 600.0) == pytest.approx(57.87, abs=0.01)
    # lognormal (median 600, p99 3000): sigma 0.692, mean 763
    sc = scenario_with({"input_tokens": {"kind": "lognormal", "median": 600, "p99": 3000}})
    mu, sigma = lognormal_params(sc.features["f"].input_tokens)
    assert sigma == pytest.approx(0.692, abs=5e-4)
    assert math.exp(mu + sigma**2 / 2) == pytest.approx(763, abs=1)
