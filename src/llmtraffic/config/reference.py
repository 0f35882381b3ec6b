"""The config reference, generated from the schema, so that the documentation cannot drift.

``python -m llmtraffic.config.reference > docs/reference.md`` writes every section of a scenario
file with every key, its type, default, bounds and description, in the order a scenario nests
them, then the tables an experiment file adds (with pointers to docs/experiments.md and
docs/ci.md); ``tests/test_reference.py`` fails when docs/reference.md differs from what this prints.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from llmtraffic.config.scenario import Scenario

HEADER = """\
# Config reference

Every section and key of a scenario file, generated from the schema by
`python -m llmtraffic.config.reference > docs/reference.md` (the test suite fails when this
page and the schema differ). `<name>` stands for a name you choose (a provider, feature or
policy). Durations are seconds or strings such as `"5m"`; rates are per second or strings such
as `"1200/min"`. Unknown keys are refused.
"""

# Friendly names of the parsers the unit-aware types run before validation (config/base.py).
PARSERS = {
    "parse_duration": "duration",
    "parse_rate": "rate",
    "parse_rate_or_zero": "rate (0 allowed)",
    "_duration_or_trace": 'duration or "trace"',
}


# What the checks that run after parsing require (config/base.py), as bounds.
CHECKS = {
    "_positive": "> 0",
    "_finite": "finite",
    "_positive_finite": "> 0, finite",
    "_positive_finite_or_trace": "> 0, finite",
    "_http_error_status": "an HTTP error status, 400-599",
    "check_slug": "a slug: letters, digits, -, _, . (not first)",
}


@dataclass(frozen=True)
class Section:
    """One table of a scenario file: where it sits and the model that validates it."""

    path: str
    model: type[BaseModel]


def _args(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config models an annotation holds (through unions, lists and dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in _args(annotation):
        found += _models_in(arg)
    return found


def _kind(model: type[BaseModel]) -> str | None:
    """The value of a model's ``kind`` literal: which variant of a union it is."""
    field = model.model_fields.get("kind")
    if field is None or typing.get_origin(field.annotation) is not Literal:
        return None
    return str(_args(field.annotation)[0])


def sections(model: type[BaseModel] = Scenario, path: str = "") -> Iterator[Section]:
    """Every table of a scenario, depth first in the order of the schema's fields."""
    yield Section(path, model)
    for name, field in model.model_fields.items():
        annotation = field.annotation
        origin = typing.get_origin(annotation)
        sub = f"{path}.{name}" if path else name
        if origin is dict:
            sub += ".<name>"
            annotation = _args(annotation)[1]
        for child in _models_in(annotation):
            yield from sections(child, sub)


def _type_name(annotation: Any, field: FieldInfo) -> str:
    for meta in field.metadata:
        func = getattr(getattr(meta, "func", None), "__name__", "")
        if func in PARSERS:
            return PARSERS[func]
    return _plain_type(annotation)


def _plain_type(annotation: Any) -> str:
    if annotation is type(None):
        return "none"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " or ".join(
            f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in _args(annotation)
        )
    if _is_union(annotation):
        models = _models_in(annotation)
        if models and all(_kind(m) for m in models):
            return "table (by `kind`)"
        names = [_plain_type(a) for a in _args(annotation) if a is not type(None)]
        return " or ".join(dict.fromkeys(names))
    if origin is typing.Annotated:
        return _plain_type(_args(annotation)[0])
    if origin is list:
        return f"list of {_plain_type(_args(annotation)[0])}"
    if origin is dict:
        return f"tables by name of {_plain_type(_args(annotation)[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    out = []
    for meta in field.metadata:
        check = getattr(getattr(meta, "func", None), "__name__", "")
        if type(meta).__name__ == "AfterValidator" and check in CHECKS:
            out.append(CHECKS[check])
        if type(meta).__name__ == "AllowInfNan" and getattr(meta, "allow_inf_nan", False):
            out.append('"inf" allowed')
        for attr, sign in signs.items():
            value = getattr(meta, attr, None)
            if isinstance(meta, annotated_types.BaseMetadata) and value is not None:
                out.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    if any("finite" in bound for bound in out):  # parsed as a float, then refused when inf
        out = [bound for bound in out if bound != '"inf" allowed']
    return ", ".join(out)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    factory = field.default_factory
    value = factory() if factory is not None else field.default  # type: ignore[call-arg]
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "see below" if type(value).model_fields else "{}"
    if value is None:
        return "none"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if value in ({}, []):
        return "empty"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _description(field: FieldInfo) -> str:
    """The field's description; a table without one is described by its model's docstring."""
    if field.description:
        return field.description
    models = _models_in(field.annotation)
    if len(models) == 1:
        return _summary(models[0])
    if models:
        kinds = ", ".join(f'"{k}"' for m in models if (k := _kind(m)))
        return f"one of the kinds {kinds} (sections below)" if kinds else ""
    return ""


def _summary(model: type[BaseModel]) -> str:
    """The first paragraph of a model's docstring, on one line."""
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def section_markdown(section: Section) -> str:
    """One section: its path, what it is for, and a row per key."""
    model = section.model
    kind = _kind(model)
    title = f"`{section.path}`" if section.path else "Top level"
    if kind is not None:
        title += f' with `kind = "{kind}"`'
    lines = [
        f"## {title}",
        "",
        _summary(model),
        "",
        "| key | type | default | bounds | what it is |",
    ]
    lines.append("|---|---|---|---|---|")
    for name, field in model.model_fields.items():
        if name == "kind" and kind is not None:
            continue
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{name}`",
                    _cell(_type_name(field.annotation, field)),
                    _cell(_default(field)),
                    _cell(_bounds(field)),
                    _cell(_description(field)),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


EXPERIMENT_HEADER = """\
# Experiment files: `[experiment]`, `[sweep]`, `[[check]]`

An experiment file is a scenario with up to three more tables: `[experiment]` (replications,
seeds), `[sweep]` (the grid of settings to vary) and `[[check]]` (thresholds that
`llmtraffic check` judges, in CI). How they run and what they write: docs/experiments.md
([`[experiment]`](experiments.md#experiment), [`[sweep]`](experiments.md#sweep),
[`[[check]]`](experiments.md#check)); checks, baselines and CI: docs/ci.md
([Writing checks](ci.md#writing-checks)). Their keys:
"""

SWEEP_SECTION = """\
## `[sweep]`

No fixed keys: each key is a dotted scenario path (as `--set` takes them), each value the list
of values it takes; the grid is their Cartesian product, in file order
(docs/experiments.md, [`[sweep]`](experiments.md#sweep)).
"""


def experiment_sections() -> list[Section]:
    """The tables an experiment file adds to a scenario, whose keys have a model."""
    # Imported here: the experiment package builds on the scenario config this module reads.
    from llmtraffic.checks.spec import Check
    from llmtraffic.experiment.spec import ExperimentSettings

    return [Section("[experiment]", ExperimentSettings), Section("[[check]]", Check)]


def reference_markdown() -> str:
    """The whole reference page, as docs/reference.md holds it."""
    seen: set[tuple[str, type[BaseModel]]] = set()
    parts = [HEADER]
    for section in sections():
        if (section.path, section.model) in seen:
            continue
        seen.add((section.path, section.model))
        parts.append(section_markdown(section))
    experiment, check = experiment_sections()
    parts += [EXPERIMENT_HEADER, section_markdown(experiment), SWEEP_SECTION]
    parts.append(section_markdown(check))
    return "\n".join(parts)


def undocumented() -> list[str]:
    """Keys without a description, as ``path.key``: what the reference cannot explain yet."""
    return [
        f"{s.path}.{name}" if s.path else name
        for s in [*sections(), *experiment_sections()]
        for name, field in s.model.model_fields.items()
        if not _description(field) and not (name == "kind" and _kind(s.model))
    ]


if __name__ == "__main__":
    print(reference_markdown(), end="")
