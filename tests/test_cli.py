"""The ``llmtraffic`` command end to end: run, validate, exit codes, and the results folder.

Most tests call ``llmtraffic.cli.main`` in-process (output captured by capsys) from inside
``tmp_path``, so that paths in messages stay short; one test runs the installed command in a
real subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import llmtraffic
from llmtraffic import LLMTrafficError, Simulation, load, load_config, scenario_from_dict
from llmtraffic.cli import main

# Three simulated minutes of one feature on one rate-limited provider with a one-minute
# brownout; exponential backoff behind a circuit breaker. Runs in a small fraction of a second.
CONFIG = """\
name = "cli-test"

[run]
duration = "3m"
seed = 3
timeseries_bin = "10s"

[providers.main]
model = "test/model"
prices = { input = 1.0, output = 4.0 }
rate_limit = { rpm = 600, tpm = 200_000 }
capacity = { slots = 8, queue_limit = 16 }
service = { kind = "tokens", ttft = "0.2s", decode_tps = 100, noise_sigma = 0.2 }
failures = { error_rate = 0.01 }

[[providers.main.incidents]]
kind = "brownout"
start = "1m"
duration = "1m"
error_rate = 0.5

[features.chat]
provider = "main"
policy = "backoff"
arrivals = { kind = "poisson", rate = "240/min" }
input_tokens = { kind = "fixed", value = 300 }
output_tokens = { kind = "uniform", low = 20, high = 80 }
max_tokens = 100

[policies.backoff]
timeout = "10s"
deadline = "30s"
retry = { kind = "exponential", max_retries = 3, base = "0.2s", cap = "2s", jitter = "full" }
breaker = { window = "count", window_size = 20, minimum_calls = 10, open_duration = "5s", \
half_open_calls = 3 }
"""

TABLES = ("requests", "attempts", "events", "timeseries")
JSON_FILES = {"config.json", "config.toml", "manifest.json", "summary.json"}
ALL_FILES = JSON_FILES | {f"{t}.parquet" for t in TABLES}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory, holding the config as ``exp.toml``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.toml").write_text(CONFIG, encoding="utf-8")
    return tmp_path


def flat(text: str) -> str:
    """Text with runs of whitespace made one space (the console wraps long lines)."""
    return " ".join(text.split())


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def leftovers(folder: Path) -> list[str]:
    """Hidden partial or old folders a run may have left beside its results."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def run_ok(*args: str) -> None:
    code = main(["run", "exp.toml", "-q", *args])
    assert code == 0


# --- a complete run -------------------------------------------------------------------------


def test_run_writes_a_complete_results_folder(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "exp.toml", "--out", "out"]) == 0
    out, err = capsys.readouterr()
    assert "results: out" in out
    assert "Summary" in out  # the summary table is printed without --quiet
    assert err == ""

    folder = workdir / "out"
    assert files_in(folder) == ALL_FILES
    assert leftovers(workdir) == []
    assert (folder / "config.toml").read_text(encoding="utf-8") == CONFIG

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["complete"] is True
    assert manifest["seed"] == 3
    assert manifest["version"] == llmtraffic.__version__
    assert manifest["records"] == "all"
    assert sorted(manifest["tables"]) == sorted(TABLES)

    data = load(folder)
    summary = data.summary
    assert summary["seed"] == 3
    assert summary["scenario"] == "cli-test"
    assert summary["requests"] > 0
    for name in TABLES:
        assert len(data.table(name)) > 0, name
    assert len(data.requests) == summary["requests"]
    assert len(data.attempts) == summary["attempts"]
    assert int(data.requests["attempts"].sum()) == summary["attempts"]
    assert int(data.timeseries["arrivals"].sum()) == summary["requests"]
    assert int(data.timeseries["attempts"].sum()) == summary["attempts"]
    assert set(data.requests["feature"]) == {"chat"}
    assert set(data.attempts["request_id"]) <= set(data.requests["request_id"])

    # The brownout shows in the events and in the per-incident metrics.
    kinds = list(data.events["kind"])
    assert "incident_start" in kinds and "incident_end" in kinds
    assert [i["kind"] for i in summary["incidents"]] == ["brownout"]
    assert len(data.incidents) == 1

    # config.json is the resolved scenario: it reads back to the same scenario.
    assert scenario_from_dict(data.config) == load_config("exp.toml")


def test_seed_flag_is_recorded(workdir: Path) -> None:
    run_ok("--out", "out", "--seed", "5")
    data = load(workdir / "out")
    assert data.summary["seed"] == 5
    assert data.manifest["seed"] == 5


def test_seed_flag_is_in_the_resolved_config(workdir: Path) -> None:
    run_ok("--out", "out", "--seed", "5")
    assert load(workdir / "out").config["run"]["seed"] == 5


def test_set_overrides_reach_the_run_and_the_resolved_config(workdir: Path) -> None:
    run_ok(
        "--out", "out", "--set", "run.duration=2m", "--set", "policies.backoff.retry.jitter=equal"
    )
    data = load(workdir / "out")
    assert data.summary["duration"] == 120.0
    assert data.config["run"]["duration"] == 120.0
    assert data.config["policies"]["backoff"]["retry"]["jitter"] == "equal"


def test_same_seed_gives_the_same_summary(workdir: Path) -> None:
    run_ok("--out", "a")
    run_ok("--out", "b")
    a, b = load(workdir / "a").summary, load(workdir / "b").summary
    for key in ("requests", "attempts", "successes", "billed_cost", "outcomes", "config_hash"):
        assert a[key] == b[key], key


# --- records --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "kept"),
    [('"summary"', ()), ("summary", ()), ("timeseries", ("events", "timeseries"))],
)
def test_records_setting_limits_the_tables_written(
    workdir: Path, records: str, kept: tuple[str, ...]
) -> None:
    run_ok("--out", "out", "--set", f"run.records={records}")
    folder = workdir / "out"
    assert files_in(folder) == JSON_FILES | {f"{t}.parquet" for t in kept}
    data = load(folder)
    assert data.summary["requests"] > 0
    assert data.manifest["records"] == records.strip('"')
    for name in TABLES:
        if name in kept:
            assert len(data.table(name)) > 0
        else:
            with pytest.raises(LLMTrafficError, match="records") as info:
                data.table(name)
            assert name in str(info.value)
    with pytest.raises(LLMTrafficError, match="records"):
        _ = data.requests
    if "timeseries" in kept:
        assert int(data.timeseries["arrivals"].sum()) == data.summary["requests"]


# --- existing results folders ---------------------------------------------------------------


def test_an_existing_out_folder_needs_force(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_ok("--out", "out")
    capsys.readouterr()
    before = (workdir / "out" / "manifest.json").read_text(encoding="utf-8")

    assert main(["run", "exp.toml", "-q", "--out", "out", "--seed", "9"]) == 2
    err = flat(capsys.readouterr().err)
    assert "already exists" in err and "--force" in err
    assert (workdir / "out" / "manifest.json").read_text(encoding="utf-8") == before

    assert main(["run", "exp.toml", "-q", "--out", "out", "--seed", "9", "--force"]) == 0
    assert load(workdir / "out").summary["seed"] == 9
    assert files_in(workdir / "out") == ALL_FILES
    assert leftovers(workdir) == []


def test_an_existing_out_folder_is_not_called_an_invalid_config(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_ok("--out", "out")
    capsys.readouterr()
    assert main(["run", "exp.toml", "-q", "--out", "out"]) == 2
    assert "invalid config" not in capsys.readouterr().err


def test_force_does_not_replace_a_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--force replaces results folders only: a file at --out is refused and left alone."""
    (workdir / "out").write_text("not a results folder", encoding="utf-8")
    assert main(["run", "exp.toml", "-q", "--out", "out", "--force"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert (workdir / "out").read_text(encoding="utf-8") == "not a results folder"
    assert leftovers(workdir) == []


def test_an_out_path_below_a_file_is_bad_input(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "blocker").write_text("", encoding="utf-8")
    assert main(["run", "exp.toml", "-q", "--out", "blocker/out"]) == 2
    assert "blocker" in capsys.readouterr().err


# --- validate and bad input -----------------------------------------------------------------


def test_validate_a_good_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "exp.toml"]) == 0
    out = flat(capsys.readouterr().out)
    assert "exp.toml: valid" in out
    assert "1 features" in out and "180 s" in out
    assert files_in(workdir) == {"exp.toml"}  # validating writes nothing


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('rate = "240/min"', "rate = -1", ["features.chat.arrivals.rate:", "> 0"]),
        ('policy = "backoff"', 'policy = "nope"', ["features.chat.policy:", "backoff"]),
        ("max_tokens = 100", "max_tokenz = 100", ["features.chat.max_tokenz:", "max_tokens"]),
        ('duration = "3m"', 'duration = "3 minutes"', ["run.duration:", "malformed duration"]),
        ('kind = "brownout"', 'kind = "browout"', ["incidents[0].kind:", "brownout"]),
        ("[run]", "[run", ["not valid TOML", "line"]),
    ],
)
def test_validate_a_bad_file_names_the_field(
    workdir: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: list[str]
) -> None:
    assert old in CONFIG
    (workdir / "bad.toml").write_text(CONFIG.replace(old, new, 1), encoding="utf-8")
    assert main(["validate", "bad.toml"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    err = flat(err)
    assert err.startswith("error: bad.toml: invalid config"), err
    assert all(e in err for e in expected), err


def test_validate_applies_set_overrides(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    assert main(["validate", "exp.toml", "--set", "features.chat.arrivals.rate=0"]) == 2
    assert "features.chat.arrivals.rate:" in capsys.readouterr().err
    assert main(["validate", "exp.toml", "--set", "run.duration=1h"]) == 0
    assert "3600 s" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_nonexistent_config_is_bad_input(
    workdir: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert main([command, "missing.toml"]) == 2
    err = flat(capsys.readouterr().err)
    assert "missing.toml" in err and "not found" in err
    assert files_in(workdir) == {"exp.toml"}


def test_a_malformed_set_item_is_bad_input(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "exp.toml", "--out", "out", "--set", "run.seed"]) == 2
    assert "dotted.path=value" in flat(capsys.readouterr().err)
    assert files_in(workdir) == {"exp.toml"}


@pytest.mark.parametrize("seed", ["-1", "abc", "1.5"])
def test_a_bad_seed_is_rejected_by_the_argument_parser(
    workdir: Path, capsys: pytest.CaptureFixture[str], seed: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "exp.toml", "--seed", seed])
    assert info.value.code == 2
    assert "--seed" in capsys.readouterr().err
    assert files_in(workdir) == {"exp.toml"}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--help"], ["usage: llmtraffic", "run", "validate"]),
        (["run", "--help"], ["usage: llmtraffic run", "--out", "--seed", "--force", "--set"]),
        (["validate", "--help"], ["usage: llmtraffic validate", "--set"]),
        (["calibrate", "--help"], ["usage: llmtraffic calibrate", "--provider", "GuideLLM"]),
        (["--version"], [f"llmtraffic {llmtraffic.__version__}"]),
    ],
)
def test_help_and_version_exit_0(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert all(e in out for e in expected), out


@pytest.mark.parametrize("argv", [[], ["simulate", "exp.toml"], ["run"]])
def test_a_missing_or_unknown_command_exits_2(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# --- a run that fails part-way --------------------------------------------------------------


def _fail_half_way(monkeypatch: pytest.MonkeyPatch, exc: BaseException, seen: list[str]) -> None:
    """Make ``Simulation.run`` raise ``exc`` half-way through the simulated span, after the
    runner has started writing; ``seen`` gets the files of the partial folder at that moment."""
    original: Callable[[Simulation], Any] = Simulation.run

    def run(self: Simulation) -> Any:
        def progress(fraction: float) -> None:
            if fraction >= 0.5:
                folder = getattr(self.sink, "folder", None)
                if isinstance(folder, Path):
                    seen.extend(sorted(p.name for p in folder.iterdir()))
                raise exc

        self.progress = progress
        return original(self)

    monkeypatch.setattr(Simulation, "run", run)


@pytest.mark.parametrize(
    ("exc", "message"),
    [(RuntimeError("engine exploded"), "engine exploded"), (KeyboardInterrupt(), "interrupted")],
)
def test_a_run_that_fails_midway_leaves_no_folder(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    exc: BaseException,
    message: str,
) -> None:
    seen: list[str] = []
    _fail_half_way(monkeypatch, exc, seen)
    assert main(["run", "exp.toml", "-q", "--out", "runs/out"]) == 1
    assert "config.json" in seen  # it did fail after the runner had written files
    assert message in capsys.readouterr().err
    runs = workdir / "runs"
    assert not (runs / "out").exists()
    assert list(runs.iterdir()) == []  # no hidden .partial folder either
    with pytest.raises(LLMTrafficError):
        load(runs / "out")


def test_a_failed_forced_rerun_keeps_the_previous_results(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_ok("--out", "out")
    before = load(workdir / "out").summary
    _fail_half_way(monkeypatch, RuntimeError("boom"), [])
    assert main(["run", "exp.toml", "-q", "--out", "out", "--force", "--seed", "8"]) == 1
    assert files_in(workdir / "out") == ALL_FILES
    assert load(workdir / "out").summary == before
    assert leftovers(workdir) == []


# --- console output -------------------------------------------------------------------------


def test_a_long_results_path_is_printed_on_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = Path("x" * 50) / ("y" * 50) / "out"
    run_ok("--out", str(out_dir))
    assert f"results: {out_dir}" in capsys.readouterr().out
    assert main(["run", "exp.toml", "--out", str(out_dir), "-q"]) == 2
    assert str(out_dir) in capsys.readouterr().err


def test_a_results_path_with_brackets(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "exp.toml", "-q", "--out", "runs/[/x]"]) == 0
    assert "runs/[/x]" in capsys.readouterr().out


# --- the installed command ------------------------------------------------------------------


def _command() -> list[str]:
    """The installed ``llmtraffic`` script of this interpreter's environment, else ``-m``."""
    beside = Path(sys.executable).with_name("llmtraffic")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("llmtraffic")
    return [found] if found else [sys.executable, "-m", "llmtraffic.cli"]


def test_the_installed_command_runs_a_config(workdir: Path) -> None:
    proc = subprocess.run(
        [*_command(), "run", "exp.toml", "--out", "out", "--seed", "4"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "results: out" in proc.stdout
    assert files_in(workdir / "out") == ALL_FILES
    data = load(workdir / "out")
    assert data.manifest["complete"] is True
    assert data.summary["seed"] == 4
    assert len(data.requests) == data.summary["requests"]


# --- progress on a terminal -----------------------------------------------------------------


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run the command with stderr on a pseudo-terminal and stdout on a pipe; return the exit
    code, stdout and what the terminal showed."""
    import os
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [*_command(), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=slave, env=env, text=True
    )
    os.close(slave)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closes with the last process that held it
            break
        if not chunk:
            break
        shown.extend(chunk)
    os.close(master)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.stdout:
        proc.stdout.close()
    return proc.wait(timeout=120), out, shown.decode("utf-8", "replace")


def test_progress_shows_on_a_terminal(workdir: Path) -> None:
    """Runs that take more than half a second show a bar on stderr when it is a terminal, even
    with the output redirected."""
    (workdir / "long.toml").write_text(
        CONFIG.replace('duration = "3m"', 'duration = "24h"'), encoding="utf-8"
    )
    from tests.experiment_config import EXPERIMENT

    (workdir / "exp2.toml").write_text(EXPERIMENT, encoding="utf-8")
    code, out, shown = _on_a_terminal(["run", "long.toml", "--out", "a"], workdir)
    assert code == 0 and "results: a" in out
    assert "simulating" in shown and "eta" in shown
    code, out, shown = _on_a_terminal(["run", "exp2.toml", "--out", "e", "--workers", "1"], workdir)
    assert code == 0 and "results: e" in out
    assert "runs" in shown and "0/8" in shown


def test_no_progress_with_q_or_when_stderr_is_not_a_terminal(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmtraffic.cli as cli

    asked: list[bool] = []
    real = cli._progress_bar

    def record(console: Any, enabled: bool) -> Any:
        asked.append(enabled)
        return real(console, enabled)

    monkeypatch.setattr(cli, "_progress_bar", record)
    assert main(["run", "exp.toml", "--out", "a"]) == 0  # stderr captured: not a terminal
    assert main(["run", "exp.toml", "--out", "b", "-q"]) == 0
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    assert main(["run", "exp.toml", "--out", "c", "-q"]) == 0
    assert main(["run", "exp.toml", "--out", "d"]) == 0
    assert asked == [False, False, False, True]
