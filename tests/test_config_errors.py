"""Bad config input gets one clear message naming the field path and what was expected.

Every case starts from the small valid scenario in ``conftest.BASE``, breaks one thing, and
checks the important parts of the message (the dotted field path, what is expected), not its
whole text.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from llmtraffic import (
    ConfigError,
    LLMTrafficError,
    Scenario,
    Simulation,
    load_config,
    scenario_from_dict,
)
from llmtraffic.config import apply_overrides
from llmtraffic.config.base import SLUG_MAX
from llmtraffic.config.scenario import MAX_SEED
from llmtraffic.config.workload import MAX_TOKENS, FixedTokens, LognormalTokens
from llmtraffic.units import parse_duration, parse_rate, show_number
from llmtraffic.workload.tokens import token_sampler
from tests.conftest import BASE

# A policy table that the single feature uses implicitly (the only policy defined).
POLICY: dict[str, Any] = {
    "timeout": "10s",
    "retry": {"kind": "exponential", "max_retries": 3, "base": "0.5s", "jitter": "full"},
}


DELETE = object()
"""A value for ``raw_with`` that removes the key."""


def raw_with(**changes: Any) -> dict[str, Any]:
    """BASE plus one policy ``x``, with dotted-path changes; the value ``DELETE`` removes a key."""
    raw = copy.deepcopy(BASE)
    raw["policies"] = {"x": copy.deepcopy(POLICY)}
    for path, value in changes.items():
        node = raw
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return raw


def problems_of(raw: dict[str, Any]) -> list[str]:
    """The problem lines of the ConfigError that validating ``raw`` raises."""
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(raw)
    assert info.value.problems, "a ConfigError must carry at least one problem line"
    return info.value.problems


def one_problem(raw: dict[str, Any]) -> str:
    """The single problem line of validating ``raw`` (one mistake, one message)."""
    problems = problems_of(raw)
    assert len(problems) == 1, problems
    return problems[0]


def test_the_base_scenario_is_valid() -> None:
    scenario = scenario_from_dict(raw_with())
    assert isinstance(scenario, Scenario)
    assert scenario.policy_of("f").timeout == 10.0


def test_config_error_text_is_the_problem_lines() -> None:
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(raw_with(**{"features.f.arrivals.rate": -1}), source="exp.toml")
    exc = info.value
    assert isinstance(exc, LLMTrafficError)
    assert exc.source == "exp.toml"
    assert str(exc).startswith("exp.toml: ")
    assert exc.problems[0] in str(exc)


def test_several_mistakes_are_all_reported_one_line_each() -> None:
    raw = raw_with(**{"providers.p.modle": "x", "features.f.arrivals.rate": 0, "run.seed": "one"})
    problems = problems_of(raw)
    assert len(problems) == 3, problems
    for path in ("providers.p.modle:", "features.f.arrivals.rate:", "run.seed:"):
        assert sum(p.startswith(path) for p in problems) == 1, (path, problems)
    assert "3 problems" in str(ConfigError(problems))


# --- unknown keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "where", "allowed"),
    [
        ("colour", "blue", "colour", ["features", "name", "policies", "providers", "run"]),
        ("run.durration", 60, "run.durration", ["duration", "records", "seed"]),
        ("providers.p.modle", "m", "providers.p.modle", ["capacity", "model", "prices"]),
        ("providers.p.prices.inptu", 1.0, "providers.p.prices.inptu", ["input", "output"]),
        ("features.f.rate", 5, "features.f.rate", ["arrivals", "policy", "provider"]),
        ("features.f.arrivals.rte", 5, "features.f.arrivals.rte", ["kind", "rate"]),
        ("policies.x.retires", 3, "policies.x.retires", ["breaker", "retry", "timeout"]),
        (
            "policies.x.retry.jiter",
            "full",
            "policies.x.retry.jiter",
            ["base", "cap", "jitter", "max_retries", "multiplier"],
        ),
        (
            "policies.x.breaker",
            {"windw": "count"},
            "policies.x.breaker.windw",
            ["minimum_calls", "window", "window_size"],
        ),
        (
            "providers.p.incidents",
            [{"kind": "outage", "start": 0, "duration": 5, "sttus": 503}],
            "providers.p.incidents[0].sttus",
            ["duration", "kind", "start", "status"],
        ),
    ],
)
def test_unknown_key_names_its_path_and_the_allowed_keys(
    path: str, value: Any, where: str, allowed: list[str]
) -> None:
    msg = one_problem(raw_with(**{path: value}))
    assert msg.startswith(f"{where}: unknown key"), msg
    listed = msg.partition("allowed keys here:")[2]
    assert listed, msg
    names = [k.strip() for k in listed.split(",")]
    assert set(allowed) <= set(names), msg
    assert where.rsplit(".", 1)[-1] not in names


def test_allowed_keys_follow_the_kind_of_a_union_member() -> None:
    # A poisson arrivals table lists poisson's keys, not another kind's.
    msg = one_problem(raw_with(**{"features.f.arrivals.mean_rate": 5}))
    assert msg.startswith("features.f.arrivals.mean_rate: unknown key"), msg
    assert "rate" in msg
    assert "peak_hour" not in msg


# --- wrong types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("providers.p.capacity.slots", "50", "expected an integer"),
        ("features.f.max_tokens", "1024", "expected an integer"),
        ("run.seed", "7", "expected an integer"),
        ("providers.p.capacity.slots", 2.5, "expected an integer"),
        ("providers.p.capacity.slots", True, "expected an integer"),
        ("features.f.cached_fraction", True, "expected a number"),
        ("providers.p.prices.input", True, "expected a number"),
        ("policies.x.retry.multiplier", "2", "expected a number"),
        ("features.f.arrivals.rate", True, "expected a rate"),
        ("run.duration", True, "expected a duration"),
        ("run.duration", [60], "expected a duration"),
        ("name", 5, "expected a string"),
        ("providers.p.incidents", {"kind": "outage", "start": 0, "duration": 5}, "expected a list"),
        ("policies.x.retryable", "timeout", "expected a list"),
        ("policies.x.retryable", {"timeout": True}, "expected a list"),
        ("providers.p.prices", [1.0, 2.0], "expected a table"),
        ("features.f.arrivals", "poisson", "expected a table"),
        ("policies.x.breaker", 5, "expected a table"),
    ],
)
def test_wrong_type_names_the_path_and_the_expected_type(
    path: str, value: Any, expected: str
) -> None:
    msg = one_problem(raw_with(**{path: value}))
    where = path
    assert msg.startswith(f"{where}: "), msg
    assert expected in msg, msg
    assert repr(value) in msg or str(value) in msg, msg


def test_an_item_of_a_list_is_named_by_its_index() -> None:
    msg = one_problem(raw_with(**{"policies.x.retryable": ["timeout", "teapot"]}))
    assert msg.startswith("policies.x.retryable[1]: "), msg
    assert "'teapot'" in msg
    assert "'rate_limited'" in msg and "'timeout'" in msg


@pytest.mark.parametrize(
    ("path", "value", "choices"),
    [
        ("run.records", "everything", ["'all'", "'timeseries'", "'summary'"]),
        ("policies.x.retry.jitter", "half", ["'none'", "'full'", "'equal'", "'decorrelated'"]),
    ],
)
def test_a_bad_choice_lists_the_choices(path: str, value: str, choices: list[str]) -> None:
    msg = one_problem(raw_with(**{path: value}))
    assert msg.startswith(f"{path}: expected "), msg
    assert all(c in msg for c in choices), msg
    assert repr(value) in msg


def test_an_int_is_accepted_where_a_number_is_expected() -> None:
    scenario = scenario_from_dict(raw_with(**{"features.f.cached_fraction": 1}))
    assert scenario.features["f"].cached_fraction == 1.0


# --- rates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, 0, -0.5, "0/min", "0/s", "-5/min"])
def test_a_rate_must_be_positive(value: Any) -> None:
    msg = one_problem(raw_with(**{"features.f.arrivals.rate": value}))
    assert msg.startswith("features.f.arrivals.rate: "), msg
    assert "must be > 0" in msg, msg


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_a_rate_must_be_finite(value: Any) -> None:
    msg = one_problem(raw_with(**{"features.f.arrivals.rate": value}))
    assert msg.startswith("features.f.arrivals.rate: "), msg
    assert "must be finite" in msg, msg


@pytest.mark.parametrize("value", ["5 per min", "5/fortnight", "abc", "5/", "/min", "5min"])
def test_a_malformed_rate_says_what_is_accepted(value: str) -> None:
    msg = one_problem(raw_with(**{"features.f.arrivals.rate": value}))
    assert msg.startswith("features.f.arrivals.rate: malformed rate"), msg
    assert repr(value) in msg
    assert "'1200/min'" in msg  # an example of the accepted form


@pytest.mark.parametrize(
    ("value", "per_second"),
    [
        (2.5, 2.5),
        (3, 3.0),
        ("20/s", 20.0),
        ("300/min", 5.0),
        ("300 / MIN", 5.0),
        ("7200/h", 2.0),
        ("7200/hour", 2.0),
        ("864000/day", 10.0),
        ("1.5e3/min", 25.0),
    ],
)
def test_valid_rates_parse_to_events_per_second(value: Any, per_second: float) -> None:
    assert parse_rate(value) == pytest.approx(per_second)
    scenario = scenario_from_dict(raw_with(**{"features.f.arrivals.rate": value}))
    arrivals = scenario.features["f"].arrivals
    assert getattr(arrivals, "rate", None) == pytest.approx(per_second)


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5 minutes", "malformed duration '5 minutes'"),
        ("abc", "malformed duration 'abc'"),
        ("5x", "malformed duration '5x'"),
        ("", "malformed duration ''"),
        ("m", "malformed duration 'm'"),
        (-3, ">= 0"),
        ("-3s", ">= 0"),
    ],
)
@pytest.mark.parametrize("path", ["policies.x.timeout", "providers.p.service.value"])
def test_a_malformed_duration_names_the_field_and_the_accepted_forms(
    path: str, value: Any, expected: str
) -> None:
    msg = one_problem(raw_with(**{path: value}))
    assert msg.startswith(f"{path}: "), msg
    assert expected in msg, msg
    if expected.startswith("malformed"):
        assert "'250ms'" in msg and "'5m'" in msg, msg  # examples of what is accepted


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("5m", 300.0),
        ("5min", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("30s", 30.0),
        ("1.5h", 5400.0),
        (" 10 S ", 10.0),
        ("500us", 0.0005),
        (30, 30.0),
        (0.5, 0.5),
    ],
)
def test_valid_durations_parse_to_seconds(value: Any, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)
    scenario = scenario_from_dict(raw_with(**{"policies.x.timeout": value}))
    assert scenario.policy_of("f").timeout == pytest.approx(seconds)


def test_a_duration_may_be_infinite() -> None:
    assert math.isinf(parse_duration("never"))
    scenario = scenario_from_dict(raw_with(**{"policies.x.deadline": "inf"}))
    assert math.isinf(scenario.policy_of("f").deadline)


@pytest.mark.parametrize(
    ("value", "expected"), [(0, "must be > 0"), ("0s", "must be > 0"), ("inf", "must be finite")]
)
def test_run_duration_must_be_positive_and_finite(value: Any, expected: str) -> None:
    msg = one_problem(raw_with(**{"run.duration": value}))
    assert msg.startswith("run.duration: "), msg
    assert expected in msg, msg


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("run.duration", 0),
        ("run.timeseries_bin", 0),
        ("policies.x.timeout", 0),
        ("providers.p.capacity.queue_limit", -1),
    ],
)
def test_a_zero_or_negative_field_is_reported_at_its_own_path(path: str, value: Any) -> None:
    msg = one_problem(raw_with(**{path: value}))
    assert msg.startswith(f"{path}: "), msg


# --- kinds ----------------------------------------------------------------------------------

UNKNOWN_KINDS = [
    ("features.f.arrivals.kind", "poison", "features.f.arrivals", ["poisson", "diurnal", "bursty"]),
    ("features.f.input_tokens.kind", "normal", "features.f.input_tokens", ["fixed", "lognormal"]),
    ("providers.p.service.kind", "gamma", "providers.p.service", ["tokens", "exponential"]),
    ("policies.x.retry.kind", "exponentail", "policies.x.retry", ["none", "naive", "exponential"]),
]


@pytest.mark.parametrize(("path", "kind", "where", "expected"), UNKNOWN_KINDS)
def test_an_unknown_kind_lists_the_expected_kinds(
    path: str, kind: str, where: str, expected: list[str]
) -> None:
    msg = one_problem(raw_with(**{path: kind}))
    assert msg.startswith(f"{where}.kind: unknown kind {kind!r}"), msg
    listed = [k.strip() for k in msg.partition("expected one of:")[2].split(",")]
    assert set(expected) <= set(listed), msg


def test_an_unknown_incident_kind_lists_the_expected_kinds() -> None:
    raw = raw_with(
        **{"providers.p.incidents": [{"kind": "meteor", "start": "1m", "duration": "1m"}]}
    )
    msg = one_problem(raw)
    assert msg.startswith("providers.p.incidents[0].kind: unknown kind 'meteor'"), msg
    for kind in ("outage", "brownout", "latency_spike", "capacity_drop", "rate_limit_change"):
        assert kind in msg


@pytest.mark.parametrize(
    ("path", "table", "expected"),
    [
        ("features.f.arrivals", {"rate": 5}, "poisson"),
        ("policies.x.retry", {"max_retries": 3}, "exponential"),
        ("providers.p.service", {"mean": 1}, "exponential"),
    ],
)
def test_a_missing_kind_lists_the_expected_kinds(
    path: str, table: dict[str, Any], expected: str
) -> None:
    msg = one_problem(raw_with(**{path: table}))
    assert msg.startswith(f"{path}: missing 'kind'"), msg
    assert expected in msg.partition("expected one of:")[2], msg


def test_a_bad_queue_limit_gets_one_message_at_its_path() -> None:
    msg = one_problem(raw_with(**{"providers.p.capacity.queue_limit": "lots"}))
    assert msg.startswith("providers.p.capacity.queue_limit: "), msg
    assert "'unbounded'" in msg and "whole number" in msg


def test_bursty_arrivals_accept_an_off_state() -> None:
    raw = raw_with(
        **{"features.f.arrivals": {"kind": "bursty", "rates": [5, 0], "mean_durations": [10, 10]}}
    )
    scenario_from_dict(raw)


# --- references between sections -----------------------------------------------------------


def test_a_feature_naming_an_unknown_provider_lists_the_defined_ones() -> None:
    raw = raw_with(**{"features.f.provider": "q"})
    raw["providers"]["other"] = copy.deepcopy(raw["providers"]["p"])
    msg = one_problem(raw)
    assert msg.startswith("features.f.provider: unknown provider 'q'"), msg
    assert "defined: other, p" in msg


def test_a_feature_naming_an_unknown_policy_lists_the_defined_ones() -> None:
    raw = raw_with(**{"features.f.policy": "retry-hard"})
    raw["policies"]["y"] = {}
    msg = one_problem(raw)
    assert msg.startswith("features.f.policy: unknown policy 'retry-hard'"), msg
    assert "defined: x, y" in msg


def test_a_policy_named_with_no_policies_defined_says_so() -> None:
    raw = raw_with(**{"features.f.policy": "x", "policies": DELETE})
    msg = one_problem(raw)
    assert msg.startswith("features.f.policy: unknown policy 'x'"), msg
    assert "(none)" in msg


def test_several_policies_and_a_feature_naming_none() -> None:
    raw = raw_with(**{"policies.y": {}})
    msg = one_problem(raw)
    assert msg.startswith("features.f.policy: "), msg
    assert "several policies" in msg and "x, y" in msg


def test_one_policy_is_used_by_a_feature_naming_none() -> None:
    scenario = scenario_from_dict(raw_with())
    assert scenario.features["f"].policy is None
    assert scenario.policy_of("f") == scenario.policies["x"]


def test_no_providers_and_no_features() -> None:
    problems = problems_of(raw_with(providers={}, features={}))
    assert "providers: define at least one provider" in problems
    assert "features: define at least one feature" in problems


# --- cross-field checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "needs"),
    [
        ({"kind": "lognormal", "median": 300}, "'p99'"),
        ({"kind": "lognormal", "p99": 3000}, "'median'"),
        ({"kind": "lognormal", "mean": 5.0}, "'sigma'"),
        ({"kind": "lognormal"}, "(median, p99) or (mean, sigma)"),
        ({"kind": "lognormal", "median": 300, "p99": 3000, "sigma": 1.0}, "not both"),
    ],
)
def test_lognormal_tokens_need_a_full_parameter_pair(tokens: dict[str, Any], needs: str) -> None:
    msg = one_problem(raw_with(**{"features.f.input_tokens": tokens}))
    assert msg.startswith("features.f.input_tokens: "), msg
    assert needs in msg, msg


def test_breaker_minimum_calls_larger_than_its_count_window() -> None:
    raw = raw_with(**{"policies.x.breaker": {"window_size": 10, "minimum_calls": 20}})
    msg = one_problem(raw)
    assert msg.startswith("policies.x.breaker: "), msg
    assert "minimum_calls (20)" in msg and "(10)" in msg
    assert "could never open" in msg


def test_breaker_minimum_calls_may_exceed_a_time_window_in_seconds() -> None:
    breaker = {"window": "time", "window_size": 10, "minimum_calls": 20}
    scenario = scenario_from_dict(raw_with(**{"policies.x.breaker": breaker}))
    policy_breaker = scenario.policy_of("f").breaker
    assert policy_breaker is not None and policy_breaker.minimum_calls == 20


def _incident(kind: str, start: str, duration: str) -> dict[str, Any]:
    extra: dict[str, Any] = {"brownout": {"error_rate": 0.5}, "latency_spike": {"factor": 3}}
    return {"kind": kind, "start": start, "duration": duration, **extra.get(kind, {})}


@pytest.mark.parametrize("kind", ["outage", "brownout", "latency_spike"])
def test_overlapping_incidents_of_one_kind(kind: str) -> None:
    other = {"kind": "rate_limit_change", "start": "2m", "duration": "1m", "factor": 0.5}
    incidents = [_incident(kind, "1m", "5m"), other, _incident(kind, "3m", "5m")]
    msg = one_problem(raw_with(**{"providers.p.incidents": incidents}))
    assert msg.startswith("providers.p.incidents: "), msg
    assert f"incidents [0] and [2] are both {kind} and overlap" in msg, msg
    assert "60-360 s" in msg and "180 s" in msg, msg


def test_incidents_of_different_kinds_or_back_to_back_may_overlap() -> None:
    incidents = [
        _incident("outage", "1m", "1m"),
        _incident("outage", "2m", "1m"),  # starts when the first ends
        _incident("brownout", "1m", "5m"),  # another kind over both
    ]
    scenario = scenario_from_dict(raw_with(**{"providers.p.incidents": incidents}))
    assert len(scenario.providers["p"].incidents) == 3


def test_overlapping_incidents_are_reported_at_the_incidents_path() -> None:
    incidents = [_incident("outage", "1m", "5m"), _incident("outage", "3m", "5m")]
    msg = one_problem(raw_with(**{"providers.p.incidents": incidents}))
    assert msg.startswith("providers.p.incidents"), msg


# --- --set overrides ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "path", "value"),
    [
        ("policies.x.retry.jitter=full", ("policies", "x", "retry", "jitter"), "full"),
        ("policies.x.retry.jitter = equal", ("policies", "x", "retry", "jitter"), "equal"),
        ('run.records="summary"', ("run", "records"), "summary"),
        ("run.seed=5", ("run", "seed"), 5),
        ("features.f.arrivals.rate=30/min", ("features", "f", "arrivals", "rate"), "30/min"),
        ("features.f.arrivals.rate=2.5", ("features", "f", "arrivals", "rate"), 2.5),
        (
            "policies.x.breaker.open_duration=5s",
            ("policies", "x", "breaker", "open_duration"),
            "5s",
        ),
        ("policies.x.retryable=['timeout']", ("policies", "x", "retryable"), ["timeout"]),
        ("name=my-run.v2", ("name",), "my-run.v2"),
    ],
)
def test_set_items_are_toml_literals_or_plain_strings(
    item: str, path: tuple[str, ...], value: Any
) -> None:
    raw = raw_with()
    apply_overrides(raw, [item])
    node: Any = raw
    for key in path:
        node = node[key]
    assert node == value
    scenario_from_dict(raw)  # and the result is a valid scenario


def test_set_replaces_a_whole_table_given_as_an_inline_table() -> None:
    raw = raw_with()
    apply_overrides(raw, ["policies.x.retry={kind = 'fixed', delay = '2s'}"])
    scenario = scenario_from_dict(raw)
    assert scenario.policy_of("f").retry.kind == "fixed"


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("run.seed", ["--set 'run.seed'", "dotted.path=value"]),
        ("retry.jitter full", ["--set 'retry.jitter full'", "dotted.path=value"]),
        ("run.duration.unit=s", ["run.duration.unit", "run.duration is a value, not a table"]),
        (
            "features.f.provider.name=a",
            ["features.f.provider.name", "features.f.provider is a value, not a table"],
        ),
        ("=5", ["malformed dotted path"]),
        ("run..seed=5", ["'run..seed'", "malformed dotted path"]),
    ],
)
def test_a_malformed_set_item_is_reported(item: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(raw_with(), [item])
    (msg,) = info.value.problems
    assert all(e in msg for e in expected), msg


def test_a_set_value_of_the_wrong_type_is_reported_at_its_path() -> None:
    raw = raw_with()
    apply_overrides(raw, ["run.seed=abc"])
    msg = one_problem(raw)
    assert msg.startswith("run.seed: expected an integer"), msg
    assert "'abc'" in msg


def test_a_set_key_with_a_typo_is_an_unknown_key() -> None:
    raw = raw_with()
    apply_overrides(raw, ["run.sede=3"])
    msg = one_problem(raw)
    assert msg.startswith("run.sede: unknown key"), msg


# --- files ----------------------------------------------------------------------------------

GOOD_TOML = """\
name = "small"

[run]
duration = "2m"

[providers.p]
model = "m"
prices = { input = 1.0, output = 2.0 }

[features.f]
provider = "p"
arrivals = { kind = "poisson", rate = "60/min" }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 20 }

[policies.x]
retry = { kind = "exponential", jitter = "none" }
"""


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.toml"
    path.write_text(GOOD_TOML, encoding="utf-8")
    return path


def test_load_config_applies_overrides(good_file: Path) -> None:
    scenario = load_config(
        good_file, ["policies.x.retry.jitter=full", "run.duration=5m", "run.seed=9"]
    )
    assert scenario.policy_of("f").retry.kind == "exponential"
    assert getattr(scenario.policy_of("f").retry, "jitter", None) == "full"
    assert scenario.run.duration == 300.0
    assert scenario.run.seed == 9
    assert load_config(good_file).run.seed == 0  # the file itself is untouched


def test_load_config_names_the_file_in_a_validation_error(good_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(good_file, ["features.f.arrivals.rate=-1"])
    assert info.value.source == str(good_file)
    assert str(info.value).startswith(f"{good_file}: ")
    assert info.value.problems[0].startswith("features.f.arrivals.rate: ")


@pytest.mark.parametrize(
    "item",
    [
        "run.seed",
        "run.duration.unit=s",
    ],
)
def test_a_bad_set_item_names_the_config_file(good_file: Path, item: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(good_file, [item])
    assert info.value.source == str(good_file)


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\n[run\nduration = 5\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    text = str(info.value)
    assert str(path) in text
    assert "not valid TOML" in text and "line 2" in text


def test_a_duplicate_key_is_a_toml_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.toml"
    path.write_text('name = "again"\n' + GOOD_TOML, encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "cannot read" in str(info.value)


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert "UTF-8" in str(info.value)


def test_a_config_with_a_utf8_byte_order_mark_reads_as_without(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_TOML.encode("utf-8"))
    assert load_config(path) == load_config(_written(tmp_path / "plain.toml", GOOD_TOML))


def _written(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- values: finite numbers, token bounds, statuses, names, seeds --------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("providers.p.prices.input", math.inf),
        ("providers.p.prices.output", math.nan),
        ("features.f.cached_fraction", math.nan),
        ("providers.p.failures.error_rate", math.nan),
        ("run.start_hour", math.nan),
    ],
)
def test_a_number_must_be_finite(path: str, value: float) -> None:
    msg = one_problem(raw_with(**{path: value}))
    assert msg.startswith(f"{path}: must be a finite number, got {value}"), msg


def test_numpy_numbers_are_shown_as_numbers() -> None:
    msg = one_problem(raw_with(**{"features.f.cached_fraction": np.float64("nan")}))
    assert "got nan" in msg and "np." not in msg, msg
    assert show_number(np.float64("-inf")) == "-inf"
    assert show_number(np.int64(7)) == "7"
    assert show_number(1e30) == "1e+30"
    assert show_number("x") == "'x'"


def test_durations_that_document_inf_still_take_it() -> None:
    scenario = scenario_from_dict(
        raw_with(
            **{"run.drain": "inf", "policies.x.timeout": math.inf, "policies.x.deadline": "inf"}
        )
    )
    assert scenario.run.drain == math.inf
    assert scenario.policy_of("f").timeout == math.inf


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("providers.p.service", {"kind": "exponential", "mean": "inf"}),
        ("providers.p.service", {"kind": "deterministic", "value": math.inf}),
        ("providers.p.failures.error_latency", "inf"),
        ("run.recovery.window", math.inf),
    ],
)
def test_a_duration_that_does_not_document_inf_refuses_it(path: str, value: Any) -> None:
    msg = one_problem(raw_with(**{path: value}))
    assert msg.startswith(path) and "must be finite, got inf" in msg, msg


@pytest.mark.parametrize(
    ("tokens", "where"),
    [
        ({"kind": "fixed", "value": MAX_TOKENS + 1}, "value"),
        ({"kind": "uniform", "low": 1, "high": 2**62}, "high"),
        ({"kind": "lognormal", "mean": 1e30, "sigma": 1.0}, "mean"),
        ({"kind": "empirical", "quantiles": [1.0, 5e7]}, "quantiles[1]"),
    ],
)
def test_a_token_count_is_at_most_the_largest_context_window(
    tokens: dict[str, Any], where: str
) -> None:
    msg = one_problem(raw_with(**{"features.f.input_tokens": tokens}))
    assert msg.startswith(f"features.f.input_tokens.{where}: "), msg
    assert "10,000,000" in msg, msg


def test_the_largest_token_count_is_allowed() -> None:
    scenario = scenario_from_dict(
        raw_with(**{"features.f.input_tokens": {"kind": "fixed", "value": MAX_TOKENS}})
    )
    assert scenario.features["f"].input_tokens == FixedTokens(value=MAX_TOKENS)


def test_lognormal_draws_are_capped_at_the_bound() -> None:
    # mean 10^7, sigma 2: mu = ln(10^7) - 2, so a draw exceeds 10^7 when Z > 1 (15.9%); those
    # draws are capped at the bound, the rest keep their value.
    cfg = LognormalTokens(mean=float(MAX_TOKENS), sigma=2.0)
    draws = token_sampler(cfg, np.random.default_rng(5))(20_000)
    assert draws.dtype == np.int64
    assert draws.min() >= 1
    assert draws.max() == MAX_TOKENS
    capped = float(np.mean(draws == MAX_TOKENS))
    assert capped == pytest.approx(1 - NormalDist().cdf(1.0), abs=0.01)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("providers.p.capacity.overload_status", -5),
        ("providers.p.capacity.overload_status", 200),
        ("providers.p.failures.error_status", 600),
        ("providers.p.incidents", [{"kind": "outage", "start": 5, "duration": 5, "status": 0}]),
    ],
)
def test_an_http_status_of_a_failure_is_an_error_status(path: str, value: Any) -> None:
    msg = one_problem(raw_with(**{path: value}))
    assert "status" in msg.split(":")[0] and "400 to 599" in msg, msg


@pytest.mark.parametrize("name", ["a", "outage-storm", "run_1.v2", "A.b-c_d", "x" * SLUG_MAX])
def test_a_slug_names_a_results_folder(name: str) -> None:
    assert scenario_from_dict(raw_with(name=name)).name == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty"),
        ("..", "starts with '.'"),
        (".hidden", "starts with '.'"),
        ("../../escaped", "path separator"),
        ("/tmp/x", "path separator"),
        ("x/y", "path separator"),
        ("x\\y", "path separator"),
        ("my run", "holds ' '"),
        ("caf\u00e9", "holds '\u00e9'"),
        ("x" * (SLUG_MAX + 1), f"more than {SLUG_MAX}"),
    ],
)
def test_a_name_that_is_not_a_slug_is_refused(name: str, problem: str) -> None:
    msg = one_problem(raw_with(name=name))
    assert msg.startswith("name: ") and problem in msg and "runs/" in msg, msg


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 2**70])
def test_a_seed_is_within_64_bits(seed: int) -> None:
    msg = one_problem(raw_with(**{"run.seed": seed}))
    assert msg.startswith("run.seed: ") and "2**63 - 1" in msg and str(seed) in msg, msg


def test_the_largest_seed_runs() -> None:
    scenario = scenario_from_dict(raw_with(**{"run.seed": MAX_SEED, "run.duration": 5}))
    assert Simulation(scenario).run().summary["seed"] == MAX_SEED


@pytest.mark.parametrize("start", [600, 601, "1h"])
def test_an_incident_after_the_arrivals_is_refused(start: Any) -> None:
    incidents = [{"kind": "outage", "start": 10, "duration": 5}]
    incidents.append({"kind": "latency_spike", "start": start, "duration": 5, "factor": 2.0})
    msg = one_problem(raw_with(**{"providers.p.incidents": incidents}))
    assert msg.startswith("providers.p.incidents[1].start: "), msg
    assert "run.duration = 600 s" in msg and "latency_spike" in msg, msg


def test_an_incident_after_a_traces_span_is_refused(tmp_path: Path) -> None:
    trace = _written(tmp_path / "log.csv", "timestamp,input_tokens,output_tokens\n0,5,5\n4,5,5\n")
    raw = raw_with(**{"providers.p.incidents": [{"kind": "outage", "start": 30, "duration": 5}]})
    raw["run"] = {"seed": 1}  # duration "trace": 4 s + the mean gap, 8 s
    raw["features"]["f"] = {"provider": "p", "trace": {"path": str(trace)}}
    problem = one_problem(raw)
    assert problem.startswith("providers.p.incidents[0].start: 30 s"), problem
    assert "the traces' span = 8 s" in problem, problem
