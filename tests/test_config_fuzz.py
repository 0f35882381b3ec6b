"""Every number of a config, broken one at a time: refused with its field named, or a correct run.

Two valid scenarios are the seeds: ``tests/bad_inputs/base.toml`` (the corpus's small one) and
``RICH`` below, which sets every numeric field of the scenario schema (a test pins that, so a
new field must be added to it and is then fuzzed too). The property test puts NaN, +-inf, a
huge value (1e30, 2**62), a negative or zero into one numeric field at a time and asserts:
either ``ConfigError`` naming that field's path, or a run whose summary totals are finite
(no infinity anywhere; NaN only for a metric that is undefined, written as null) and whose
money adds up (the attempts' costs sum to ``billed_cost``, as do the requests').

Huge values of the fields that set a run's size (arrival rates, users, ``run.duration``) are
left out: they are finite and valid, and what they cost in time and memory is what
``validate``'s size estimate judges, not this test.
"""

from __future__ import annotations

import copy
import inspect
import math
import tomllib
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from llmtraffic import ConfigError, Simulation, scenario_from_dict
from llmtraffic.config import Scenario
from llmtraffic.config.schema_path import item_type, models_of, unwrap
from llmtraffic.config.trace import Trace
from llmtraffic.units import parse_duration, parse_rate

BASE = tomllib.loads((Path(__file__).parent / "bad_inputs" / "base.toml").read_text("utf-8"))

RICH = tomllib.loads(
    """
name = "rich"

[run]
duration = 60
seed = 3
drain = "30s"
timeseries_bin = 5
start_hour = 13.5
recovery = { tolerance = 0.05, window = "10s", baseline = "20s", horizon = "30s", hold = "10s" }

[providers.p]
model = "test-model"
prices = { input = 1.0, output = 2.0, cached_input = 0.5 }
capacity = { slots = 8, queue_limit = 20, overload_status = 529 }
service = { kind = "tokens", ttft = "0.3s", decode_tps = 80.0, noise_sigma = 0.2 }
failures.error_rate = 0.02
failures.error_status = 500
failures.error_latency = "50ms"
failures.midstream_rate = 0.01
failures.stall_rate = 0.01
rate_limit = { rpm = 600, tpm = 200000, retry_after_resolution = 1.0 }

[[providers.p.incidents]]
kind = "outage"
start = "5s"
duration = "5s"
status = 503

[[providers.p.incidents]]
kind = "brownout"
start = "12s"
duration = "6s"
error_rate = 0.3
midstream_rate = 0.1
status = 500

[[providers.p.incidents]]
kind = "latency_spike"
start = "20s"
duration = "5s"
factor = 3.0

[[providers.p.incidents]]
kind = "capacity_drop"
start = "28s"
duration = "5s"
remaining = 0.5

[[providers.p.incidents]]
kind = "rate_limit_change"
start = "36s"
duration = "5s"
factor = 0.5

[providers.q]
model = "test-model-q"
prices = { input = 0.5, output = 1.5 }
capacity = { slots = 4 }
service = { kind = "exponential", mean = "1s" }

[providers.q.rate_limit]
rpm = 300
itpm = 50000
otpm = 20000
window = "10s"
rpm_window = "1s"
rpd = 100000
tpd = 5000000
daily_refill = "window"
day_starts_at = "8h"

[providers.r]
model = "test-model-r"
prices = { input = 0.2, output = 0.4 }
service = { kind = "lognormal", median = "0.5s", p99 = "3s" }

[providers.s]
model = "test-model-s"
prices = { input = 0.1, output = 0.3 }
service = { kind = "uniform", low = "0.2s", high = "1s" }
failures = { errors = [{ status = 503, rate = 0.05, should_retry = false }] }
quota = { spend_cap = 5.0, period = "30s" }
context_window = 100000

[providers.t]
model = "test-model-t"
prices = { input = 0.1, output = 0.2 }
service = { kind = "deterministic", value = "0.4s" }

[providers.u]
model = "test-model-u"
prices = { input = 0.1, output = 0.2 }
capacity = { slots = 4, queue_limit = 10 }
service = { kind = "tokens", ttft = "0.2s" }
batching = { tpot = [[1, 0.01], [4, 0.02]], prefill_tps = 5000.0 }

[providers.v]
model = "test-model-v"
prices = { input = 0.1, output = 0.2 }
capacity = { slots = 3 }
service = { kind = "tokens", decode_tps = 50.0 }
batching = { load_factor = 2.0 }

[providers.w]
model = "test-model-w"
service_tier = "priority"
prompt_cache = { rules = "openai", ttl = "5m", min_tokens = 1024, increment = 128 }

[providers.w.prices]
input = 1.0
output = 4.0
cached_input = 0.1
cache_write = 1.25
cache_write_1h = 2.0
batch = { input = 0.5, output = 2.0 }
flex = { input = 0.5, output = 2.0 }
priority = { input = 2.0, output = 8.0 }
long_context = { above = 200000, input = 2.0, output = 6.0, cached_input = 0.2 }

[features.cached]
provider = "w"
policy = "fixed"
arrivals = { kind = "poisson", rate = 1.0 }
input_tokens = { kind = "fixed", value = 300 }
output_tokens = { kind = "fixed", value = 40 }
system_prompt_tokens = 1500
reasoning_tokens = { kind = "fixed", value = 30 }

[features.batched]
provider = "u"
policy = "fixed"
arrivals = { kind = "poisson", rate = 1.0 }
input_tokens = { kind = "fixed", value = 300 }
output_tokens = { kind = "fixed", value = 40 }

[features.chat]
provider = "p"
policy = "backoff"
arrivals = { kind = "poisson", rate = 2.0 }
input_tokens = { kind = "lognormal", median = 400, p99 = 3000 }
output_tokens = { kind = "uniform", low = 20, high = 200 }
rag_tokens = { kind = "fixed", value = 500 }
cached_fraction = 0.3
max_tokens = 300
value_per_success = 0.01
stream = true
slo = { ttft = "2s", tpot = "50ms", e2e = "20s" }

[features.talk]
provider = "p"
policy = "fixed"
arrivals = { kind = "poisson", rate = 0.5 }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }
session.turns = { kind = "fixed", value = 3 }
session.think_time = { kind = "fixed", value = "2s" }
session.system_tokens = 200
session.max_context = 600
session.on_overflow = "summarize"
session.summary_tokens = 150

[features.talk_more]
provider = "p"
policy = "fixed"
arrivals = { kind = "poisson", rate = 0.5 }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }
session.turns = { kind = "uniform", low = 1, high = 4 }
session.think_time = { kind = "exponential", mean = "5s" }
session.abandon_on_failure = false

[features.agent]
provider = "p"
policy = "fixed"
arrivals = { kind = "poisson", rate = 0.3 }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }
agent.calls = { kind = "lognormal", median = 3, p99 = 12 }
agent.tool_time = { kind = "uniform", low = "0.5s", high = "2s" }
agent.max_context = 2000

[features.agent_listed]
provider = "p"
policy = "fixed"
arrivals = { kind = "poisson", rate = 0.3 }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }
agent.calls = { kind = "empirical", quantiles = [1, 2, 5] }
agent.tool_time = { kind = "lognormal", median = "1s", p99 = "5s" }

[features.daily]
provider = "q"
policy = "paced"
arrivals = { kind = "diurnal", mean_rate = 1.0, peak_to_trough = 3.0, peak_hour = 14.0 }
input_tokens = { kind = "empirical", quantiles = [10, 50, 200, 900] }
output_tokens = { kind = "lognormal", mean = 100, sigma = 0.5 }

[features.hourly]
provider = "r"
policy = "limited"
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }

[features.hourly.arrivals]
kind = "diurnal"
mean_rate = 0.5
profile = [1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 4, 3, 2, 2, 1, 1, 1, 1]

[features.ramp]
provider = "s"
policy = "naive"
arrivals = { kind = "ramp", start_rate = 0.5, end_rate = 2.0 }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }

[features.dau]
provider = "t"
policy = "fixed"
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }

[features.dau.arrivals]
kind = "dau"
users = 20000
requests_per_user = 4.0
peak_to_trough = 2.0
peak_hour = 12.0

[features.bursts]
provider = "t"
policy = "fixed"
arrivals = { kind = "bursty", rates = [0.2, 3.0], mean_durations = ["10s", "3s"] }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }

[features.modulated]
provider = "t"
policy = "fixed"
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "empirical", quantiles = [1, 20, 50, 400], levels = [0, 0.5, 0.99, 1] }

[features.modulated.arrivals]
kind = "mmpp"
rates = [0.2, 3.0, 0.0]
generator = [[-0.1, 0.05, 0.05], [0.2, -0.3, 0.1], [0.5, 0.5, -1.0]]

[features.modulated-by-stays]
provider = "t"
policy = "fixed"
arrivals = { kind = "mmpp", rates = [0.2, 3.0], mean_durations = ["10s", "3s"] }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }

[features.grouped]
provider = "t"
policy = "fixed"
arrivals = { kind = "batch", rate = 0.2, mean_size = 4.0, jitter = "0.5s" }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }

[features.ticks]
provider = "t"
policy = "fixed"
arrivals = { kind = "batch", period = "5s", sizes = [0.5, 0.3, 0.2] }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }

[features.resampled]
provider = "t"
policy = "fixed"
arrivals = { kind = "resample", trace = { path = "TRACE" }, rate = 0.5, mean_block = 3.0 }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }

[features.listed]
provider = "t"
policy = "hedged"
arrivals = { kind = "times", at = [0.5, 1.0, 2.5, 30.0] }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }

[features.cascaded]
provider = "t"
policy = "naive"
arrivals = { kind = "poisson", rate = 1.0 }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }
cascade = { models = ["t", "s"], quality_failure = [0.2, 0.05] }
response_cache = { keys = 100, zipf = 1.1, ttl = "10s", latency = "5ms" }
users = { count = 5, assignment = "zipf", zipf = 1.2 }

[features.split]
provider = "s"
policy = "naive"
arrivals = { kind = "poisson", rate = 1.0 }
input_tokens = { kind = "uniform", low = 10, high = 200 }
output_tokens = { kind = "fixed", value = 50 }
split = { below = 100, provider = "t" }
response_cache = { hit_rate = 0.2 }

[spend_caps.key]
usd = 0.5
period = "30s"
features = ["split"]

[spend_caps.users]
usd = 0.1
period = "minute"
features = ["cascaded"]
per = "user"

[policies.backoff]
timeout = "8s"
deadline = "30s"
first_token_timeout = "4s"
idle_timeout = "2s"
max_attempts = 12
retryable_http = { codes = [429, 500, 503], at_least = 529 }
budget = { kind = "token_bucket", ratio = 0.2, max_tokens = 10.0 }
fallback = { providers = ["r"], after_failures = 2 }

[policies.backoff.retry]
kind = "exponential"
max_retries = 3
base = "0.5s"
multiplier = 2.0
cap = "4s"
jitter = "proportional"
jitter_fraction = 0.25
jitter_added = "0.5s"
retry_after_max = "10s"
retry_after_jitter = "0.2s"

[policies.backoff.breaker]
window_size = 20
minimum_calls = 10
failure_rate_threshold = 0.5
open_duration = "5s"
half_open_calls = 3

[policies.paced]
timeout = "5s"
budget = { kind = "finagle", percent = 0.2, min_per_second = 1.0, ttl = "10s" }
throttle = { k = 2.0, window = "30s" }
rate_limit = { rpm = 120, tpm = 60000, itpm = 50000, otpm = 30000, max_wait = "2s" }

[policies.paced.retry]
kind = "random_exponential"
max_retries = 2
multiplier = 0.5
min = "0.1s"
max = "3s"
exp_base = 2.0

[policies.limited]
timeout = "5s"
retry = { kind = "fixed", max_retries = 2, delay = "1s" }
budget = { kind = "envoy", percent = 0.2, min_concurrency = 3 }
concurrency = { limit = 4, queue_limit = 10 }

[policies.naive]
timeout = "5s"
retry = { kind = "naive", max_retries = 2 }

[policies.naive.breaker]
window = "time"
window_size = 10
minimum_calls = 5
failure_count_threshold = 5
slow_call_rate_threshold = 0.8
slow_call_duration = "2s"
open_duration = "3s"

[policies.fixed]
timeout = "5s"
retry = { kind = "fixed", max_retries = 2, delay = "1s" }

[[policies.fixed.layers]]
name = "app"
timeout = "20s"
retry = { kind = "fixed", max_retries = 1, delay = "2s" }

[policies.hedged]
timeout = "5s"
retry = { kind = "fixed", max_retries = 1, delay = "1s" }
hedge = { delay = "1s", max_hedges = 2, samples = 500, min_samples = 10 }

[features.spread]
provider = "t"
policy = "routed"
arrivals = { kind = "times", at = [0.5, 1.0, 2.5, 30.0] }
input_tokens = { kind = "fixed", value = 100 }
output_tokens = { kind = "fixed", value = 50 }

[policies.routed]
timeout = "5s"
retry = { kind = "fixed", max_retries = 1, delay = "1s" }

[policies.routed.route]
deployments = ["t", "r"]
strategy = "latency"
latency = { samples = 5, ttl = "60s", buffer = 0.1 }
cooldown = { allowed_fails = 2, time = "3s" }

[policies.weighted]
timeout = "5s"
route = { deployments = ["t", "r"], weights = [2.0, 1.0] }
"""
)

# A nine-row trace of the tests' data (absolute: the fuzzed configs have no folder).
RICH["features"]["resampled"]["arrivals"]["trace"]["path"] = str(
    Path(__file__).parent / "data" / "traces" / "azure2023_conv.csv"
)

SEEDS = {"base": BASE, "rich": RICH}

SIZE_FIELDS = {"rate", "rates", "mean_rate", "start_rate", "end_rate", "users", "requests_per_user"}
"""Fields whose huge values only make a run big (the size estimate's business, not ours)."""

BAD_VALUES: tuple[float | int, ...] = (math.nan, math.inf, -math.inf, 1e30, 2**62, -1.0, 0.0, 0)
HUGE = (1e30, 2**62)

NOT_FUZZED: dict[type[BaseModel], str] = {
    Trace: "a trace's numbers need a trace file: the traces/ corpus and test_trace.py cover them",
}
"""Models whose numeric fields RICH need not set, and why."""

Path_ = tuple[str | int, ...]


def is_number_text(value: object) -> bool:
    """True for a number or a duration or rate string (``"5s"``, ``"1200/min"``)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        for parse in (parse_duration, parse_rate):
            try:
                parse(value)
            except ValueError:
                continue
            return True
    return False


def numeric_leaves(node: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Paths of every number (or duration / rate string) in a raw config."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from numeric_leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from numeric_leaves(value, (*path, i))
    elif is_number_text(node):
        yield path


def dotted(path: Path_) -> str:
    """``("providers", "p", "incidents", 0, "start")`` -> ``providers.p.incidents[0].start``,
    as config messages write paths."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def replaced(raw: dict[str, Any], path: Path_, value: object) -> dict[str, Any]:
    """A deep copy of ``raw`` with the value at ``path`` replaced."""
    out = copy.deepcopy(raw)
    node: Any = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def names_the_field(text: str, path: Path_) -> bool:
    """Whether an error message points at the field at ``path``: by its path; for a list item,
    by the list's path (an order check names the neighbour); for a check across fields, by
    the enclosing table's path and the field's name."""
    if dotted(path) in text:
        return True
    parent, leaf = dotted(path[:-1]), path[-1]
    if isinstance(leaf, int):
        return parent in text
    return parent in text and leaf in text


def sets_the_size(path: Path_) -> bool:
    """Whether the field at ``path`` sets how big a run is (see ``SIZE_FIELDS``)."""
    return path == ("run", "duration") or any(p in SIZE_FIELDS for p in path if isinstance(p, str))


CASES = [
    (seed, path, value)
    for seed, raw in SEEDS.items()
    for path in numeric_leaves(raw)
    for value in BAD_VALUES
    if not (value in HUGE and sets_the_size(path))
]
"""(seed config, path of a number in it, the value put there): every combination."""


def numbers(node: Any, where: str = "") -> Iterator[tuple[str, float]]:
    """Every float in a summary, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from numbers(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from numbers(value, f"{where}[{i}]")
    elif isinstance(node, float):
        yield where, node


TOTALS = (
    "requests",
    "successes",
    "attempts",
    "billed_cost",
    "useful_cost",
    "wasted_cost",
    "baseline_cost",
    "goodput_rps",
)
"""Summary metrics defined for every run (the others may be undefined: NaN, null in JSON)."""


def check_run(raw: dict[str, Any]) -> None:
    """Run ``raw`` and check that its summary is finite and its money adds up."""
    result = Simulation(scenario_from_dict(raw)).run()
    s = result.summary
    infinite = [(where, v) for where, v in numbers(s) if math.isinf(v)]
    assert not infinite, f"infinite summary values: {infinite[:5]}"
    for name in TOTALS:
        assert math.isfinite(s[name]), f"{name} = {s[name]}"
        for feature, fs in s["features"].items():
            assert math.isfinite(fs[name]), f"features.{feature}.{name} = {fs[name]}"
    attempts, requests = result.df("attempts"), result.df("requests")
    assert attempts.cost.map(math.isfinite).all() and (attempts.cost >= 0).all()
    assert math.isclose(float(attempts.cost.sum()), s["billed_cost"], rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(
        float(requests.billed_cost.sum()), s["billed_cost"], rel_tol=1e-9, abs_tol=1e-12
    )
    assert s["billed_cost"] >= s["useful_cost"] - 1e-12


def test_the_seeds_run_and_add_up() -> None:
    for raw in SEEDS.values():
        check_run(copy.deepcopy(raw))


@given(st.sampled_from(CASES))
def test_a_broken_number_is_refused_by_name_or_runs_correctly(
    case: tuple[str, Path_, float | int],
) -> None:
    seed, path, value = case
    raw = replaced(SEEDS[seed], path, value)
    try:
        scenario_from_dict(raw)
    except ConfigError as exc:
        text = str(exc)
        assert names_the_field(text, path), f"{dotted(path)} = {value!r}: {text}"
        assert "np." not in text, text  # numbers read as nan / inf, never as numpy reprs
        return
    check_run(raw)


# --- RICH sets every numeric field of the schema ------------------------------------------


def _is_numeric(tp: Any) -> bool:
    tp = unwrap(tp)
    if typing.get_origin(tp) is list:
        return _is_numeric(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_numeric(a) for a in typing.get_args(tp))
    return tp in (int, float)


def _owner(model: type[BaseModel], name: str) -> tuple[str, str]:
    """(class that declares field ``name``, name): fields inherited from a shared base (the
    retry kinds' ``retry_after_max``) count once."""
    for cls in model.__mro__:
        if name in inspect.get_annotations(cls):
            return cls.__name__, name
    return model.__name__, name


def schema_numbers(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[tuple[str, str]]:
    """(model, field) of every numeric field reachable from ``model``, every union member."""
    if model in seen or model in NOT_FUZZED:
        return set()
    seen.add(model)
    out: set[tuple[str, str]] = set()
    for name, field in model.model_fields.items():
        tp = field.annotation
        if _is_numeric(tp):
            out.add(_owner(model, name))
        while item_type(tp) is not None:
            tp = item_type(tp)
        for member in models_of(tp, None):
            out |= schema_numbers(member, seen)
    return out


def set_numbers(obj: Any) -> set[tuple[str, str]]:
    """(model, field) of every numeric field a validated config sets explicitly."""
    out: set[tuple[str, str]] = set()
    if isinstance(obj, BaseModel):
        cls = type(obj)
        for name in obj.model_fields_set:
            if _is_numeric(cls.model_fields[name].annotation):
                out.add(_owner(cls, name))
        for name in cls.model_fields:
            out |= set_numbers(getattr(obj, name))
    elif isinstance(obj, dict):
        for value in obj.values():
            out |= set_numbers(value)
    elif isinstance(obj, list):
        for value in obj:
            out |= set_numbers(value)
    return out


def test_rich_sets_every_numeric_field_of_the_schema() -> None:
    missing = schema_numbers(Scenario, set()) - set_numbers(scenario_from_dict(RICH))
    assert not missing, f"add these to RICH so that they are fuzzed: {sorted(missing)}"


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_the_cases_cover_every_numeric_leaf(seed: str) -> None:
    paths = {path for s, path, _ in CASES if s == seed}
    assert paths == set(numeric_leaves(SEEDS[seed]))
