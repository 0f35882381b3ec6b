"""Price and tier presets: the data equal their sources; configs use them by name; unknown
names are listed; user price files add and override models; ``llmtraffic presets``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmtraffic import ConfigError, Scenario, load_config, presets, scenario_from_dict
from llmtraffic.cli import main
from tests.conftest import BASE, make_scenario

# A copy of the project's reference data (data/providers/litellm_prices_subset.json: LiteLLM
# 1.110.2, MIT), the source models.toml was written from.
LITELLM = Path(__file__).parent / "data" / "litellm_prices_subset.json"


def litellm_prices() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(LITELLM.read_text(encoding="utf-8"))
    data.pop("_provenance", None)
    return data


def preset_name(key: str, entry: dict[str, Any]) -> str:
    provider = {"gemini": "google"}.get(entry["litellm_provider"], entry["litellm_provider"])
    return f"{provider}/{key.removeprefix('gemini/')}"


# --- the data equal their sources ----------------------------------------------------------


def test_every_model_preset_equals_the_litellm_source_times_a_million() -> None:
    source = litellm_prices()
    models = presets.builtin_models()
    assert len(models) == len(source) == 25
    for key, entry in source.items():
        m = models[preset_name(key, entry)]
        assert m.input == pytest.approx(entry["input_cost_per_token"] * 1e6, rel=1e-12), key
        assert m.output == pytest.approx(entry["output_cost_per_token"] * 1e6, rel=1e-12), key
        cached = entry.get("cache_read_input_token_cost")
        if cached is None:
            assert m.cached_input is None, key
        else:
            assert m.cached_input == pytest.approx(cached * 1e6, rel=1e-12), key
        assert m.context_window == entry["max_input_tokens"], key
        assert m.max_output_tokens == entry["max_output_tokens"], key
        assert m.source == entry["source"], key


# The per-tier table of the project's reference notes (data/README.md, "Provider facts").
OPENAI_TABLE = {
    "openai/gpt-4o": [(500, 30_000), (5_000, 450_000), (5_000, 800_000), (5_000, 800_000),
                      (10_000, 30_000_000)],
    "openai/gpt-4o-mini": [(500, 200_000), (5_000, 2_000_000), (5_000, 4_000_000),
                           (5_000, 4_000_000), (30_000, 150_000_000)],
}  # fmt: skip


@pytest.mark.parametrize("tier", [1, 2, 3, 4, 5])
def test_openai_tiers_equal_the_reference_table(tier: int) -> None:
    t = presets.get_tier(f"openai/tier-{tier}")
    assert set(t.limits) == set(OPENAI_TABLE)
    for model, rows in OPENAI_TABLE.items():
        rpm, tpm = rows[tier - 1]
        assert t.limits[model].as_dict() == {"rpm": rpm, "tpm": tpm}
    # "Unsuccessful requests contribute to your limit": admitted ones, not 429s (providers.md).
    assert (t.refill, t.count_rejected) == ("continuous", False)


@pytest.mark.parametrize(
    ("tier", "limits"),
    [(1, (50, 30_000, 8_000)), (4, (4_000, 2_000_000, 400_000))],
)
def test_anthropic_tiers_1_and_4_equal_the_reference_notes(
    tier: int, limits: tuple[int, int, int]
) -> None:
    t = presets.get_tier(f"anthropic/tier-{tier}")
    rpm, itpm, otpm = limits
    for model in ("anthropic/claude-sonnet-4-5", "anthropic/claude-opus-4-5"):
        assert t.limits[model].as_dict() == {"rpm": rpm, "itpm": itpm, "otpm": otpm}
    assert t.refill == "continuous"


def test_every_tier_covers_only_preset_models() -> None:
    names = set(presets.model_names())
    assert presets.tier_names()[:5] == [f"openai/tier-{i}" for i in range(1, 6)]
    assert len(presets.tier_names()) == 10  # OpenAI 1-5, Anthropic 1-4, Azure standard
    for tier in presets.builtin_tiers().values():
        assert set(tier.limits) <= names, tier.name


# --- presets in configs --------------------------------------------------------------------


def preset_provider(**provider: Any) -> Scenario:
    raw: dict[str, Any] = {"model": "openai/gpt-4o-mini", "prices": None, **provider}
    return make_scenario(**{f"providers.p.{k}": v for k, v in raw.items()})


GPT_4O_MINI = {
    "input": 0.15,
    "output": 0.6,
    "cached_input": 0.075,
    "cache_write": None,
    "cache_write_1h": None,
    "batch": {"input": 0.075, "output": 0.3},
    "flex": None,
    "priority": {"input": 0.25, "output": 1.0},
    "long_context": None,
}
"""openai/gpt-4o-mini's preset prices as the resolved config shows them (litellm 1.110.2)."""


def test_a_preset_model_brings_its_prices() -> None:
    p = preset_provider().providers["p"]
    assert (p.prices.input, p.prices.output, p.prices.cached_input) == (0.15, 0.6, 0.075)
    dumped = p.model_dump(mode="json")
    assert dumped["prices"] == GPT_4O_MINI


def test_explicit_prices_win_over_the_preset() -> None:
    p = preset_provider(prices={"input": 1.0, "output": 2.0}).providers["p"]
    assert (p.prices.input, p.prices.output, p.prices.cached_input) == (1.0, 2.0, None)


def test_an_unknown_model_without_prices_lists_the_presets() -> None:
    with pytest.raises(ConfigError) as info:
        preset_provider(model="openai/gpt-4o-mnii")
    (msg,) = info.value.problems
    assert msg.startswith("providers.p.prices: missing, and model 'openai/gpt-4o-mnii' is not"), msg
    assert "did you mean 'openai/gpt-4o-mini'" in msg
    for name in presets.model_names():
        assert name in msg


def test_a_tier_fills_the_models_limits_and_its_rules() -> None:
    rl = preset_provider(rate_limit={"tier": "openai/tier-3"}).providers["p"].rate_limit
    assert rl is not None
    assert (rl.tier, rl.rpm, rl.tpm, rl.itpm, rl.otpm) == ("openai/tier-3", 5000, 4e6, None, None)
    assert rl.count_rejected is False


def test_an_anthropic_tier_gives_input_and_output_buckets() -> None:
    sc = preset_provider(
        model="anthropic/claude-sonnet-4-5", rate_limit={"tier": "anthropic/tier-2"}
    )
    rl = sc.providers["p"].rate_limit
    assert rl is not None
    assert (rl.rpm, rl.tpm, rl.itpm, rl.otpm, rl.refill) == (
        1000,
        None,
        450_000,
        90_000,
        "continuous",
    )


def test_explicit_limits_override_the_tiers() -> None:
    rl = (
        preset_provider(
            rate_limit={"tier": "openai/tier-1", "tpm": 123_456, "count_rejected": False}
        )
        .providers["p"]
        .rate_limit
    )
    assert rl is not None
    assert (rl.rpm, rl.tpm, rl.count_rejected) == (500, 123_456, False)


def test_an_unknown_tier_lists_the_tiers() -> None:
    with pytest.raises(ConfigError) as info:
        preset_provider(rate_limit={"tier": "openai/tier-6"})
    (msg,) = info.value.problems
    assert msg.startswith("providers.p.rate_limit.tier: unknown tier 'openai/tier-6'"), msg
    for name in presets.tier_names():
        assert name in msg


def test_a_tier_without_limits_for_the_model_lists_the_models_it_covers() -> None:
    with pytest.raises(ConfigError) as info:
        preset_provider(model="openai/gpt-4.1", rate_limit={"tier": "openai/tier-2"})
    (msg,) = info.value.problems
    assert msg.startswith("providers.p.rate_limit.tier: tier 'openai/tier-2' has no limits for"), (
        msg
    )
    assert "openai/gpt-4o, openai/gpt-4o-mini" in msg


def test_the_resolved_config_shows_the_concrete_numbers(tmp_path: Path) -> None:
    from llmtraffic import run_to_folder

    sc = preset_provider(rate_limit={"tier": "openai/tier-1"})
    sc = sc.model_copy(update={"run": sc.run.model_copy(update={"duration": 5.0})})
    folder, _ = run_to_folder(sc, tmp_path / "r")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["providers"]["p"]["prices"] == GPT_4O_MINI
    assert cfg["providers"]["p"]["rate_limit"]["rpm"] == 500
    assert cfg["providers"]["p"]["rate_limit"]["tpm"] == 200_000


# --- price files -----------------------------------------------------------------------------

PRICE_FILE = """\
[meta]
source = "our contract, 2026"

[models."acme/house-model"]
input_per_mtok = 0.5
output_per_mtok = 1.5

[models."openai/gpt-4o-mini"]
input_per_mtok = 0.1
output_per_mtok = 0.4
"""


def config_with_price_file(tmp_path: Path, model: str) -> Path:
    (tmp_path / "prices").mkdir()
    (tmp_path / "prices" / "ours.toml").write_text(PRICE_FILE, encoding="utf-8")
    (tmp_path / "exp.toml").write_text(
        f"""price_files = ["prices/ours.toml"]
[run]
duration = 10
[providers.p]
model = "{model}"
[features.f]
provider = "p"
arrivals = {{ kind = "poisson", rate = 1 }}
input_tokens = {{ kind = "fixed", value = 10 }}
output_tokens = {{ kind = "fixed", value = 10 }}
""",
        encoding="utf-8",
    )
    return tmp_path / "exp.toml"


@pytest.mark.parametrize(
    ("model", "prices"),
    [("acme/house-model", (0.5, 1.5, None)), ("openai/gpt-4o-mini", (0.1, 0.4, None))],
)
def test_a_price_file_adds_and_overrides_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, prices: tuple[Any, ...]
) -> None:
    path = config_with_price_file(tmp_path, model)
    monkeypatch.chdir("/")  # relative to the config file's folder, not the working directory
    p = load_config(path).providers["p"].prices
    assert (p.input, p.output, p.cached_input) == prices
    assert load_config(path).price_files == [str(tmp_path / "prices" / "ours.toml")]


def test_a_missing_price_file_is_named(tmp_path: Path) -> None:
    path = config_with_price_file(tmp_path, "openai/gpt-4o")
    (tmp_path / "prices" / "ours.toml").unlink()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].startswith("price_files[0]: price file not found"), info.value


def test_a_bad_price_file_entry_is_named(tmp_path: Path) -> None:
    path = config_with_price_file(tmp_path, "openai/gpt-4o")
    (tmp_path / "prices" / "ours.toml").write_text(
        '[models."acme/x"]\ninput_per_mtok = -1\noutput_price = 2\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = "\n".join(info.value.problems)
    assert "models.'acme/x': unknown key(s) output_price" in text
    assert "models.'acme/x'.input_per_mtok: expected a number >= 0, got -1" in text
    assert "models.'acme/x'.output_per_mtok: missing" in text


def test_price_files_need_the_loader() -> None:
    raw = {**BASE, "price_files": ["x.toml"]}
    with pytest.raises(ValueError, match="read by load_config"):
        Scenario.model_validate(raw)
    with pytest.raises(ConfigError, match="price file not found"):
        scenario_from_dict(raw)


# --- costs on preset prices ------------------------------------------------------------------


def test_a_call_on_preset_prices_costs_what_the_price_list_says() -> None:
    """1,000 input + 500 output tokens on openai/gpt-4o-mini: (1000 x 0.15 + 500 x 0.60) / 1e6."""
    from llmtraffic import Simulation

    sc = make_scenario(
        **{
            "run.duration": 10.0,
            "providers.p.model": "openai/gpt-4o-mini",
            "providers.p.prices": None,
            "features.f.arrivals": {"kind": "times", "at": [1.0, 2.0]},
            "features.f.input_tokens": {"kind": "fixed", "value": 1000},
            "features.f.output_tokens": {"kind": "fixed", "value": 500},
        }
    )
    s = Simulation(sc).run().summary
    one = (1000 * 0.15 + 500 * 0.60) / 1e6
    assert s["billed_cost"] == pytest.approx(2 * one, rel=1e-12)
    assert s["cost_per_hour"] == pytest.approx(2 * one / 10 * 3600, rel=1e-12)
    assert s["cost_per_month"] == pytest.approx(2 * one / 10 * 86400 * 30, rel=1e-12)


# --- llmtraffic presets ----------------------------------------------------------------------


def test_presets_command_lists_models_and_tiers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in [*presets.model_names(), *presets.tier_names()]:
        assert name in out
    assert "0.075" in out  # gpt-4o-mini's cached input price


def test_presets_kind_and_price_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ours.toml").write_text(PRICE_FILE, encoding="utf-8")
    assert main(["presets", "--kind", "models", "--price-file", str(tmp_path / "ours.toml")]) == 0
    out = capsys.readouterr().out
    assert "acme/house-model *" in out
    assert "openai/tier-1" not in out
    assert main(["presets", "--kind", "tiers"]) == 0
    out = capsys.readouterr().out
    assert "openai/tier-1" in out and "openai/gpt-4.1 " not in out
