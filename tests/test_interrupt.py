"""Interruption, with real processes: SIGTERM stops ``run`` and ``experiment run`` as Ctrl-C
does (a clean stop: nothing half-written, an experiment's finished runs kept and its manifest
marked "interrupted", exit 1), and the local workers, the forkserver and the resource tracker
die with the command, even when it is killed with SIGKILL.

Processes are found through /proc (Linux): the command's descendants are recorded while it
runs, then must all be gone within a few seconds of its end.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llmtraffic.experiment import load_experiment
from tests.experiment_config import SCENARIO

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="finds processes through /proc (Linux)"
)

# Each run takes several seconds (long enough to be interrupted midway, and the tests never
# let one finish).
LONG = SCENARIO.replace('duration = "60s"', 'duration = "2h"').replace("rate = 8", "rate = 100")
LONG_EXPERIMENT = LONG + '\n[experiment]\nreplications = 4\nrecords = "summary"\n'


def _parents() -> dict[int, list[int]]:
    """Children of every process, by parent pid (zombies excluded: they have exited)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    children = _parents()
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (not exited, not zombies)."""
    live = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            live.add(pid)
    return live


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.05)


def start(tmp_path: Path, config: str, *args: str) -> subprocess.Popen[str]:
    (tmp_path / "c.toml").write_text(config, encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, "-m", "llmtraffic.cli", "run", "c.toml", "--out", "out", "-q", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait for the command; its exit code and stderr."""
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def gone_within(pids: set[int], seconds: float) -> set[int]:
    """The processes of ``pids`` still alive after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


def test_sigterm_stops_a_single_run_cleanly(tmp_path: Path) -> None:
    proc = start(tmp_path, LONG)
    wait_for(lambda: any(tmp_path.glob(".out.partial-*")), proc, "started writing")
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 1, err
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]  # no partial, no lock


def test_sigterm_stops_an_experiment_keeps_its_runs_and_its_workers_die(tmp_path: Path) -> None:
    proc = start(tmp_path, LONG_EXPERIMENT, "--workers", "2")
    out = tmp_path / "out"
    # Both workers are writing a run (the forkserver, the workers, the resource tracker).
    wait_for(lambda: len(list(out.glob("runs/*/.rep-*.partial-*"))) == 2, proc, "ran")
    below = descendants(proc.pid)
    assert len(below) >= 3, below
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 1, err
    assert "interrupted" in err and "run the same command again" in err
    assert "Traceback" not in err
    assert gone_within(below, 5.0) == set()
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "interrupted"
    assert manifest["runs_done"] + manifest["runs_failed"] < 4
    assert not list(out.glob("runs/*/.rep-*"))  # the workers removed their partial folders
    assert (out / "summary.parquet").exists()  # the tables of what finished
    assert not list(tmp_path.glob(".*"))  # the lock is released


def test_sigkill_of_the_command_leaves_no_worker_and_a_rerun_cleans_up(tmp_path: Path) -> None:
    proc = start(tmp_path, LONG_EXPERIMENT, "--workers", "2")
    out = tmp_path / "out"
    wait_for(lambda: len(list(out.glob("runs/*/.rep-*.partial-*"))) == 2, proc, "ran")
    below = descendants(proc.pid)
    assert len(below) >= 3, below
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    # Without the parent-death guards the workers ran their queued runs for minutes.
    assert gone_within(below, 5.0) == set()
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"

    # The next run takes the dead command's lock over and removes what it left; a short
    # version of the runs, so that it finishes quickly.
    short = LONG_EXPERIMENT.replace('duration = "2h"', 'duration = "60s"')
    (tmp_path / "c.toml").write_text(short, encoding="utf-8")
    rerun = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmtraffic.cli",
            "run",
            "c.toml",
            "--out",
            "out",
            "-q",
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert not list(out.glob("runs/*/.rep-*"))
    assert not list(tmp_path.glob(".*"))
    data = load_experiment(out)
    assert data.manifest["status"] == "complete" and len(data.summary) == 4


def test_a_killed_single_run_leaves_a_partial_that_the_next_run_removes(tmp_path: Path) -> None:
    proc = start(tmp_path, LONG)
    wait_for(lambda: any(tmp_path.glob(".out.partial-*")), proc, "started writing")
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    assert [p.name for p in tmp_path.glob(".out.partial-*")] == [f".out.partial-{proc.pid}"]
    short = LONG.replace('duration = "2h"', 'duration = "60s"')
    (tmp_path / "c.toml").write_text(short, encoding="utf-8")
    rerun = subprocess.run(
        [sys.executable, "-m", "llmtraffic.cli", "run", "c.toml", "--out", "out", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "out"]
