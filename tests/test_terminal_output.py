"""Terminal output at 80 columns: no number is cut, the layout is the same on an 80- and a
120-column console (and in a pipe, which rich treats as 80 columns), and the run summary says
why requests failed."""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console

import llmtraffic
from llmtraffic.cli import main
from llmtraffic.experiment.analysis import paired_differences, point_stats
from llmtraffic.experiment.tables import (
    POINT_METRICS,
    _money_decimals,
    _row_value,
    differences_table,
    fmt_half,
    print_points,
    print_table,
)
from llmtraffic.report_table import (
    ATTEMPT_CAUSES,
    RATE_LIMIT_NOTE,
    REQUEST_CAUSES,
    money,
    money_decimals,
    print_summary,
)

ROOT = Path(__file__).resolve().parents[1]


def render(show: Callable[[Console], None], width: int) -> str:
    """What ``show`` prints on a console of ``width`` columns, trailing spaces dropped."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    show(console)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def check_layout(show: Callable[[Console], None]) -> str:
    """The text at 80 columns, after checking it has no cut value, no line past 80 columns,
    and the same lines at 120 columns."""
    text = render(show, 80)
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert render(show, 120) == text
    return text


@pytest.fixture(scope="module")
def quickstart() -> dict[str, Any]:
    """The summary of `make demo`'s run (experiments/quickstart.toml): two features, a
    brownout, a breaker that refuses requests, retries that run out."""
    config = llmtraffic.load_config(ROOT / "experiments" / "quickstart.toml")
    summary: dict[str, Any] = llmtraffic.Simulation(config).run().summary
    return summary


def scaled(summary: dict[str, Any], factor: float) -> dict[str, Any]:
    """The summary with every cost multiplied (the article's gpt-4o at 1M users a day bills
    about a million dollars a month: the widest money a table shows)."""
    s = copy.deepcopy(summary)
    for m in [s, *s["features"].values()]:
        for k, v in m.items():
            if "cost" in k and isinstance(v, float):
                m[k] = v * factor
    return s


def _print_summary(console: Console, s: dict[str, Any]) -> None:
    print_summary(console, s)


def test_the_run_summary_fits_80_columns_and_shows_every_number_in_full(
    quickstart: dict[str, Any],
) -> None:
    for s in (quickstart, scaled(quickstart, 5_000)):
        text = check_layout(partial(_print_summary, s=s))
        expected = [
            f"{s['requests']:,}",
            f"{s['attempts']:,}",
            f"{s['success_rate']:.2%}",
            *(money(s[k]) for k in ("billed_cost", "wasted_cost", "cost_per_month")),
        ]
        for k in ("billed_cost", "wasted_cost", "cost_per_month"):
            # One format per column: the decimals of its largest amount.
            column = [f[k] for f in s["features"].values()]
            expected += [money(v, money_decimals(*column)) for v in column]
        for name, f in s["features"].items():
            expected += [name, f"{f['requests']:,}", f"{f['success_rate']:.2%}"]
        for inc in s["incidents"]:
            expected += [
                inc["provider"],
                inc["kind"],
                f"{inc['start']:g}-{inc['end']:g} s",
                money(inc["extra_cost"]),
                f"{inc['unserved_requests']:,.0f}",
                money(inc["unserved_cost"]),
            ]
        missing = [e for e in expected if e not in text]
        assert not missing, (missing, text)


def test_a_money_column_has_one_format(quickstart: dict[str, Any]) -> None:
    """Each money column of the per-feature and incident tables has the decimals of its
    largest amount (as ``money`` gives it): never $102.77 beside $85.8761."""
    s = copy.deepcopy(quickstart)
    chat, rag = s["features"].values()
    chat.update(billed_cost=2.1834, cost_per_day=102.77, cost_per_month=150_000.4)
    rag.update(billed_cost=1.95831, cost_per_day=85.8761, cost_per_month=2_576.28)
    s["incidents"].append({**s["incidents"][0], "extra_cost": 312.5, "unserved_cost": 0.0421})
    s["incidents"][0].update(extra_cost=0.212, unserved_cost=0.1888)
    text = check_layout(lambda c: print_summary(c, s))
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()}
    assert rows["chat"][1:] == ["$2.1834", f"${chat['wasted_cost']:.4f}", rows["chat"][3],
                                "$102.77", "$150,000"]  # fmt: skip
    assert rows["rag-search"][1:] == ["$1.9583", f"${rag['wasted_cost']:.4f}",
                                      rows["rag-search"][3], "$85.88", "$2,576"]  # fmt: skip
    cost = text[text.index("Incidents: cost") :].splitlines()
    assert cost[2].split()[:4] == ["1", "$0.21", "509", "$0.1888"], cost
    assert cost[3].split()[:4] == ["2", "$312.50", "509", "$0.0421"], cost


def test_the_projections_say_they_are_the_steady_state(quickstart: dict[str, Any]) -> None:
    text = " ".join(render(lambda c: print_summary(c, quickstart), 80).split())
    assert "per month (steady)" in text
    # The demo's brownout is left out of the projection: the footnote says how much is in.
    assert quickstart["projection_seconds"] < quickstart["duration"]
    assert f"the {quickstart['projection_seconds']:,.0f} s outside incidents" in text


def test_the_summary_says_why_requests_failed(quickstart: dict[str, Any]) -> None:
    text = check_layout(lambda c: print_summary(c, quickstart))
    lines = text.splitlines()
    n, attempts = quickstart["requests"], quickstart["attempts"]
    failed = {k: v for k, v in quickstart["outcomes"].items() if k != "ok" and v}
    errors = {k: v for k, v in quickstart["attempt_statuses"].items() if k != "ok" and v}
    assert failed and errors  # the demo has both: the test below means something
    for causes, counts, total in ((REQUEST_CAUSES, failed, n), (ATTEMPT_CAUSES, errors, attempts)):
        for kind, count in counts.items():
            row = [line for line in lines if line.strip().startswith(causes[kind])]
            assert len(row) == 1, (kind, text)
            assert row[0].split()[-2:] == [f"{count:,}", f"{count / total:.2%}"], row
    # Causes with no count are left out.
    absent = [k for k in (*REQUEST_CAUSES, *ATTEMPT_CAUSES) if k not in failed and k not in errors]
    shown = [k for k in absent if k in REQUEST_CAUSES and REQUEST_CAUSES[k] in text]
    shown += [k for k in absent if k in ATTEMPT_CAUSES and ATTEMPT_CAUSES[k] in text]
    assert not shown, shown
    total = sum(failed.values())
    assert f"Why requests failed: {total:,} of {n:,} requests ({total / n:.2%})" in text


def test_a_run_locked_out_by_429s_says_so_first(quickstart: dict[str, Any]) -> None:
    """OpenAI tier 3 with gpt-4o for the article's load: almost every attempt is a 429. The
    summary names the cause first, with its share, and which limit refused the 429s (a summary
    written before that was recorded says it does not know)."""
    s = copy.deepcopy(quickstart)
    s["outcomes"] = {"ok": 120, "exhausted": 51_300}
    s["attempt_statuses"] = {"ok": 120, "rate_limited": 154_020, "server_error": 31}
    s["rate_limited_by"] = {"gpt-4o.tpm": 150_000, "gpt-4o.rpm": 4_020}
    s["requests"], s["attempts"] = 51_420, 154_171
    s["success_rate"] = 120 / 51_420
    text = check_layout(lambda c: print_summary(c, s))
    attempts_part = text[text.index("attempts that failed") :].splitlines()
    assert attempts_part[1].strip().startswith("429 rate limited")
    assert attempts_part[1].split()[-2:] == ["154,020", f"{154_020 / 154_171:.2%}"]
    assert attempts_part[2].split() == ["by", "gpt-4o's", "tpm", "150,000", "97.29%"]
    assert attempts_part[3].split()[:3] == ["by", "gpt-4o's", "rpm"]
    assert " ".join(RATE_LIMIT_NOTE.split()) not in " ".join(text.split())
    assert "exhausted" in text and "51,300" in text
    # The projections of a lockout bill what little was done: said next to them.
    flat_text = " ".join(text.split())
    assert "Only 0.23% of requests succeeded: the projections bill the work done" in flat_text
    del s["rate_limited_by"]
    text = check_layout(lambda c: print_summary(c, s))
    assert " ".join(RATE_LIMIT_NOTE.split()) in " ".join(text.split())


def test_a_run_without_failures_prints_no_failure_table(quickstart: dict[str, Any]) -> None:
    s = copy.deepcopy(quickstart)
    s["outcomes"] = {"ok": s["requests"]}
    s["attempt_statuses"] = {"ok": s["attempts"]}
    assert "Why requests failed" not in render(lambda c: print_summary(c, s), 80)


def test_a_negative_extra_cost_reads_as_work_not_done(quickstart: dict[str, Any]) -> None:
    s = copy.deepcopy(quickstart)
    s["incidents"][0].update(extra_cost=-2.1, unserved_requests=15_900.0, unserved_cost=6.25)
    text = check_layout(lambda c: print_summary(c, s))
    row = next(line for line in text.splitlines() if "-$2.1000" in line)
    assert "-$2.1000 *" in row and "15,900" in row and "$6.2500" in row
    assert "work not done, not a saving" in " ".join(text.split())
    # A positive extra cost has no such footnote.
    plain = render(lambda c: print_summary(c, quickstart), 80)
    assert quickstart["incidents"][0]["extra_cost"] > 0 and "not a saving" not in plain


# --- experiments --------------------------------------------------------------------------


def experiment_summary() -> pd.DataFrame:
    """An experiment's summary table like the article's: three axes, two paired replications,
    gpt-4o's million-dollar months next to gpt-4o-mini's."""
    rows = []
    for i, (model, price) in enumerate((("gpt-4o-mini", 1.0), ("gpt-4o", 16.667))):
        for j, incidents in enumerate(("none", "brownout")):
            for k, client in enumerate(("no retries", "sdk")):
                point = f"p{4 * i + 2 * j + k:03d}"
                for rep in range(2):
                    wobble = 1 + 0.013 * (rep - 0.5) * (1 + j + k)
                    rows.append(
                        {
                            "point_id": point,
                            "model": model,
                            "incidents": incidents,
                            "client": client,
                            "replication": rep,
                            "seed": rep,
                            "requests": 72_934,
                            "success_rate": 0.9931 - 0.2 * j + 0.15 * k * j * wobble,
                            "attempt_amplification": 1 + 0.322 * k * j * wobble,
                            "cost_amplification": 1.002 + 0.18 * j * wobble,
                            "billed_cost": 28.80 * price * wobble,
                            "cost_per_day": 1_975.07 * price * wobble,
                            "cost_per_month": 59_252.07 * price * wobble,
                            "latency_p95": 5.76 * wobble,
                            "peak_attempt_rate_ratio": 1.109 + 0.7 * k * j * wobble,
                            "incident.0.start": 600.0 if j else math.nan,
                            # Without retries a brownout bills less: work not done.
                            "incident.0.extra_cost": (
                                (5.54 if k else -2.1) * price * wobble if j else math.nan
                            ),
                            "incident.0.recovery_time": (10.0 + rep) if j else math.nan,
                            "incident.0.metastable": float(rep == 0) if j else math.nan,
                        }
                    )
    return pd.DataFrame(rows)


AXES = ["model", "incidents", "client"]


def test_an_experiments_points_fit_80_columns_with_every_mean_and_interval() -> None:
    stats = point_stats(experiment_summary(), AXES)
    text = check_layout(lambda c: print_points(c, stats, AXES, 2))
    for m in POINT_METRICS:
        if m.endswith("metastable"):
            continue
        rows = stats[stats["metric"] == m]
        # Money has the decimals of its column's largest mean (one format per column).
        dec = _money_decimals(m, *rows["mean"])
        for _, row in rows.iterrows():
            mean, half = row["mean"], (row["ci_high"] - row["ci_low"]) / 2
            assert _row_value(m, mean, dec) in text, (m, _row_value(m, mean, dec))
            assert fmt_half(m, half, mean, dec).strip() in text, (m, half)
    # By hand: gpt-4o's $480 beside gpt-4o-mini's $28.80 gives the column cents, and its
    # $987,554 a month gives that column whole dollars.
    assert "$28.80" in text and "$28.8000" not in text
    assert "$59,252 " in text and "$59,252.07" not in text
    # The article's answer is printed, not only in summary.csv: per day, and what the brownout
    # itself added (gpt-4o's -$35 beside gpt-4o-mini's -$2.10, in cents).
    assert "per day" in text and "extra cost" in text
    assert "$1,975.07" in text and "$32,918.49" in text  # gpt-4o: 1,975.07 x 16.667
    extra = stats[stats["metric"] == "incident.0.extra_cost"].set_index("point_id")["mean"]
    assert extra["p002"] == pytest.approx(-2.1) and "-$2.10" in text
    assert "-$35.00" in text and "+$" not in text
    assert "1 of 2" in text  # the metastable verdicts
    for value in ("gpt-4o-mini", "brownout", "no retries"):
        assert value in text
    # Every table repeats the point's labels: as many gpt-4o-mini rows per table.
    tables = sum(line.startswith("─") for line in text.splitlines())
    assert tables > 1  # nine metrics do not fit one table of 80 columns
    assert text.count("gpt-4o-mini") == 4 * tables


def test_compare_fits_80_columns_with_every_difference() -> None:
    summary = experiment_summary()
    metrics = [m for m in POINT_METRICS if not m.endswith("metastable")]
    diffs = paired_differences(summary, "model", "gpt-4o-mini", metrics, AXES)
    others = ["incidents", "client"]
    text = check_layout(lambda c: print_table(c, differences_table(diffs, others, "t")))
    for _, row in diffs.iterrows():
        m = row["metric"]
        # Money has the decimals of its row's largest amount (one format per row).
        dec = _money_decimals(m, row["base_mean"], row["value_mean"])
        for v in (row["base_mean"], row["value_mean"]):
            assert _row_value(m, v, dec) in text, (m, v)
    assert "incidents=brownout, client=sdk" in text


@pytest.mark.parametrize("kind", ["models", "tiers", "policies"])
def test_presets_fit_80_columns_piped_and_the_same_at_120(
    kind: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmtraffic import presets

    outputs = []
    for columns in ("80", "120"):
        monkeypatch.setenv("COLUMNS", columns)
        assert main(["presets", "--kind", kind]) == 0
        outputs.append("\n".join(x.rstrip() for x in capsys.readouterr().out.splitlines()))
    text = outputs[0]
    assert outputs[1] == text
    assert "…" not in text and max(len(x) for x in text.splitlines()) <= 80
    if kind == "models":
        for name, m in presets.models_with().items():
            assert name in text
            if m.context_window is not None:
                assert f"{m.context_window:,}" in text
            if m.max_output_tokens is not None:
                assert f"{m.max_output_tokens:,}" in text


def test_undefined_values_show_as_a_dash(quickstart: dict[str, Any]) -> None:
    """A run where nothing succeeded: its ratios and latencies are undefined (None or NaN) and
    read '-', never '-x' or 'nan'."""
    s = copy.deepcopy(quickstart)
    for k in ("cost_amplification", "cost_vs_baseline", "latency_p50", "latency_p95"):
        s[k] = None
    s["peak_attempt_rate_ratio"] = math.nan
    text = check_layout(lambda c: print_summary(c, s))
    assert "-x" not in text and "nan" not in text.lower()
    row = next(line for line in text.splitlines() if "cost amplification" in line)
    assert row.split("│")[-2].strip() == "-"


def test_counts_are_singular_for_one() -> None:
    from llmtraffic.wording import counted

    assert counted(1, "replication") == "1 replication"
    assert counted(2, "replication") == "2 replications"
    assert counted(0, "run") == "0 runs"
    assert counted(12_000, "run") == "12,000 runs"
    assert counted(1, "axis", "axes") == "1 axis" and counted(3, "axis", "axes") == "3 axes"


def test_a_streamed_feature_with_an_slo_shows_what_its_users_see(
    quickstart: dict[str, Any],
) -> None:
    """The quickstart with its chat feature streamed and given an SLO: a latency table says
    ttft, tpot and SLO attainment per feature; without either it is left out."""
    assert "latency users see" not in render(lambda c: print_summary(c, quickstart), 80)
    config = llmtraffic.load_config(ROOT / "experiments" / "quickstart.toml")
    raw = config.model_dump(mode="json")
    raw["features"]["chat"]["stream"] = True
    raw["features"]["chat"]["slo"] = {"ttft": 1.0, "e2e": 10.0}
    s = llmtraffic.Simulation(llmtraffic.Scenario.model_validate(raw)).run().summary
    text = check_layout(lambda c: print_summary(c, s))
    assert "Per feature: latency users see" in text
    chat = s["features"]["chat"]
    (row,) = [line for line in text.splitlines() if line.startswith("chat ") and " ms" in line]
    assert f"{chat['slo_attainment']:.2%}" in row
    assert chat["ttft_p50"] < chat["latency_p50"]  # streamed: the first token comes first
