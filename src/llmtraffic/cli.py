"""The ``llmtraffic`` command line: run, validate (and more, as subcommands are added).

Exit codes: 0 success, 1 the run failed or was interrupted (Ctrl-C or SIGTERM: both stop
cleanly), 2 bad input (config, arguments, files, a results folder in use or not ours, a run
too large without --allow-large).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from llmtraffic import limits
from llmtraffic.client.plugins import FLAG, allowed_plugins, check_plugins
from llmtraffic.config.loader import load_config
from llmtraffic.errors import LLMTrafficError
from llmtraffic.report_table import print_fixed, print_summary

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _progress_bar(
    console: Console, enabled: bool
) -> tuple[Callable[[float], None], Progress | None]:
    """A progress callback that shows a bar only once a run has taken longer than a moment.

    The bar goes to ``console`` (the CLI passes stderr, so that it shows on a terminal even
    when the output is redirected)."""
    if not enabled:
        return (lambda f: None), None
    bar = Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
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
    """Run a scenario config and write its results folder; a file with [experiment], [sweep]
    or [[check]] tables runs as an experiment (a grid of runs, resumable)."""
    from llmtraffic.experiment.commands import cmd_run_experiment, is_experiment_file
    from llmtraffic.runner import run_to_folder

    if is_experiment_file(args.config):
        return cmd_run_experiment(args, console)
    scenario = load_config(args.config, args.set)
    check_plugins([scenario], source=args.config)  # before any folder is touched
    limits.check(scenario, allow_large=args.allow_large, source=args.config)
    text = Path(args.config).read_text(encoding="utf-8")
    err = Console(stderr=True)
    update, bar = _progress_bar(err, not args.quiet and err.is_terminal)
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
    """Check a config without running it (an experiment file: every grid point)."""
    from llmtraffic.experiment.commands import cmd_validate_experiment, is_experiment_file

    if is_experiment_file(args.config):
        return cmd_validate_experiment(args, console)
    scenario = load_config(args.config, args.set)
    size = limits.check(scenario, allow_large=args.allow_large, source=args.config)
    console.print(
        f"{args.config}: valid ({len(scenario.features)} features, "
        f"{len(scenario.providers)} providers, {len(scenario.policies)} policies, "
        f"{scenario.run.seconds:g} s)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"size: {size.describe()}", markup=False, highlight=False, soft_wrap=True)
    for name, feature in scenario.features.items():
        trace = feature.trace
        if trace is not None:
            layout = trace.layout
            known = f"{layout.name} layout, " if layout is not None else ""
            console.print(
                f"features.{name}.trace: {trace.path} ({known}time {trace.timestamp!r}, "
                f"input {trace.input_tokens!r}, output {trace.output_tokens!r})",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    return EXIT_OK


def cmd_fit(args: argparse.Namespace, console: Console) -> int:
    """Describe a trace's load (arrivals, token sizes) and fit distributions that reproduce it;
    print them and a scenario TOML (or write it with --snippet)."""
    from llmtraffic.fit import check_options, check_snippet, fit_trace, print_fit, trace_from_flags

    if args.snippet is not None:
        check_snippet(args.snippet)  # before the trace is read: a long fit must not be lost
    flags = {k: getattr(args, k) for k in _TRACE_FLAGS if getattr(args, k) is not None}
    cfg = trace_from_flags(args.trace, flags, base_dir=Path.cwd())
    check_options(args.name, args.model)
    fit = fit_trace(cfg, feature=args.feature_value)
    print_fit(console, fit)
    text = fit.scenario(feature=args.name, model=args.model)
    if args.snippet is not None:
        check_snippet(args.snippet, text)
        console.print(f"scenario written to {args.snippet}", markup=False, highlight=False)
    else:
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace, console: Console) -> int:
    """Fit a provider's continuous-batching curve (per-token time against concurrency, and
    the time to first token) to a load test's table: a CSV with concurrency, TTFT and
    per-token columns (vLLM benchmark names accepted) or GuideLLM's benchmarks.csv. Prints
    the levels, the fit and a TOML snippet to paste into the provider."""
    from llmtraffic.calibrate import calibrate, read_bench

    cal = calibrate(read_bench(args.bench))
    console.print("concurrency    TTFT (s)   per-token (s)   line (s)", markup=False)
    for r in cal.rows:
        console.print(
            f"{r.concurrency:>11g} {r.ttft:>11.4g} {r.tpot:>15.4g} "
            f"{cal.tpot.at(r.concurrency):>10.4g}",
            markup=False,
            highlight=False,
        )
    console.print()
    console.print(cal.snippet(args.provider), markup=False, highlight=False, end="")
    return EXIT_OK


_TRACE_FLAGS = (
    "format",
    "timestamp",
    "input_tokens",
    "output_tokens",
    "time_unit",
    "origin",
    "window",
    "speedup",
    "sort",
    "delimiter",
    "feature_column",
    "feature_value",
    "model_column",
    "model_value",
    "outcome_column",
    "keep_outcomes",
)


def _add_fit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fit", help="fit arrival and token distributions to a trace", description=cmd_fit.__doc__
    )
    p.add_argument(
        "trace",
        help="CSV, Parquet or JSONL file (relative to the current folder), or builtin:azure-conv; "
        "the Azure LLM inference, BurstGPT, Mooncake and SplitwiseSim layouts are recognised by "
        "their columns",
    )
    p.add_argument(
        "--snippet",
        type=Path,
        metavar="FILE",
        help="write the scenario TOML to FILE instead of printing it (checked before the trace "
        "is read)",
    )
    p.add_argument(
        "--name",
        default="replayed",
        help="the feature's name in the scenario, a slug (default: replayed)",
    )
    p.add_argument(
        "--model",
        default="openai/gpt-4o-mini",
        help="preset model of the scenario's provider (default: openai/gpt-4o-mini; "
        "llmtraffic presets --kind models)",
    )
    g = p.add_argument_group(
        "trace columns and options (as the keys of a feature's trace table, docs/traces.md)"
    )
    g.add_argument(
        "--format",
        choices=["auto", "csv", "parquet", "jsonl"],
        help="file format (default auto: from the extension)",
    )
    g.add_argument(
        "--timestamp",
        metavar="COLUMN",
        help="column of arrival times (default: timestamp, or the recognised layout's)",
    )
    g.add_argument(
        "--input-tokens",
        metavar="COLUMN",
        help="column of input tokens (default: input_tokens, or the recognised layout's)",
    )
    g.add_argument(
        "--output-tokens",
        metavar="COLUMN",
        help="column of output tokens (default: output_tokens, or the recognised layout's)",
    )
    g.add_argument(
        "--time-unit",
        choices=["auto", "datetime", "s", "ms", "us", "ns"],
        help="date-time strings, or numbers in s, ms, us or ns (default auto: date-times, or "
        "numbers by the first value's magnitude; a recognised layout's own unit)",
    )
    g.add_argument(
        "--origin",
        choices=["first", "zero"],
        help="time zero: the first row's timestamp (default) or the value 0",
    )
    g.add_argument(
        "--window",
        nargs=2,
        type=float,
        metavar=("FROM", "TO"),
        help="fit only the rows from FROM to TO seconds after the origin",
    )
    g.add_argument("--speedup", type=float, metavar="X", help="divide every time by X (default 1)")
    g.add_argument(
        "--sort",
        choices=["refuse", "warn"],
        help="unsorted times: refuse (default), or warn and sort in memory",
    )
    g.add_argument("--delimiter", metavar="CHAR", help="CSV field separator (default ,)")
    g.add_argument(
        "--feature-column",
        metavar="COLUMN",
        help="keep only the rows whose COLUMN equals --feature-value",
    )
    g.add_argument("--feature-value", metavar="VALUE", help="the --feature-column value to keep")
    g.add_argument(
        "--model-column",
        metavar="COLUMN",
        help="keep only the rows whose COLUMN equals --model-value (BurstGPT: Model)",
    )
    g.add_argument("--model-value", metavar="VALUE", help="the --model-column value to keep")
    g.add_argument(
        "--outcome-column",
        metavar="COLUMN",
        help="keep only the rows whose COLUMN is one of the --keep-outcome values",
    )
    g.add_argument(
        "--keep-outcome",
        dest="keep_outcomes",
        action="append",
        metavar="VALUE",
        help="an outcome value to keep (repeatable; default ok, success, 200)",
    )
    p.set_defaults(func=cmd_fit)


def cmd_presets(args: argparse.Namespace, console: Console) -> int:
    """List the model presets (prices per million tokens, context) and the rate-limit tiers
    (limits per model), as configs name them."""
    from llmtraffic import presets

    models = presets.models_with(args.price_file)
    kinds = [args.kind] if args.kind != "all" else list(_PRESET_SECTIONS)
    for kind in kinds:
        _PRESET_SECTIONS[kind](console, models)
    return EXIT_OK


def _print_models(console: Console, models: Mapping[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    table = Table(
        title='Models: providers.NAME.model = "..." (USD per million tokens)',
        title_justify="left",
        caption="* from a price file. Built-in prices: LiteLLM 1.110.2 (MIT), checked "
        "2026-11-30; each entry's source is in data/models.toml",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,  # laid out for 80 columns (report_table.print_fixed)
        pad_edge=False,
    )
    table.add_column("model", no_wrap=True)
    for col in ("input", "cached", "output", "context", "max out"):
        table.add_column(col, justify="right", no_wrap=True)
    for name in sorted(models):
        m = models[name]
        table.add_row(
            name + ("" if m.origin == "built-in" else " *"),
            f"{m.input:g}",
            "" if m.cached_input is None else f"{m.cached_input:g}",
            f"{m.output:g}",
            "" if m.context_window is None else f"{m.context_window:,}",
            "" if m.max_output_tokens is None else f"{m.max_output_tokens:,}",
        )
    print_fixed(console, table)


def _print_tiers(console: Console, models: Mapping[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    from llmtraffic import presets

    tiers = presets.builtin_tiers().values()
    rules: dict[str, str] = {}
    for tier in tiers:
        text = ", ".join(f"{k} = {str(v).lower()}" for k, v in tier.rules().items())
        rules.setdefault(tier.provider, text)
    table = Table(
        title='Rate-limit tiers: rate_limit = { tier = "..." } (per minute)',
        title_justify="left",
        caption="Rules a tier sets: "
        + "; ".join(f"{p}: {r or 'none'}" for p, r in rules.items())
        + ". Sources: OpenAI's rate-limit guide (per-model limits as last published, late "
        "2024), Anthropic's rate-limit docs (2025-11-08), Microsoft Learn's Azure OpenAI "
        "quota page (2025-05); see data/tiers.toml",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,  # laid out for 80 columns (report_table.print_fixed)
        pad_edge=False,
    )
    table.add_column("tier", no_wrap=True)
    table.add_column("model", no_wrap=True)
    for col in _LIMIT_COLS:
        table.add_column(col, justify="right", no_wrap=True)
    for tier in tiers:
        ratio = tier.rpm_per_1000_tpm
        if ratio is not None:
            # A quota-based tier: the config gives the deployment's tpm; rpm follows from it.
            table.add_row(
                tier.name, "any: give tpm", f"{ratio:g}/1K tpm", "quota", "", "", end_section=True
            )
            continue
        for i, (model, lim) in enumerate(tier.limits.items()):
            table.add_row(
                tier.name if i == 0 else "",
                model,
                *[_compact(getattr(lim, k)) for k in _LIMIT_COLS],
                end_section=i == len(tier.limits) - 1,
            )
    print_fixed(console, table)


_LIMIT_COLS = ("rpm", "tpm", "itpm", "otpm")


def _print_policies(console: Console, _models: Mapping[str, Any]) -> None:
    """Named policies, breakers, retry budgets and retry layers, one line each
    (docs/policies.md)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from llmtraffic.config import policy_presets

    sections = (
        ("policy", 'policy = "NAME", or [policies.x] preset = "NAME"', policy_presets.POLICIES),
        ("breaker", 'breaker = "NAME"', policy_presets.BREAKERS),
        ("budget", 'budget = "NAME"', policy_presets.BUDGETS),
        ("layer", 'layers = [{ preset = "NAME" }]', policy_presets.LAYERS),
    )
    table = Table(
        title="Resilience presets (see docs/policies.md for parameters and sources)",
        title_justify="left",
        caption=escape("Use: " + "; ".join(f"{kind}: {usage}" for kind, usage, _ in sections)),
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,  # laid out for 80 columns (report_table.print_fixed)
        pad_edge=False,
    )
    table.add_column("kind", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("what it does")
    for kind, _, presets_of_kind in sections:
        names = list(presets_of_kind)
        for i, name in enumerate(names):
            table.add_row(
                kind if i == 0 else "",
                name,
                presets_of_kind[name].summary,
                end_section=i == len(names) - 1,
            )
    print_fixed(console, table)


def _compact(value: float | None) -> str:
    """30000 -> '30k', 2000000 -> '2M' (exact values only; others with separators)."""
    if value is None:
        return ""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size and value % (size / 10) == 0:
            return f"{value / size:g}{suffix}"
    return f"{value:,.0f}"


_PRESET_SECTIONS: dict[str, Callable[[Console, Mapping[str, Any]], None]] = {
    "models": _print_models,
    "tiers": _print_tiers,
    "policies": _print_policies,
}


def _add_presets_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "presets",
        help="list model prices, rate-limit tiers and resilience policies",
        description=cmd_presets.__doc__,
    )
    p.add_argument(
        "--kind", choices=["all", *_PRESET_SECTIONS], default="all", help="which list to show"
    )
    p.add_argument(
        "--price-file",
        action="append",
        default=[],
        metavar="FILE",
        help="also list the models of a price file (the format of data/models.toml)",
    )
    p.set_defaults(func=cmd_presets)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from llmtraffic import __version__
    from llmtraffic.experiment import commands as experiment_commands

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
    p_run.add_argument("--seed", type=_seed, help="override run.seed (0 to 2**63 - 1)", metavar="N")
    p_run.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out folder, when it is a results folder (never another)",
    )
    p_run.add_argument("--quiet", "-q", action="store_true", help="no progress bar or tables")
    overrides(p_run)
    _allow_large(p_run)
    add_plugin_option(p_run)
    experiment_commands.add_run_options(p_run)
    p_run.set_defaults(func=cmd_run)

    p_val = sub.add_parser(
        "validate", help="check a config without running it", description=cmd_validate.__doc__
    )
    p_val.add_argument("config", help="scenario TOML file")
    overrides(p_val)
    _allow_large(p_val)
    p_val.set_defaults(func=cmd_validate)
    _add_fit_parser(sub)
    p_cal = sub.add_parser(
        "calibrate",
        help="fit the batching curve of a provider to a load test's table",
        description=cmd_calibrate.__doc__,
    )
    p_cal.add_argument("bench", type=Path, help="the load test's CSV (BENCH.csv)")
    p_cal.add_argument(
        "--provider", default="NAME", help="provider name in the snippet (default NAME)"
    )
    p_cal.set_defaults(func=cmd_calibrate)
    _add_presets_parser(sub)
    experiment_commands.add_parsers(sub)  # compare, plot, report
    from llmtraffic.serve.command import add_serve_parser

    add_serve_parser(sub, overrides, _seed)
    from llmtraffic.checks.command import add_check_parser

    add_check_parser(sub)
    p_check = sub.choices["check"]
    add_plugin_option(p_check)
    p_check.set_defaults(func=_plugins_checked_first(p_check.get_default("func")))
    return parser


def add_plugin_option(p: argparse.ArgumentParser) -> None:
    """``--allow-plugin MODULE``: the modules whose plugins a config may import and run."""
    p.add_argument(
        FLAG,
        dest="allow_plugin",
        action="append",
        default=[],
        type=_module_name,
        metavar="MODULE",
        help="let the config's custom or tenacity retry policies import and run code from "
        "MODULE (and its submodules); repeatable. Without it a config that names a plugin is "
        "refused: a plugin is code (docs/policies.md)",
    )


def _module_name(text: str) -> str:
    if not all(p.isidentifier() for p in text.split(".")):
        raise argparse.ArgumentTypeError(
            f"expected a module name such as mypackage.policies, got {text!r}"
        )
    return text


def _plugins_checked_first(
    command: Callable[[argparse.Namespace, Console], int],
) -> Callable[[argparse.Namespace, Console], int]:
    """``command`` (``check``), after refusing the experiment's plugins that --allow-plugin
    does not name: its runs may go to worker processes, which import whatever they are sent."""
    from llmtraffic.experiment.spec import read_experiment

    def checked(args: argparse.Namespace, console: Console) -> int:
        spec = read_experiment(args.config, args.set)
        check_plugins((p.scenario for p in spec.points), source=args.config)
        return command(args, console)

    return checked


def _allow_large(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-large",
        action="store_true",
        help="run (or accept) a config whose estimated size exceeds the limits: more than "
        "2 GB of memory or an hour of CPU time per run, more than 100,000 runs or a day of CPU "
        "time per experiment (see 'validate' for the estimate)",
    )


def _seed(text: str) -> int:
    from llmtraffic.config.scenario import MAX_SEED

    value = _non_negative_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"must be at most 2**63 - 1 ({MAX_SEED}), got {value}: seeds are stored as 64-bit "
            "integers"
        )
    return value


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
    previous = _stop_on_sigterm()
    try:
        # A config runs plugins only from the modules the user names (never by itself).
        with allowed_plugins(getattr(args, "allow_plugin", None) or ()):
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
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm() -> Any:
    """Make SIGTERM stop the command as Ctrl-C does (a clean stop: half-written folders
    removed, an experiment's finished runs kept and its manifest marked interrupted). Returns
    the previous handler, or None when signals cannot be set here (not the main thread)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
