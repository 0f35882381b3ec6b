"""Running an experiment file's checks: ``llmtraffic check FILE`` and ``run_checks``."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from llmtraffic.checks.columns import expected_columns
from llmtraffic.checks.evaluate import CheckResult, evaluate, select_points
from llmtraffic.checks.report import junit_xml, load_baseline, results_table, save_baseline
from llmtraffic.checks.spec import Check, parse_checks, parse_tolerance
from llmtraffic.errors import ConfigError, OutputError
from llmtraffic.experiment.execute import ProgressHook
from llmtraffic.experiment.spec import ExperimentSpec, read_experiment
from llmtraffic.wording import counted


@dataclass
class CheckReport:
    """The checks of one experiment file, judged on its runs."""

    name: str
    folder: Path
    results: list[CheckResult]
    failed_runs: int = 0
    skipped: int = 0
    """'within' checks not judged: the run saves the first baseline and has none to compare."""

    @property
    def failures(self) -> list[CheckResult]:
        """The checks that failed."""
        return [r for r in self.results if not r.passed]

    @property
    def passed(self) -> bool:
        """True when every check passed and every run finished."""
        return not self.failures and self.failed_runs == 0

    def summary_line(self) -> str:
        """'12 checks: 11 passed, 1 failed' and the results folder."""
        n, bad = len(self.results), len(self.failures)
        text = f"{counted(n, 'check')}: {n - bad} passed, {bad} failed"
        if self.failed_runs:
            text += f"; {counted(self.failed_runs, 'run')} failed"
        if self.skipped:
            text += f"; {self.skipped} 'within' checks not judged (no --baseline yet)"
        return f"{text} (results: {self.folder})"


def run_checks(
    config: str | Path,
    *,
    overrides: Iterable[str] = (),
    out: str | Path | None = None,
    workers: int | None = None,
    dask: str | None = None,
    force: bool = False,
    baseline: str | Path | None = None,
    tolerance: float | None = None,
    strict: bool = False,
    save_baseline_to: str | Path | None = None,
    allow_large: bool = False,
    progress: ProgressHook | None = None,
) -> CheckReport:
    """Run the experiment file (resuming runs already done) and judge its ``[[check]]``s.

    The results go to ``out``, by default ``runs/check-<file name>``: one folder per battery
    file, so that two batteries never replace each other's runs. ``allow_large`` and
    ``progress`` are as for ``llmtraffic run`` on an experiment."""
    from llmtraffic.experiment.execute import run_experiment
    from llmtraffic.experiment.store import load_experiment
    from llmtraffic.limits import check_experiment

    spec = read_experiment(config, list(overrides), allow_large=allow_large)
    check_experiment(
        ((p.id, p.scenario) for p in spec.points),
        spec.replications,
        allow_large=allow_large,
        source=str(config),
    )
    if out is None:
        out = default_check_folder(config)
    checks = parse_checks(spec.checks, source=spec.source)
    if not checks and baseline is None and save_baseline_to is None:
        raise ConfigError(
            [
                "no [[check]] entries: add checks to the file (docs/ci.md), or compare with "
                "--baseline FILE"
            ],
            source=spec.source,
        )
    if tolerance is not None and baseline is None:
        raise ConfigError(["--tolerance needs --baseline FILE"])
    within = [i for i, c in enumerate(checks) if c.op == "within"]
    if within and baseline is None and save_baseline_to is None:
        raise ConfigError(
            [
                f"check[{i}] ({checks[i].label!r}): op = 'within' compares with a baseline; "
                "pass --baseline FILE (saved earlier with --save-baseline FILE), or bound it "
                "with <, <=, > or >= and a value"
                for i in within
            ],
            source=spec.source,
        )
    precheck(checks, spec)
    if save_baseline_to is not None:
        check_output_file(Path(save_baseline_to), "--save-baseline", "baseline.json")
    ref = load_baseline(Path(baseline)) if baseline is not None else None
    outcome = run_experiment(
        spec,
        out,
        workers=workers,
        dask=dask,
        force=force,
        progress=progress,
        raise_on_failure=False,
    )
    data = load_experiment(outcome.folder)
    summary = data.summary
    axes = data.axes
    judged = [c for c in checks if ref is not None or c.op != "within"]
    results = evaluate(
        judged,
        summary,
        axes,
        baseline=ref,
        tolerance=tolerance if tolerance is not None else (0.05 if ref is not None else None),
        strict=strict,
    )
    if save_baseline_to is not None:
        save_baseline(summary, axes, spec.name, Path(save_baseline_to))
    return CheckReport(
        spec.name,
        outcome.folder,
        results,
        failed_runs=len(outcome.failed),
        skipped=len(checks) - len(judged),
    )


def default_check_folder(config: str | Path) -> Path:
    """``runs/check-<file name without .toml>``: where a battery file's runs go by default."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(config).stem).strip("-.") or "battery"
    return Path("runs") / f"check-{stem}"


def precheck(checks: Sequence[Check], spec: ExperimentSpec) -> None:
    """Refuse, before any run, checks that name a metric, axis or axis value the experiment's
    runs will not have: a misspelling fails at once, not after the whole battery."""
    expected = expected_columns(p.scenario for p in spec.points)
    axes = [a.name for a in spec.axes]
    points = pd.DataFrame(
        [
            {"point_id": p.id}
            | {a.name: a.column_value(i) for a, i in zip(spec.axes, p.value_index, strict=True)}
            for p in spec.points
        ]
    )
    problems: list[str] = []
    for check in checks:
        try:
            check.columns(expected)
            select_points(points, axes, check)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems, source=spec.source)


def check_output_file(path: Path, flag: str, example: str) -> None:
    """Refuse, before anything runs, an output file the command could not write at the end:
    a folder, or a place whose folder cannot be created (``OutputError`` naming the flag)."""
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; give a file path such as {path / example}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{flag} {path}: cannot create its folder {path.parent}: {exc.strerror}"
        ) from None


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    """Run an experiment file and judge its [[check]] entries: exit 0 when all pass, 1 when
    one fails (or a run fails), 2 on bad input."""
    from llmtraffic.experiment.commands import runs_progress

    if args.junit is not None:
        check_output_file(Path(args.junit), "--junit", "llmtraffic.xml")
    bar, hook = runs_progress(Console(stderr=True), 0, args.quiet)
    try:
        report = _checked(args, hook, bar)
    finally:
        if bar is not None:
            bar.stop()
    return _print_report(args, console, report)


def _checked(args: argparse.Namespace, hook: ProgressHook | None, bar: Any) -> CheckReport:
    """``run_checks`` with the command's arguments; the bar learns the total from the hook."""

    def moved(done: int, total: int, failed: int) -> None:
        if bar is not None and bar.tasks:
            bar.update(bar.tasks[0].id, total=total)
        if hook is not None:
            hook(done, total, failed)

    return run_checks(
        args.config,
        overrides=args.set,
        out=args.out,
        workers=args.workers,
        dask=args.dask,
        force=args.force,
        baseline=args.baseline,
        tolerance=args.tolerance,
        strict=args.strict,
        save_baseline_to=args.save_baseline,
        allow_large=args.allow_large,
        progress=moved if hook is not None else None,
    )


def _print_report(args: argparse.Namespace, console: Console, report: CheckReport) -> int:
    """The results table, each failure, the files written and the summary line; the exit
    code (0 all passed, 1 a check or a run failed)."""
    if report.results and not args.quiet:
        if not console.is_terminal:
            console.width = max(console.width, 160)  # CI logs: one line per check
        console.print(results_table(report.results, f"Checks: {report.name}"))
    for failure in report.failures:
        console.print(failure.message(), markup=False, highlight=False, soft_wrap=True)
    if args.junit is not None:
        junit_xml(report.results, report.name, Path(args.junit))
        console.print(f"JUnit XML: {args.junit}", markup=False, highlight=False)
    if args.save_baseline is not None:
        console.print(f"baseline saved: {args.save_baseline}", markup=False, highlight=False)
    console.print(report.summary_line(), markup=False, highlight=False, soft_wrap=True)
    return 0 if report.passed else 1


def add_check_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``check`` subcommand."""
    from llmtraffic.experiment.commands import add_run_options

    p = sub.add_parser(
        "check",
        help="run an experiment file and judge its [[check]] entries (for CI)",
        description=cmd_check.__doc__,
    )
    p.add_argument("config", help="experiment TOML file with [[check]] entries")
    p.add_argument("--out", type=Path, help="results folder (default runs/check-<file name>)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no table of checks")
    p.add_argument(
        "--allow-large",
        action="store_true",
        help="run a battery whose estimated size exceeds the limits (see llmtraffic run -h)",
    )
    p.add_argument("--force", action="store_true", help="rerun the runs already done")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML here")
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="FILE",
        help="compare with a baseline saved by --save-baseline",
    )
    p.add_argument(
        "--tolerance",
        type=_tolerance,
        metavar="PCT",
        help="allowed regression from the baseline, e.g. 5%% (default 5%%)",
    )
    p.add_argument(
        "--save-baseline",
        type=Path,
        metavar="FILE",
        help="save this run's means as a baseline for later --baseline checks",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="pass only when the whole 95%% interval is on the right side",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a config value (repeatable)",
    )
    add_run_options(p)
    p.set_defaults(func=cmd_check)


def _tolerance(text: str) -> float:
    try:
        return parse_tolerance(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
