"""Running an experiment's runs: in this process, in local worker processes, or on a Dask
distributed cluster.

A run travels to its worker as plain data (the point's scenario as a dict, its seed and its
folder) and is rebuilt there, so it works with any process start method and on machines that
share nothing but the installed package. Local workers write their run folders directly; a
Dask worker runs into a temporary folder and sends the files back, so a cluster needs no
shared file system (with ``records = "all"`` that can be a lot of data: prefer
``"timeseries"`` for big sweeps on a cluster).

A run that raises is reported with its traceback and the others go on. The folder is locked
while the experiment runs (a second writer is refused); an interruption (Ctrl-C, SIGTERM)
stops the workers, keeps the finished runs and marks the manifest "interrupted"; local
workers die with the command even when it is killed outright.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import multiprocessing
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmtraffic.client.plugins import Allowance, allowed_plugins, current_allowance
from llmtraffic.config.loader import scenario_from_dict
from llmtraffic.errors import LLMTrafficError
from llmtraffic.experiment.spec import ExperimentSpec, Run, toml_literal
from llmtraffic.experiment.store import ExperimentStore, experiment_manifest
from llmtraffic.runner import run_to_folder


@dataclass(frozen=True)
class Task:
    """What a worker needs to do one run: plain, picklable data."""

    key: str
    raw: dict[str, Any]
    base_dir: str
    seed: int
    folder: str | None
    overrides: tuple[str, ...]
    # The plugin modules the user allowed (None: all, as in the Python API). A worker process
    # starts with no allowance of its own, so the task carries the command's.
    plugins: Allowance = None


@dataclass
class TaskResult:
    """What comes back from a worker: the summary, or the traceback of the failure; and, from
    a Dask worker, the run folder's files."""

    key: str
    summary: dict[str, Any] | None = None
    error: str | None = None
    files: dict[str, bytes] | None = None
    wall_s: float = 0.0


def execute_task(task: Task, ship_files: bool = False) -> TaskResult:
    """Run one task (in a worker). Never raises for a failed run: the traceback comes back.

    Interrupted in a local worker process (SIGTERM, Ctrl-C), the run's half-written folder is
    removed as the interruption unwinds, and the worker process exits.
    """
    global _RUNNING
    _RUNNING = True
    try:
        return _execute(task, ship_files)
    except KeyboardInterrupt:
        if _IN_WORKER:
            os._exit(1)
        raise
    finally:
        _RUNNING = False


def _execute(task: Task, ship_files: bool) -> TaskResult:
    with allowed_plugins(task.plugins):
        return _execute_allowed(task, ship_files)


def _execute_allowed(task: Task, ship_files: bool) -> TaskResult:
    t0 = time.perf_counter()
    try:
        scenario = scenario_from_dict(task.raw, base_dir=task.base_dir)
        if ship_files:
            with tempfile.TemporaryDirectory(prefix="llmtraffic-") as tmp:
                folder, result = run_to_folder(
                    scenario, Path(tmp) / "run", seed=task.seed, overrides=list(task.overrides)
                )
                files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
            return TaskResult(
                task.key, result.summary, files=files, wall_s=time.perf_counter() - t0
            )
        assert task.folder is not None
        _, result = run_to_folder(
            scenario,
            Path(task.folder),
            seed=task.seed,
            force=True,  # a stale folder (other config) is replaced only once the new one is done
            overrides=list(task.overrides),
        )
        return TaskResult(task.key, result.summary, wall_s=time.perf_counter() - t0)
    except Exception:
        return TaskResult(task.key, error=traceback.format_exc(), wall_s=time.perf_counter() - t0)


def _every(n: int) -> str:
    """The subject of "... failed" for all ``n`` runs of an experiment."""
    return "the only run" if n == 1 else f"all {n:,} runs"


def _key(run: Run) -> str:
    return f"{run.point.id}/rep-{run.replication}"


def make_task(spec: ExperimentSpec, store: ExperimentStore, run: Run, ship: bool) -> Task:
    """The task of one run."""
    folder = None if ship else str(store.run_dir(run.point.id, run.replication))
    overrides = tuple(f"{path}={toml_literal(v)}" for path, v in run.point.values.items())
    return Task(
        _key(run),
        run.point.raw,
        str(spec.base_dir),
        run.seed,
        folder,
        overrides,
        current_allowance(),
    )


@dataclass
class Outcome:
    """How an experiment run went."""

    folder: Path
    total: int
    skipped: int
    done: int
    failed: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    status: str = "complete"

    @property
    def ok(self) -> bool:
        """True when every run of the grid has finished."""
        return not self.failed and self.status == "complete"


ProgressHook = Callable[[int, int, int], None]
"""Called with (finished, total, failed) as runs finish (skipped runs count as finished)."""

GUARD_FIX = (
    'put the lines that run the experiment under `if __name__ == "__main__":` (every worker '
    "process imports your script, and must not run it again), or pass workers=1"
)


class ExperimentFailedError(RuntimeError):
    """Every run an experiment started failed (``run_experiment`` raises it unless told not
    to): the outcome holds each run's traceback, also written beside the runs."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class WorkersDidNotStartError(RuntimeError):
    """The worker processes died before any run finished: most often, a script without a
    ``__main__`` guard that every worker runs again as it starts."""


def _main_script() -> str | None:
    """The script multiprocessing makes every worker import again, if there is one."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return str(path) if path and str(path).endswith(".py") else None


def run_experiment(
    spec: ExperimentSpec,
    folder: str | Path | None = None,
    *,
    workers: int | None = None,
    dask: str | None = None,
    force: bool = False,
    progress: ProgressHook | None = None,
    raise_on_failure: bool = True,
) -> Outcome:
    """Run every run of ``spec`` that is not done yet and write the experiment's folder.

    ``workers``: local worker processes (default: the CPU count; 1 runs in this process).
    ``dask``: a scheduler address, or ``"local"`` for a LocalCluster of ``workers`` processes.
    ``force``: rerun everything. Returns the counts; the tables are in the folder.
    When every run it started failed, raises ``ExperimentFailedError`` (with the outcome)
    unless ``raise_on_failure`` is false; some failed runs are in ``Outcome.failed``. From a
    script, the call must sit under ``if __name__ == "__main__":`` when it uses worker
    processes (they import the script); without the guard it fails at once, saying so.
    """
    from llmtraffic.experiment.store import default_folder

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # A worker process is importing the user's script, which calls us again: stop it
        # here (the parent sees its workers fail to start and says why).
        raise WorkersDidNotStartError(f"run_experiment called while a worker starts: {GUARD_FIX}")

    if dask is not None:
        check_dask_address(dask)
    store = ExperimentStore(Path(folder) if folder is not None else default_folder(spec))
    with store.lock():
        outcome = _run_locked(spec, store, workers, dask, force, progress)
    if raise_on_failure and outcome.failed and outcome.done == 0:
        first = next(iter(outcome.failed.values())).strip().splitlines() or ["?"]
        raise ExperimentFailedError(
            outcome,
            f"{_every(len(outcome.failed))} failed; the first: {first[-1]} (tracebacks in "
            f"{outcome.folder / 'runs'}, one .error.txt per run)",
        )
    return outcome


def _run_locked(
    spec: ExperimentSpec,
    store: ExperimentStore,
    workers: int | None,
    dask: str | None,
    force: bool,
    progress: ProgressHook | None,
) -> Outcome:
    """``run_experiment``'s work, once this process holds the folder's lock."""
    # A remote scheduler is reached before the folder is touched: an unreachable one is bad
    # input and leaves nothing behind. (A local cluster is sized by the runs left to do.)
    remote = DaskSession(dask, 0) if dask is not None and dask != "local" else None
    try:
        return _prepared(spec, store, workers, dask, force, progress, remote)
    finally:
        if remote is not None:
            remote.close()


def _prepared(
    spec: ExperimentSpec,
    store: ExperimentStore,
    workers: int | None,
    dask: str | None,
    force: bool,
    progress: ProgressHook | None,
    remote: DaskSession | None,
) -> Outcome:
    """Prepare the folder, then run what is not done yet."""
    store.prepare(spec, force=force)
    store.adopt(spec)
    runs = spec.runs()
    todo = [r for r in runs if not store.is_done(r)]
    # No more workers than runs to do: each one costs a process and its memory.
    n_workers = worker_count(workers, len(todo))
    executor = (
        f"dask {dask}"
        if dask
        else ("this process" if n_workers == 1 else f"{n_workers} local processes")
    )
    outcome = Outcome(store.folder, total=len(runs), skipped=len(runs) - len(todo), done=0)
    local = DaskSession(dask, n_workers) if dask == "local" and todo else None
    try:
        session = remote if remote is not None and todo else local
        return _run_tasks(spec, store, todo, outcome, executor, n_workers, session, progress)
    finally:
        if local is not None:
            local.close()


def _run_tasks(
    spec: ExperimentSpec,
    store: ExperimentStore,
    todo: list[Run],
    outcome: Outcome,
    executor: str,
    n_workers: int,
    session: DaskSession | None,
    progress: ProgressHook | None,
) -> Outcome:
    """Run ``todo`` and keep the manifest and the tables up to date (also when interrupted)."""
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    by_key = {_key(r): r for r in todo}

    def counts() -> dict[str, int]:
        return {
            "total": outcome.total,
            "skipped": outcome.skipped,
            "done": outcome.done,
            "failed": len(outcome.failed),
        }

    store.write_manifest(experiment_manifest(spec, started, 0.0, "running", counts(), executor))
    if progress is not None:
        progress(outcome.skipped, outcome.total, 0)
    ship = session is not None
    tasks = [make_task(spec, store, r, ship) for r in todo]
    try:
        if session is not None:
            results = session.results(tasks)
        elif n_workers == 1 or len(tasks) <= 1:
            results = (execute_task(t) for t in tasks)
        else:
            results = _pool_results(tasks, n_workers)
        for res in results:
            run = by_key[res.key]
            if res.error is None and res.files is not None:
                try:
                    store.write_run_files(run, res.files)
                except OSError:
                    res.error = traceback.format_exc()
            if res.error is None:
                store.clear_failure(run)
                outcome.done += 1
            else:
                store.record_failure(run, res.error)
                outcome.failed[res.key] = res.error
            if progress is not None:
                progress(
                    outcome.skipped + outcome.done + len(outcome.failed),
                    outcome.total,
                    len(outcome.failed),
                )
        outcome.status = "failed" if outcome.failed else "complete"
    except WorkersDidNotStartError:
        outcome.status = "failed"
        raise
    except BaseException:
        outcome.status = "interrupted"
        raise
    finally:
        outcome.wall_s = time.perf_counter() - t0
        # The tables are written even after an interruption: they then hold the finished runs.
        store.remove_stale_locks()
        store.collect(spec)
        store.write_manifest(
            experiment_manifest(spec, started, outcome.wall_s, outcome.status, counts(), executor)
        )
    return outcome


def _mp_context() -> multiprocessing.context.BaseContext:
    """A start method that does not copy this process's state (threads, open files) into the
    workers: forkserver where there is one (fast: the server has imported the simulator once),
    else spawn."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["llmtraffic.experiment.execute"])
        return ctx
    return multiprocessing.get_context("spawn")


def _pool_results(tasks: list[Task], workers: int) -> Iterator[TaskResult]:
    """Results from a pool of local processes, as they finish.

    Interrupted (Ctrl-C, SIGTERM), the pool does not wait for its runs to end: queued runs are
    cancelled and the workers are asked to stop (SIGTERM: each removes its half-written folder
    and exits), then joined.
    """
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)),
        mp_context=_mp_context(),
        initializer=_worker_init,
        initargs=(os.getpid(),),
    ) as pool:
        futures: dict[Future[TaskResult], Task] = {pool.submit(execute_task, t): t for t in tasks}
        finished = 0
        try:
            for fut in as_completed(futures):
                if not finished and isinstance(fut.exception(), BrokenProcessPool):
                    # No worker got as far as a run: every other run would fail the same way.
                    raise WorkersDidNotStartError(_no_workers_message(fut))
                finished += 1
                yield _result_of(fut, futures[fut])
        except BaseException:
            for fut in futures:
                fut.cancel()
            # ProcessPoolExecutor has no public way to stop its workers before Python 3.14.
            processes: dict[int, Any] = getattr(pool, "_processes", None) or {}
            for proc in list(processes.values()):
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    proc.terminate()
            raise


def _no_workers_message(fut: Future[TaskResult]) -> str:
    """Why the pool broke before any run finished, with the fix."""
    script = _main_script()
    if script is not None:
        return (
            f"the worker processes stopped as they started: each one imports {script}, "
            f"which runs the experiment again; {GUARD_FIX}"
        )
    return f"the worker processes stopped before any run finished ({fut.exception()})"


_IN_WORKER = False
"""True in a local worker process (set by ``_worker_init``)."""

_RUNNING = False
"""True while ``execute_task`` runs (a stop signal then unwinds the run before exiting)."""

WATCHDOG_INTERVAL = 0.5
"""Seconds between a worker's checks that the command that started it is still alive."""


def _worker_init(parent_pid: int) -> None:
    """Make a local worker die with the command that started it.

    The workers are children of the forkserver, not of the command, so the command's death
    alone would leave them running their queued runs for minutes. Three guards: SIGTERM stops
    the worker like Ctrl-C (its half-written folder is removed) and ends the process; on
    Linux, the kernel sends SIGTERM when the worker's parent (the forkserver, which exits with
    the command) dies; and a watchdog thread checks every ``WATCHDOG_INTERVAL`` s that the
    command's pid is alive, on every platform.
    """
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGTERM, _stop_worker)
    signal.signal(signal.SIGINT, _stop_worker)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            pr_set_pdeathsig = 1
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="llmtraffic-watchdog", daemon=True
    ).start()


def _stop_worker(signum: int, frame: object) -> None:
    """SIGTERM or SIGINT in a worker: unwind the run in progress (``execute_task`` then exits
    the process), or exit at once when idle."""
    if _RUNNING:
        raise KeyboardInterrupt(f"signal {signum}")
    os._exit(1)


def _watch_parent(parent_pid: int) -> None:
    """Stop this worker once the command is gone: SIGTERM first (clean: the run's partial
    folder is removed), then a hard exit if the main thread does not stop within 5 s."""
    while _process_alive(parent_pid):
        time.sleep(WATCHDOG_INTERVAL)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5.0)
    os._exit(1)


def _process_alive(pid: int) -> bool:
    """True while ``pid`` runs. A killed process stays a zombie until its own parent reaps
    it (a shell at once, a script perhaps never); on Linux a zombie counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        from llmtraffic.results.folders import pid_alive

        return pid_alive(pid)
    return state not in ("Z", "X")


def _result_of(fut: Future[TaskResult], task: Task) -> TaskResult:
    """A future's result; a worker that died (killed, out of memory) is this run's failure."""
    try:
        return fut.result()
    except Exception:
        return TaskResult(task.key, error=traceback.format_exc())


def worker_count(requested: int | None, runs: int) -> int:
    """Worker processes for ``runs`` runs: as requested (default: the CPU count), never more
    than the runs, at least one."""
    wanted = requested if requested is not None else (os.cpu_count() or 1)
    return max(1, min(wanted, runs))


DASK_CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a Dask scheduler before giving up with a clear error."""

_DASK_ADDRESS = re.compile(
    r"(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+)"
    r"(?::(?P<port>\d{1,5}))?"
)
_DASK_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")


def check_dask_address(address: str) -> None:
    """Refuse what cannot be a Dask scheduler address (``local``, or ``[scheme://]host[:port]``)
    before anything runs."""
    if address == "local":
        return
    m = _DASK_ADDRESS.fullmatch(address)
    scheme = m["scheme"] if m else None
    if m is None or (scheme is not None and scheme not in _DASK_SCHEMES):
        raise LLMTrafficError(
            f"--dask {address!r}: not a scheduler address; give tcp://HOST:PORT (for example "
            "tcp://10.0.0.5:8786), or 'local' to start a cluster on this machine"
        )
    if m["port"] is not None and not 0 < int(m["port"]) < 65536:
        raise LLMTrafficError(f"--dask {address!r}: the port must be 1 to 65535")


class DaskSession:
    """A Dask client for one experiment run: a LocalCluster started for it (``"local"``), or a
    connection to a scheduler, given up after ``DASK_CONNECT_TIMEOUT`` seconds."""

    def __init__(self, address: str, workers: int) -> None:
        try:
            # Imported as a plain module object: distributed's own annotations are partial.
            self.distributed: Any = importlib.import_module("distributed")
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise LLMTrafficError(
                "--dask needs the 'distributed' package: pip install 'llmtraffic[dask]'"
            ) from None
        self.cluster: Any = None
        if address == "local":
            self.cluster = self.distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self.client: Any = self.distributed.Client(self.cluster)
            return
        _refused_fast(address)
        self.client = self._connect(address)

    def _connect(self, address: str) -> Any:
        """A client of the scheduler at ``address``, or an error after the timeout. Dask's own
        timeout covers the TCP connection, not the handshake: a port that accepts and never
        answers (not a Dask scheduler) would block forever, so the connection is made in a
        thread and given up on after the timeout plus a grace second."""
        box: dict[str, Any] = {}

        def connect() -> None:
            try:
                box["client"] = self.distributed.Client(address, timeout=DASK_CONNECT_TIMEOUT)
            except Exception as exc:  # reported by the waiting thread
                box["error"] = exc

        thread = threading.Thread(target=connect, name="llmtraffic-dask-connect", daemon=True)
        thread.start()
        thread.join(DASK_CONNECT_TIMEOUT + 1.0)
        if "client" in box:
            return box["client"]
        reason = f" ({box['error']})" if "error" in box else ""
        raise LLMTrafficError(
            f"--dask {address}: no Dask scheduler answered within "
            f"{DASK_CONNECT_TIMEOUT:g} s{reason}; check the address and that the scheduler "
            "is running, or leave --dask out to run on local processes"
        )

    def results(self, tasks: list[Task]) -> Iterator[TaskResult]:
        """Results of ``tasks`` as they finish (a run's files come back with it)."""
        futures = [
            self.client.submit(
                execute_task, t, True, key=f"llmtraffic-{t.key}-{os.getpid()}", pure=False
            )
            for t in tasks
        ]
        by_future = dict(zip(futures, tasks, strict=True))
        try:
            for fut in self.distributed.as_completed(futures):
                task = by_future[fut]
                try:
                    yield fut.result()
                except Exception:
                    yield TaskResult(task.key, error=traceback.format_exc())
        except BaseException:
            self.client.cancel(futures)
            raise

    def close(self) -> None:
        """Close the client, and the cluster when it was started here."""
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


def _refused_fast(address: str) -> None:
    """A TCP scheduler address whose port refuses connections fails at once, rather than after
    Dask's whole connection timeout (Dask retries refused connections until it expires)."""
    m = _DASK_ADDRESS.fullmatch(address)
    if m is None or m["scheme"] not in (None, "tcp") or m["port"] is None:
        return
    host = m["host"].strip("[]")
    try:
        with socket.create_connection((host, int(m["port"])), timeout=DASK_CONNECT_TIMEOUT):
            return
    except ConnectionRefusedError:
        reason = "connection refused"
    except TimeoutError:
        reason = f"no answer within {DASK_CONNECT_TIMEOUT:g} s"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise LLMTrafficError(
        f"--dask {address}: cannot reach a Dask scheduler ({reason}); check the address and "
        "that the scheduler is running, or leave --dask out to run on local processes"
    )
