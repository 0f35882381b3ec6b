"""The experiment side of the command line: ``run`` on a sweep, ``compare``, ``plot`` and
``report``. ``llmtraffic.cli`` registers these; exit codes are the CLI's (0 ok, 1 a run
failed, 2 bad input)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from llmtraffic.config.loader import read_toml
from llmtraffic.errors import LLMTrafficError
from llmtraffic.wording import counted

EXIT_OK, EXIT_FAILED = 0, 1


def is_experiment_file(path: str | Path) -> bool:
    """True when a config file has an experiment table, so that it runs as an experiment."""
    from llmtraffic.experiment.spec import is_experiment

    return is_experiment(read_toml(path))


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of ``run`` that only experiments use."""
    g = p.add_argument_group("experiments (a file with [experiment], [sweep] or [[check]] tables)")
    g.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help=f"local worker processes (default: the CPU count, {os.cpu_count()}; 1 runs in "
        "this process)",
    )
    g.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run on a Dask distributed scheduler (tcp://host:8786), or 'local' to start a "
        "LocalCluster of --workers processes; needs pip install 'llmtraffic[dask]'",
    )


def runs_progress(
    err: Console, total: int, quiet: bool
) -> tuple[Progress | None, Callable[[int, int, int], None] | None]:
    """A started progress bar of runs (done of total, failed, elapsed, eta) on ``err`` and the
    hook that moves it; none with ``quiet`` or when ``err`` is not a terminal (a CI log)."""
    if quiet or not err.is_terminal:
        return None, None
    bar = Progress(
        TextColumn("runs"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task("runs", total=total, failed="")

    def hook(done: int, total: int, failed: int) -> None:
        bar.update(task, completed=done, failed=f"[red]{failed} failed[/red]" if failed else "")

    bar.start()
    return bar, hook


def cmd_run_experiment(args: argparse.Namespace, console: Console) -> int:
    """Run every run of an experiment that is not done yet; print the points table."""
    from llmtraffic.client.plugins import check_plugins
    from llmtraffic.experiment.execute import (
        DASK_CONNECT_TIMEOUT,
        check_dask_address,
        run_experiment,
    )
    from llmtraffic.experiment.spec import read_experiment
    from llmtraffic.experiment.store import default_folder, load_experiment
    from llmtraffic.experiment.tables import print_points
    from llmtraffic.limits import check_experiment

    spec = read_experiment(args.config, args.set, seed=args.seed, allow_large=args.allow_large)
    # Every point's plugins, before any run: worker processes import whatever they are sent.
    check_plugins((p.scenario for p in spec.points), source=args.config)
    check_experiment(
        ((p.id, p.scenario) for p in spec.points),
        spec.replications,
        allow_large=args.allow_large,
        source=args.config,
    )
    # Progress and notes go to stderr: shown on a terminal even when the tables are redirected.
    err = Console(stderr=True)
    if args.dask is not None and args.dask != "local":
        check_dask_address(args.dask)  # before saying it connects to it
        err.print(
            f"connecting to the Dask scheduler at {args.dask} (giving up after "
            f"{DASK_CONNECT_TIMEOUT:g} s)",
            markup=False,
            highlight=False,
        )
    bar, hook = runs_progress(err, len(spec.runs()), args.quiet)
    try:
        outcome = run_experiment(
            spec,
            args.out,
            workers=args.workers,
            dask=args.dask,
            force=args.force,
            progress=hook,
            raise_on_failure=False,  # failed runs are listed below, with what to do
        )
    except KeyboardInterrupt:
        if bar is not None:
            bar.stop()  # before the message (stopping twice is harmless)
        folder = args.out if args.out is not None else default_folder(spec)
        err.print(
            f"interrupted; the finished runs are kept in {folder} (its manifest says "
            "interrupted): run the same command again to resume",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_FAILED
    finally:
        if bar is not None:
            bar.stop()
    data = load_experiment(outcome.folder)
    if not args.quiet and len(data.points):
        print_points(console, data.points, data.axes, spec.replications)
    say = (
        f"{counted(outcome.total, 'run')}: {outcome.done} run now, {outcome.skipped} already done"
        + (f", {len(outcome.failed)} failed" if outcome.failed else "")
        + f"; {outcome.wall_s:.1f} s"
    )
    console.print(say, markup=False, highlight=False)
    for key, text in outcome.failed.items():
        last = text.strip().splitlines()[-1] if text.strip() else "?"
        console.print(
            f"[red]failed[/red] {key}: {last}\n  traceback: {outcome.folder / 'runs' / key}"
            ".error.txt",
            highlight=False,
            soft_wrap=True,
        )
    if outcome.failed:
        console.print("run the same command again to retry the failed runs", highlight=False)
    console.print(f"results: {outcome.folder}", markup=False, highlight=False, soft_wrap=True)
    return EXIT_FAILED if outcome.failed else EXIT_OK


def cmd_validate_experiment(args: argparse.Namespace, console: Console) -> int:
    """Check an experiment file: the base scenario and every grid point."""
    from llmtraffic.experiment.spec import read_experiment
    from llmtraffic.limits import check_experiment

    spec = read_experiment(args.config, args.set, allow_large=args.allow_large)
    size = check_experiment(
        ((p.id, p.scenario) for p in spec.points),
        spec.replications,
        allow_large=args.allow_large,
        source=args.config,
    )
    axes = "; ".join(f"{a.name}: {counted(len(a.values), 'value')}" for a in spec.axes)
    axes = axes or "no sweep"
    console.print(
        f"{args.config}: valid experiment {spec.name!r} ({axes}; "
        f"{counted(len(spec.points), 'point')} x {counted(spec.replications, 'replication')} "
        f"= {counted(len(spec.runs()), 'run')}"
        + (f"; {counted(len(spec.checks), 'check')}" if spec.checks else "")
        + ")",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"size: {size.describe()}", markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


SPEC_KEYS = ("name", "axes", "points", "replications", "seeds")
"""Keys of experiment.json that compare, plot and report read."""


def open_experiment(folder: str | Path) -> Any:
    """``load_experiment`` for the reading commands: an experiment.json without the keys they
    read, or a summary or points table that cannot be read (truncated, corrupted), is refused
    with the file named (``ResultFileError``), not met later as a traceback."""
    import pyarrow as pa

    from llmtraffic.experiment.store import load_experiment
    from llmtraffic.results.jsonio import RERUN_HINT, ResultFileError

    data = load_experiment(folder)
    spec_file = data.folder / "experiment.json"
    if not isinstance(data.spec, dict) or any(k not in data.spec for k in SPEC_KEYS):
        have = data.spec if isinstance(data.spec, dict) else {}
        missing = ", ".join(k for k in SPEC_KEYS if k not in have)
        raise ResultFileError(
            f"{spec_file} is not what llmtraffic writes there: it has no {missing}; "
            "run the experiment's file again to write it anew"
        )
    for name in ("summary", "points"):
        if (data.folder / f"{name}.parquet").exists():
            try:
                getattr(data, name)  # read once here (cached): a bad file fails now
            except (OSError, ValueError, pa.ArrowException):
                raise ResultFileError(
                    f"{data.folder / name}.parquet is not a readable Parquet file (truncated "
                    f"or corrupted); {RERUN_HINT}"
                ) from None
    return data


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    """Paired differences with 95% intervals: between the values of a sweep axis in one
    experiment (same replication = same traffic), or between two results folders."""
    import numpy as np

    from llmtraffic.experiment.analysis import (
        KEY_METRICS,
        metric_columns,
        paired_differences,
        paired_runs,
    )
    from llmtraffic.experiment.store import is_experiment_folder
    from llmtraffic.experiment.tables import differences_table, print_table

    metrics = args.metric or list(KEY_METRICS)
    if len(args.folders) == 2:
        a, b = (Path(f) for f in args.folders)
        if is_experiment_folder(a) and is_experiment_folder(b):
            left, right = open_experiment(a).summary, open_experiment(b).summary
            metrics = _check_metrics(metrics, metric_columns(left))
            try:
                with np.errstate(invalid="ignore", divide="ignore"):  # inf - inf: shown "-"
                    diffs = paired_runs(left, right, metrics)
            except ValueError as exc:
                raise LLMTrafficError(str(exc)) from None
            others = ["point_id"] if "point_id" in diffs.columns else []
            diffs = diffs.assign(value=str(b))
            # Named in the columns' order: the base first, then the other, then b - a.
            title = (
                f"{a} (base) and {b}: difference {b} minus {a}, paired by replication (same seeds)"
            )
            print_table(console, differences_table(diffs, others, title))
            return EXIT_OK
        _compare_runs(console, a, b, metrics)
        return EXIT_OK
    if len(args.folders) != 1:
        raise LLMTrafficError("compare takes one experiment folder, or two results folders")
    data = open_experiment(args.folders[0])
    if not data.axes:
        raise LLMTrafficError(
            f"{data.folder} has no sweep axis to compare along; compare two folders instead"
        )
    axis = data.axis_info(args.axis)["name"] if args.axis else data.axes[0]
    info = data.axis_info(axis)
    base = args.base if args.base is not None else info["labels"][0]
    summary = data.summary
    metrics = _check_metrics(metrics, metric_columns(summary, data.axes))
    try:
        with np.errstate(invalid="ignore", divide="ignore"):  # inf - inf: shown "-"
            diffs = paired_differences(summary, axis, base, metrics, data.axes)
    except KeyError as exc:
        raise LLMTrafficError(str(exc.args[0])) from None
    others = [a for a in data.axes if a != axis]
    # Named in the columns' order: the base first, then each other value, then their difference.
    title = (
        f"{data.name}: {axis}={base} (base) and each other {axis}: difference other minus "
        "base, paired by replication (common random numbers)"
    )
    print_table(console, differences_table(diffs, others, title))
    return EXIT_OK


def _plot_choice(data: Any, args: argparse.Namespace) -> Any:
    """Refuse a --point or --rep the experiment does not have (listing those it has)."""
    from llmtraffic.plots.report import check_run_choice

    check_run_choice(data, args.point if args.point is not None else 0, args.rep)
    return data


def _check_metrics(metrics: list[str], columns: Any) -> list[str]:
    """The summary columns the ``--metric`` names mean: a column name or a label the tables
    show (``success``, ``per month``, ``att/req``; see ``resolve_metric``). Refuses a name
    that is neither, or that fits several columns, naming it with the closest names and the
    run-level metrics, rather than printing a row of NaN."""
    from llmtraffic.experiment.analysis import NOT_METRICS
    from llmtraffic.experiment.tables import SHORT_NAMES
    from llmtraffic.plots.labels import resolve_metric

    have = [str(c) for c in columns]
    resolved = []
    for name in metrics:
        match = resolve_metric(name, have, SHORT_NAMES)
        if match.column is not None:
            resolved.append(match.column)
            continue
        if match.several:
            raise LLMTrafficError(
                f"--metric {name} fits several metrics: {', '.join(match.several)}; give "
                "one of these column names"
            )
        candidates = match.close
        top = [c for c in have if "." not in c and c not in NOT_METRICS]
        raise LLMTrafficError(
            f"--metric {name}: no such metric"
            + (f" (did you mean {', '.join(candidates)}?)" if candidates else "")
            + f"; give a column name or a table's label (success, per month, att/req...); "
            f"metrics: {', '.join(top)}; per feature feature.<name>.<metric>, per incident "
            "incident.<i>.<metric> (docs/metrics.md)"
        )
    return list(dict.fromkeys(resolved))


def _compare_runs(console: Console, a: Path, b: Path, metrics: list[str]) -> None:
    """Two single runs side by side (one replication each: no interval)."""
    from rich import box
    from rich.table import Table

    from llmtraffic.experiment.analysis import flatten_summary
    from llmtraffic.experiment.tables import SHORT_NAMES, fmt_value, print_table
    from llmtraffic.results.load import load

    ra, rb = load(a), load(b)
    fa, fb = flatten_summary(ra.summary), flatten_summary(rb.summary)
    names = [k for k in fa if k in fb and isinstance(fa[k], int | float)]
    metrics = _check_metrics(metrics, names)
    # Folders are named in the title, in the columns' order; the columns get short names,
    # since a path as a header would squeeze the numbers out of an 80-column table.
    t = Table(
        title=f"A = {a} (seed {ra.summary['seed']}), B = {b} (seed {rb.summary['seed']}): "
        "difference B minus A (single runs: no interval)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for col in ("metric", "A", "B", "B - A", "relative"):
        t.add_column(col, justify="left" if col == "metric" else "right", no_wrap=True)
    for m in metrics:
        va, vb = float(fa.get(m, math.nan)), float(fb.get(m, math.nan))
        t.add_row(SHORT_NAMES.get(m, m), *compare_cells(m, va, vb, fmt_value))
    print_table(console, t)


def compare_cells(metric: str, a: float, b: float, fmt: Any) -> tuple[str, str, str, str]:
    """The cells of one metric of two single runs: ``a``, ``b``, ``b - a`` and the relative
    difference. A difference of shares is in percentage points (``+66.5 pp``), money has one
    number of decimals across the row (those of its largest value: ``$3,180.35`` and
    ``+$7.04``, never ``+$7.0428`` beside it), and an undefined value or difference reads
    ``-`` (never ``nan``); ``fmt(metric, value)`` formats the rest."""
    from llmtraffic.plots.labels import metric_label
    from llmtraffic.report_table import money_decimals, unsigned_zero

    unit = metric_label(metric).unit
    diff = b - a if math.isfinite(a) and math.isfinite(b) else math.nan
    if unit.startswith("USD"):
        decimals = money_decimals(a, b)

        def show(v: float, sign: bool = False) -> str:
            if not math.isfinite(v):
                return "-"
            text = f"${abs(v):,.{decimals}f}"
            return unsigned_zero(("-" if v < 0 else "+" if sign else "") + text)

        cells = [show(a), show(b), show(diff, sign=True)]
    else:
        if not math.isfinite(diff):
            signed = "-"
        elif unit == "%":
            signed = f"{diff * 100:+.1f} pp"
        elif float(a).is_integer() and float(b).is_integer():
            signed = f"{diff:+,.0f}"  # counts differ by a count: +13, not +13.000
        else:
            signed = ("-" if diff < 0 else "+") + fmt(metric, abs(diff))
        cells = [fmt(metric, a), fmt(metric, b), unsigned_zero(signed)]
    relative = unsigned_zero(f"{diff / a * 100:+.1f}%") if math.isfinite(diff) and a else "-"
    return cells[0], cells[1], cells[2], relative


def cmd_plot(args: argparse.Namespace, console: Console) -> int:
    """Write PNG plots of a run folder (timeline, cost breakdown, latency CDF) or of an
    experiment folder (comparison with confidence bands, and one run's plots)."""
    from llmtraffic.experiment.store import is_experiment_folder
    from llmtraffic.plots.experiment import save_experiment_plots
    from llmtraffic.plots.run import plot_folder, save_run_plots
    from llmtraffic.results.load import load

    folder = Path(args.folder)
    out = args.out if args.out is not None else folder / "plots"
    if args.out is not None and out.exists() and not out.is_dir():
        plot_folder(out, "--out")  # refused before the slow part: it names the flag
    if is_experiment_folder(folder):
        paths = save_experiment_plots(
            _plot_choice(open_experiment(folder), args),
            out,
            metrics=args.metric,
            x=args.x,
            point=args.point if args.point is not None else 0,
            replication=args.rep,
        )
    else:
        paths = save_run_plots(load(folder), out)
    for p in paths:
        console.print(str(p), markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    """Write one self-contained HTML page of a results folder: tables and plots."""
    from llmtraffic.plots.report import write_report

    path = write_report(
        Path(args.folder),
        args.out,
        point=args.point if args.point is not None else 0,
        replication=args.rep,
        metrics=args.metric,
    )
    console.print(f"report: {path}", markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register compare, plot and report."""
    p = sub.add_parser(
        "compare",
        help="paired differences between policies (or two results folders) with 95%% CIs",
        description=cmd_compare.__doc__,
    )
    p.add_argument(
        "folders", nargs="+", metavar="FOLDER", help="an experiment folder, or two folders"
    )
    p.add_argument("--axis", help="the sweep axis to compare along (default: the first)")
    p.add_argument("--base", help="the axis value to compare against (default: its first)")
    p.add_argument(
        "--metric",
        action="append",
        metavar="NAME",
        help="a summary column or the label a table shows for it: success_rate or success, "
        "cost_per_month or 'per month', att/req (repeatable)",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "plot", help="write PNG plots of a results folder", description=cmd_plot.__doc__
    )
    _folder_options(p, "folder for the PNGs (default FOLDER/plots)", Path)
    p.add_argument("--x", metavar="AXIS", help="the sweep axis on the x axis of comparisons")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "report", help="write one HTML page of tables and plots", description=cmd_report.__doc__
    )
    _folder_options(p, "the HTML file (default FOLDER/report.html)", Path)
    p.set_defaults(func=cmd_report)


def _folder_options(p: argparse.ArgumentParser, out_help: str, out_type: Any) -> None:
    p.add_argument("folder", help="a run's or an experiment's results folder")
    p.add_argument("--out", type=out_type, help=out_help)
    p.add_argument(
        "--point", help="experiments: the run to show, by point id or pNNN (default p000)"
    )
    p.add_argument("--rep", type=int, default=0, help="experiments: its replication (default 0)")
    p.add_argument(
        "--metric",
        action="append",
        metavar="NAME",
        help="experiments: a metric to compare (repeatable)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
