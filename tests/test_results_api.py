"""The Python API of results: one ``RunResult`` whether a run ran in memory or was loaded from
its folder, compact reprs for runs and experiments, and ``__all__`` in the public modules."""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import re
import types
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import llmtraffic
from llmtraffic import (
    LLMTrafficError,
    RunData,
    RunResult,
    Simulation,
    load,
    load_config,
    load_experiment,
    read_experiment,
    run_experiment,
    run_to_folder,
    scenario_from_dict,
)
from llmtraffic.cli import main
from llmtraffic.report_table import money
from llmtraffic.results.load import TABLE_NAMES, MissingTableError
from tests.experiment_config import SCENARIO, write

ROOT = Path(__file__).resolve().parents[1]
TINY = scenario_from_dict(__import__("tomllib").loads(SCENARIO))
"""The shared small scenario: one feature, a 20-second brownout, 60 s of arrivals."""


def with_run(sc: Any, **changes: Any) -> Any:
    """``sc`` with ``run`` fields changed."""
    return sc.model_copy(update={"run": sc.run.model_copy(update=changes)})


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (but not to None) at any depth."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def public(obj: object) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


# --- one results object -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, RunResult]:
    """The quickstart (20 minutes, seed 3) run in memory, and the same written by the CLI and
    loaded back."""
    folder = tmp_path_factory.mktemp("pair") / "out"
    config = str(ROOT / "experiments/quickstart.toml")
    args = ["run", config, "-q", "--out", str(folder), "--seed", "3", "--set", "run.duration=1200"]
    assert main(args) == 0
    memory = Simulation(load_config(config, ["run.duration=1200"]), seed=3).run()
    return memory, load(folder)


def test_a_run_from_memory_and_from_disk_have_the_same_attributes(
    pair: tuple[RunResult, RunResult],
) -> None:
    memory, disk = pair
    assert type(memory) is type(disk) is RunResult
    assert public(memory) == public(disk)
    for name in (*TABLE_NAMES, "summary", "features", "incidents", "config", "scenario"):
        assert name in public(memory), name
    assert memory.folder is None
    assert disk.folder is not None and (disk.folder / "summary.json").exists()


def test_a_run_from_memory_and_from_disk_give_equal_values(
    pair: tuple[RunResult, RunResult],
) -> None:
    memory, disk = pair
    for name in TABLE_NAMES:
        assert len(memory.df(name)) > 0, name  # the comparison compares something
        pd.testing.assert_frame_equal(memory.df(name), disk.df(name), obj=name)
        pd.testing.assert_frame_equal(getattr(memory, name), getattr(disk, name), obj=name)
    pd.testing.assert_frame_equal(memory.features, disk.features)
    pd.testing.assert_frame_equal(memory.incidents, disk.incidents)
    assert list(memory.features.index) == ["chat", "rag-search"]
    assert len(memory.incidents) == 1
    # The summary as the run computed it: NaN where a metric is undefined (not None), and the
    # undetermined verdict's None kept, on both sides. Only the wall time differs.
    a, b = dict(memory.summary), dict(disk.summary)
    assert a.pop("wall_time_s") > 0 and b.pop("wall_time_s") > 0
    assert same(a, b)
    assert memory.config == disk.config
    assert memory.config["run"]["seed"] == 3  # the seed given to Simulation, not the file's
    assert memory.scenario == disk.scenario
    for key in ("seed", "config_hash", "version", "schema_version", "records", "tables"):
        assert memory.manifest[key] == disk.manifest[key], key
    assert (memory.name, memory.seed) == (disk.name, disk.seed) == ("quickstart", 3)


def test_a_loaded_summary_restores_nan_and_infinity(tmp_path: Path) -> None:
    # No incident traffic, a run with no successes: the latency percentiles are undefined.
    sc = TINY.model_copy(
        update={
            "providers": {
                "main": TINY.providers["main"].model_copy(
                    update={
                        "failures": TINY.providers["main"].failures.model_copy(
                            update={"error_rate": 1.0}
                        ),
                        "incidents": [],
                    }
                )
            }
        }
    )
    folder, memory = run_to_folder(sc, tmp_path / "out")
    disk = load(folder)
    assert math.isnan(memory.summary["latency_p50"])
    assert math.isnan(disk.summary["latency_p50"])  # summary.json holds null
    assert '"latency_p50": null' in (folder / "summary.json").read_text(encoding="utf-8")
    assert disk.config["run"]["drain"] == memory.config["run"]["drain"]


def test_the_old_spellings_still_work(pair: tuple[RunResult, RunResult]) -> None:
    memory, disk = pair
    assert RunData is RunResult
    from llmtraffic.simulation import RunResult as FromSimulation

    assert FromSimulation is RunResult
    pd.testing.assert_frame_equal(disk.table("requests"), disk.requests)
    assert memory.df("requests") is memory.requests  # made once, then kept
    assert set(memory.tables) == set(TABLE_NAMES)
    assert memory.tables["attempts"].num_rows == len(disk.attempts)
    assert disk.tables["events"].equals(memory.tables["events"])


def test_a_table_the_run_did_not_keep_names_the_setting_that_keeps_it(tmp_path: Path) -> None:
    summary_only = with_run(TINY, records="summary")
    memory = Simulation(summary_only).run()
    with pytest.raises(MissingTableError, match=r"run.records = 'summary' \(no tables\)") as err:
        _ = memory.requests
    assert "run.records = 'all'" in str(err.value)
    # Both kinds of error, as the two objects raised before they became one.
    assert isinstance(err.value, LLMTrafficError) and isinstance(err.value, KeyError)
    assert not str(err.value).startswith("'")  # a sentence, not KeyError's quoted repr

    folder, _ = run_to_folder(with_run(TINY, records="timeseries"), tmp_path / "ts")
    disk = load(folder)
    assert len(disk.timeseries) > 0
    with pytest.raises(MissingTableError, match=r"run\.records = 'all'"):
        _ = disk.attempts


def test_the_runners_result_says_where_its_tables_went(tmp_path: Path) -> None:
    folder, result = run_to_folder(TINY, tmp_path / "out")
    with pytest.raises(MissingTableError, match=r"ParquetSink.*llmtraffic.load\(folder\)"):
        _ = result.requests
    assert "records went to a ParquetSink" in repr(result)
    assert len(load(folder).requests) == result.summary["requests"]


def test_a_misspelt_table_name_suggests_the_right_one(pair: tuple[RunResult, RunResult]) -> None:
    for run in pair:
        with pytest.raises(MissingTableError, match="no table 'request'; did you mean 'requests'"):
            run.df("request")


# --- reprs ----------------------------------------------------------------------------------


def test_a_runs_repr_is_a_few_lines_with_the_headline_numbers(
    pair: tuple[RunResult, RunResult],
) -> None:
    for run in pair:
        s = run.summary
        text = repr(run)
        assert len(text) < 600, text
        assert len(text.splitlines()) <= 8, text
        assert "'quickstart', seed 3" in text
        assert f"{s['requests']:,}" in text
        assert f"success {s['success_rate']:.2%}" in text
        assert money(s["billed_cost"]) in text
        inc = s["incidents"][0]
        assert f"{inc['kind']} on {inc['provider']}" in text
        assert "requests, attempts, events, timeseries" in text
    assert "in memory" in repr(pair[0])
    assert f"from {pair[1].folder}" in repr(pair[1])
    # The summary as a dict is still there whole; the repr no longer prints it.
    assert len(repr(pair[0].summary)) > 2000


def test_a_runs_html_is_a_small_table(pair: tuple[RunResult, RunResult]) -> None:
    page = pair[0]._repr_html_()
    assert page.startswith("<table>") and page.endswith("</table>")
    assert len(page) < 2000
    assert page.count("<tr>") == len(repr(pair[0]).splitlines()) - 1  # one row per line
    assert "&#x27;quickstart&#x27;" in page  # text is escaped


def test_many_incidents_are_counted_not_listed() -> None:
    brownout = TINY.providers["main"].incidents[0]
    incidents = [
        brownout.model_copy(update={"start": 4.0 * i, "duration": 2.0}) for i in range(1, 8)
    ]
    main_provider = TINY.providers["main"].model_copy(update={"incidents": incidents})
    sc = TINY.model_copy(update={"providers": {"main": main_provider}})
    run = Simulation(with_run(sc, records="summary")).run()
    text = repr(run)
    assert len(run.summary["incidents"]) == 7
    assert len(text) < 600, text
    assert "and 4 more (.incidents)" in text
    # Numbered from 1, as the CLI's incident tables and the plots number them.
    labels = [
        line.split()[:2] for line in text.splitlines() if line.strip().startswith("incident ")
    ]
    assert labels == [["incident", "1"], ["incident", "2"], ["incident", "3"]], text
    assert "none kept (run.records = 'summary')" in text


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared small experiment, one replication (4 points)."""
    root = tmp_path_factory.mktemp("exp")
    spec = read_experiment(write(root), ["experiment.replications=1"])
    run_experiment(spec, root / "out", workers=1)
    return root / "out"


def test_an_experiments_repr_is_a_few_lines(experiment: Path) -> None:
    data = load_experiment(experiment)
    text = repr(data)
    assert len(text) < 600, text
    assert len(repr(data.spec)) > len(text)  # what the repr printed before
    assert "axis policy" in text and "naive, backoff" in text
    assert "axis error_rate" in text
    assert "4 points x 1 replication = 4 runs" in text  # one replication: singular
    assert "1 replications" not in text
    assert "complete (4 done, 0 skipped, 0 failed)" in text
    assert (data.replications, data.status) == (1, "complete")
    page = data._repr_html_()
    assert page.startswith("<table>") and page.count("<tr>") == 4 and len(page) < 2000
    run = data.run("p001")
    assert len(repr(run)) < 600 and "from " in repr(run)


def test_an_experiment_without_manifest_says_its_status_is_unknown(experiment: Path) -> None:
    data = load_experiment(experiment)
    data.manifest = {}
    assert re.search(r"\n  status +unknown \(no manifest.json\)>$", repr(data))


# --- __all__ --------------------------------------------------------------------------------

PUBLIC_MODULES = (
    "llmtraffic",
    "llmtraffic.checks",
    "llmtraffic.client.plugins",
    "llmtraffic.client.predicates",
    "llmtraffic.client.retry",
    "llmtraffic.client.stops",
    "llmtraffic.client.tenacity_adapter",
    "llmtraffic.client.waits",
    "llmtraffic.config",
    "llmtraffic.errors",
    "llmtraffic.experiment",
    "llmtraffic.experiment.analysis",
    "llmtraffic.plots",
    "llmtraffic.results",
    "llmtraffic.results.load",
    "llmtraffic.simulation",
    "llmtraffic.testing",
    "llmtraffic.testing.strategies",
)
"""The modules the docs tell users to import from (the test below keeps the list complete)."""

DIR_LIMITED = ("llmtraffic", "llmtraffic.testing", "llmtraffic.results", "llmtraffic.experiment")
"""Modules explored with ``dir()`` and tab completion in Jupyter: they list only ``__all__``."""


def attribute_docstring(module: types.ModuleType, name: str) -> str | None:
    """The string literal under ``name = ...`` in the module that assigns it (following
    ``from x import name``), the way constants are documented in this code base."""
    tree = ast.parse(inspect.getsource(module))
    body = tree.body
    for i, node in enumerate(body):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            nxt = body[i + 1] if i + 1 < len(body) else None
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                return str(nxt.value.value)
            return None
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and any((a.asname or a.name) == name for a in node.names)
        ):
            return attribute_docstring(importlib.import_module(node.module), name)
    return None


def own_docstring(obj: Any) -> str | None:
    """A class's or function's docstring; None for a dataclass's generated signature."""
    doc = inspect.getdoc(obj)
    if doc is None or (inspect.isclass(obj) and doc.startswith(f"{obj.__name__}(")):
        return None
    return doc


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_name_in_all_exists_is_ours_and_has_a_docstring(name: str) -> None:
    module = importlib.import_module(name)
    assert inspect.getdoc(module), f"{name} has no module docstring"
    names = getattr(module, "__all__", None)
    assert names, f"{name} has no __all__"
    assert len(names) == len(set(names)), f"{name}.__all__ repeats a name"
    for attr in names:
        assert hasattr(module, attr), f"{name}.__all__ names {attr!r}, which it does not have"
        if attr.startswith("__"):
            continue  # __version__
        obj = getattr(module, attr)
        # An import alias (np, pd, difflib, Path, Any) is not part of the API.
        assert not isinstance(obj, types.ModuleType), f"{name}.{attr} is a module"
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith("llmtraffic"), f"{name}.{attr} is not ours"
            assert own_docstring(obj), f"{name}.{attr} has no docstring"
        else:
            assert attribute_docstring(module, attr), f"{name}.{attr} has no docstring"


@pytest.mark.parametrize("name", DIR_LIMITED)
def test_dir_and_star_import_list_only_the_api(name: str) -> None:
    module = importlib.import_module(name)
    assert dir(module) == sorted(module.__all__)
    namespace: dict[str, Any] = {}
    exec(f"from {name} import *", namespace)  # the star import is what is tested
    assert set(namespace) - {"__builtins__"} == set(module.__all__)
    assert not {"np", "pd", "difflib", "annotations", "Path", "Any"} & set(dir(module))


def test_the_public_module_list_covers_every_module_the_docs_import() -> None:
    pattern = re.compile(r"(?:from|import)\s+(llmtraffic(?:\.\w+)*)")
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    texts += sorted((ROOT / "notebooks").glob("*.ipynb"))
    named = {m for p in texts for m in pattern.findall(p.read_text(encoding="utf-8"))}
    assert "llmtraffic.testing" in named  # the pattern finds what it should
    assert named <= set(PUBLIC_MODULES), sorted(named - set(PUBLIC_MODULES))


def test_the_top_level_api_is_what_the_docs_use() -> None:
    for name in ("Simulation", "RunResult", "load", "load_experiment", "run_experiment"):
        assert name in llmtraffic.__all__


def test_an_experiment_spec_and_scenario_runs_have_short_reprs() -> None:
    """read_experiment's spec printed ~20k characters, run_scenario's result ~7k."""
    from llmtraffic.testing import run_scenario

    spec = llmtraffic.read_experiment(ROOT / "experiments" / "outage-storm.toml")
    text = repr(spec)
    assert len(text) < 600 and "axis policy: naive, backoff, breaker, budget" in text
    assert f"{len(spec.points)} points x {spec.replications} replications" in text
    quickstart = ROOT / "experiments" / "quickstart.toml"
    runs = run_scenario(quickstart, overrides=["run.duration=700"], seeds=[1])
    assert len(repr(runs)) < 600 and "seed 1: success" in repr(runs)
