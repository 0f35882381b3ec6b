"""The ``llmtraffic serve`` command: arguments, the banner with the base URLs, the end line.

Imports nothing of the web stack until it runs, so the CLI works without the ``serve`` extra
and says how to install it when ``serve`` is asked for.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import threading
from pathlib import Path
from typing import Any

from rich.console import Console

from llmtraffic.config.loader import load_config
from llmtraffic.errors import LLMTrafficError

EXIT_OK = 0


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    """Serve a config's providers over HTTP (OpenAI Chat Completions and Responses, Anthropic
    Messages; JSON and SSE), through the same provider model as a simulation, in wall time
    divided by --speedup; log every attempt to a results folder. Stop with Ctrl-C or SIGTERM
    (or --stop-after): the log is written then."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise LLMTrafficError(
            "llmtraffic serve needs Starlette and uvicorn: pip install 'llmtraffic[serve]'"
        ) from None
    from llmtraffic.serve.server import serve

    scenario = load_config(args.config, args.set)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out if args.out is not None else Path("runs") / f"{scenario.name}-serve-{stamp}"

    def ready(session: Any) -> None:
        host = args.host
        lines = [
            f"serving {args.config} ({scenario.name}) on http://{host}:{session.port}, "
            f"speedup {args.speedup:g}"
            + ("; the clock starts at the first request" if args.wait_for_traffic else "")
            + f"; Ctrl-C or SIGTERM stops it and writes {out}"
        ]
        for name in scenario.providers:
            root = f"http://{host}:{session.port}/{name}"
            lines.append(f"  {name}: OpenAI base_url {root}/v1   Anthropic base_url {root}")
        console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
        if args.stop_after is not None:
            timer = threading.Timer(args.stop_after, session.stop)
            timer.daemon = True
            timer.start()

    session = serve(
        scenario,
        out,
        host=args.host,
        port=args.port,
        speedup=args.speedup,
        seed=args.seed,
        force=args.force,
        wait_for_traffic=args.wait_for_traffic,
        on_ready=ready,
    )
    s = session.summary
    console.print(
        f"served {s['requests']} requests in {s['attempts']} attempts "
        f"({s['attempt_amplification']:.3f} per request), success {s['success_rate']:.2%}, "
        f"billed ${s['billed_cost']:.4f}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"results: {out}", markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def _speedup(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535 (0: any free port), got {value}")
    return value


def _seconds(text: str) -> float:
    from llmtraffic.units import parse_duration

    try:
        value = float(parse_duration(text))
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite duration > 0, got {text}")
    return value


def add_serve_parser(sub: Any, overrides: Any, seed: Any) -> None:
    """Add ``serve`` to the CLI's subcommands."""
    p = sub.add_parser(
        "serve",
        help="serve a config's providers over HTTP for your real client code",
        description=cmd_serve.__doc__,
    )
    p.add_argument("config", help="scenario TOML file (its providers, features' token sizes)")
    p.add_argument(
        "--port", type=_port, default=8400, help="port (default 8400; 0 picks a free one)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--speedup",
        type=_speedup,
        default=1.0,
        help="simulated seconds per wall second (default 1): an incident at 10 min starts "
        "after 10 s with --speedup 60; retry-after headers are divided by it",
    )
    p.add_argument("--out", type=Path, help="session log folder (default runs/<name>-serve-<time>)")
    p.add_argument("--force", action="store_true", help="replace an existing --out results folder")
    p.add_argument("--seed", type=seed, metavar="N", help="override run.seed")
    p.add_argument(
        "--stop-after",
        type=_seconds,
        metavar="DURATION",
        help="stop by itself after this many wall seconds (e.g. 30s), as Ctrl-C would",
    )
    p.add_argument(
        "--wait-for-traffic",
        action="store_true",
        help="start simulated time (the incident schedule) at the first request instead of "
        "when the server starts: the schedule meets the application however long it takes "
        "to start",
    )
    overrides(p)
    p.set_defaults(func=cmd_serve)
