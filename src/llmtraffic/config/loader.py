"""Reading scenarios from TOML, applying ``--set`` overrides, and turning validation errors
into one clear line per problem that names the field path and what was expected."""

from __future__ import annotations

import copy
import tomllib
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from llmtraffic import presets
from llmtraffic.config.scenario import Scenario
from llmtraffic.config.schema_path import child, item_type, models_of
from llmtraffic.config.span import resolve_duration
from llmtraffic.errors import ConfigError
from llmtraffic.units import show_number


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Scenario:
    """Read a scenario TOML file, apply ``dotted.path=value`` overrides, and validate it.

    Relative paths in the file (trace files, price files) are taken from the file's folder.
    """
    raw = read_toml(path)
    apply_overrides(raw, overrides, source=str(path))
    return scenario_from_dict(raw, source=str(path), base_dir=Path(path).resolve().parent)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file, raising ``ConfigError`` for an unreadable or malformed file.

    A UTF-8 byte-order mark (which some Windows editors write) is skipped.
    """
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"file not found: {p}"]) from None
    except OSError as exc:
        raise ConfigError([f"cannot read {p}: {exc.strerror}"]) from None
    try:
        return tomllib.loads(text.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(["the file is not UTF-8 text"], source=str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(p)) from None


def scenario_from_dict(
    raw: Mapping[str, Any], source: str | None = None, base_dir: str | Path | None = None
) -> Scenario:
    """Validate a plain dict (as TOML gives it) into a ``Scenario``.

    Relative paths (``price_files``, a feature's ``trace.path``) are taken from ``base_dir``
    (default: the current folder); the resolved scenario holds them as absolute paths.
    ``run.duration = "trace"`` (the default) becomes the traces' span, read from the files.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    context = {"base_dir": base, "models": _price_models(raw, base, source)}
    try:
        scenario = Scenario.model_validate(raw, context=context)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, raw, Scenario), source=source) from None
    try:
        return resolve_duration(scenario)
    except ConfigError as exc:
        if exc.source is not None:
            raise
        raise ConfigError(exc.problems, source=source) from None


def _price_models(
    raw: Mapping[str, Any], base: Path, source: str | None
) -> Mapping[str, presets.ModelPreset]:
    """The model presets a scenario sees: built-in ones, then its ``price_files`` in order."""
    files = raw.get("price_files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return presets.builtin_models()  # a malformed price_files is reported by validation
    models = dict(presets.builtin_models())
    for i, name in enumerate(files):
        path = base / Path(name).expanduser()
        try:
            models.update(presets.load_price_file(path))
        except ConfigError as exc:
            where = f"price_files[{i}] ({path})" if exc.source else f"price_files[{i}]"
            raise ConfigError([f"{where}: {p}" for p in exc.problems], source=source) from None
    return models


def apply_overrides(
    raw: dict[str, Any], overrides: Iterable[str], source: str | None = None
) -> None:
    """Set ``dotted.path=value`` items in ``raw``; values are TOML literals, else plain strings."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError([f"--set {item!r}: expected dotted.path=value"], source=source)
        path, _, text = item.partition("=")
        try:
            set_dotted(raw, path.strip(), parse_value(text.strip()))
        except ConfigError as exc:
            problems = [f"--set {item!r}: {p}" for p in exc.problems]
            raise ConfigError(problems, source=source) from None


def parse_value(text: str) -> Any:
    """A TOML literal (``3``, ``0.5``, ``true``, ``"x"``, ``[1, 2]``, ``{kind = "full"}``), or
    the text itself as a string when it is not one (so ``jitter=full`` works unquoted)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_dotted(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for path ``a.b.c``, creating tables as needed.

    A whole-number part indexes a list (``providers.p.incidents.0.start``).
    """
    keys = path.split(".")
    if not path or any(not k for k in keys):
        raise ConfigError([f"malformed dotted path {path!r}"])
    node: Any = raw
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        where = ".".join(keys[: i + 1])
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError([f"{where}: no item {key} in a list of {len(node)}"])
            if last:
                node[int(key)] = copy.deepcopy(value)
                return
            node = node[int(key)]
            continue
        if not isinstance(node, dict):
            raise ConfigError([f"{'.'.join(keys[:i])} is a value, not a table"])
        if last:
            node[key] = copy.deepcopy(value)
            return
        if node.get(key) is None:
            node[key] = {}
        node = node[key]


def format_errors(exc: ValidationError, raw: Any, root: type[BaseModel]) -> list[str]:
    """One readable line per pydantic error, with union tags dropped from the path.

    Non-finite items of one list (a profile of 24 NaNs) share one line.
    """
    lines: list[str] = []
    non_finite: dict[str, list[str]] = {}  # list path -> "[i] (got nan)" of its bad items
    for err in exc.errors(include_url=False):
        path, node = _clean_path(err["loc"], raw)
        where = _join(path)
        kind = err["type"]
        if kind == "finite_number" and path and path[-1].isdigit():
            parent = _join(path[:-1])
            if parent not in non_finite:
                non_finite[parent] = []
                lines.append(f"\0{parent}")  # placeholder: the line is written below
            non_finite[parent].append(f"[{path[-1]}] ({show_number(err.get('input'))})")
            continue
        got = err.get("input")
        ctx = err.get("ctx") or {}
        msg: str
        if kind == "extra_forbidden":
            allowed = _allowed_keys(root, path[:-1], raw)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            msg = f"{where}: unknown key{hint}"
        elif kind == "missing":
            msg = f"{where}: missing required key"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            tags = ", ".join(_union_tags(root, path, raw))
            if kind == "union_tag_invalid":
                msg = f"{where}.kind: unknown kind {ctx.get('tag')!r}; expected one of: {tags}"
            else:
                msg = f"{where}: missing 'kind'; expected one of: {tags}"
        elif kind == "value_error":
            text = str(ctx.get("error", err["msg"]))
            # Cross-field checks at the top level already name their own paths.
            # A line that starts with "." (or "[") names a key (or an item) below the
            # validator's own path.
            msg = "\n".join(
                (f"{where}{line}" if line.startswith((".", "[")) else f"{where}: {line}")
                if where
                else line.lstrip(".")
                for line in text.splitlines()
            )
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            op = {
                "greater_than": ">",
                "greater_than_equal": ">=",
                "less_than": "<",
                "less_than_equal": "<=",
            }[kind]
            bound = next(iter(ctx.values()), "?")
            msg = f"{where}: must be {op} {show_number(bound)}, got {show_number(got)}"
        elif kind == "finite_number":
            msg = (
                f"{where}: must be a finite number, got {show_number(got)}; NaN and infinity "
                "are not allowed here: give a number"
            )
        elif kind.endswith("_type") or kind.endswith("_parsing"):
            expected = _TYPE_NAMES.get(kind.split("_")[0], kind.split("_")[0])
            msg = f"{where}: expected {expected}, got {show_number(got)} ({type(got).__name__})"
        elif kind == "literal_error":
            msg = f"{where}: expected {ctx.get('expected')}, got {show_number(got)}"
        else:
            msg = f"{where}: {err['msg']}, got {show_number(got)}"
        del node
        lines.extend(msg.splitlines())
    for parent, items in non_finite.items():
        shown = ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
        line = (
            f"{parent}: every item must be a finite number; not finite: {shown}. NaN and "
            "infinity are not allowed here: give numbers"
        )
        lines[lines.index(f"\0{parent}")] = line
    return _dedupe(lines)


_TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "string": "a string",
    "bool": "true or false",
    "list": "a list",
    "dict": "a table",
    "model": "a table",
}


def _join(path: list[str]) -> str:
    """``["providers", "p", "incidents", "0", "start"]`` -> ``providers.p.incidents[0].start``."""
    out = ""
    for part in path:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def _clean_path(loc: tuple[int | str, ...], raw: Any) -> tuple[list[str], Any]:
    """Drop discriminated-union tags (and pydantic's internal markers) from an error's loc."""
    path: list[str] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue
        if isinstance(part, str) and part.startswith(("function-", "json-or-python")):
            continue
        path.append(str(part))
        node = child(node, part)
    return path, node


def _type_at(root: type[BaseModel], path: list[str], raw: Any) -> Any:
    """The annotated type of the field at ``path``, following the input to pick union members
    (None when the path leaves the schema)."""
    tp: Any = root
    node = raw
    for part in path:
        models = models_of(tp, node)
        if len(models) == 1:
            field = models[0].model_fields.get(part)
            if field is None:
                return None
            tp = field.annotation
        elif models:
            return None  # a union the input does not pick a member of
        else:
            tp = item_type(tp)
            if tp is None:
                return None
        node = child(node, part)
    return tp


def _allowed_keys(root: type[BaseModel], path: list[str], raw: Any) -> list[str]:
    """Field names of the table at ``path``."""
    node = raw
    for part in path:
        node = child(node, part)
    models = models_of(_type_at(root, path, raw), node)
    return sorted(models[0].model_fields) if len(models) == 1 else []


def _union_tags(root: type[BaseModel], path: list[str], raw: Any) -> list[str]:
    """The ``kind`` values a discriminated union at ``path`` accepts."""
    tags: list[str] = []

    def collect(tp: Any) -> None:
        while typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        for member in typing.get_args(tp):
            if typing.get_origin(member) is typing.Annotated:
                collect(member)  # an optional union: ``Arrivals | None``
            elif (
                isinstance(member, type)
                and issubclass(member, BaseModel)
                and "kind" in member.model_fields
            ):
                annotation = member.model_fields["kind"].annotation
                tags.extend(str(t) for t in typing.get_args(annotation))

    collect(_type_at(root, path, raw))
    return tags


def _dedupe(lines: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for line in lines:
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out
