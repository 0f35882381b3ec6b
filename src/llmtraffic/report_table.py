"""The readable summary tables the CLI prints at the end of a run.

Every table here is designed for an 80-column terminal and printed at that width on any wider
one (``print_fixed``): a CI log, a pipe (which rich treats as 80 columns) and a 200-column
terminal show the same lines. Numbers never wrap and are never cut; only labels wrap. A table
with more columns than 80 columns hold is split in two (per feature: traffic, then cost;
incidents: what happened, then what it cost and how it ended).
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

WIDTH = 80
"""The width every table is laid out for, and printed at on a wider terminal."""


def print_fixed(console: Console, renderable: RenderableType) -> None:
    """Print at ``WIDTH`` columns (or the terminal's own width when it is narrower): the
    layout is the same on every terminal of 80 columns or more and in a pipe."""
    console.print(renderable, width=min(console.width, WIDTH))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _num(v: Any, fmt: str) -> str:
    if _missing(v):
        return "-"
    return format(v, fmt)


def _times(v: Any, fmt: str) -> str:
    """A ratio with its x (``1.086x``); a missing one is ``-``, not ``-x``."""
    return "-" if _missing(v) else format(v, fmt) + "x"


def money(v: Any, decimals: int | None = None) -> str:
    """USD with precision suited to the magnitude: cents from $100, whole dollars from
    $100,000 (where cents are noise and only widen a column). ``decimals`` imposes a column's
    (``money_decimals``) instead."""
    if _missing(v):
        return "-"
    d = money_decimals(v) if decimals is None else decimals
    return unsigned_zero(f"${v:,.{d}f}" if v >= 0 else f"-${-v:,.{d}f}")


def unsigned_zero(text: str) -> str:
    """``text`` without its leading sign when every digit in it is 0: a value that rounds to
    zero is 0 (``-0.000`` and ``+0.0 pp`` read ``0.000`` and ``0.0 pp``)."""
    digits = [c for c in text if c.isdigit()]
    if text[:1] in ("-", "+") and digits and set(digits) == {"0"}:
        return text[1:]
    return text


def money_decimals(*values: Any) -> int:
    """The decimals ``money`` gives the largest of ``values`` (missing ones left out): one
    format for a column or row of money, so that $102.77 never stands beside $85.8761."""
    amounts = [abs(v) for v in values if not _missing(v) and math.isfinite(v)]
    largest = max(amounts, default=0.0)
    return 0 if largest >= 100_000 else 2 if largest >= 100 else 4


def money_column(values: list[Any]) -> list[str]:
    """``values`` formatted as one column of money: the decimals of its largest amount."""
    decimals = money_decimals(*values)
    return [money(v, decimals) for v in values]


def seconds(v: Any) -> str:
    """A duration in s or ms."""
    if _missing(v):
        return "-"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _pair(a: Any, b: Any) -> str:
    """Two durations with one unit: ``2.27 / 6.55 s`` (both in ms when both are below 1 s)."""
    if _missing(a) or _missing(b) or (a < 1) != (b < 1):
        return f"{seconds(a)} / {seconds(b)}"
    if a < 1:
        return f"{a * 1000:.0f} / {b * 1000:.0f} ms"
    return f"{a:.2f} / {b:.2f} s"


UNDONE_WORK = 0.9
"""Below this success rate a projection is flagged: it bills the work done, not the work asked
for (a 429 lockout "costs" less than serving the traffic)."""


def _steady_note(s: dict[str, Any]) -> str:
    """What the projections were scaled from (docs/metrics.md, "Projections"), and a warning
    when most of the work was not done."""
    steady, window = s.get("projection_seconds"), s.get("duration")
    if s.get("cost_per_day") is None or _missing(steady):
        return "steady: no bin outside the incidents to project from (docs/metrics.md)"
    if window is not None and steady < window:
        note = (
            f"steady: projected from the {steady:,.0f} s outside incidents; an incident's own "
            'cost is in its table (docs/metrics.md, "Projections")'
        )
    else:
        note = (
            'steady: the whole window scaled to a day and a month (docs/metrics.md, "Projections")'
        )
    success, vs = s.get("success_rate"), s.get("cost_vs_baseline")
    if isinstance(success, float | int) and success < UNDONE_WORK:
        ratio = (
            f"; billed {vs:.3g}x what serving every request once would cost"
            if not _missing(vs)
            else ""
        )
        note += (
            f". Only {success:.2%} of requests succeeded: the projections bill the work done, "
            f"not the work asked for{ratio}"
        )
    return note


def summary_table(s: dict[str, Any], title: str = "Summary") -> Table:
    """The headline metrics of a run; the projections are the steady state's (a caption says
    from how many seconds)."""
    t = Table(title=title, show_header=False, title_justify="left")
    # Labels may wrap on a terminal narrower than 80 columns; values never do.
    t.add_column("metric", style="bold")
    t.add_column("value", justify="right", no_wrap=True)
    t.add_column("metric", style="bold")
    t.add_column("value", justify="right", no_wrap=True)
    left = [
        ("requests", f"{s['requests']:,}"),
        ("success rate", _num(s["success_rate"], ".2%")),
        ("attempts", f"{s['attempts']:,}"),
        ("attempt amplification", _times(s["attempt_amplification"], ".3f")),
        ("attempt error rate", _num(s["attempt_error_rate"], ".2%")),
        ("peak attempt rate", _times(s["peak_attempt_rate_ratio"], ".2f").replace("x", "x mean")),
        ("latency p50 / p95", _pair(s["latency_p50"], s["latency_p95"])),
        ("latency p99 / max", _pair(s["latency_p99"], s["latency_max"])),
    ]
    right = [
        ("billed cost", money(s["billed_cost"])),
        ("useful cost", money(s["useful_cost"])),
        ("wasted cost", money(s["wasted_cost"])),
        ("cost amplification", _times(s["cost_amplification"], ".3f")),
        ("cost vs baseline", _times(s["cost_vs_baseline"], ".3f")),
        ("cost per success", money(s["cost_per_success"])),
        ("per day (steady)", money(s["cost_per_day"])),
        ("per month (steady)", money(s["cost_per_month"])),
    ]
    for (a, b), (c, d) in zip(left, right, strict=True):
        t.add_row(a, b, c, d)
    t.caption = _steady_note(s)
    t.caption_justify = "left"
    return t


def _plain_table(title: str, caption: str | None = None) -> Table:
    """The house style of the secondary tables: a left title, an underlined bold header, no
    box and no outer padding (two spaces between columns)."""
    t = Table(
        title=title,
        title_justify="left",
        box=None,
        header_style="bold underline",
        pad_edge=False,
        caption=caption,
        caption_justify="left",
    )
    return t


def features_table(s: dict[str, Any]) -> Group:
    """Per-feature breakdown, as two tables that each fit 80 columns: traffic, then cost."""
    traffic = _plain_table("Per feature: requests")
    cost = _plain_table("Per feature: cost (per day and month: steady state)")
    for t in (traffic, cost):
        # A long feature name wraps rather than pushing a number off the line.
        t.add_column("feature", max_width=24)
    for col in ("requests", "success", "att/req", "att errors", "p95 latency"):
        traffic.add_column(col, justify="right", no_wrap=True)
    for col in ("billed", "wasted", "cost x", "per day", "per month"):
        cost.add_column(col, justify="right", no_wrap=True)
    features = s["features"]
    money_keys = ("billed_cost", "wasted_cost", "cost_per_day", "cost_per_month")
    # One format per column: the decimals of its largest amount, whichever feature has it.
    columns = {k: money_column([m.get(k) for m in features.values()]) for k in money_keys}
    for row, (name, m) in enumerate(features.items()):
        traffic.add_row(
            escape(name),
            f"{m['requests']:,}",
            _num(m["success_rate"], ".2%"),
            _num(m["attempt_amplification"], ".3f"),
            _num(m.get("attempt_error_rate"), ".2%"),
            seconds(m["latency_p95"]),
        )
        cost.add_row(
            escape(name),
            columns["billed_cost"][row],
            columns["wasted_cost"][row],
            _num(m["cost_amplification"], ".3f"),
            columns["cost_per_day"][row],
            columns["cost_per_month"][row],
        )
    latency = latency_table(features)
    return Group(traffic, cost) if latency is None else Group(traffic, cost, latency)


def latency_table(features: dict[str, dict[str, Any]]) -> Table | None:
    """Per feature, what its users see of latency: time to first token and per output token,
    and SLO attainment. Shown when it says more than the latency column: some feature
    streams (its first token comes before the end) or has an SLO."""
    streamed = any(
        not _missing(m.get("ttft_p50")) and m["ttft_p50"] < m["latency_p50"]
        for m in features.values()
    )
    slo = any("slo_attainment" in m for m in features.values())
    if not streamed and not slo:
        return None
    t = _plain_table(
        "Per feature: latency users see",
        "ttft: to the first token, from arrival; tpot: per output token",
    )
    t.add_column("feature", max_width=24)
    for col in ("ttft p50", "ttft p95", "tpot p50", "tpot p95", "in SLO"):
        t.add_column(col, justify="right", no_wrap=True)
    for name, m in features.items():
        t.add_row(
            escape(name),
            seconds(m.get("ttft_p50")),
            seconds(m.get("ttft_p95")),
            seconds(m.get("tpot_p50")),
            seconds(m.get("tpot_p95")),
            _num(m.get("slo_attainment"), ".2%") if "slo_attainment" in m else "",
        )
    return t


def layers_table(s: dict[str, Any]) -> Table | None:
    """Per retry layer of the features that have layers: the calls it made, per request and
    per call of the layer above, and the most attempts a request made against the policy's
    bound (docs/metrics.md, "Retry layers"). None when no feature has layers."""
    layered = {n: m for n, m in s["features"].items() if m.get("layers")}
    if not layered:
        return None
    t = _plain_table(
        "Retry layers (outermost first; sdk: the attempts sent)",
        caption="calls x: calls per call of the layer above; their product is att/req",
    )
    t.add_column("feature", max_width=20)
    t.add_column("layer", max_width=16)
    for col in ("calls", "per request", "calls x", "most att", "bound"):
        t.add_column(col, justify="right", no_wrap=True)
    for name, m in layered.items():
        layers = m["layers"]
        for i, (layer, v) in enumerate(layers.items()):
            last = i == len(layers) - 1
            t.add_row(
                escape(name) if i == 0 else "",
                escape(layer),
                f"{v['calls']:,}",
                _num(v["calls_per_request"], ".3f"),
                _num(v["calls_per_outer_call"], ".3f"),
                f"{m['attempts_per_request_max']:,}" if last else "",
                f"{m['attempt_bound']:,}" if last else "",
                end_section=last,
            )
    return t


def hedges_table(s: dict[str, Any]) -> Table | None:
    """Per feature that hedges: the hedges sent, their share of the attempts (the spend
    added, in attempts), the requests a hedge answered, and the latency tail
    (docs/metrics.md, "Hedged requests"). None when no feature hedges."""
    hedged = {n: m for n, m in s["features"].items() if "hedges" in m}
    if not hedged:
        return None
    t = _plain_table("Hedged requests", caption="hedge share: hedges / attempts sent")
    t.add_column("feature", max_width=24)
    for col in ("hedges", "hedge share", "hedge wins", "p50", "p99"):
        t.add_column(col, justify="right", no_wrap=True)
    for name, m in hedged.items():
        t.add_row(
            escape(name),
            f"{m['hedges']:,}",
            _num(m["hedge_share"], ".2%"),
            f"{m['hedge_wins']:,}",
            seconds(m.get("latency_p50")),
            seconds(m.get("latency_p99")),
        )
    return t


def sessions_table(s: dict[str, Any]) -> Table | None:
    """Per closed-loop feature: its sessions (or agent tasks), how they ended, the turns (or
    calls) and cost of one, and how long one lasted (docs/metrics.md, "Sessions and agent
    tasks"). None when no feature has sessions or tasks."""
    rows = []
    for name, m in s["features"].items():
        if "sessions" in m:
            unit, done, turns = "session", "completed", "turns"
        elif "tasks" in m:
            unit, done, turns = "task", "succeeded", "calls"
        else:
            continue
        rows.append(
            (
                escape(name) + (" (agent)" if unit == "task" else ""),
                f"{m[unit + 's']:,}",
                _num(m[f"{unit}_success_rate"], ".2%"),
                f"{m[unit + 's_abandoned']:,}",
                _num(m[f"{turns}_per_{unit}"], ".2f"),
                money(m[f"cost_per_{unit}"]),
                money(m[f"cost_per_{done}_{unit}"]),
                seconds(m[f"{unit}_duration_mean"]),
            )
        )
    if not rows:
        return None
    t = _plain_table(
        "Sessions and agent tasks",
        caption="count: sessions, or an agent's tasks; ok: every turn (call) answered; turns: "
        "per session (calls per task); per ok: the feature's bill / ok ones",
    )
    t.add_column("feature", max_width=24)
    for col in ("count", "ok", "abandoned", "turns", "cost each", "per ok", "duration"):
        t.add_column(col, justify="right", no_wrap=True)
    for row in rows:
        t.add_row(*row)
    return t


def levers_table(s: dict[str, Any]) -> Table | None:
    """Per feature that pulls a cost lever: response-cache hits and the cost they saved,
    cascade escalations and quality failures, requests a spend cap refused and the spend it
    prevented (docs/metrics.md, "Cost levers"). None when no feature pulls one."""
    keys = ("cache_hits", "escalations", "spend_cap_refused")
    pulled = {n: m for n, m in s["features"].items() if any(k in m for k in keys)}
    if not pulled:
        return None
    t = _plain_table(
        "Cost levers",
        caption="saved: baseline cost of the cache hits; prevented: baseline cost of the "
        "requests a spend cap refused; quality: answers the cascade's last model got wrong",
    )
    t.add_column("feature", max_width=16)
    for col in ("cache hits", "saved", "escalated", "quality", "refused", "prevented"):
        t.add_column(col, justify="right", no_wrap=True)
    for name, m in pulled.items():
        requests = m["requests"]

        def count(key: str, m: dict[str, Any] = m, requests: int = requests) -> str:
            if key not in m:
                return "-"
            share = f" {m[key] / requests:.0%}" if requests else ""
            return f"{m[key]:,}{share}"

        t.add_row(
            escape(name),
            count("cache_hits"),
            money(m["cache_saved_cost"]) if "cache_saved_cost" in m else "-",
            count("escalations"),
            f"{m['quality_failures']:,}" if "quality_failures" in m else "-",
            count("spend_cap_refused"),
            money(m["spend_cap_prevented_cost"]) if "spend_cap_prevented_cost" in m else "-",
        )
    return t


def lever_routes_table(s: dict[str, Any]) -> Table | None:
    """Per route (a cascade's model, or a split's provider) of each feature that has routes:
    the requests that reached it, its cost, the requests it answered and their latency, and
    the share it escalated (docs/metrics.md, "Cost levers"). None when no feature has routes."""
    routed = {n: m["routes"] for n, m in s["features"].items() if m.get("routes")}
    if not routed:
        return None
    t = _plain_table(
        "Routes (a cascade's models in order, or a split's providers)",
        caption="latency: mean, from arrival, of the requests the route answered",
    )
    t.add_column("feature", max_width=14)
    t.add_column("route", max_width=16)
    for col in ("requests", "billed", "answered", "latency", "escalated"):
        t.add_column(col, justify="right", no_wrap=True)
    for name, routes in routed.items():
        for i, (route, v) in enumerate(routes.items()):
            t.add_row(
                escape(name) if i == 0 else "",
                escape(route),
                f"{v['requests']:,}",
                money(v["billed_cost"]),
                f"{v['answered']:,}",
                seconds(v["latency_mean"]),
                _num(v["escalation_share"], ".1%"),
            )
    return t


def routes_table(s: dict[str, Any]) -> Table | None:
    """Per deployment of the features that route: the attempts sent to it, their share, the
    times it was cooled down and the picks it missed while cooling down (docs/metrics.md,
    "Routing"). None when no feature routes."""
    routed = {n: m["route"] for n, m in s["features"].items() if "route" in m}
    if not routed:
        return None
    t = _plain_table(
        "Routing across deployments",
        caption="skips: attempts routed elsewhere while it cooled down",
    )
    t.add_column("feature", max_width=20)
    t.add_column("deployment", max_width=20)
    for col in ("attempts", "share", "cooldowns", "skips"):
        t.add_column(col, justify="right", no_wrap=True)
    for name, route in routed.items():
        rows = list(route["deployments"].items())
        for i, (dname, v) in enumerate(rows):
            t.add_row(
                f"{escape(name)} ({route['strategy']})" if i == 0 else "",
                escape(dname),
                f"{v['attempts']:,}",
                _num(v["share"], ".2%"),
                f"{v['cooldowns']:,}",
                f"{v['cooldown_skips']:,}",
                end_section=i == len(rows) - 1,
            )
    return t


def incidents_table(s: dict[str, Any]) -> Group:
    """Per incident: what happened (success before and during, attempts per request), then
    what it cost (extra cost, the requests it left unserved and what they were worth) and how
    it ended (recovery, metastable verdict). A negative extra cost is work not done, and its
    cell says so."""
    what = _plain_table("Incidents")
    what.add_column("#", justify="right", no_wrap=True)
    what.add_column("provider", max_width=20)
    what.add_column("kind", max_width=14)
    what.add_column("window", no_wrap=True)
    for col in ("ok before", "ok during", "att/req"):
        what.add_column(col, justify="right", no_wrap=True)
    cost = _plain_table("Incidents: cost (outside the projections) and recovery")
    cost.add_column("#", justify="right", no_wrap=True)
    for col in ("extra cost", "unserved", "worth", "recovery"):
        cost.add_column(col, justify="right", no_wrap=True)
    # "1 of 2, 1 undetermined"-style text may wrap between words.
    cost.add_column("metastable", max_width=16)
    notes: list[str] = []
    negative = False
    extra_dec = money_decimals(*(inc["extra_cost"] for inc in s["incidents"]))
    worth_dec = money_decimals(*(inc.get("unserved_cost") for inc in s["incidents"]))
    for i, inc in enumerate(s["incidents"]):
        n = str(i + 1)
        what.add_row(
            n,
            escape(str(inc["provider"])),
            escape(str(inc["kind"])),
            f"{inc['start']:g}-{inc['end']:g} s",
            _num(inc["success_rate_before"], ".2%"),
            _num(inc["success_rate_during"], ".2%"),
            _num(inc["attempt_amplification_during"], ".2f"),
        )
        meta = inc["metastable"]
        if meta is None:
            notes.append(f"{len(notes) + 1}. incident {n}: {inc.get('metastable_reason', '?')}")
        extra = inc["extra_cost"]
        unserved = inc.get("unserved_requests")
        below = not _missing(extra) and extra < 0
        negative |= below
        cost.add_row(
            n,
            money(extra, extra_dec) + (" *" if below else ""),
            "-" if _missing(unserved) else f"{unserved:,.0f}",
            money(inc.get("unserved_cost"), worth_dec),
            seconds(inc["recovery_time"]),
            verdict(meta, len(notes)),
        )
    # Footnotes as lines of their own, wrapped at the output's width rather than the narrow
    # table's: the reason is a sentence, and a footnote keeps the table one line per incident.
    footnotes: list[RenderableType] = []
    if negative:
        footnotes.append(
            Text(
                "* below zero: work not done, not a saving (the unserved requests were not "
                "billed; worth: what they would have cost)"
            )
        )
    if notes:
        footnotes.append(Text("undetermined: " + "; ".join(notes)))
    return Group(what, cost, *footnotes)


def verdict(metastable: bool | None, note: int = 0) -> str:
    """A metastable verdict for a table: yes (in red), no, or undetermined with the number of
    its footnote (the run is too short to tell; the note gives ``metastable_reason``)."""
    if metastable is None:
        return f"undetermined ({note})" if note else "undetermined"
    return "[red]yes[/red]" if metastable else "no"


REQUEST_CAUSES = {
    "exhausted": "exhausted: its last allowed attempt failed (why: below)",
    "non_retryable": "failed with an error the policy does not retry",
    "deadline": "the user's deadline passed",
    "rejected_breaker": "refused by the open circuit breaker",
    "rejected_budget": "refused by the retry budget",
    "rejected_throttle": "refused by the client's throttle, pacing or concurrency limit",
    "rejected_route": "no deployment of its route available (all cooling down)",
    "unfinished": "unfinished when the run stopped (run.drain)",
}
"""Why a request failed, by its outcome (docs/records.md)."""

ATTEMPT_CAUSES = {
    "rate_limited": "429 rate limited",
    "overloaded": "529/503 overloaded: shed by a full provider queue",
    "server_error": "5xx server error",
    "midstream_error": "mid-stream failure (after a 200)",
    "timeout": "timeout: no answer within the attempt timeout",
    "quota_exhausted": "429 quota exhausted: spend cap or insufficient_quota (waiting won't help)",
    "context_length_exceeded": "400 context length exceeded: input + max_tokens > context window",
}
"""What failed an attempt, by its status (docs/records.md)."""

RATE_LIMIT_NOTE = (
    "429: this summary does not say which limit (rpm, tpm, itpm or otpm) refused; compare the "
    "request and token rates with the tier (llmtraffic presets --kind tiers)"
)
"""The footnote of a failure table with 429s from a summary without ``rate_limited_by``
(written before it was recorded)."""


def failures_table(s: dict[str, Any]) -> Group | None:
    """Why requests failed and what failed their attempts: one row per cause with its count
    and its share of requests (or of attempts), largest first; causes with no count are left
    out. None when nothing failed."""
    requests, attempts = int(s["requests"]), int(s["attempts"])
    outcomes = {k: v for k, v in s.get("outcomes", {}).items() if k != "ok" and v}
    statuses = {k: v for k, v in s.get("attempt_statuses", {}).items() if k != "ok" and v}
    if not outcomes and not statuses:
        return None
    failed = sum(outcomes.values())
    share = f"{failed / requests:.2%}" if requests else "-"
    t = _plain_table(f"Why requests failed: {failed:,} of {requests:,} requests ({share})")
    t.add_column("cause")
    t.add_column("count", justify="right", no_wrap=True)
    t.add_column("share", justify="right", no_wrap=True)
    t.add_row(f"[bold]requests[/bold] (share of {requests:,})", "", "")
    if not outcomes:
        t.add_row("  none: retries recovered from every failed attempt", "", "")
    for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        t.add_row("  " + escape(REQUEST_CAUSES.get(k, k)), f"{v:,}", _share(v, requests))
    t.add_row(f"[bold]attempts that failed[/bold] (share of {attempts:,})", "", "")
    if not statuses:
        t.add_row("  none", "", "")
    by_limit = s.get("rate_limited_by")
    for k, v in sorted(statuses.items(), key=lambda kv: -kv[1]):
        t.add_row("  " + escape(ATTEMPT_CAUSES.get(k, k)), f"{v:,}", _share(v, attempts))
        cancelled = sum(m.get("hedges_cancelled", 0) for m in s["features"].values())
        if k == "timeout" and cancelled:
            # Hedging records the attempts it cancels as timeouts (docs/policies.md).
            t.add_row("    cancelled: another attempt answered first", f"{cancelled:,}", "")
        if k == "rate_limited" and by_limit:
            # Which limit refused them: "gpt-4o tpm", the largest first.
            for limit, n in sorted(by_limit.items(), key=lambda kv: -kv[1]):
                provider, _, kind = limit.rpartition(".")
                t.add_row(f"    by {escape(provider)}'s {kind}", f"{n:,}", _share(n, attempts))
        if k == "quota_exhausted":
            # Which quota refused them: a provider's spend cap, or a quota incident.
            for cause, n in sorted(s.get("quota_exhausted_by", {}).items(), key=lambda kv: -kv[1]):
                provider, _, kind = cause.rpartition(".")
                what = "spend cap" if kind == "spend_cap" else "quota incident"
                t.add_row(f"    by {escape(provider)}'s {what}", f"{n:,}", _share(n, attempts))
    if "rate_limited" in statuses and by_limit is None:
        # A note as a line of its own, wrapped at the output's width rather than the table's.
        return Group(t, Text(RATE_LIMIT_NOTE))
    return Group(t)


def _share(count: int, total: int) -> str:
    return f"{count / total:.2%}" if total else "-"


def batching_lines(s: dict[str, Any]) -> list[str]:
    """One line per provider with continuous batching: how full its batch ran and how much
    slower that made its tokens (the load's cost in speed, before any timeout)."""
    out = []
    for name, b in s.get("batching", {}).items():
        slow = b.get("tpot_slowdown")
        if slow is None or slow != slow:  # nothing decoded
            continue
        out.append(
            f"{escape(name)}: continuous batching, {b['mean_batch']:.1f} sequences decoding at "
            f"once while busy (peak {b['max_batch']:.0f}); tokens {slow:.2f}x the time of one "
            f"sequence alone ({b['tpot_mean'] * 1000:.1f} ms per token)"
        )
    return out


def pricing_lines(s: dict[str, Any]) -> list[str]:
    """One line per provider that bills by the prompt cache, a long-context tier or
    reasoning: how its bill splits, and the cache's hit rate (docs/billing.md)."""
    out = []
    for name, p in s.get("pricing", {}).items():
        billed = p.get("billed_cost", 0.0)
        parts = [
            f"{label} {money(p[key])}"
            for key, label in (
                ("input_cost", "input"),
                ("cache_write_cost", "cache writes"),
                ("cache_read_cost", "cache reads"),
                ("output_cost", "output"),
                ("reasoning_cost", "reasoning"),
            )
            if p.get(key)
        ]
        line = f"{escape(name)}: billed {money(billed)}"
        if parts:
            line += " = " + " + ".join(parts)
        if "cache_lookups" in p:
            hits, lookups = int(p["cache_hits"]), int(p["cache_lookups"])
            line += (
                f"; prompt cache hit {_share(hits, lookups)} of {lookups:,} prompts "
                f"({int(p['cache_read_tokens']):,} tokens read, "
                f"{int(p['cache_write_tokens']):,} written)"
            )
        if p.get("long_context_attempts"):
            line += f"; {int(p['long_context_attempts']):,} attempts at long-context prices"
        out.append(line)
    return out


def print_summary(console: Console, s: dict[str, Any]) -> None:
    """Print every table that has content, laid out for 80 columns (``print_fixed``)."""
    title = f"Summary: {s.get('scenario', '')} (seed {s['seed']})"
    print_fixed(console, summary_table(s, title=escape(title)))
    failures = failures_table(s)
    if failures is not None:
        print_fixed(console, failures)
    if len(s["features"]) > 1:
        print_fixed(console, features_table(s))
    layers = layers_table(s)
    if layers is not None:
        print_fixed(console, layers)
    hedges = hedges_table(s)
    if hedges is not None:
        print_fixed(console, hedges)
    sessions = sessions_table(s)
    if sessions is not None:
        print_fixed(console, sessions)
    routes = routes_table(s)
    if routes is not None:
        print_fixed(console, routes)
    for table in (levers_table(s), lever_routes_table(s)):
        if table is not None:
            print_fixed(console, table)
    if s["incidents"]:
        print_fixed(console, incidents_table(s))
    for line in batching_lines(s):
        print_fixed(console, line)
    for line in pricing_lines(s):
        print_fixed(console, line)
    print_fixed(
        console,
        f"[dim]{s['event_count']:,} events in {s['wall_time_s']:.2f} s wall time; "
        f"simulated {s['sim_end_time']:,.0f} s[/dim]",
    )
