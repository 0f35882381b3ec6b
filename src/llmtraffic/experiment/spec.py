"""Experiment files: a scenario plus ``[experiment]``, ``[sweep]`` and ``[[check]]`` tables.

An experiment file is a scenario TOML with up to three extra top-level tables:

- ``[experiment]``: ``name``, ``replications`` (default 1), ``seeds`` (an explicit list; the
  default is ``run.seed + r`` for replication ``r``), ``records`` (which tables each run keeps;
  default ``"timeseries"``, or the scenario's own ``run.records`` when it sets one) and
  ``labels`` (names for the values of a sweep axis, e.g. ``{"features.rag.arrivals" = ["off",
  "on"]}``);
- ``[sweep]``: dotted config paths mapped to lists of values; the grid is their Cartesian
  product;
- ``[[check]]``: thresholds for CI, kept untouched in ``ExperimentSpec.checks``.

The scenario loader never sees these tables. Every grid point is validated as a scenario when
the file is read, so a bad value fails before anything runs, with a message that names the
sweep path and the value.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from llmtraffic.config.base import Model, Slug
from llmtraffic.config.loader import (
    apply_overrides,
    format_errors,
    read_toml,
    scenario_from_dict,
    set_dotted,
)
from llmtraffic.config.scenario import MAX_SEED, Scenario
from llmtraffic.config.schema_path import child, container, item_type, models_of
from llmtraffic.errors import ConfigError
from llmtraffic.limits import check_runs
from llmtraffic.results.metrics import RUN_KEYS, tally_metric_keys
from llmtraffic.simulation import config_hash
from llmtraffic.wording import counted

EXPERIMENT_KEYS = ("experiment", "sweep", "check")
"""Top-level tables of an experiment file that are not part of the scenario."""

Records = Literal["all", "timeseries", "summary"]

RESERVED_COLUMNS = frozenset(
    # identifiers of a run in the summary table, then the run fields and metrics of
    # summary.json (docs/metrics.md)
    ["point_id", "replication", *tally_metric_keys(), *RUN_KEYS]
)
"""Column names of the summary table that an axis column must not take (an axis named like
one of them is given a longer name: ``run.duration`` instead of ``duration``)."""


class ExperimentSettings(Model):
    """How many runs each grid point gets, with which seeds, keeping which tables: the
    ``[experiment]`` table."""

    name: Slug | None = Field(
        None,
        description="results folder name under runs/ (default: the scenario's): letters, "
        "digits, '-', '_' and '.' (not first)",
    )
    replications: int = Field(1, ge=1, description="runs per grid point, with seeds r = 0..N-1")
    seeds: list[int] | None = Field(
        None, description="explicit root seed of each replication (replaces run.seed + r)"
    )
    records: Records | None = Field(
        None, description="tables each run keeps (default 'timeseries' or the scenario's)"
    )
    labels: dict[str, list[str]] = Field(
        default_factory=dict, description="names for the values of a sweep axis, by its path"
    )

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is None:
            return None
        if not seeds:
            raise ValueError("give at least one seed, or leave seeds out")
        bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(
                f"seeds must be whole numbers from 0 to 2**63 - 1 ({MAX_SEED}), got {bad[0]}; "
                "seeds are stored as 64-bit integers"
            )
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must differ (each is one replication), got {seeds}")
        return seeds


@dataclass(frozen=True)
class Axis:
    """One swept config path and its values.

    ``name`` is the column that holds the axis in the summary tables: the shortest tail of the
    path that tells the axes apart (``policy`` for ``features.chat.policy``). ``labels`` name
    the values in point ids and tables (the value itself for a number or string).
    """

    path: str
    values: tuple[Any, ...]
    labels: tuple[str, ...]
    name: str

    @property
    def numeric(self) -> bool:
        """True when every value is a number (so plots can put the axis on an x axis)."""
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in self.values)

    def column_value(self, index: int) -> Any:
        """The value as the summary table holds it: numbers as numbers, others by label."""
        return self.values[index] if self.numeric else self.labels[index]


@dataclass(frozen=True)
class Point:
    """One grid point: a scenario that differs from the base by one value per axis."""

    index: int
    id: str
    value_index: tuple[int, ...]
    values: dict[str, Any]
    raw: dict[str, Any]
    config_hash: str
    scenario: Scenario = field(repr=False, compare=False)
    """``raw`` validated (workers validate ``raw`` again: it is what they are sent)."""


@dataclass(frozen=True)
class Run:
    """One run of an experiment: a grid point, a replication index and its seed."""

    point: Point
    replication: int
    seed: int


@dataclass(frozen=True)
class ExperimentSpec:
    """A resolved experiment: the base scenario, the grid, the seeds, and what to keep."""

    name: str
    base: dict[str, Any]
    axes: tuple[Axis, ...]
    points: tuple[Point, ...]
    seeds: tuple[int, ...]
    records: Records
    checks: tuple[dict[str, Any], ...] = ()
    source: str | None = None
    base_dir: Path = Path(".")
    text: str | None = None
    overrides: tuple[str, ...] = ()

    @property
    def replications(self) -> int:
        """Runs per grid point."""
        return len(self.seeds)

    def __repr__(self) -> str:
        """A few lines: name, source, axes with their values, points x replications (the
        dataclass's own repr printed the whole base scenario and every point: ~20k characters)."""
        lines = [f"<ExperimentSpec {self.name!r} from {self.source or 'a dict'}"]
        for a in self.axes[:4]:
            labels = [str(v) for v in (a.labels or a.values)]
            more = f", ... ({len(labels)} values)" if len(labels) > 5 else ""
            lines.append(f"  axis {a.name}: {', '.join(labels[:5])}{more}")
        if len(self.axes) > 4:
            lines.append(f"  and {len(self.axes) - 4} more axes")
        lines.append(
            f"  {counted(len(self.points), 'point')} x "
            f"{counted(self.replications, 'replication')} = "
            f"{counted(len(self.points) * self.replications, 'run')}; "
            f"{counted(len(self.checks), 'check')}>"
        )
        return "\n".join(lines)

    def runs(self) -> list[Run]:
        """Every run, point by point, replication by replication."""
        return [Run(point, r, seed) for point in self.points for r, seed in enumerate(self.seeds)]

    def to_json(self) -> dict[str, Any]:
        """The resolved spec as ``experiment.json`` holds it."""
        return {
            "kind": "llmtraffic-experiment",
            "name": self.name,
            "source": self.source,
            "overrides": list(self.overrides),
            "records": self.records,
            "seeds": list(self.seeds),
            "replications": self.replications,
            "axes": [
                {"path": a.path, "name": a.name, "values": list(a.values), "labels": list(a.labels)}
                for a in self.axes
            ],
            "points": [
                {
                    "index": p.index,
                    "id": p.id,
                    "values": {
                        a.name: a.column_value(i)
                        for a, i in zip(self.axes, p.value_index, strict=True)
                    },
                    "config_hash": p.config_hash,
                }
                for p in self.points
            ],
            "checks": list(self.checks),
        }


def split_experiment(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``raw`` without the experiment tables, and those tables by key."""
    scenario = {k: copy.deepcopy(v) for k, v in raw.items() if k not in EXPERIMENT_KEYS}
    extra = {k: copy.deepcopy(raw[k]) for k in EXPERIMENT_KEYS if k in raw}
    return scenario, extra


def is_experiment(raw: Mapping[str, Any]) -> bool:
    """True when a parsed file has an experiment table (``[experiment]``, ``[sweep]`` or
    ``[[check]]``): ``llmtraffic run`` then runs it as an experiment, into an experiment folder
    (even with a single run); any other file is a plain scenario and runs once."""
    return any(k in raw for k in EXPERIMENT_KEYS)


def read_experiment(
    path: str | Path,
    overrides: Iterable[str] = (),
    seed: int | None = None,
    *,
    allow_large: bool = False,
) -> ExperimentSpec:
    """Read an experiment (or plain scenario) file, apply ``--set`` overrides, and resolve it.

    ``seed`` replaces the scenario's ``run.seed`` (the default seeds are ``seed + r``).
    Relative paths in the file are taken from its folder. More than ``limits.MAX_RUNS`` runs
    are refused (``limits.SizeError``) before the grid is built, unless ``allow_large``.
    """
    p = Path(path)
    raw = read_toml(p)
    overrides = list(overrides)
    apply_overrides(raw, overrides, source=str(p))
    return experiment_from_dict(
        raw,
        source=str(p),
        base_dir=p.resolve().parent,
        text=p.read_text(encoding="utf-8"),
        overrides=overrides,
        seed=seed,
        allow_large=allow_large,
    )


def _check_swept_overrides(overrides: Sequence[str], axes: Sequence[str]) -> list[str]:
    """A ``--set`` of a path the sweep sets (or of a part of it, or of a table holding it)
    would be overwritten by every grid point, silently: refuse it, saying how to change the
    axis instead."""
    problems = []
    for item in overrides:
        path = item.split("=", 1)[0].strip()
        if path.startswith(("sweep.", "experiment.")):
            continue
        for axis in axes:
            if path == axis or path.startswith(axis + ".") or axis.startswith(path + "."):
                problems.append(
                    f"--set {path}: the sweep sets {axis} at every grid point, so this value "
                    f"would be ignored; change the axis's values instead: "
                    f"--set 'sweep.{axis}=[...]'"
                )
    return problems


def experiment_from_dict(
    raw: Mapping[str, Any],
    *,
    source: str | None = None,
    base_dir: str | Path | None = None,
    text: str | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    allow_large: bool = False,
) -> ExperimentSpec:
    """Validate a parsed experiment file into an ``ExperimentSpec`` (every grid point too).

    The number of runs is checked against ``limits.MAX_RUNS`` first (unless ``allow_large``),
    and every replication's seed against the seed range, before any point is built.
    """
    base_path = Path(base_dir) if base_dir is not None else Path.cwd()
    scenario_raw, extra = split_experiment(raw)
    if seed is not None:
        set_dotted(scenario_raw, "run.seed", int(seed))
    settings = _settings(extra.get("experiment", {}), source)
    checks = _checks(extra.get("check", []), source)
    axes_raw = _sweep(extra["sweep"], source) if "sweep" in extra else []
    # The base must be valid on its own: its errors are the user's, not a sweep value's.
    base = scenario_from_dict(scenario_raw, source=source, base_dir=base_path)
    records: Records = settings.records or (
        base.run.records
        if isinstance(scenario_raw.get("run"), Mapping) and "records" in scenario_raw["run"]
        else "timeseries"
    )
    set_dotted(scenario_raw, "run.records", records)
    problems = [p for path, _ in axes_raw for p in _check_path(path, scenario_raw)]
    problems += _check_overlap([path for path, _ in axes_raw])
    problems += _check_swept_overrides(overrides, [path for path, _ in axes_raw])
    problems += _check_labels(settings.labels, axes_raw)
    if (
        settings.seeds is not None
        and "replications" in _keys(extra.get("experiment"))
        and (settings.replications != len(settings.seeds))
    ):
        problems.append(
            f"experiment.replications: {settings.replications}, but experiment.seeds lists "
            f"{len(settings.seeds)} seeds; give one of them, or make them agree"
        )
    if seed is not None and settings.seeds is not None:
        problems.append("--seed: the experiment lists its seeds (experiment.seeds); drop one")
    n_seeds = len(settings.seeds) if settings.seeds is not None else settings.replications
    if settings.seeds is None and base.run.seed + n_seeds - 1 > MAX_SEED:
        problems.append(
            f"run.seed: {base.run.seed} + {n_seeds - 1} (the last replication's seed) is beyond "
            f"2**63 - 1 ({MAX_SEED}), the largest seed; lower run.seed (or --seed)"
        )
    if problems:
        raise ConfigError(problems, source=source)
    # Before the grid is built: a million points take minutes to validate.
    n_points = math.prod(len(values) for _, values in axes_raw)
    why = (
        f"{counted(n_points, 'grid point')} x {counted(n_seeds, 'replication')}"
        if axes_raw
        else counted(n_seeds, "replication")
    )
    check_runs(n_points * n_seeds, allow_large=allow_large, source=source, fields=why)
    axes = _make_axes(axes_raw, settings.labels)
    points = _make_points(axes, scenario_raw, source, base_path)
    seeds = (
        tuple(settings.seeds)
        if settings.seeds is not None
        else tuple(base.run.seed + r for r in range(settings.replications))
    )
    name = settings.name or base.name
    return ExperimentSpec(
        name=name,
        base=scenario_raw,
        axes=tuple(axes),
        points=tuple(points),
        seeds=seeds,
        records=records,
        checks=tuple(checks),
        source=source,
        base_dir=base_path,
        text=text,
        overrides=tuple(overrides),
    )


def _keys(obj: Any) -> list[str]:
    return list(obj) if isinstance(obj, Mapping) else []


def _settings(raw: Any, source: str | None) -> ExperimentSettings:
    if not isinstance(raw, Mapping):
        raise ConfigError([f"experiment: expected a table, got {raw!r}"], source=source)
    try:
        return ExperimentSettings.model_validate(dict(raw))
    except ValidationError as exc:
        problems = [f"experiment.{p}" for p in format_errors(exc, dict(raw), ExperimentSettings)]
        raise ConfigError(problems, source=source) from None


def _checks(raw: Any, source: str | None) -> list[dict[str, Any]]:
    """``[[check]]`` entries, kept as given: the CI checker owns their meaning."""
    if not isinstance(raw, list) or not all(isinstance(c, Mapping) for c in raw):
        raise ConfigError(["check: expected an array of tables, written [[check]]"], source=source)
    return [dict(c) for c in raw]


def _sweep(raw: Any, source: str | None) -> list[tuple[str, list[Any]]]:
    """The axes of ``[sweep]`` in file order, as (dotted path, values).

    Quoted keys (``"features.chat.policy" = [...]``) and nested tables (what TOML makes of an
    unquoted ``features.chat.policy = [...]``) mean the same.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError([f"sweep: expected a table, got {raw!r}"], source=source)
    axes: list[tuple[str, list[Any]]] = []
    problems: list[str] = []

    def walk(node: Mapping[str, Any], prefix: list[str]) -> None:
        for key, value in node.items():
            parts = [*prefix, *key.split(".")]
            path = ".".join(parts)
            if any(not part for part in parts):
                problems.append(f"sweep.{key}: malformed dotted path {path!r}")
            elif isinstance(value, Mapping):
                walk(value, parts)
            elif not isinstance(value, list):
                problems.append(
                    f'sweep."{path}": expected a list of values, got {value!r}; write '
                    f'"{path}" = [{toml_literal(value)}] for a single value'
                )
            elif not value:
                problems.append(f'sweep."{path}": empty list of values; give at least one')
            else:
                axes.append((path, value))

    walk(raw, [])
    if problems:
        raise ConfigError(problems, source=source)
    # A path given twice (quoted in the file, then nested by ``--set sweep.a.b=[...]``) keeps
    # its place in the grid and takes the later values: the override.
    merged: dict[str, list[Any]] = {}
    for path, values in axes:
        merged[path] = values
    axes = list(merged.items())
    if not axes:
        raise ConfigError(['sweep: no axes; add "dotted.path" = [values]'], source=source)
    return axes


def _check_overlap(paths: list[str]) -> list[str]:
    problems = []
    for a, b in itertools.permutations(paths, 2):
        if b.startswith(a + "."):
            problems.append(f'sweep."{b}": inside the swept table "{a}"; sweep one or the other')
    return problems


def _check_labels(labels: Mapping[str, list[str]], axes: list[tuple[str, list[Any]]]) -> list[str]:
    problems = []
    lengths = dict(axes)
    for path, names in labels.items():
        if path not in lengths:
            problems.append(
                f'experiment.labels."{path}": not a sweep path; sweep paths: ' + ", ".join(lengths)
            )
        elif len(names) != len(lengths[path]):
            problems.append(
                f'experiment.labels."{path}": {len(names)} labels for {len(lengths[path])} values'
            )
        elif len(set(names)) != len(names):
            problems.append(f'experiment.labels."{path}": labels must differ, got {names}')
    return problems


def _check_path(path: str, base: dict[str, Any]) -> list[str]:
    """Problems with a sweep path that does not name a setting of the scenario schema.

    A table of named entries (providers, features, policies) must already hold the entry the
    path goes through, since a typo there would otherwise create a new, incomplete entry; the
    last key may add a whole new entry.
    """
    keys = path.split(".")
    tp: Any = Scenario
    node: Any = base
    for i, key in enumerate(keys):
        where = ".".join(keys[:i]) or "the scenario"
        last = i == len(keys) - 1
        models = models_of(tp, node)
        if models:
            fields = {name: f for m in models for name, f in m.model_fields.items()}
            if key not in fields:
                return [
                    f'sweep."{path}": no such setting: {where} has no key {key!r}; its keys: '
                    + ", ".join(sorted(fields))
                ]
            tp = fields[key].annotation
        else:
            kind = container(tp)
            if kind is dict:
                if isinstance(node, Mapping) and key not in node and not last:
                    defined = ", ".join(sorted(node)) or "(none)"
                    return [f'sweep."{path}": {where} has no entry {key!r}; defined: {defined}']
            elif kind is list:
                size = len(node) if isinstance(node, list) else 0
                if not key.isdigit() or int(key) >= size:
                    return [f'sweep."{path}": {where} is a list of {size}; no item {key!r}']
            else:
                return [f'sweep."{path}": {where} is a value, not a table']
            tp = item_type(tp)
        node = child(node, key)
    return []


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


def _label(value: Any, siblings: Sequence[Any], index: int) -> str:
    """A short readable name for a sweep value: the value itself, a table's ``kind`` when that
    tells the values apart, else the value's position."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float | str):
        return f"{value:g}" if isinstance(value, float) and math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        kinds = [v.get("kind") if isinstance(v, Mapping) else None for v in siblings]
        if all(isinstance(k, str) for k in kinds) and len(set(kinds)) == len(kinds):
            return str(value["kind"])
    return f"v{index}"


def _sanitise(text: str, limit: int = 32) -> str:
    """``text`` made safe as part of a folder name."""
    clean = _UNSAFE.sub("_", text).strip("_.") or "_"
    return clean[:limit]


def _make_axes(axes: list[tuple[str, list[Any]]], labels: Mapping[str, list[str]]) -> list[Axis]:
    names = _axis_names([path for path, _ in axes])
    out = []
    for (path, values), name in zip(axes, names, strict=True):
        given = labels.get(path)
        lab = (
            list(given)
            if given is not None
            else [_label(v, values, i) for i, v in enumerate(values)]
        )
        # Two values with one label would give two points one id: number them instead.
        if len(set(lab)) != len(lab):
            lab = [f"v{i}" for i in range(len(values))]
        out.append(Axis(path, tuple(values), tuple(lab), name))
    return out


def _axis_names(paths: list[str]) -> list[str]:
    """The shortest tails of the paths that tell them apart and are not metric names."""
    parts = [p.split(".") for p in paths]
    depth = [1] * len(paths)
    while True:
        names = [".".join(ps[-d:]) for ps, d in zip(parts, depth, strict=True)]
        clash = {i for i, n in enumerate(names) if names.count(n) > 1 or n in RESERVED_COLUMNS}
        grow = [i for i in clash if depth[i] < len(parts[i])]
        if not grow:
            return names
        for i in grow:
            depth[i] += 1


def _make_points(
    axes: list[Axis], base: dict[str, Any], source: str | None, base_dir: Path
) -> list[Point]:
    """Every grid point, each validated as a scenario."""
    combos = list(itertools.product(*(range(len(a.values)) for a in axes)))
    width = max(3, len(str(len(combos) - 1)))
    points: list[Point] = []
    problems: list[str] = []
    for index, combo in enumerate(combos):
        raw = copy.deepcopy(base)
        values: dict[str, Any] = {}
        for axis, i in zip(axes, combo, strict=True):
            set_dotted(raw, axis.path, axis.values[i])
            values[axis.path] = axis.values[i]
        parts = [f"p{index:0{width}d}"] + [
            f"{_sanitise(a.name, 24)}={_sanitise(a.labels[i])}"
            for a, i in zip(axes, combo, strict=True)
        ]
        try:
            scenario = scenario_from_dict(raw, source=source, base_dir=base_dir)
        except ConfigError as exc:
            problems.extend(_attribute(exc.problems, axes, combo))
            continue
        points.append(
            Point(
                index, "-".join(parts), tuple(combo), values, raw, config_hash(scenario), scenario
            )
        )
    if problems:
        unique = list(dict.fromkeys(problems))
        more = len(unique) - 12
        shown = unique[:12] + ([f"... and {more} more"] if more > 0 else [])
        raise ConfigError(shown, source=source)
    return points


def _attribute(problems: list[str], axes: list[Axis], combo: tuple[int, ...]) -> list[str]:
    """Name the sweep path and value a grid point's problem comes from, when it does; else
    name the whole point."""
    out = []
    for line in problems:
        field, sep, rest = line.partition(": ")
        dotted = re.sub(r"\[(\d+)\]", r".\1", field)
        owner = next(
            (
                (a, i)
                for a, i in zip(axes, combo, strict=True)
                if sep and (dotted == a.path or dotted.startswith(a.path + "."))
            ),
            None,
        )
        if owner is not None:
            axis, i = owner
            inner = dotted[len(axis.path) :].lstrip(".")
            at = f" (at {inner})" if inner else ""
            out.append(f'sweep."{axis.path}" = {toml_literal(axis.values[i])}{at}: {rest}')
        else:
            point = ", ".join(
                f"{a.path} = {toml_literal(a.values[i])}" for a, i in zip(axes, combo, strict=True)
            )
            out.append(f"sweep point ({point}): {line}")
    return out


def toml_literal(value: Any) -> str:
    """``value`` written as a TOML literal, as ``--set`` reads it back (for messages and for
    the provenance of a run)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(k)} = {toml_literal(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return repr(value)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_literal(key)
