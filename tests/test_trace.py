"""Trace replay: every arrival time and token count kept (scaled exactly), in every format and
time unit; windows, loops and filters; bad traces give errors with file, line and column."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import llmtraffic.workload.trace as trace_mod
from llmtraffic import ConfigError, Simulation, TraceError, load_config, scenario_from_dict
from llmtraffic.cli import main
from llmtraffic.config.trace import Trace
from llmtraffic.errors import TraceWarning
from llmtraffic.workload.trace import builtin_trace_file, replay
from tests.conftest import BASE

AZURE = builtin_trace_file("azure-conv")

# A small log: relative seconds, tokens, a feature, a model and an outcome column.
ROWS: list[dict[str, Any]] = [
    {"t": 0.0, "inp": 100, "out": 10, "app": "chat", "model": "a", "status": "ok"},
    {"t": 0.25, "inp": 200, "out": 20, "app": "search", "model": "b", "status": "ok"},
    {"t": 0.25, "inp": 300, "out": 30, "app": "chat", "model": "a", "status": "error"},
    {"t": 1.5, "inp": 400, "out": 40, "app": "chat", "model": "b", "status": "ok"},
    {"t": 2.0, "inp": 0, "out": 0, "app": "search", "model": "a", "status": "ok"},
    {"t": 3.75, "inp": 600, "out": 60, "app": "chat", "model": "a", "status": "ok"},
]
COLS = {"timestamp": "t", "input_tokens": "inp", "output_tokens": "out"}


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as CSV, CSV.gz, Parquet or JSONL, by the file's extension."""
    df = pd.DataFrame(rows)
    name = path.name
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    elif name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif name.endswith(".csv.gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            df.to_csv(f, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def trace(path: Path | str, **keys: Any) -> Trace:
    return Trace.model_validate({"path": str(path), **COLS, **keys})


def read(
    cfg: Trace, horizon: float = float("inf"), feature: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chunks = list(replay(cfg, horizon, feature))
    if not chunks:
        return np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64)
    return (
        np.concatenate([c.times for c in chunks]),
        np.concatenate([c.input_tokens for c in chunks]),
        np.concatenate([c.output_tokens for c in chunks]),
    )


T = np.array([r["t"] for r in ROWS])
INP = np.array([r["inp"] for r in ROWS])
OUT = np.array([r["out"] for r in ROWS])


# --- exact replay through the simulator ------------------------------------------------------


def azure_expected(window: tuple[float, float], speedup: float) -> pd.DataFrame:
    df = pd.read_csv(AZURE)
    ns = pd.to_datetime(df.TIMESTAMP).astype("int64").to_numpy()
    rel = (ns - ns[0]) / 1e9
    keep = (rel >= window[0]) & (rel < window[1])
    return pd.DataFrame(
        {
            "arrival_time": (rel[keep] - window[0]) / speedup,
            "input_tokens": df.ContextTokens.to_numpy()[keep],
            "output_tokens": df.GeneratedTokens.to_numpy()[keep],
        }
    )


@pytest.mark.parametrize(("window", "speedup"), [((0.0, 700.0), 1.0), ((1800.0, 2400.0), 3.0)])
def test_replay_keeps_every_arrival_time_and_token_count(
    window: tuple[float, float], speedup: float
) -> None:
    """The requests table of a run equals the trace: same times (scaled), same tokens."""
    raw: dict[str, Any] = json.loads(json.dumps(BASE))
    raw["run"]["duration"] = (window[1] - window[0]) / speedup
    raw["providers"]["p"]["capacity"] = {"slots": 2000, "queue_limit": 0}
    raw["features"]["f"] = {
        "provider": "p",
        "max_tokens": 1000,
        "trace": {"path": "builtin:azure-conv", "window": list(window), "speedup": speedup},
    }
    req = Simulation(scenario_from_dict(raw)).run().df("requests").sort_values("request_id")
    want = azure_expected(window, speedup)
    assert len(req) == len(want) > 1000
    assert np.array_equal(req.arrival_time.to_numpy(), want.arrival_time.to_numpy())
    assert np.array_equal(req.input_tokens.to_numpy(), want.input_tokens.to_numpy())
    assert np.array_equal(req.output_tokens.to_numpy(), want.output_tokens.to_numpy())
    assert (req.outcome == "ok").all()


def test_rag_cached_fraction_and_max_tokens_apply_on_top_of_a_trace(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", ROWS)
    raw: dict[str, Any] = json.loads(json.dumps(BASE))
    raw["run"]["duration"] = 10
    raw["features"]["f"] = {
        "provider": "p",
        "trace": {"path": str(path), **COLS},
        "rag_tokens": {"kind": "fixed", "value": 1000},
        "max_tokens": 35,
    }
    req = Simulation(scenario_from_dict(raw)).run().df("requests").sort_values("request_id")
    assert list(req.arrival_time) == list(T)
    assert list(req.input_tokens) == list(INP + 1000)
    assert list(req.output_tokens) == list(np.minimum(OUT, 35))


def test_times_beyond_the_run_are_dropped(tmp_path: Path) -> None:
    t, inp, _ = read(trace(write(tmp_path / "log.csv", ROWS)), horizon=2.0)
    assert list(t) == [0.0, 0.25, 0.25, 1.5]
    assert list(inp) == [100, 200, 300, 400]


# --- formats and time units ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["log.csv", "log.csv.gz", "log.parquet", "log.jsonl"])
def test_every_format_gives_the_same_replay(tmp_path: Path, name: str) -> None:
    t, inp, out = read(trace(write(tmp_path / name, ROWS)))
    assert np.array_equal(t, T) and np.array_equal(inp, INP) and np.array_equal(out, OUT)


def test_a_format_can_be_named_when_the_extension_says_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "log.jsonl", ROWS).rename(tmp_path / "log.data")
    with pytest.raises(TraceError, match=r"cannot tell the format .* set format"):
        read(trace(path))
    assert np.array_equal(read(trace(path, format="jsonl"))[0], T)


EPOCH = 1_700_000_000  # 2023-11-14 22:13:20 UTC


@pytest.mark.parametrize(
    ("stamps", "unit"),
    [
        # Date-time strings: no zone, a Z, an offset (the same instants), a T separator.
        ([f"2023-11-14 22:13:{20 + x:09.6f}" for x in T], "auto"),
        ([f"2023-11-14T22:13:{20 + x:09.6f}Z" for x in T], "auto"),
        ([f"2023-11-14T23:13:{20 + x:09.6f}+01:00" for x in T], "datetime"),
        # Epoch seconds, milliseconds and microseconds, found by magnitude or named.
        ([EPOCH + x for x in T], "auto"),
        ([int((EPOCH + x) * 1000) for x in T], "auto"),
        ([int((EPOCH + x) * 1_000_000) for x in T], "us"),
        ([int(x * 1000) for x in T], "ms"),  # relative milliseconds need the unit named
    ],
)
def test_time_units(tmp_path: Path, stamps: list[Any], unit: str) -> None:
    rows = [{**r, "t": s} for r, s in zip(ROWS, stamps, strict=True)]
    for name in ("log.csv", "log.parquet", "log.jsonl"):
        t, _, _ = read(trace(write(tmp_path / name, rows), time_unit=unit))
        assert np.allclose(t, T, rtol=0, atol=1e-9), (name, t)


def test_datetime_strings_keep_their_nanoseconds(tmp_path: Path) -> None:
    rows = [{**ROWS[0], "t": "2023-11-16 18:15:46.6805900"},
            {**ROWS[1], "t": "2023-11-16 18:15:50.9951690"}]  # fmt: skip
    t, _, _ = read(trace(write(tmp_path / "log.csv", rows)))
    assert t[1] == (50_995_169_000 - 46_680_590_000) / 1e9


def test_origin_zero_keeps_a_relative_traces_offset(tmp_path: Path) -> None:
    rows = [{**r, "t": r["t"] + 5.0} for r in ROWS]
    path = write(tmp_path / "log.csv", rows)
    assert read(trace(path))[0][0] == 0.0
    assert np.array_equal(read(trace(path, origin="zero"))[0], T + 5.0)


# --- window, speedup, loop, filters ---------------------------------------------------------


def test_window_and_speedup_are_exact(tmp_path: Path) -> None:
    t, inp, _ = read(trace(write(tmp_path / "log.csv", ROWS), window=[0.25, 3.0], speedup=4.0))
    assert np.array_equal(t, (T[1:5] - 0.25) / 4.0)
    assert list(inp) == [200, 300, 400, 0]


def test_a_window_accepts_durations(tmp_path: Path) -> None:
    cfg = trace(write(tmp_path / "log.csv", ROWS), window=["250ms", "3s"])
    assert cfg.window == [0.25, 3.0]


def test_loop_repeats_the_trace_after_its_span_plus_a_mean_gap(tmp_path: Path) -> None:
    t, inp, _ = read(trace(write(tmp_path / "log.csv", ROWS), loop=True, speedup=2.0), 7.0)
    period = 3.75 + 3.75 / 5  # last time + mean gap
    want = np.concatenate([T + k * period for k in range(4)])
    want = want[want / 2.0 < 7.0]
    assert want[-1] > 2 * period  # three loops and a part of a fourth
    assert np.array_equal(t, want / 2.0)
    assert list(inp) == list(np.concatenate([INP] * 4)[: len(want)])


def test_loop_of_a_window_repeats_the_window(tmp_path: Path) -> None:
    t, _, _ = read(trace(write(tmp_path / "log.csv", ROWS), loop=True, window=[1, 3]), 6.5)
    assert list(t) == [0.5, 1.0, 2.5, 3.0, 4.5, 5.0, 6.5][:6]


def test_filters_keep_a_features_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "log.parquet", ROWS)
    t, inp, _ = read(trace(path, feature_column="app"), feature="chat")
    assert list(inp) == [100, 300, 400, 600] and t[0] == 0.0
    _, inp, _ = read(trace(path, feature_column="app", feature_value="search"))
    assert list(inp) == [200, 0]
    _, inp, _ = read(trace(path, model_column="model", model_value="a"))
    assert list(inp) == [100, 300, 0, 600]
    _, inp, _ = read(trace(path, outcome_column="status"))
    assert list(inp) == [100, 200, 400, 0, 600]
    # Times stay relative to the file's first row, so features sharing a log stay aligned.
    t, _, _ = read(trace(path, feature_column="app", feature_value="search"))
    assert list(t) == [0.25, 2.0]


def test_a_filter_that_keeps_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        TraceError, match=r"none of the 6 rows read are replayed; check the filters"
    ):
        read(trace(write(tmp_path / "log.csv", ROWS), feature_column="app"), feature="nope")


# --- bad traces ------------------------------------------------------------------------------


def bad(tmp_path: Path, text: str, name: str = "log.csv", **keys: Any) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TraceError) as info:
        read(trace(path, **keys))
    return str(info.value)


def test_a_missing_column_lists_the_columns_that_exist(tmp_path: Path) -> None:
    msg = bad(tmp_path, "time,inp,out\n0,1,2\n")
    head = f"{tmp_path / 'log.csv'}: no column 't' (the timestamp column; did you mean 'time'?)"
    assert msg.startswith(head), msg
    assert "the file has: 'time', 'inp', 'out'" in msg
    assert 'Set timestamp = "time" in the trace table (llmtraffic fit: --timestamp time)' in msg


def test_a_missing_column_of_the_builtin_trace_suggests_a_close_name() -> None:
    cfg = Trace.model_validate({"path": "builtin:azure-conv", "timestamp": "timestamp"})
    with pytest.raises(TraceError, match=r"no column 'timestamp' .*did you mean 'TIMESTAMP'"):
        read(cfg)


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("t,inp,out\n2023-01-01 00:00:00,1,2\n2023-01-01 00:00:01,1,2\nyesterday,1,2\n",
         "line 4, column 't'", "cannot read 'yesterday' as a date-time"),
        ("t,inp,out\n2023-01-01 00:00:00,1,2\n,1,2\n", "line 3, column 't'", "empty value"),
        ("t,inp,out\n0,1,2\n1,-5,2\n", "line 3, column 'inp'", "negative token count -5"),
        ("t,inp,out\n0,1,2\n1,1,2.5\n", "line 3, column 'out'", "2.5 is not a whole number"),
        ("t,inp,out\n0,1,2\n1,lots,2\n", "line 3, column 'inp'", "cannot read 'lots'"),
        ("t,inp,out\n0,1,2\n1,,2\n", "line 3, column 'inp'", "empty value"),
        ("t,inp,out\n0,1,2\nsoon,1,2\n", "line 3, column 't'", "cannot read 'soon' as a time"),
    ],
)  # fmt: skip
def test_a_bad_value_names_the_file_line_and_column(
    tmp_path: Path, text: str, where: str, what: str
) -> None:
    msg = bad(tmp_path, text)
    assert msg.startswith(f"{tmp_path / 'log.csv'}: {where}: {what}"), msg


def test_unsorted_times_are_refused_with_the_line_and_the_fix(tmp_path: Path) -> None:
    msg = bad(tmp_path, "t,inp,out\n0,1,2\n5,1,2\n3,1,2\n")
    assert msg.startswith(f"{tmp_path / 'log.csv'}: line 4, column 't': 3 is earlier than 5 on")
    assert "line 3" in msg and "not sorted" in msg and 'sort = "warn"' in msg


def test_unsorted_times_are_sorted_with_a_warning_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("t,inp,out\n0,1,2\n5,2,2\n3,3,2\n4,4,2\n", encoding="utf-8")
    with pytest.warns(TraceWarning, match=r"1 rows are earlier .* sorted 4 rows"):
        t, inp, _ = read(trace(path, sort="warn", loop=True), horizon=11)
    period = 5 + 5 / 3  # the last time + the mean gap
    assert list(t) == [0, 3, 4, 5, period, 3 + period, 4 + period]
    assert list(inp) == [1, 3, 4, 2, 1, 3, 4]


def test_sorted_times_give_no_warning_in_warn_mode(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(read(trace(path, sort="warn"))[0], T)


def test_errors_in_later_chunks_have_the_right_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace_mod, "CSV_BLOCK", 256)
    monkeypatch.setattr(trace_mod, "BATCH_ROWS", 7)
    times = [float(i) for i in range(200)]
    times[150] = 10.0  # earlier than the 149 before it
    csv_text = "t,inp,out\n" + "".join(f"{t:g},1,1\n" for t in times)
    # JSONL with a blank line after each record: record i is on line 2i + 1.
    jsonl_text = "".join(json.dumps({"t": t, "inp": 1, "out": 1}) + "\n\n" for t in times)
    for name, text, line, prev in (
        ("log.csv", csv_text, 152, "149 on line 151"),  # the header is line 1
        ("log.jsonl", jsonl_text, 301, "149.0 on line 299"),
    ):
        msg = bad(tmp_path, text, name)
        assert f"{name}: line {line}, column 't': 10" in msg, msg
        assert f"is earlier than {prev}" in msg, msg
    ok = "t,inp,out\n" + "".join(f"{i},{i},{i}\n" for i in range(200))
    (tmp_path / "ok.csv").write_text(ok, encoding="utf-8")
    chunks = list(replay(trace(tmp_path / "ok.csv")))
    assert len(chunks) > 3
    assert np.array_equal(np.concatenate([c.times for c in chunks]), np.arange(200.0))


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    rows = [dict(r) for r in ROWS]
    rows[3]["inp"] = -1
    path = write(tmp_path / "log.parquet", rows)
    with pytest.raises(TraceError, match=r"log.parquet: row 4, column 'inp': negative"):
        read(trace(path))


@pytest.mark.parametrize(
    ("name", "text", "what"),
    [
        ("log.csv", "", "the file is empty (no header line)"),
        ("log.csv", "t,inp,out\n", "the trace has no rows (an empty file or a header only)"),
        ("log.jsonl", "\n\n", "the file is empty (no JSON lines)"),
    ],
)
def test_an_empty_trace_is_an_error(tmp_path: Path, name: str, text: str, what: str) -> None:
    assert bad(tmp_path, text, name) == f"{tmp_path / name}: {what}"


def bad_bytes(tmp_path: Path, data: bytes, name: str = "log.csv", **keys: Any) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(TraceError) as info:
        read(trace(path, **keys))
    return str(info.value)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"t,inp,out\n0,1,2\n1,3\n2,4,5\n", "line 3: 2 fields, but the header has 3"),
        (b"t,inp,out\n0,1,2\n\n1,3,4,5\n", "line 4: 4 fields, but the header has 3"),
        (b"t,inp,out\n0,1,2\n1,\xff\xfe,3\n", "line 3: byte 3 (0xff) is not UTF-8 text"),
        (b"t,inp,out\xe9\n0,1,2\n", "line 1: byte 10 (0xe9) is not UTF-8 text"),
    ],
)
def test_ragged_rows_and_bytes_that_are_not_utf8_name_the_line(
    tmp_path: Path, data: bytes, where: str
) -> None:
    """The line as an editor counts it (blank lines too), without quoting the row."""
    msg = bad_bytes(tmp_path, data)
    assert msg.startswith(f"{tmp_path / 'log.csv'}: {where}"), msg
    assert "3,4,5" not in msg and "1,3" not in msg


def test_errors_past_the_first_block_name_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace_mod, "CSV_BLOCK", 256)
    rows = [f"{i},1,1\n".encode() for i in range(300)]
    rows[250] = b"250,1\n"
    assert "line 252: 2 fields" in bad_bytes(tmp_path, b"t,inp,out\n" + b"".join(rows))
    rows[250] = b"250,\xff,1\n"
    assert "line 252: byte 5 (0xff)" in bad_bytes(tmp_path, b"t,inp,out\n" + b"".join(rows))
    jsonl = b'{"t": 0, "inp": 1, "out": 2}\n{"t": 1, "inp": "\xff", "out": 2}\n'
    assert "line 2: byte 18 (0xff)" in bad_bytes(tmp_path, jsonl, "log.jsonl")


@pytest.mark.parametrize(
    "first",
    [
        b"root:$6$salt$hashhashhash:19000:0:99999:7:::",
        b"hunter2",
        b"-----BEGIN OPENSSH PRIVATE KEY-----",
        b"API_KEY=sk-secret-value",
    ],
)
@pytest.mark.parametrize("delimiter", [",", ":"])
def test_a_file_that_is_not_a_trace_is_not_quoted(
    tmp_path: Path, first: bytes, delimiter: str
) -> None:
    """A trace path pointing at another file (a password file, a key) must not print its
    first line: column names are quoted only from a header of trace columns."""
    path_, msg = bad_bytes(tmp_path, first + b"\nmore:secret:stuff\n", delimiter=delimiter).split(
        ": ", 1
    )
    assert path_ == str(tmp_path / "log.csv")
    assert msg.startswith("the first line is not a header of trace columns"), msg
    assert "content is not shown" in msg
    for part in first.decode().replace(delimiter, " ").split():
        if len(part) > 2:
            assert part not in msg, part


def test_numbers_in_messages_read_as_typed(tmp_path: Path) -> None:
    """NaN and infinity as nan and inf (not numpy's repr); a count too large for any context
    (1e30 wrapped around to a negative count before) is named as it is."""
    assert "column 't': nan is not a finite number" in bad(tmp_path, "t,inp,out\n0,1,2\nnan,1,2\n")
    assert "column 'inp': inf is not a finite number" in bad(tmp_path, "t,inp,out\n0,inf,2\n")
    msg = bad(tmp_path, "t,inp,out\n0,1,2\n1,1e30,2\n")
    assert "line 3, column 'inp': 1e+30 tokens is more than 10,000,000" in msg, msg
    jsonl = '{"t": 0, "inp": 1, "out": 2}\n{"t": NaN, "inp": 1, "out": 2}\n'
    assert "line 2, column 't': nan is not a finite number" in bad(tmp_path, jsonl, "log.jsonl")
    assert "np." not in msg


def test_a_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    text = '{"t": 0, "inp": 1, "out": 2}\n{"t": 1, "inp": 1\n'
    assert "log.jsonl: line 2: not valid JSON" in bad(tmp_path, text, "log.jsonl")
    text = '{"t": 0, "inp": 1, "out": 2}\n{"t": 1, "inp": 1}\n'
    assert "line 2, column 'out': missing" in bad(tmp_path, text, "log.jsonl")


# --- configs ---------------------------------------------------------------------------------

CONFIG = """\
[run]
duration = 10
[providers.p]
model = "openai/gpt-4o-mini"
[features.f]
provider = "p"
trace = {{ path = "{path}", timestamp = "t", input_tokens = "inp", output_tokens = "out" }}
"""


def test_a_trace_path_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "logs").mkdir()
    write(tmp_path / "logs" / "log.csv", ROWS)
    (tmp_path / "exp.toml").write_text(CONFIG.format(path="logs/log.csv"), encoding="utf-8")
    monkeypatch.chdir("/")
    sc = load_config(tmp_path / "exp.toml")
    feature = sc.features["f"]
    assert feature.trace is not None and feature.trace.path == str(tmp_path / "logs" / "log.csv")
    assert len(Simulation(sc).run().df("requests")) == len(ROWS)


def test_a_missing_trace_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "exp.toml").write_text(CONFIG.format(path="nope.csv"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "exp.toml")
    (msg,) = info.value.problems
    assert msg.startswith(f"features.f.trace.path: trace file not found: {tmp_path}/nope.csv")


def test_a_trace_excludes_arrivals_and_token_distributions() -> None:
    raw: dict[str, Any] = json.loads(json.dumps(BASE))
    raw["features"]["f"]["trace"] = {"path": "builtin:azure-conv"}
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(raw)
    assert [p.partition(":")[0] for p in info.value.problems] == [
        "features.f.arrivals",
        "features.f.input_tokens",
        "features.f.output_tokens",
    ]
    assert "not allowed with a trace" in info.value.problems[0]
    del raw["features"]["f"]["trace"], raw["features"]["f"]["arrivals"]
    with pytest.raises(ConfigError, match=r"features.f.arrivals: missing required key \(or give"):
        scenario_from_dict(raw)


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"window": [5, 1]}, "features.f.trace.window: 'from' (5 s) must be before 'to' (1 s)"),
        ({"speedup": 0}, "features.f.trace.speedup: must be > 0"),
        ({"path": "builtin:nope"}, "features.f.trace.path: unknown built-in trace 'nope'"),
        ({"model_column": "m"}, "features.f.trace.model_value: missing"),
        ({"keep_outcomes": ["ok"]}, "features.f.trace.keep_outcomes: needs outcome_column"),
        ({"sort": "yes"}, "features.f.trace.sort: expected 'refuse' or 'warn'"),
    ],
)
def test_bad_trace_keys_are_named(keys: dict[str, Any], problem: str) -> None:
    raw: dict[str, Any] = json.loads(json.dumps(BASE))
    feature = raw["features"]["f"]
    for k in ("arrivals", "input_tokens", "output_tokens"):
        del feature[k]
    feature["trace"] = {"path": "builtin:azure-conv", **keys}
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(raw)
    assert info.value.problems[0].startswith(problem), info.value.problems


def test_a_bad_trace_fails_the_run_as_bad_input_and_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "log.csv").write_text("t,inp,out\n0,1,2\n1,x,2\n", encoding="utf-8")
    (tmp_path / "exp.toml").write_text(CONFIG.format(path="log.csv"), encoding="utf-8")
    assert main(["run", "exp.toml", "--out", "out", "-q"]) == 2
    err = capsys.readouterr().err
    assert "line 3, column 'inp': cannot read 'x' as a token count" in " ".join(err.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml", "log.csv"]


def test_the_cost_of_a_replayed_trace_is_its_tokens_at_list_price() -> None:
    """Ten minutes of the Azure trace on openai/gpt-4o-mini's preset prices, every request
    served at once: billed = sum(input x 0.15 + output x 0.60) / 1e6, projected per day and
    per 30-day month from the 600 s span."""
    raw: dict[str, Any] = json.loads(json.dumps(BASE))
    raw["run"] = {"duration": 600, "records": "summary"}
    raw["providers"]["p"] = {
        "model": "openai/gpt-4o-mini",
        "capacity": {"slots": 2000, "queue_limit": 0},
        "service": {"kind": "deterministic", "value": 1.0},
    }
    raw["features"]["f"] = {
        "provider": "p",
        "max_tokens": 1000,
        "trace": {"path": "builtin:azure-conv", "window": [0, 600]},
    }
    s = Simulation(scenario_from_dict(raw)).run().summary
    want = azure_expected((0.0, 600.0), 1.0)
    cost = float((want.input_tokens * 0.15 + want.output_tokens * 0.60).sum()) / 1e6
    assert s["requests"] == s["successes"] == len(want)
    assert s["billed_cost"] == pytest.approx(cost, rel=1e-12)
    assert s["baseline_cost"] == pytest.approx(cost, rel=1e-12)
    assert s["cost_per_day"] == pytest.approx(cost / 600 * 86_400, rel=1e-12)
    assert s["cost_per_month"] == pytest.approx(cost / 600 * 86_400 * 30, rel=1e-12)


# --- run.duration = "trace" ------------------------------------------------------------------


def trace_scenario(features: dict[str, dict[str, Any]], **run: Any) -> dict[str, Any]:
    """BASE with only trace features and the given run settings (no duration unless given)."""
    raw: dict[str, Any] = json.loads(json.dumps(BASE))
    raw["run"] = {"seed": 1, **run}
    raw["features"] = {
        name: {"provider": "p", "trace": {**COLS, **keys}} for name, keys in features.items()
    }
    return raw


def test_a_left_out_duration_replays_the_whole_trace(tmp_path: Path) -> None:
    """ROWS: last time 3.75 s, mean gap 3.75 / 5: the span is 4.5 s, every row arrives."""
    path = str(write(tmp_path / "log.csv", ROWS))
    sc = scenario_from_dict(trace_scenario({"f": {"path": path}}))
    assert sc.run.duration == pytest.approx(3.75 + 3.75 / 5)
    req = Simulation(sc).run().df("requests").sort_values("request_id")
    assert list(req.arrival_time) == list(T)


def test_a_trace_duration_follows_window_speedup_and_the_longest_feature(tmp_path: Path) -> None:
    """Window [0.25, inf) keeps 0, 0, 1.25, 1.75, 3.5 s (mean gap 0.875) and speedup 2 halves
    them: 2.1875 s; a second, unscaled feature (4.5 s) is longer and sets the run."""
    path = str(write(tmp_path / "log.csv", ROWS))
    one = scenario_from_dict(
        trace_scenario({"f": {"path": path, "window": [0.25, "inf"], "speedup": 2.0}})
    )
    assert one.run.duration == pytest.approx((3.5 + 3.5 / 4) / 2)
    both = scenario_from_dict(
        trace_scenario(
            {"f": {"path": path, "window": [0.25, "inf"], "speedup": 2.0}, "g": {"path": path}},
            duration="trace",
        )
    )
    assert both.run.duration == pytest.approx(4.5)
    requests = Simulation(both).run().df("requests")
    assert (requests.feature == "f").sum() == 5
    assert (requests.feature == "g").sum() == len(ROWS)


def test_the_bundled_trace_is_replayed_whole_without_a_duration() -> None:
    raw = trace_scenario({})
    raw["features"] = {"f": {"provider": "p", "trace": {"path": "builtin:azure-conv"}}}
    sc = scenario_from_dict(raw)
    want = azure_expected((0.0, float("inf")), 1.0)
    last = float(want.arrival_time.iloc[-1])
    assert last < sc.run.seconds < last + 1.0
    raw["run"]["records"] = "summary"
    assert Simulation(scenario_from_dict(raw)).run().summary["requests"] == len(want)


@pytest.mark.parametrize("loop", [False, True])
def test_trace_duration_needs_every_feature_to_replay_a_trace_once(
    tmp_path: Path, loop: bool
) -> None:
    path = str(write(tmp_path / "log.csv", ROWS))
    raw = trace_scenario({"g": {"path": path, "loop": loop}})
    if not loop:
        raw["features"]["f"] = json.loads(json.dumps(BASE["features"]["f"]))
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(raw)
    (msg,) = info.value.problems
    assert msg.startswith("run.duration: needed; give the span"), msg
    assert msg.endswith("these do not: " + ("g" if loop else "f")), msg


def test_a_malformed_duration_mentions_trace() -> None:
    raw: dict[str, Any] = json.loads(json.dumps(BASE))
    raw["run"]["duration"] = "tarce"
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(raw)
    (msg,) = info.value.problems
    assert msg.startswith("run.duration: malformed duration 'tarce'") and '"trace"' in msg


def test_a_scenario_built_in_python_is_resolved_by_the_run(tmp_path: Path) -> None:
    """Scenario.model_validate leaves "trace" as is; Simulation and the results folder resolve
    it, and config.json records the seconds the run lasted."""
    from llmtraffic import Scenario
    from llmtraffic.runner import run_to_folder

    path = str(write(tmp_path / "log.csv", ROWS))
    sc = Scenario.model_validate(trace_scenario({"f": {"path": path}}))
    assert sc.run.duration == "trace"
    with pytest.raises(ValueError, match="resolve_duration"):
        _ = sc.run.seconds
    assert Simulation(sc).run().summary["requests"] == len(ROWS)
    folder, _ = run_to_folder(sc, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["run"]["duration"] == pytest.approx(4.5)


# --- public trace layouts ------------------------------------------------------------------

DATA = Path(__file__).parent / "data" / "traces"


def published(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A file of tests/data/traces read by hand, as its dataset documents it: seconds after
    the first row, input and output tokens."""
    path = DATA / name
    if name.endswith(".jsonl"):  # Mooncake: milliseconds since the first request
        df = pd.read_json(path, lines=True)
        t = df.timestamp.to_numpy() / 1e3
        return t - t[0], df.input_length.to_numpy(), df.output_length.to_numpy()
    df = pd.read_csv(path)
    if "TIMESTAMP" in df:  # Azure: date-times (2024: with a UTC offset)
        stamps = pd.to_datetime(df.TIMESTAMP, format="ISO8601", utc=True).dt.as_unit("ns")
        ns = stamps.astype("int64").to_numpy()
        return (ns - ns[0]) / 1e9, df.ContextTokens.to_numpy(), df.GeneratedTokens.to_numpy()
    if "Timestamp" in df:  # BurstGPT: seconds
        t = df.Timestamp.to_numpy()
        return t - t[0], df["Request tokens"].to_numpy(), df["Response tokens"].to_numpy()
    t = df.arrival_timestamp.to_numpy()  # SplitwiseSim: seconds
    return t - t[0], df.prompt_size.to_numpy(), df.token_size.to_numpy()


PUBLIC = ["azure2023_conv.csv", "splitwise_code.csv", "azure2024_code.csv", "burstgpt.csv",
          "mooncake.jsonl", "splitwisesim.csv"]  # fmt: skip


@pytest.mark.parametrize("name", PUBLIC)
def test_a_public_layout_is_replayed_with_just_its_path(tmp_path: Path, name: str) -> None:
    """A config naming only the file replays every row of each public layout: its columns and
    time unit come from its header; the resolved config records them."""
    cfg = Trace.model_validate({"path": str(DATA / name)})
    assert cfg.layout is not None
    t, inp, out = read(cfg)
    want_t, want_inp, want_out = published(name)
    np.testing.assert_allclose(t, want_t, rtol=0, atol=1e-9)
    assert list(inp) == list(want_inp) and list(out) == list(want_out)
    config = '[run]\nseed = 1\n[providers.p]\nmodel = "openai/gpt-4o-mini"\n'
    config += '[features.f]\nprovider = "p"\n'
    config += f'trace = {{ path = "{DATA / name}" }}\n'
    (tmp_path / "exp.toml").write_text(config, encoding="utf-8")
    sc = load_config(tmp_path / "exp.toml")
    requests = Simulation(sc).run().df("requests").sort_values("request_id")
    np.testing.assert_allclose(requests.arrival_time, want_t, rtol=0, atol=1e-9)
    assert list(requests.input_tokens) == list(want_inp)
    trace_keys = sc.model_dump(mode="json")["features"]["f"]["trace"]
    assert trace_keys["input_tokens"] == cfg.input_tokens != "input_tokens"


def test_a_layouts_unit_is_what_makes_mooncake_right() -> None:
    """Mooncake's timestamps are milliseconds from 0: read as seconds (the default for small
    numbers) the 9 s trace would last 2.5 hours."""
    cfg = Trace.model_validate({"path": str(DATA / "mooncake.jsonl")})
    assert cfg.time_unit == "ms" and read(cfg)[0][-1] == 9.0
    as_seconds = Trace.model_validate({"path": str(DATA / "mooncake.jsonl"), "time_unit": "s"})
    assert read(as_seconds)[0][-1] == 9000.0  # the config's keys win


def test_the_configs_keys_win_over_a_recognised_layout(tmp_path: Path) -> None:
    """A column named in the config is kept; the layout fills only the others."""
    cfg = Trace.model_validate(
        {"path": str(DATA / "burstgpt.csv"), "output_tokens": "Total tokens"}
    )
    assert (cfg.timestamp, cfg.input_tokens, cfg.time_unit) == ("Timestamp", "Request tokens", "s")
    out = read(cfg)[2]
    assert list(out) == list(pd.read_csv(DATA / "burstgpt.csv")["Total tokens"])
    only_gpt4 = Trace.model_validate(
        {"path": str(DATA / "burstgpt.csv"), "model_column": "Model", "model_value": "GPT-4"}
    )
    assert list(read(only_gpt4)[1]) == [417, 2048]
    # A file with the default columns is read by them, whatever else it has.
    path = write(tmp_path / "log.jsonl", [{"timestamp": 0, "input_tokens": 1, "output_tokens": 2,
                                           "input_length": 5, "output_length": 6}])  # fmt: skip
    assert Trace.model_validate({"path": str(path)}).input_tokens == "input_tokens"


@pytest.mark.parametrize("name", ["log.csv", "log.parquet", "log.jsonl", "log.csv.gz"])
def test_every_file_format_is_recognised(tmp_path: Path, name: str) -> None:
    rows = [
        {"Timestamp": 0.0, "Model": "ChatGPT", "Request tokens": 10, "Response tokens": 1},
        {"Timestamp": 2.5, "Model": "GPT-4", "Request tokens": 20, "Response tokens": 2},
    ]
    cfg = Trace.model_validate({"path": str(write(tmp_path / name, rows))})
    assert cfg.layout is not None and cfg.layout.name == "BurstGPT"
    assert list(read(cfg)[0]) == [0.0, 2.5]


def refused(path: Path, **keys: Any) -> str:
    """The message of a trace that cannot be read with these keys (no column keys by default)."""
    with pytest.raises(TraceError) as info:
        read(Trace.model_validate({"path": str(path), **keys}))
    return str(info.value)


def test_every_missing_column_is_named_at_once_with_unused_guesses(tmp_path: Path) -> None:
    """All missing columns in one message; a guess is never a column another role already
    uses (the Azure file's output column was guessed as 'ContextTokens', the input column)."""
    azure = DATA / "azure2023_conv.csv"
    msg = refused(azure, timestamp="TIMESTAMP", input_tokens="ContextTokens", output_tokens="out")
    assert "no column 'out' (the output_tokens column; did you mean 'GeneratedTokens'?)" in msg
    assert "did you mean 'ContextTokens'" not in msg
    msg = refused(write(tmp_path / "a.csv", [{"a": 1, "b": 2, "c": 3}]))
    for name, role in [("timestamp", "timestamp"), ("input_tokens", "input_tokens"),
                       ("output_tokens", "output_tokens")]:  # fmt: skip
        assert f"no column {name!r} (the {role} column)" in msg, msg
    assert "the file has: 'a', 'b', 'c'" in msg and "did you mean" not in msg
    # A column used by one role is not guessed for another, even when its name is closest.
    path = write(tmp_path / "b.csv", [{"time": 0, "input_tokens": 1, "tokens": 2}])
    msg = refused(path)
    assert "(the output_tokens column; did you mean 'tokens'?)" in msg, msg
    assert "did you mean 'input_tokens'" not in msg and "did you mean 'time'" in msg
    assert 'Set timestamp = "time", output_tokens = "tokens" in the trace table' in msg
    assert "(llmtraffic fit: --timestamp time --output-tokens tokens)" in msg


def test_a_guess_for_a_name_with_spaces_is_quoted_for_the_shell(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", [{"Arrival time": 0, "Prompt tokens": 1, "Output tokens": 2}])
    msg = refused(path)
    assert "--timestamp 'Arrival time' --input-tokens 'Prompt tokens'" in msg, msg
    assert 'timestamp = "Arrival time", input_tokens = "Prompt tokens"' in msg


def test_a_byte_order_mark_is_not_part_of_a_column_name(tmp_path: Path) -> None:
    """Spreadsheets save CSV with a UTF-8 BOM; the first column was '\\ufefftimestamp'."""
    for name in ("bom.csv", "bom.jsonl"):
        text = (
            "t,inp,out\n0,1,2\n1,3,4\n"
            if name.endswith(".csv")
            else '{"t": 0, "inp": 1, "out": 2}\n'
        )
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert read(trace(tmp_path / name))[1].tolist()[:1] == [1]


def test_validate_says_which_trace_layout_it_recognised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config that names only a public trace's path: validate says what it read."""
    from llmtraffic.cli import main

    config = tmp_path / "replay.toml"
    config.write_text(
        '[run]\nduration = "trace"\n[providers.p]\nmodel = "openai/gpt-4o-mini"\n'
        f'[features.f]\nprovider = "p"\ntrace = {{ path = "{DATA / "burstgpt.csv"}" }}\n',
        encoding="utf-8",
    )
    assert main(["validate", str(config)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "features.f.trace:" in out and "BurstGPT layout" in out
    assert "input 'Request tokens', output 'Response tokens'" in out
