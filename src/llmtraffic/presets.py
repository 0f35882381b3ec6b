"""Model price and rate-limit tier presets, and users' own price files.

The data live in the package: ``data/models.toml`` (list prices and context limits, USD per
million tokens, each entry with its source and date) and ``data/tiers.toml`` (OpenAI tiers 1-5
and Anthropic tiers 1-4: requests and tokens per minute per model, and how each provider counts
them; Azure OpenAI deployments, whose limits derive from the TPM quota given in the config).
A scenario names them (``model = "openai/gpt-4o-mini"``, ``tier = "openai/tier-3"``) and the
config validator fills in the numbers, so a resolved scenario holds concrete prices and
limits. A user price file has the format of ``models.toml``; its entries add to the built-in
ones and override those of the same name (docs/presets.md).
"""

from __future__ import annotations

import difflib
import functools
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from llmtraffic.errors import ConfigError

BUILTIN = "built-in"

# Optional prices of an entry (USD per million tokens), by their key in a price file.
_EXTRA_PRICES = (
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
    "batch_input_per_mtok",
    "batch_output_per_mtok",
    "flex_input_per_mtok",
    "flex_output_per_mtok",
    "priority_input_per_mtok",
    "priority_output_per_mtok",
    "long_context_input_per_mtok",
    "long_context_output_per_mtok",
    "long_context_cached_input_per_mtok",
)
_MODEL_KEYS = {
    "provider",
    "input_per_mtok",
    "cached_input_per_mtok",
    "output_per_mtok",
    "context_window",
    "max_output_tokens",
    "source",
    "as_of",
    "cache_min_tokens",
    "long_context_above",
    *_EXTRA_PRICES,
}
_LIMIT_KEYS = ("rpm", "tpm", "itpm", "otpm")
# The counting rules a tier may state: the names of the rate_limit keys they fill in.
_RULE_KEYS = ("refill", "count_rejected", "cache_reads_count", "rpm_window", "tpm_counts")
_TIER_KEYS = {
    "provider",
    "counting",
    "qualification",
    "monthly_usage_cap_usd",
    "source",
    "as_of",
    "limits",
    "rpm_per_1000_tpm",
    *_RULE_KEYS,
}


@dataclass(frozen=True)
class ModelPreset:
    """List prices (USD per million tokens) and limits of one model."""

    name: str
    input: float
    output: float
    cached_input: float | None = None
    provider: str = ""
    context_window: int | None = None
    max_output_tokens: int | None = None
    source: str = ""
    as_of: str = ""
    origin: str = BUILTIN
    """``built-in``, or the price file the entry came from."""
    extra: Mapping[str, float] = field(default_factory=dict)
    """The optional prices of the entry (``_EXTRA_PRICES`` keys that it gives): cache
    writes, batch / flex / priority tiers, the long-context tier."""
    cache_min_tokens: int | None = None
    """The shortest prompt prefix the provider caches for this model (None: not given)."""
    long_context_above: int | None = None
    """Input tokens above which the long-context prices apply (None: no such tier)."""

    def prices(self) -> dict[str, Any]:
        """The entry as a provider's ``prices`` table (per million tokens)."""
        out: dict[str, Any] = {"input": self.input, "output": self.output}
        if self.cached_input is not None:
            out["cached_input"] = self.cached_input
        x = self.extra
        if "cache_write_per_mtok" in x:
            out["cache_write"] = x["cache_write_per_mtok"]
        if "cache_write_1h_per_mtok" in x:
            out["cache_write_1h"] = x["cache_write_1h_per_mtok"]
        for tier in ("batch", "flex", "priority"):
            inp, outp = x.get(f"{tier}_input_per_mtok"), x.get(f"{tier}_output_per_mtok")
            if inp is not None and outp is not None:
                out[tier] = {"input": inp, "output": outp}
        lc_in = x.get("long_context_input_per_mtok")
        lc_out = x.get("long_context_output_per_mtok")
        if self.long_context_above is not None and lc_in is not None and lc_out is not None:
            lc: dict[str, Any] = {
                "above": self.long_context_above,
                "input": lc_in,
                "output": lc_out,
            }
            if "long_context_cached_input_per_mtok" in x:
                lc["cached_input"] = x["long_context_cached_input_per_mtok"]
            out["long_context"] = lc
        return out


@dataclass(frozen=True)
class TierLimits:
    """Per-minute limits of one model in one tier (None: the tier does not limit it)."""

    rpm: float | None = None
    tpm: float | None = None
    itpm: float | None = None
    otpm: float | None = None

    def as_dict(self) -> dict[str, float]:
        """The limits that are set, as ``rate_limit`` keys."""
        return {k: v for k in _LIMIT_KEYS if (v := getattr(self, k)) is not None}


@dataclass(frozen=True)
class TierPreset:
    """A provider's account tier: per-model limits and how the provider counts them."""

    name: str
    provider: str
    counting: str
    """``openai`` (one TPM bucket: the larger of input and max_tokens), ``azure`` (their
    sum, from a TPM quota) or ``anthropic`` (ITPM and OTPM)."""
    limits: Mapping[str, TierLimits] = field(default_factory=dict)
    refill: str | None = None
    """``continuous`` or ``window`` when the provider documents it, else None."""
    count_rejected: bool | None = None
    """Whether 429s count against the limits (None: the rate_limit default)."""
    cache_reads_count: bool | None = None
    """Whether prompt-cache reads count against itpm (None: the rate_limit default)."""
    rpm_window: float | None = None
    """Seconds over which the rpm limit is checked (None: the rate_limit default)."""
    tpm_counts: str | None = None
    """``max`` or ``sum`` of input and max_tokens against tpm (None: the default)."""
    rpm_per_1000_tpm: float | None = None
    """A quota-based tier (Azure OpenAI): no per-model limits; the config gives the
    deployment's tpm and the tier grants this many rpm per 1,000 of it."""
    qualification: str = ""
    monthly_usage_cap_usd: float | None = None
    source: str = ""
    as_of: str = ""

    def rules(self) -> dict[str, Any]:
        """The documented counting rules as ``rate_limit`` keys."""
        out: dict[str, Any] = {}
        for key in _RULE_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


# --- built-in data -------------------------------------------------------------------------


def _data_text(name: str) -> str:
    return files("llmtraffic").joinpath("data", name).read_text(encoding="utf-8")


@functools.cache
def builtin_models() -> Mapping[str, ModelPreset]:
    """The model presets shipped in the package, by name (``openai/gpt-4o-mini``)."""
    return parse_models(tomllib.loads(_data_text("models.toml")), BUILTIN)


@functools.cache
def builtin_tiers() -> Mapping[str, TierPreset]:
    """The rate-limit tier presets shipped in the package, by name (``openai/tier-3``)."""
    return parse_tiers(tomllib.loads(_data_text("tiers.toml")))


def parse_tiers(raw: Mapping[str, Any]) -> dict[str, TierPreset]:
    """The tier entries of a parsed tier file (``[tiers."name"]`` tables), by name.

    Raises ``ValueError`` on a key that is neither a limit nor a known field or rule.
    """
    tiers: dict[str, TierPreset] = {}
    for name, entry in raw.get("tiers", {}).items():
        # A misspelt key would silently fall back to a default (it happened: rejected_count
        # for count_rejected), so the package's own data is checked like a user's config.
        unknown = sorted(set(entry) - _TIER_KEYS)
        if unknown:
            raise ValueError(f"data/tiers.toml: tier {name!r} has unknown key(s) {unknown}")
        for model, lim in entry.get("limits", {}).items():
            bad = sorted(set(lim) - set(_LIMIT_KEYS))
            if bad:
                raise ValueError(
                    f"data/tiers.toml: tier {name!r}, model {model!r}: unknown key(s) {bad}"
                )
        limits = {
            model: TierLimits(**{k: float(v) for k, v in lim.items()})
            for model, lim in entry.get("limits", {}).items()
        }
        tiers[name] = TierPreset(
            name=name,
            provider=entry["provider"],
            counting=entry["counting"],
            limits=limits,
            refill=entry.get("refill"),
            count_rejected=entry.get("count_rejected"),
            cache_reads_count=entry.get("cache_reads_count"),
            rpm_window=entry.get("rpm_window"),
            tpm_counts=entry.get("tpm_counts"),
            rpm_per_1000_tpm=entry.get("rpm_per_1000_tpm"),
            qualification=entry.get("qualification", ""),
            monthly_usage_cap_usd=entry.get("monthly_usage_cap_usd"),
            source=entry.get("source", ""),
            as_of=entry.get("as_of", ""),
        )
    return tiers


def model_names(models: Mapping[str, ModelPreset] | None = None) -> list[str]:
    """Names of the model presets (built-in ones unless ``models`` is given), sorted."""
    return sorted(builtin_models() if models is None else models)


def tier_names() -> list[str]:
    """Names of the tier presets, in the order of the data file (tier-1 before tier-2)."""
    return list(builtin_tiers())


def find_model(name: str, models: Mapping[str, ModelPreset] | None = None) -> ModelPreset | None:
    """The preset of ``name`` (None when there is none)."""
    return (builtin_models() if models is None else models).get(name)


def find_tier(name: str) -> TierPreset | None:
    """The tier preset of ``name`` (None when there is none)."""
    return builtin_tiers().get(name)


def get_model(name: str, models: Mapping[str, ModelPreset] | None = None) -> ModelPreset:
    """The preset of ``name``; a ``ConfigError`` that lists the known names otherwise."""
    found = find_model(name, models)
    if found is None:
        raise ConfigError([unknown_model_message(name, models)])
    return found


def get_tier(name: str) -> TierPreset:
    """The tier preset of ``name``; a ``ConfigError`` that lists the known names otherwise."""
    found = find_tier(name)
    if found is None:
        raise ConfigError([unknown_tier_message(name)])
    return found


def unknown_model_message(name: str, models: Mapping[str, ModelPreset] | None = None) -> str:
    """'model X is not a preset; did you mean ...? presets: ...'."""
    names = model_names(models)
    return (
        f"model {name!r} is not a preset{_did_you_mean(name, names)}; "
        f"known models: {', '.join(names)}"
    )


def unknown_tier_message(name: str) -> str:
    """'unknown tier X; did you mean ...? known tiers: ...'."""
    names = tier_names()
    return f"unknown tier {name!r}{_did_you_mean(name, names)}; known tiers: {', '.join(names)}"


def _did_you_mean(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


# --- price files ---------------------------------------------------------------------------


def parse_models(raw: Mapping[str, Any], origin: str) -> dict[str, ModelPreset]:
    """Model entries of a parsed price file (``[models."name"]`` tables).

    Raises ``ConfigError`` with one line per problem, each naming the entry and key.
    """
    problems: list[str] = []
    extra = sorted(set(raw) - {"meta", "models"})
    if extra:
        problems.append(
            f"unknown top-level key(s) {', '.join(extra)}; a price file has [meta] and "
            '[models."provider/model"] tables'
        )
    entries = raw.get("models", {})
    if not isinstance(entries, dict):
        raise ConfigError([*problems, 'models: expected [models."provider/model"] tables'])
    out: dict[str, ModelPreset] = {}
    for name, entry in entries.items():
        where = f"models.{name!r}" if "." in name or "/" in name else f"models.{name}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a table")
            continue
        unknown = sorted(set(entry) - _MODEL_KEYS)
        if unknown:
            problems.append(
                f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                f"{', '.join(sorted(_MODEL_KEYS))}"
            )
        prices: dict[str, float | None] = {}
        for key in ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok"):
            value = entry.get(key)
            if value is None:
                if key != "cached_input_per_mtok":
                    problems.append(f"{where}.{key}: missing (USD per million tokens)")
                prices[key] = None
            elif not _is_price(value):
                problems.append(f"{where}.{key}: expected a number >= 0, got {value!r}")
                prices[key] = None
            else:
                prices[key] = float(value)
        optional: dict[str, float] = {}
        for key in _EXTRA_PRICES:
            value = entry.get(key)
            if value is None:
                continue
            if not _is_price(value):
                problems.append(f"{where}.{key}: expected a number >= 0, got {value!r}")
            else:
                optional[key] = float(value)
        ints: dict[str, int | None] = {}
        for key in (
            "context_window",
            "max_output_tokens",
            "cache_min_tokens",
            "long_context_above",
        ):
            value = entry.get(key)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value <= 0
            ):
                problems.append(f"{where}.{key}: expected a whole number > 0, got {value!r}")
                value = None
            ints[key] = value
        p_in, p_out = prices["input_per_mtok"], prices["output_per_mtok"]
        if p_in is None or p_out is None:
            continue
        out[name] = ModelPreset(
            name=name,
            input=p_in,
            output=p_out,
            cached_input=prices["cached_input_per_mtok"],
            provider=str(entry.get("provider", name.partition("/")[0] if "/" in name else "")),
            context_window=ints["context_window"],
            max_output_tokens=ints["max_output_tokens"],
            source=str(entry.get("source", "")),
            as_of=str(entry.get("as_of", "")),
            origin=origin,
            extra=optional,
            cache_min_tokens=ints["cache_min_tokens"],
            long_context_above=ints["long_context_above"],
        )
    if problems:
        raise ConfigError(problems, source=None if origin == BUILTIN else origin)
    return out


def _is_price(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def load_price_file(path: str | Path) -> dict[str, ModelPreset]:
    """Read a user price file (the format of ``models.toml``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"price file not found: {p}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read the price file {p}: {exc}"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(p)) from None
    return parse_models(raw, str(p))


def models_with(price_files: Iterable[str | Path] = ()) -> dict[str, ModelPreset]:
    """The built-in models, overridden and extended by the price files, in order."""
    merged = dict(builtin_models())
    for path in price_files:
        merged.update(load_price_file(path))
    return merged
