"""A config's plugins are code: validation never imports or calls them, a run imports them only
from modules the user allows, and even then only a policy class or a tenacity.Retrying is
used (issue 12: on f8966f2 `validate` ran `subprocess:run`, `os:system`, `builtins:open`).

The command-line side (exit codes, messages, files left behind) is in the bad-input corpus,
tests/bad_inputs/security/plugin-*.toml; these tests pin the rules underneath.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import tenacity

from llmtraffic import Simulation, load_config
from llmtraffic.cli import main
from llmtraffic.client.plugins import (
    PluginNotAllowedError,
    allowed_plugins,
    check_plugins,
    check_reference,
    current_allowance,
    is_allowed,
    plugin_references,
)
from llmtraffic.client.retry import controller_for
from llmtraffic.client.tenacity_adapter import load_retrying
from llmtraffic.errors import ConfigError
from tests.conftest import make_scenario

CANARY = "llmtraffic_canary_plugin"
"""A module written per test that records, in a file, that it was imported and built."""


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A plugin module on sys.path whose import and whose policy's construction each leave a
    line in ``log``; yields the log's path."""
    log = tmp_path / "log.txt"
    (tmp_path / f"{CANARY}.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            import tenacity
            from tests.policy_plugins import jittered_retrying  # a def of another module

            LOG = Path({str(log)!r})
            with LOG.open("a") as f:
                f.write("imported\\n")


            class Policy:
                def __init__(self, wait: float = 1.0) -> None:
                    with LOG.open("a") as f:
                        f.write("built\\n")
                    self.wait = wait

                def decide(self, state, uniforms):
                    return None


            RETRYING = tenacity.Retrying(stop=tenacity.stop_after_attempt(3))


            def factory():
                with LOG.open("a") as f:
                    f.write("called\\n")
                return RETRYING


            def needs(x):
                with LOG.open("a") as f:
                    f.write("called\\n")
                return RETRYING


            class Breaks:
                def __init__(self) -> None:
                    raise RuntimeError("boom in __init__")

                def decide(self, state, uniforms):
                    return None


            def broken_factory():
                raise RuntimeError("boom in the factory")


            def not_a_factory():
                with LOG.open("a") as f:
                    f.write("called\\n")
                return 42
            """
        ),
        encoding="utf-8",
    )
    (tmp_path / f"{CANARY}_broken.py").write_text(
        'raise RuntimeError("boom at import")\n', encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(CANARY, None)
    yield log
    sys.modules.pop(CANARY, None)


def events(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").split() if log.exists() else []


def config(tmp_path: Path, retry: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [run]
            duration = 30
            [providers.p]
            model = "test-model"
            prices = {{ input = 1, output = 2 }}
            service = {{ kind = "deterministic", value = 0.5 }}
            failures = {{ error_rate = 0.3 }}
            [features.f]
            provider = "p"
            arrivals = {{ kind = "poisson", rate = 2.0 }}
            input_tokens = {{ kind = "fixed", value = 10 }}
            output_tokens = {{ kind = "fixed", value = 10 }}
            [policies.mine]
            retry = {retry}
            """
        ),
        encoding="utf-8",
    )
    return path


CUSTOM = f'{{ kind = "custom", class = "{CANARY}:Policy", params = {{ wait = 2.0 }} }}'
TENACITY = f'{{ kind = "tenacity", retrying = "{CANARY}:factory" }}'


@pytest.mark.parametrize("retry", [CUSTOM, TENACITY])
def test_loading_a_config_imports_and_calls_nothing(
    tmp_path: Path, canary: Path, retry: str
) -> None:
    scenario = load_config(config(tmp_path, retry))
    assert events(canary) == []
    assert CANARY not in sys.modules
    assert [r.module for r in plugin_references(scenario)] == [CANARY]


@pytest.mark.parametrize("retry", [CUSTOM, TENACITY])
def test_validate_imports_and_calls_nothing(
    tmp_path: Path, canary: Path, retry: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(config(tmp_path, retry))]) == 0
    assert events(canary) == []
    assert "valid" in capsys.readouterr().out


@pytest.mark.parametrize(("retry", "field"), [(CUSTOM, "class"), (TENACITY, "retrying")])
def test_run_without_the_flag_imports_nothing_and_names_field_module_and_flag(
    tmp_path: Path, canary: Path, retry: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["run", str(config(tmp_path, retry)), "-q", "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"policies.mine.retry.{field}" in err
    assert f"--allow-plugin {CANARY}" in err
    assert events(canary) == []
    assert not out.exists()


def test_run_with_the_flag_imports_and_builds_the_plugin(
    tmp_path: Path, canary: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["run", str(config(tmp_path, CUSTOM)), "-q", "--out", str(out)]
    assert main([*args, "--allow-plugin", CANARY]) == 0, capsys.readouterr().err
    assert (out / "summary.json").is_file()
    log = events(canary)
    assert log[0] == "imported" and "built" in log


def test_the_python_api_allows_every_module(tmp_path: Path, canary: Path) -> None:
    """Simulation and run_to_folder are the user's own code: no flag there."""
    assert current_allowance() is None
    Simulation(load_config(config(tmp_path, TENACITY))).run()
    assert events(canary)[:2] == ["imported", "called"]


def test_an_allowance_is_enforced_where_the_policy_is_built(tmp_path: Path, canary: Path) -> None:
    """The CLI checks before a run starts; the loader checks again, in case a path skips it."""
    scenario = load_config(config(tmp_path, CUSTOM))
    with allowed_plugins(["some.other"]), pytest.raises(PluginNotAllowedError) as info:
        controller_for(scenario.policies["mine"])
    assert f"--allow-plugin {CANARY}" in str(info.value)
    with allowed_plugins([]), pytest.raises(PluginNotAllowedError) as info2:
        Simulation(scenario)
    assert "policies.mine.retry.class" in str(info2.value)
    assert events(canary) == []
    with allowed_plugins([CANARY]):
        Simulation(scenario).run()
    assert "built" in events(canary)


def test_allowing_a_package_allows_its_modules_and_nothing_else() -> None:
    assert is_allowed("tests.policy_plugins", frozenset({"tests"}))
    assert is_allowed("tests.policy_plugins", frozenset({"tests.policy_plugins"}))
    assert not is_allowed("tests.policy_plugins", frozenset({"tests.policy"}))
    assert not is_allowed("testsuite", frozenset({"tests"}))
    assert not is_allowed("os", frozenset())
    assert is_allowed("os", None)


@pytest.mark.parametrize(
    "text",
    [
        "nocolon",
        "a b:C",
        "os:",
        ":C",
        "os:system()",
        "os.system('x')",
        "a..b:C",
        "import:X",
        "m:C:D",
    ],
)
def test_a_reference_must_have_the_form_module_colon_name(text: str) -> None:
    with pytest.raises(ValueError, match=r"module\.path:Name"):
        check_reference(text)


def test_well_formed_references_pass() -> None:
    for text in ("m:C", "pkg.sub_mod:Class", "pkg:Outer.Inner", "_m:_C"):
        assert check_reference(text) == text


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("jittered_retrying", "a function from the module 'tests.policy_plugins'"),
        ("needs", "needs arguments (x)"),
        ("Policy", "a class"),
    ],
)
def test_tenacity_refuses_what_is_not_a_retrying_or_a_factory_of_its_module(
    canary: Path, name: str, message: str
) -> None:
    with pytest.raises(ValueError, match="was not called") as info:
        load_retrying(f"{CANARY}:{name}")
    assert message in str(info.value)
    assert "called" not in events(canary) and "built" not in events(canary)


def test_tenacity_refuses_builtins_without_calling_them() -> None:
    with pytest.raises(ValueError, match="builtin function, and was not called"):
        load_retrying("os:getpid")


def test_tenacity_takes_a_retrying_or_calls_a_factory_of_its_module(canary: Path) -> None:
    assert isinstance(load_retrying(f"{CANARY}:RETRYING"), tenacity.Retrying)
    assert events(canary) == ["imported"]
    assert isinstance(load_retrying(f"{CANARY}:factory"), tenacity.Retrying)
    assert events(canary) == ["imported", "called"]
    with pytest.raises(ValueError, match=r"not_a_factory\(\) returned a int"):
        load_retrying(f"{CANARY}:not_a_factory")


def test_a_custom_policy_must_be_a_class_with_decide_before_anything_is_called() -> None:
    for ref, message in (("subprocess:run", "not a class"), ("os:system", "not a class")):
        sc = make_scenario(policies={"p": {"retry": {"kind": "custom", "class": ref}}})
        with pytest.raises(ConfigError, match=message):
            check_plugins([sc])
    sc = make_scenario(policies={"p": {"retry": {"kind": "custom", "class": "subprocess:Popen"}}})
    with pytest.raises(ConfigError, match="protocol"):
        check_plugins([sc])


def test_params_must_be_keyword_arguments_of_toml_values() -> None:
    ok = {"kind": "custom", "class": "m:C", "params": {"a": [1, 2.5, "x", {"b": True}]}}
    make_scenario(policies={"p": {"retry": ok}})
    for params, message in (({"not ok": 1}, "identifier"), ({"x": object()}, "TOML value")):
        bad = {"kind": "custom", "class": "m:C", "params": params}
        with pytest.raises(ConfigError, match=message):
            make_scenario(policies={"p": {"retry": bad}})


EXPERIMENT = """
[experiment]
replications = 2

[sweep]
"policies.mine.retry" = [
    {{ kind = "exponential", max_retries = 2 }},
    {retry},
]
"""


def test_an_experiment_refuses_before_any_run_and_runs_in_workers_when_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every grid point is checked in the parent before the workers start (they import what
    they are sent); with the flag the plugin runs in two worker processes. (The plugins are
    in tests.policy_plugins: a worker pool started earlier in the session keeps the sys.path
    it started with.)"""
    monkeypatch.chdir(tmp_path)
    touches = '{ kind = "custom", class = "tests.policy_plugins:TouchesOnImportOrBuild" }'
    path = config(tmp_path, '{ kind = "none" }')
    base = path.read_text(encoding="utf-8")
    path.write_text(base + EXPERIMENT.format(retry=touches), encoding="utf-8")
    out = tmp_path / "exp"
    args = ["run", str(path), "-q", "--out", str(out), "--workers", "2"]
    assert main(args) == 2
    assert "--allow-plugin tests.policy_plugins" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "pwned").exists() and not out.exists()

    legit = (
        '{ kind = "custom", class = "tests.policy_plugins:FixedThenGiveUp", '
        "params = { delay = 1.0, retries = 2 } }"
    )
    path.write_text(base + EXPERIMENT.format(retry=legit), encoding="utf-8")
    assert main([*args, "--allow-plugin", "tests.policy_plugins"]) == 0, capsys.readouterr().err
    assert len(list(out.glob("runs/*/rep-*/summary.json"))) == 4


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        (f'{{ kind = "custom", class = "{CANARY}:Breaks" }}', "RuntimeError: boom in __init__"),
        (
            f'{{ kind = "tenacity", retrying = "{CANARY}:broken_factory" }}',
            "RuntimeError: boom in the factory",
        ),
        (f'{{ kind = "custom", class = "{CANARY}_broken:P" }}', "RuntimeError: boom at import"),
    ],
)
def test_a_plugin_that_fails_is_bad_input_naming_the_field(
    tmp_path: Path, canary: Path, retry: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plugin's own exception, not a traceback of ours: exit 2, field and error named."""
    path = config(tmp_path, retry)
    module = retry.split('"')[3].partition(":")[0]
    args = ["run", str(path), "-q", "--out", str(tmp_path / "out"), "--allow-plugin", module]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "policies.mine.retry" in err and message in err, err
    assert "Traceback" not in err
    sys.modules.pop(f"{CANARY}_broken", None)


def test_a_worker_task_carries_the_commands_allowance(tmp_path: Path, canary: Path) -> None:
    """A worker process starts with no allowance of its own: the task carries the command's,
    so a run sent to a worker is judged as it would be in the command (it allowed all)."""
    from llmtraffic.experiment.execute import Task, execute_task

    raw = load_config(config(tmp_path, CUSTOM)).model_dump(mode="json", exclude_none=True)
    raw["run"]["records"] = "summary"

    def task(plugins: frozenset[str] | None, name: str) -> Task:
        return Task(name, raw, str(tmp_path), 1, str(tmp_path / name), (), plugins)

    refused = execute_task(task(frozenset({"some.other"}), "refused"))
    assert refused.error is not None and f"--allow-plugin {CANARY}" in refused.error
    assert events(canary) == []
    done = execute_task(task(frozenset({CANARY}), "allowed"))
    assert done.error is None and "built" in events(canary)
