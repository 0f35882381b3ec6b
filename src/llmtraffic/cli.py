"""The ``llmtraffic`` command line: run, validate (and more, as subcommands are added).

Exit codes: 0 success, 1 the run failed, 2 bad input (config, arguments, files).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from llmtraffic.config.loader import load_config
from llmtraffic.errors import LLMTrafficError
from llmtraffic.report_table import print_summary

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _progress_bar(
    console: Console, enabled: bool
) -> tuple[Callable[[float], None], Progress | None]:
    """A progress callback that shows a bar only once a run has taken longer than a moment."""
    if not enabled:
        return (lambda f: None), None
    bar = Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("run", total=1.0)
    t0 = time.monotonic()
    state = {"shown": False, "last": 0.0}

    def update(fraction: float) -> None:
        if fraction - state["last"] < 0.005 and fraction < 1.0:
            return
        state["last"] = fraction
        if not state["shown"] and time.monotonic() - t0 > 0.5:
            bar.start()
            state["shown"] = True
        bar.update(task, completed=fraction)

    return update, bar


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """Run a scenario config and write its results folder."""
    from llmtraffic.runner import run_to_folder

    scenario = load_config(args.config, args.set)
    text = Path(args.config).read_text(encoding="utf-8")
    update, bar = _progress_bar(console, not args.quiet and console.is_terminal)
    try:
        folder, result = run_to_folder(
            scenario,
            args.out,
            seed=args.seed,
            force=args.force,
            progress=update,
            config_text=text,
            overrides=args.set,
        )
    finally:
        if bar is not None:
            bar.stop()
    if not args.quiet:
        print_summary(console, result.summary)
    console.print(f"results: {folder}", markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    """Check a config without running it."""
    scenario = load_config(args.config, args.set)
    console.print(
        f"{args.config}: valid ({len(scenario.features)} features, "
        f"{len(scenario.providers)} providers, {len(scenario.policies)} policies, "
        f"{scenario.run.duration:g} s)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from llmtraffic import __version__

    parser = argparse.ArgumentParser(
        prog="llmtraffic",
        description="Simulate LLM API traffic: cost, rate limits, retries and retry storms.",
    )
    parser.add_argument("--version", action="version", version=f"llmtraffic {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def overrides(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="PATH=VALUE",
            help="override a config value, e.g. --set features.chat.arrivals.rate=30 "
            "(repeatable; values are TOML literals, or plain strings)",
        )

    p_run = sub.add_parser(
        "run", help="run a scenario and write a results folder", description=cmd_run.__doc__
    )
    p_run.add_argument("config", help="scenario TOML file")
    p_run.add_argument("--out", type=Path, help="results folder (default runs/<name>-<time>)")
    p_run.add_argument("--seed", type=_non_negative_int, help="override run.seed")
    p_run.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p_run.add_argument("--quiet", "-q", action="store_true", help="no progress bar or tables")
    overrides(p_run)
    p_run.set_defaults(func=cmd_run)

    p_val = sub.add_parser(
        "validate", help="check a config without running it", description=cmd_validate.__doc__
    )
    p_val.add_argument("config", help="scenario TOML file")
    overrides(p_val)
    p_val.set_defaults(func=cmd_validate)
    return parser


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmtraffic`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console()
    err = Console(stderr=True)
    try:
        code: int = args.func(args, console)
        return code
    except LLMTrafficError as exc:
        err.print("[red]error:[/red]", end=" ")
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err.print("interrupted; no results folder was left half-written")
        return EXIT_FAILED
    except Exception:  # a bug or an environment failure: show it, exit 1
        err.print("[red]the run failed:[/red]")
        err.print(traceback.format_exc(), markup=False, highlight=False, soft_wrap=True)
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
