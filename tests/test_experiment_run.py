"""Running experiments: common random numbers, the results folder, failures, resume after a
kill, and the same summary from one process, local worker processes and a Dask cluster."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import llmtraffic
from llmtraffic.cli import main
from llmtraffic.experiment import execute as execute_module
from llmtraffic.experiment import (
    experiment_from_dict,
    load_experiment,
    read_experiment,
    run_experiment,
)
from llmtraffic.experiment.spec import RESERVED_COLUMNS
from tests.experiment_config import EXPERIMENT, SCENARIO, write

# Columns that legitimately differ between two executions of the same run.
VOLATILE = ["wall_time_s"]


def comparable(summary: pd.DataFrame) -> pd.DataFrame:
    """A summary table without wall-clock columns, in grid order."""
    return (
        summary.drop(columns=VOLATILE)
        .sort_values(["point_id", "replication"])
        .reset_index(drop=True)
    )


def test_identical_policies_give_identical_results_and_traffic_is_shared(tmp_path: Path) -> None:
    # "twin" is "backoff" under another name: with common random numbers the two grid points
    # must give the very same run; "naive" behaves differently but sees the same traffic.
    text = SCENARIO.replace(
        "[policies.naive]",
        '[policies.twin]\ntimeout = "10s"\ndeadline = "30s"\nretry = { kind = "exponential", '
        'max_retries = 3, base = "0.2s", cap = "2s", jitter = "full" }\nbreaker = { window = '
        '"count", window_size = 20, minimum_calls = 10, open_duration = "5s", half_open_calls = '
        "3 }\n\n[policies.naive]",
    ) + (
        '\n[experiment]\nreplications = 2\nrecords = "all"\n'
        '[sweep]\n"features.chat.policy" = ["backoff", "twin", "naive"]\n'
    )
    spec = experiment_from_dict(tomllib.loads(text))
    outcome = run_experiment(spec, tmp_path / "crn", workers=1)
    assert outcome.ok and outcome.done == 6
    data = load_experiment(tmp_path / "crn")
    s = data.summary.set_index(["policy", "replication"])
    metrics = [c for c in s.columns if c not in ("point_id", "config_hash", "wall_time_s")]
    for r in (0, 1):
        a, b = s.loc[("backoff", r), metrics], s.loc[("twin", r), metrics]
        pd.testing.assert_series_equal(a, b, check_names=False)
        assert s.loc[("naive", r), "attempts"] != s.loc[("backoff", r), "attempts"]
    # The traffic itself: arrival times and sizes of every request, per replication.
    for r in (0, 1):
        arrivals = [
            data.run(p, r)
            .requests.sort_values("request_id")[["arrival_time", "input_tokens", "output_tokens"]]
            .reset_index(drop=True)
            for p in data.point_ids
        ]
        for other in arrivals[1:]:
            pd.testing.assert_frame_equal(arrivals[0], other)
    r0 = data.run(0, 0).requests["arrival_time"]
    r1 = data.run(0, 1).requests["arrival_time"]
    assert len(r0) != len(r1) or not (r0.to_numpy() == r1.to_numpy()).all()


def test_the_results_folder(tmp_path: Path) -> None:
    path = write(tmp_path)
    spec = read_experiment(path)
    outcome = run_experiment(spec, tmp_path / "out", workers=1)
    out = tmp_path / "out"
    assert outcome.ok and (outcome.total, outcome.done, outcome.skipped) == (8, 8, 0)
    for name in (
        "experiment.toml",
        "experiment.json",
        "manifest.json",
        "summary.parquet",
        "summary.csv",
        "points.parquet",
        "points.csv",
    ):
        assert (out / name).is_file(), name
    assert (out / "experiment.toml").read_text() == EXPERIMENT
    data = load_experiment(out)
    assert data.manifest["status"] == "complete"
    assert data.manifest["runs_done"] == 8
    assert data.spec["seeds"] == [11, 12]
    assert data.axes == ["policy", "error_rate"]
    run_dir = out / "runs" / "p001-policy=naive-error_rate=0.1" / "rep-1"
    assert (run_dir / "manifest.json").is_file()
    assert sorted(p.name for p in run_dir.glob("*.parquet")) == [
        "events.parquet",
        "timeseries.parquet",
    ]
    s = data.summary
    assert len(s) == 8
    assert list(s.columns[:5]) == ["point_id", "policy", "error_rate", "replication", "seed"]
    assert {
        "success_rate",
        "feature.chat.billed_cost",
        "incident.0.metastable",
        "outcomes.ok",
    } <= set(s.columns)
    assert s["error_rate"].dtype.kind == "f"
    assert s.loc[s["replication"] == 1, "seed"].unique().tolist() == [12]
    csv = pd.read_csv(out / "summary.csv")
    assert len(csv) == 8 and list(csv.columns) == list(s.columns)
    pts = data.points
    assert len(pts[pts["metric"] == "success_rate"]) == 4
    assert (pts["n"] == 2).all() or (pts["n"] <= 2).all()
    means = data.point_means(["success_rate"])
    assert len(means) == 4
    # Axis columns avoid the summary's own column names; the list of those stays complete.
    summary = data.run("p000", 0).summary
    scalars = {k for k, v in summary.items() if not isinstance(v, dict | list)}
    assert scalars <= RESERVED_COLUMNS, scalars - RESERVED_COLUMNS
    # One run opens as llmtraffic.load does; the experiment folder itself does not.
    assert data.run("p001", 1).summary["seed"] == 12
    with pytest.raises(llmtraffic.LLMTrafficError, match="load_experiment"):
        llmtraffic.load(out)


def test_a_failed_run_is_reported_and_retried_on_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path)
    real = llmtraffic.run_to_folder

    def flaky(scenario: Any, folder: Any = None, **kw: Any) -> Any:
        if "p002" in str(folder) and kw.get("seed") == 12:
            raise RuntimeError("provider exploded")
        return real(scenario, folder, **kw)

    monkeypatch.setattr(execute_module, "run_to_folder", flaky)
    assert main(["run", "exp.toml", "--out", "out", "--workers", "1"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "7 run now, 0 already done, 1 failed" in out
    failed = "failed p002-policy=backoff-error_rate=0.01/rep-1: RuntimeError: provider exploded"
    assert failed in out
    error = tmp_path / "out/runs/p002-policy=backoff-error_rate=0.01/rep-1.error.txt"
    assert "Traceback" in error.read_text() and "provider exploded" in error.read_text()
    data = load_experiment("out")
    assert data.manifest["status"] == "failed" and data.manifest["runs_failed"] == 1
    assert len(data.summary) == 7
    assert list(data.failures()) == ["p002-policy=backoff-error_rate=0.01/rep-1"]

    monkeypatch.setattr(execute_module, "run_to_folder", real)
    assert main(["run", "exp.toml", "--out", "out", "--workers", "1", "-q"]) == 0
    assert "8 runs: 1 run now, 7 already done" in " ".join(capsys.readouterr().out.split())
    assert not error.exists()
    assert len(load_experiment("out").summary) == 8


def test_force_reruns_everything_and_a_changed_grid_runs_only_what_is_new(
    tmp_path: Path,
) -> None:
    path = write(tmp_path)
    out = tmp_path / "out"
    run_experiment(read_experiment(path), out, workers=1)
    first = (out / "runs/p000-policy=naive-error_rate=0.01/rep-0/summary.json").stat().st_mtime_ns
    again = run_experiment(read_experiment(path), out, workers=1)
    assert (again.done, again.skipped) == (0, 8)
    # A third error rate adds two points; the four old ones keep their ids and results.
    grown = read_experiment(path, ["sweep.providers.main.failures.error_rate=[0.01, 0.1, 0.2]"])
    assert grown.points[0].id == "p000-policy=naive-error_rate=0.01"
    more = run_experiment(grown, out, workers=1)
    assert (more.total, more.done, more.skipped) == (12, 4, 8)
    forced = run_experiment(read_experiment(path), out, workers=1, force=True)
    assert (forced.done, forced.skipped) == (8, 0)
    after = (out / "runs/p000-policy=naive-error_rate=0.01/rep-0/summary.json").stat().st_mtime_ns
    assert after > first
    assert len(load_experiment(out).summary) == 8


def test_the_same_summary_from_one_process_and_from_worker_processes(tmp_path: Path) -> None:
    spec = read_experiment(write(tmp_path))
    run_experiment(spec, tmp_path / "one", workers=1)
    outcome = run_experiment(spec, tmp_path / "two", workers=2)
    assert outcome.ok and outcome.done == 8
    assert load_experiment(tmp_path / "two").manifest["executor"] == "2 local processes"
    pd.testing.assert_frame_equal(
        comparable(load_experiment(tmp_path / "one").summary),
        comparable(load_experiment(tmp_path / "two").summary),
    )


def test_a_dask_local_cluster_gives_the_same_summary_as_local_processes(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    spec = read_experiment(write(tmp_path), ["experiment.replications=1"])
    local = run_experiment(spec, tmp_path / "local", workers=2)
    dask = run_experiment(spec, tmp_path / "dask", workers=2, dask="local")
    assert local.ok and dask.ok and dask.done == 4
    data = load_experiment(tmp_path / "dask")
    assert data.manifest["executor"] == "dask local"
    pd.testing.assert_frame_equal(
        comparable(load_experiment(tmp_path / "local").summary), comparable(data.summary)
    )
    # Run folders came back from the workers whole.
    for pid in data.point_ids:
        assert (tmp_path / "dask/runs" / pid / "rep-0/timeseries.parquet").is_file()


def complete_runs(out: Path) -> dict[Path, tuple[int, int]]:
    """The finished run folders, each with its summary's inode and modification time."""
    found = {}
    for manifest in sorted(out.glob("runs/*/rep-*/manifest.json")):
        st = (manifest.parent / "summary.json").stat()
        found[manifest.parent] = (st.st_ino, st.st_mtime_ns)
    return found


def test_resume_after_a_kill_loses_no_finished_run_and_redoes_none(tmp_path: Path) -> None:
    # Sixteen runs in one process, killed (SIGKILL: no cleanup at all) once a few are done.
    path = write(tmp_path, EXPERIMENT.replace("replications = 2", "replications = 4"))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "llmtraffic.cli",
        "run",
        str(path),
        "--out",
        str(out),
        "--workers",
        "1",
        "-q",
    ]
    # The installed package (editable or compiled), as the user's command would use it.
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while len(complete_runs(out)) < 3:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the sweep made no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
    before = complete_runs(out)
    assert 3 <= len(before) < 16, "kill the sweep midway"
    assert not (out / "summary.parquet").exists() or len(before) < 16

    outcome = run_experiment(read_experiment(path), out, workers=1)
    assert outcome.ok
    assert outcome.skipped == len(before)  # nothing finished was redone ...
    assert outcome.done == 16 - len(before)  # ... and everything else was run once
    after = complete_runs(out)
    assert len(after) == 16
    for folder, stamp in before.items():
        assert after[folder] == stamp, f"{folder} was rewritten"
    assert not list(out.glob("runs/*/.rep-*"))  # no half-written folders left
    assert len(load_experiment(out).summary) == 16


# --- workers, Dask addresses ----------------------------------------------------------------


def test_no_more_workers_than_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = read_experiment(write(tmp_path), ["experiment.replications=1"])  # four runs
    started: list[int] = []

    def pool(tasks: list[Any], workers: int) -> Any:
        started.append(workers)
        return (execute_module.execute_task(t) for t in tasks)

    monkeypatch.setattr(execute_module, "_pool_results", pool)
    outcome = run_experiment(spec, tmp_path / "out", workers=1000)
    assert outcome.ok and started == [4]
    assert load_experiment(tmp_path / "out").manifest["executor"] == "4 local processes"
    assert execute_module.worker_count(None, 1) == 1  # the CPU count, capped
    assert execute_module.worker_count(3, 0) == 1


def test_a_dask_local_cluster_has_no_more_workers_than_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = read_experiment(write(tmp_path), ["experiment.replications=1"])
    asked: list[tuple[str, int]] = []

    class Session:
        def __init__(self, address: str, workers: int) -> None:
            asked.append((address, workers))

        def results(self, tasks: list[Any]) -> Any:
            return (execute_module.execute_task(t, True) for t in tasks)

        def close(self) -> None:
            pass

    monkeypatch.setattr(execute_module, "DaskSession", Session)
    assert run_experiment(spec, tmp_path / "out", workers=1000, dask="local").ok
    assert asked == [("local", 4)]


@pytest.mark.parametrize("address", ["not an address", "http://host:8786", "tcp://host:99999"])
def test_a_dask_address_that_is_not_one_is_bad_input(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    address: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path)
    assert main(["run", "exp.toml", "-q", "--out", "out", "--dask", address]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--dask '{address}'" in err and ("tcp://HOST:PORT" in err or "port" in err)
    assert "connecting" not in err
    assert not (tmp_path / "out").exists()


def test_an_unreachable_dask_scheduler_is_announced_and_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("distributed")
    monkeypatch.chdir(tmp_path)
    write(tmp_path)
    started = time.monotonic()
    assert main(["run", "exp.toml", "-q", "--out", "out", "--dask", "tcp://127.0.0.1:1"]) == 2
    assert time.monotonic() - started < 5  # a refused port fails at once
    err = " ".join(capsys.readouterr().err.split())
    assert err.index("connecting to the Dask scheduler at tcp://127.0.0.1:1") < err.index("error:")
    assert "(giving up after 10 s)" in err and "connection refused" in err
    assert "leave --dask out" in err
    assert not (tmp_path / "out").exists()  # connected before the folder is touched
    assert list(tmp_path.iterdir()) == [tmp_path / "exp.toml"]


def test_a_dask_scheduler_that_never_answers_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("distributed")
    import socket

    monkeypatch.chdir(tmp_path)
    write(tmp_path)
    monkeypatch.setattr(execute_module, "DASK_CONNECT_TIMEOUT", 1.0)
    # A port that accepts connections (the kernel's backlog) but never speaks Dask.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        assert main(["run", "exp.toml", "-q", "--out", "out", "--dask", address]) == 2
        assert time.monotonic() - started < 20
    err = " ".join(capsys.readouterr().err.split())
    assert f"--dask {address}: no Dask scheduler answered within 1 s" in err


def test_run_experiment_raises_when_every_run_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From Python, an experiment whose every run failed raises (it returned an Outcome with
    done = 0, and the next line failed with a KeyError); the CLI lists the failures instead."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path)

    def broken(*_args: Any, **_kw: Any) -> Any:
        raise RuntimeError("provider exploded")

    monkeypatch.setattr(execute_module, "run_to_folder", broken)
    spec = llmtraffic.read_experiment("exp.toml")
    with pytest.raises(execute_module.ExperimentFailedError) as info:
        llmtraffic.run_experiment(spec, "out", workers=1)
    assert "all 8 runs failed" in str(info.value) and "provider exploded" in str(info.value)
    assert info.value.outcome.done == 0 and len(info.value.outcome.failed) == 8
    outcome = llmtraffic.run_experiment(spec, "out", workers=1, raise_on_failure=False)
    assert outcome.done == 0 and len(outcome.failed) == 8
    assert main(["run", "exp.toml", "--out", "out", "--workers", "1", "-q"]) == 1


UNGUARDED = """\
import llmtraffic

spec = llmtraffic.read_experiment("exp.toml")
outcome = llmtraffic.run_experiment(spec, "out", workers=2)
print("finished", outcome.done)
"""


def test_a_script_without_a_main_guard_fails_at_once_saying_so(tmp_path: Path) -> None:
    """Every worker process imports the script; without the guard each one ran the experiment
    again and died, and run_experiment returned done = 0 without raising."""
    write(tmp_path)
    (tmp_path / "script.py").write_text(UNGUARDED, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and "finished" not in proc.stdout
    assert "WorkersDidNotStartError" in proc.stderr
    assert 'under `if __name__ == "__main__":`' in proc.stderr and "script.py" in proc.stderr
    guarded = (
        UNGUARDED.replace("spec =", 'if __name__ == "__main__":\n    spec =')
        .replace("\noutcome", "\n    outcome")
        .replace('\nprint("finished"', '\n    print("finished"')
    )
    (tmp_path / "script.py").write_text(guarded, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "finished 8" in proc.stdout


def test_load_experiment_names_a_truncated_table(tmp_path: Path) -> None:
    """The Python API, like the reading commands, names a damaged table and the fix (it
    raised pyarrow's own error)."""
    from llmtraffic.results.jsonio import ResultFileError

    write(tmp_path)
    spec = read_experiment(tmp_path / "exp.toml", ["experiment.replications=1"])
    run_experiment(spec, tmp_path / "out", workers=1)
    table = tmp_path / "out" / "summary.parquet"
    table.write_bytes(table.read_bytes()[:200])
    data = load_experiment(tmp_path / "out")
    with pytest.raises(ResultFileError, match=r"summary\.parquet is not a readable Parquet"):
        _ = data.summary
