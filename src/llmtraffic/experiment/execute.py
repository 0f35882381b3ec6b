"""Running an experiment's runs: in this process, in local worker processes, or on a Dask
distributed cluster.

A run travels to its worker as plain data (the point's scenario as a dict, its seed and its
folder) and is rebuilt there, so it works with any process start method and on machines that
share nothing but the installed package. Local workers write their run folders directly; a
Dask worker runs into a temporary folder and sends the files back, so a cluster needs no
shared file system (with ``records = "all"`` that can be a lot of data: prefer
``"timeseries"`` for big sweeps on a cluster).

A run that raises is reported with its traceback and the others go on.
"""

from __future__ import annotations

import datetime as dt
import importlib
import multiprocessing
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmtraffic.config.loader import scenario_from_dict
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
    """Run one task (in a worker). Never raises for a failed run: the traceback comes back."""
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


def _key(run: Run) -> str:
    return f"{run.point.id}/rep-{run.replication}"


def make_task(spec: ExperimentSpec, store: ExperimentStore, run: Run, ship: bool) -> Task:
    """The task of one run."""
    folder = None if ship else str(store.run_dir(run.point.id, run.replication))
    overrides = tuple(f"{path}={toml_literal(v)}" for path, v in run.point.values.items())
    return Task(_key(run), run.point.raw, str(spec.base_dir), run.seed, folder, overrides)


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


def run_experiment(
    spec: ExperimentSpec,
    folder: str | Path | None = None,
    *,
    workers: int | None = None,
    dask: str | None = None,
    force: bool = False,
    progress: ProgressHook | None = None,
) -> Outcome:
    """Run every run of ``spec`` that is not done yet and write the experiment's folder.

    ``workers``: local worker processes (default: the CPU count; 1 runs in this process).
    ``dask``: a scheduler address, or ``"local"`` for a LocalCluster of ``workers`` processes.
    ``force``: rerun everything. Returns the counts; the tables are in the folder.
    """
    from llmtraffic.experiment.store import default_folder

    store = ExperimentStore(Path(folder) if folder is not None else default_folder(spec))
    store.prepare(spec, force=force)
    store.adopt(spec)
    runs = spec.runs()
    todo = [r for r in runs if not store.is_done(r)]
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    executor = (
        f"dask {dask}"
        if dask
        else ("this process" if n_workers == 1 else f"{n_workers} local processes")
    )
    outcome = Outcome(store.folder, total=len(runs), skipped=len(runs) - len(todo), done=0)
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
    ship = dask is not None
    tasks = [make_task(spec, store, r, ship) for r in todo]
    try:
        if dask is not None:
            results = _dask_results(tasks, dask, n_workers)
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
    except BaseException:
        outcome.status = "interrupted"
        raise
    finally:
        outcome.wall_s = time.perf_counter() - t0
        # The tables are written even after an interruption: they then hold the finished runs.
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
    """Results from a pool of local processes, as they finish."""
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=_mp_context()
    ) as pool:
        futures: dict[Future[TaskResult], Task] = {pool.submit(execute_task, t): t for t in tasks}
        try:
            for fut in as_completed(futures):
                yield _result_of(fut, futures[fut])
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _result_of(fut: Future[TaskResult], task: Task) -> TaskResult:
    """A future's result; a worker that died (killed, out of memory) is this run's failure."""
    try:
        return fut.result()
    except Exception:
        return TaskResult(task.key, error=traceback.format_exc())


def _dask_results(tasks: list[Task], address: str, workers: int) -> Iterator[TaskResult]:
    """Results from a Dask cluster (``"local"``: a LocalCluster started for this run)."""
    try:
        # Imported as a plain module object: distributed's own annotations are partial.
        distributed: Any = importlib.import_module("distributed")
    except ImportError:  # pragma: no cover - depends on the installed extras
        from llmtraffic.errors import LLMTrafficError

        raise LLMTrafficError(
            "--dask needs the 'distributed' package: pip install 'llmtraffic[dask]'"
        ) from None
    cluster = None
    if address == "local":
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = distributed.Client(cluster)
    else:
        client = distributed.Client(address)
    try:
        futures = [
            client.submit(
                execute_task, t, True, key=f"llmtraffic-{t.key}-{os.getpid()}", pure=False
            )
            for t in tasks
        ]
        by_future = dict(zip(futures, tasks, strict=True))
        for fut in distributed.as_completed(futures):
            task = by_future[fut]
            try:
                yield fut.result()
            except Exception:
                yield TaskResult(task.key, error=traceback.format_exc())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
