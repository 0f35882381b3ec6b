"""Results folders: ``--force`` replaces only our folders, a lock refuses a second writer,
stale partial folders and locks of dead processes are cleaned up, stale tracebacks go.

Most tests run ``llmtraffic.cli.main`` in-process; the overlap of two writers uses a real
second process (``flock`` locks are per open file, so one process could also hold both, but a
separate process is what users run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llmtraffic import load
from llmtraffic.cli import main
from llmtraffic.experiment import load_experiment
from llmtraffic.results.folders import (
    FolderLock,
    FolderLockedError,
    pid_alive,
    remove_stale_partials,
    results_kind,
)
from tests.experiment_config import EXPERIMENT, SCENARIO

SINGLE = SCENARIO.replace('duration = "60s"', 'duration = "30s"')
ONE_RUN_EXPERIMENT = EXPERIMENT.replace("replications = 2", "replications = 1")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory, with a scenario (``one.toml``) and an
    experiment (``exp.toml``, four runs)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "one.toml").write_text(SINGLE, encoding="utf-8")
    (tmp_path / "exp.toml").write_text(ONE_RUN_EXPERIMENT, encoding="utf-8")
    return tmp_path


def flat(text: str) -> str:
    return " ".join(text.split())


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def a_dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    pid = int(proc.stdout)
    assert not pid_alive(pid)
    return pid


# --- what --force replaces ------------------------------------------------------------------


@pytest.mark.parametrize("config", ["one.toml", "exp.toml"])
def test_force_never_replaces_a_folder_that_is_not_a_results_folder(
    workdir: Path, capsys: pytest.CaptureFixture[str], config: str
) -> None:
    thesis = workdir / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("\\documentclass{article}", encoding="utf-8")
    assert main(["run", config, "-q", "--out", "thesis", "--force"]) == 2
    err = flat(capsys.readouterr().err)
    assert "thesis.tex" in err  # says what is there
    assert "--force only replaces results folders" in err
    assert (thesis / "thesis.tex").read_text(encoding="utf-8") == "\\documentclass{article}"
    assert sorted(p.name for p in thesis.iterdir()) == ["thesis.tex"]
    assert hidden(workdir) == []


def test_a_run_folder_and_an_experiment_folder_replace_each_other_with_force(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "one.toml", "-q", "--out", "out"]) == 0
    assert results_kind(workdir / "out") == "run"
    # An experiment into a run's folder needs --force, and then replaces it.
    assert main(["run", "exp.toml", "-q", "--out", "out", "--workers", "1"]) == 2
    assert "single run's results folder" in flat(capsys.readouterr().err)
    assert results_kind(workdir / "out") == "run"
    assert main(["run", "exp.toml", "-q", "--out", "out", "--workers", "1", "--force"]) == 0
    assert results_kind(workdir / "out") == "experiment"
    assert not (workdir / "out" / "summary.json").exists()
    # And back: a run replaces an experiment's folder only with --force.
    assert main(["run", "one.toml", "-q", "--out", "out"]) == 2
    assert "already exists" in flat(capsys.readouterr().err)
    assert main(["run", "one.toml", "-q", "--out", "out", "--force"]) == 0
    assert results_kind(workdir / "out") == "run"
    assert not (workdir / "out" / "runs").exists()
    assert hidden(workdir) == []


def test_an_empty_folder_is_used_as_it_is(workdir: Path) -> None:
    (workdir / "out").mkdir()
    assert main(["run", "one.toml", "-q", "--out", "out"]) == 0
    assert load(workdir / "out").summary["requests"] > 0


@pytest.mark.parametrize("out", ["", ".", "..", "sub/.."])
@pytest.mark.parametrize("config", ["one.toml", "exp.toml"])
def test_the_current_folder_or_a_parent_is_never_a_target(
    workdir: Path, capsys: pytest.CaptureFixture[str], out: str, config: str
) -> None:
    (workdir / "sub").mkdir()
    before = sorted(p.name for p in workdir.iterdir())
    assert main(["run", config, "-q", "--out", out, "--force"]) == 2
    assert "current folder or one of its parents" in flat(capsys.readouterr().err)
    assert sorted(p.name for p in workdir.iterdir()) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
@pytest.mark.parametrize("config", ["one.toml", "exp.toml"])
def test_an_out_folder_in_an_unwritable_folder_is_bad_input(
    workdir: Path, capsys: pytest.CaptureFixture[str], config: str
) -> None:
    locked = workdir / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["run", config, "-q", "--out", "locked/out"]) == 2
    finally:
        locked.chmod(0o755)
    err = flat(capsys.readouterr().err)
    assert "cannot write into the folder locked" in err and "--out" in err


def test_an_out_folder_where_nothing_can_be_written_is_bad_input(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path("/proc/self").exists():
        pytest.skip("needs /proc")
    assert main(["run", "one.toml", "-q", "--out", "/proc/llmtraffic-out"]) == 2
    assert "cannot write into the folder /proc" in flat(capsys.readouterr().err)


# --- the lock -------------------------------------------------------------------------------


def test_a_second_writer_is_refused_with_who_holds_the_lock(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FolderLock(workdir / "out"):
        for config in ("one.toml", "exp.toml"):
            assert main(["run", config, "-q", "--out", "out", "--workers", "1"]) == 2
            err = flat(capsys.readouterr().err)
            assert "out is being written by another llmtraffic process" in err
            assert f"pid {os.getpid()} on " in err and "since 20" in err
        assert not (workdir / "out").exists()
    assert hidden(workdir) == []  # the lock file goes with the lock
    assert main(["run", "one.toml", "-q", "--out", "out"]) == 0


HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from llmtraffic.results.folders import FolderLock
    lock = FolderLock(Path(sys.argv[1]))
    lock.acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_a_lock_of_a_killed_process_is_taken_over(workdir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(workdir / "out")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=f"pid {proc.pid} on"):
            FolderLock(workdir / "out").acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
    assert (workdir / ".out.lock").exists()  # left behind: nothing cleaned up after the kill
    assert main(["run", "one.toml", "-q", "--out", "out"]) == 0
    assert hidden(workdir) == []


HELD_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from llmtraffic import load_config
    from llmtraffic.runner import run_to_folder

    def wait(fraction):  # the run goes on once the test creates the file "go"
        deadline = time.monotonic() + 60
        while not Path("go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    run_to_folder(load_config(sys.argv[1]), sys.argv[2], progress=wait)
    """
)


def test_two_overlapping_runs_into_one_folder_the_second_is_refused(workdir: Path) -> None:
    first = subprocess.Popen(
        [sys.executable, "-c", HELD_RUN, "one.toml", "out"],
        cwd=workdir,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not list(workdir.glob(".out.partial-*")):
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # Even --force: the folder is not there yet, but it is being written.
        cmd = [sys.executable, "-m", "llmtraffic.cli", "run", "one.toml", "-q", "--out", "out"]
        second = subprocess.run(
            [*cmd, "--force"], cwd=workdir, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid} on" in flat(second.stderr)
        (workdir / "go").touch()
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
        if first.stderr is not None:
            first.stderr.close()
    assert load(workdir / "out").manifest["complete"] is True
    assert hidden(workdir) == []


# --- stale partial folders ------------------------------------------------------------------


def test_stale_partials_of_dead_processes_go_and_those_of_live_ones_stay(tmp_path: Path) -> None:
    final = tmp_path / "out"
    dead = tmp_path / f".out.partial-{a_dead_pid()}"
    live = tmp_path / f".out.partial-{os.getppid()}"  # pytest's parent: alive
    other = tmp_path / f".other.partial-{a_dead_pid()}"
    for folder in (dead, live, other):
        folder.mkdir()
        (folder / "summary.json").write_text("{}", encoding="utf-8")
    assert remove_stale_partials(final) == [dead]
    assert not dead.exists() and live.exists() and other.exists()


def test_a_run_and_force_clean_up_what_a_killed_run_left(workdir: Path) -> None:
    partial = workdir / f".out.partial-{a_dead_pid()}"
    partial.mkdir()
    (partial / "requests.parquet").write_bytes(b"half")
    (workdir / ".out.lock").write_text(json.dumps({"pid": 1}), encoding="utf-8")
    assert main(["run", "one.toml", "-q", "--out", "out"]) == 0
    assert hidden(workdir) == []
    # The same with --force over an existing folder.
    partial.mkdir()
    assert main(["run", "one.toml", "-q", "--out", "out", "--force"]) == 0
    assert hidden(workdir) == []


# --- experiments ----------------------------------------------------------------------------


def test_a_stale_error_file_does_not_survive_a_clean_rerun(workdir: Path) -> None:
    assert main(["run", "exp.toml", "-q", "--out", "out", "--workers", "1"]) == 0
    data = load_experiment(workdir / "out")
    run_dir = data.folder / "runs" / data.point_ids[0] / "rep-0"
    # Another sweep recorded a failure of a run that has since finished.
    stale = run_dir.with_name("rep-0.error.txt")
    stale.write_text("Traceback: an old failure", encoding="utf-8")
    dead = run_dir.with_name(f".rep-1.partial-{a_dead_pid()}")
    dead.mkdir()
    assert main(["run", "exp.toml", "-q", "--out", "out", "--workers", "1"]) == 0
    assert not stale.exists() and not dead.exists()
    assert load_experiment(workdir / "out").failures() == {}
