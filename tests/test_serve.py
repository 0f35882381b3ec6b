"""``llmtraffic serve``: the wire formats the SDKs parse, the provider model's outcomes over
HTTP (429s with their headers, x-should-retry, mid-stream failures, hang-ups, incidents on the
wall clock divided by the speedup), the bills in the log, and the command (port taken,
SIGTERM flushes the log, compare reads a session).

Costs are hand-computed: the provider charges $1 per million input tokens and $2 per million
output tokens, and every request is 100 tokens in, 50 out: 100e-6 + 100e-6 = $0.0002.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

import llmtraffic
from llmtraffic.cli import main
from llmtraffic.config.loader import scenario_from_dict
from llmtraffic.config.scenario import Scenario
from llmtraffic.runner import run_to_folder
from llmtraffic.serve.server import ServerThread

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

COST = 100e-6 + 100e-6
MESSAGES: Any = [{"role": "user", "content": "hi"}]


def config(**provider: Any) -> dict[str, Any]:
    p = {
        "model": "test-model",
        "prices": {"input": 1.0, "output": 2.0},
        "service": {"kind": "tokens", "ttft": "0.05s", "decode_tps": 1000, "noise_sigma": 0.0},
        **provider,
    }
    return {
        "name": "serve-test",
        "run": {"duration": 60, "seed": 1},
        "providers": {"p": p},
        "features": {
            "f": {
                "provider": "p",
                "arrivals": {"kind": "poisson", "rate": 1.0},
                "input_tokens": {"kind": "fixed", "value": 100},
                "output_tokens": {"kind": "fixed", "value": 50},
                "max_tokens": 100,
            }
        },
    }


def scenario(**provider: Any) -> Scenario:
    return scenario_from_dict(config(**provider))


def post(server: ServerThread, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data)


CHAT = {"model": "m", "messages": MESSAGES}


def test_answers_bill_and_usage(tmp_path: Path) -> None:
    """Five answers: the SDK parses each with its usage block and 50 words of filler; the log
    has one ok row per HTTP request, each billed $0.0002, and the summary adds them up."""
    out = tmp_path / "s"
    with ServerThread(scenario(), out) as server:

        async def calls() -> list[Any]:
            client = openai.AsyncOpenAI(base_url=server.base_url("p"), api_key="k")
            return [
                await client.chat.completions.create(model="m", messages=MESSAGES) for _ in range(5)
            ]

        answers = asyncio.run(calls())
    for a in answers:
        assert a.usage is not None
        assert (a.usage.prompt_tokens, a.usage.completion_tokens) == (100, 50)
        assert len((a.choices[0].message.content or "").split()) == 50
    run = llmtraffic.load(out)
    assert list(run.attempts.status) == ["ok"] * 5
    assert run.attempts.cost.tolist() == pytest.approx([COST] * 5)
    assert len(run.requests) == 5  # no request header: each attempt is a request
    assert run.summary["billed_cost"] == pytest.approx(5 * COST)
    assert run.summary["success_rate"] == 1.0


def test_429_carries_retry_after_and_rate_limit_headers(tmp_path: Path) -> None:
    """rpm = 2 over a minute: the third request at once is refused until the bucket refills
    one request, 30 s later (rounded up to whole seconds): at speedup 10, 3 wall seconds."""
    with ServerThread(scenario(rate_limit={"rpm": 2}), tmp_path / "s", speedup=10) as server:
        for _ in range(2):
            status, _, _ = post(server, "/p/v1/chat/completions", CHAT)
            assert status == 200
        status, headers, body = post(server, "/p/v1/chat/completions", CHAT)
        assert status == 429
        assert headers["retry-after-ms"] == "3000"
        assert headers["retry-after"] == "3"
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert body["error"]["code"] == "rate_limit_exceeded"
        anth = {"model": "m", "max_tokens": 100, "messages": MESSAGES}
        status, headers, body = post(server, "/p/v1/messages", anth)
        assert status == 429
        assert headers["anthropic-ratelimit-requests-limit"] == "2"
        assert body["error"]["type"] == "rate_limit_error"
    attempts = llmtraffic.load(tmp_path / "s").attempts
    assert attempts.status.tolist() == ["ok", "ok", "rate_limited", "rate_limited"]
    assert attempts.cost.tolist() == pytest.approx([COST, COST, 0.0, 0.0])


def test_the_sdk_obeys_x_should_retry(tmp_path: Path) -> None:
    """Every attempt fails with a 500 marked x-should-retry: false; the OpenAI SDK, which
    would retry a 500 twice, sends one attempt per call."""
    sc = scenario(failures={"error_rate": 1.0, "error_should_retry": False})
    with ServerThread(sc, tmp_path / "s") as server:

        async def call() -> None:
            client = openai.AsyncOpenAI(base_url=server.base_url("p"), api_key="k")
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(model="m", messages=MESSAGES)

        asyncio.run(call())
    attempts = llmtraffic.load(tmp_path / "s").attempts
    assert attempts.http_status.tolist() == [500]


def test_a_stream_cut_mid_way_reaches_the_caller(tmp_path: Path) -> None:
    """Every answer fails mid-stream: each SDK yields the tokens generated, then raises (no
    retry: a stream's failure is the caller's); each attempt is billed its input and the
    tokens generated before the cut."""
    sc = scenario(failures={"midstream_rate": 1.0})
    with ServerThread(sc, tmp_path / "s") as server:

        async def calls() -> list[int]:
            words = []
            oa = openai.AsyncOpenAI(base_url=server.base_url("p"), api_key="k")
            stream = await oa.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            text = ""
            with pytest.raises(openai.APIError):
                async for chunk in stream:
                    text += chunk.choices[0].delta.content or ""
            words.append(len(text.split()))
            an = anthropic.AsyncAnthropic(base_url=server.base_url("p", "anthropic"), api_key="k")
            text = ""
            with pytest.raises(anthropic.APIStatusError):
                async with an.messages.stream(model="m", max_tokens=100, messages=MESSAGES) as s:
                    async for piece in s.text_stream:
                        text += piece
            words.append(len(text.split()))
            return words

        words = asyncio.run(calls())
    attempts = llmtraffic.load(tmp_path / "s").attempts
    assert attempts.status.tolist() == ["midstream_error"] * 2
    assert attempts.output_tokens.tolist() == words
    assert all(w < 50 for w in words)
    expected = [100e-6 + 2e-6 * w for w in words]
    assert attempts.cost.tolist() == pytest.approx(expected)


def test_the_responses_api_answers_and_streams(tmp_path: Path) -> None:
    """The OpenAI SDK's Responses API: a response with its usage, and a stream of text deltas
    ending in response.completed, 50 words each."""
    with ServerThread(scenario(), tmp_path / "s") as server:

        async def calls() -> tuple[Any, str, Any]:
            client = openai.AsyncOpenAI(base_url=server.base_url("p"), api_key="k")
            answer = await client.responses.create(model="m", input="hi")
            stream = await client.responses.create(model="m", input="hi", stream=True)
            text, last = "", None
            async for event in stream:
                if event.type == "response.output_text.delta":
                    text += event.delta
                last = event
            return answer, text, last

        answer, text, last = asyncio.run(calls())
    assert answer.usage.output_tokens == 50 and len(answer.output_text.split()) == 50
    assert len(text.split()) == 50
    assert last.type == "response.completed"
    assert last.response.usage.input_tokens == 100


def test_an_answer_cut_mid_way_is_a_broken_body(tmp_path: Path) -> None:
    """Not streamed, a mid-stream failure is a 200 whose body breaks off: the SDK raises a
    connection error (and would retry it)."""
    sc = scenario(failures={"midstream_rate": 1.0})
    with ServerThread(sc, tmp_path / "s") as server:

        async def call() -> None:
            client = openai.AsyncOpenAI(base_url=server.base_url("p"), api_key="k", max_retries=0)
            with pytest.raises(openai.APIConnectionError):
                await client.chat.completions.create(model="m", messages=MESSAGES)

        asyncio.run(call())
    assert llmtraffic.load(tmp_path / "s").attempts.status.tolist() == ["midstream_error"]


def test_a_client_that_hangs_up_is_a_timeout(tmp_path: Path) -> None:
    """A 2 s time to first token and a client timeout of 0.3 s: the provider sees the hang-up
    as a timeout and, running the answer to its end (the default), bills all of it."""
    sc = scenario(service={"kind": "tokens", "ttft": "2s", "decode_tps": 1000, "noise_sigma": 0.0})
    with ServerThread(sc, tmp_path / "s") as server:

        async def call() -> None:
            client = openai.AsyncOpenAI(
                base_url=server.base_url("p"), api_key="k", max_retries=0, timeout=0.3
            )
            with pytest.raises(openai.APITimeoutError):
                await client.chat.completions.create(model="m", messages=MESSAGES)
            await asyncio.sleep(0.3)  # the server notices the closed connection

        asyncio.run(call())
    attempts = llmtraffic.load(tmp_path / "s").attempts
    assert attempts.status.tolist() == ["timeout"]
    assert attempts.cost.tolist() == pytest.approx([COST])


def test_incidents_follow_the_wall_clock_times_the_speedup(tmp_path: Path) -> None:
    """An outage from 5 s to 10 s of simulated time at speedup 10: from 0.5 s to 1 s of wall
    time every request gets its 503, before and after none does."""
    sc = scenario(incidents=[{"kind": "outage", "start": "5s", "duration": "5s"}])
    seen = []
    with ServerThread(sc, tmp_path / "s", speedup=10) as server:
        model = server.session.model  # type: ignore[union-attr]
        assert model is not None
        for at in (0.2, 0.7, 1.3):
            time.sleep(max(0.0, model.wall_at(at * 10) - time.monotonic()))
            seen.append(post(server, "/p/v1/chat/completions", CHAT)[0])
    assert seen == [200, 503, 200]
    events = llmtraffic.load(tmp_path / "s").events
    assert events.kind.tolist() == ["incident_start", "incident_end"]
    assert events.time.tolist() == [5.0, 10.0]


@pytest.mark.parametrize("wait", [False, True])
def test_the_clock_may_start_with_the_first_request(tmp_path: Path, wait: bool) -> None:
    """An outage in the first simulated second; the first request comes 1.5 s after the
    server started: it meets the outage only when the clock waits for traffic."""
    sc = scenario(incidents=[{"kind": "outage", "start": 0.0, "duration": "1s"}])
    with ServerThread(sc, tmp_path / "s", wait_for_traffic=wait) as server:
        time.sleep(1.5)
        status = post(server, "/p/v1/chat/completions", CHAT)[0]
    assert status == (503 if wait else 200)


def test_tokens_come_at_the_decode_speed(tmp_path: Path) -> None:
    """50 tokens at 100 per second take 0.5 s after the first: no stream is faster than the
    model (the lower bound only: a busy machine may be slower)."""
    sc = scenario(service={"kind": "tokens", "ttft": "0.1s", "decode_tps": 100, "noise_sigma": 0})
    with ServerThread(sc, tmp_path / "s") as server:

        async def call() -> tuple[float, float, int]:
            client = openai.AsyncOpenAI(base_url=server.base_url("p"), api_key="k")
            t0 = time.monotonic()
            stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            first = last = math_nan = float("nan")
            words = 0
            async for chunk in stream:
                text = chunk.choices[0].delta.content if chunk.choices else None
                if text:
                    now = time.monotonic() - t0
                    first = now if first != first else first
                    last = now
                    words += len(text.split())
            del math_nan
            return first, last, words

        first, last, words = asyncio.run(call())
    assert words == 50
    assert first >= 0.1 + 0.01 - 0.005  # ttft + one token
    assert last - first >= 0.49 - 0.01  # 49 more tokens, at most one write apart


def test_bad_requests_get_the_providers_errors(tmp_path: Path) -> None:
    """An unknown provider is a 404 naming the ones there are; a bad max_tokens a 400 naming
    the field; neither reaches the model (no attempt logged)."""
    with ServerThread(scenario(), tmp_path / "s") as server:
        status, _, body = post(server, "/nope/v1/chat/completions", CHAT)
        assert status == 404
        assert "providers: p" in body["error"]["message"]
        status, _, body = post(server, "/p/v1/chat/completions", {**CHAT, "max_tokens": 0})
        assert status == 400
        assert "max_tokens" in body["error"]["message"]
        status, _, body = post(server, "/p/v1/messages", {"model": "m", "messages": MESSAGES})
        assert status == 400
        assert body["error"]["type"] == "invalid_request_error"
    assert llmtraffic.load(tmp_path / "s").attempts.empty


def test_requests_group_by_header_and_compare_reads_a_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Attempts with one x-llmtraffic-request are one request (numbered 0, 1, ...) with one
    prompt size (drawn for its first attempt); a session's folder compares with a simulated
    run's."""
    raw = config(failures={"error_rate": 0.5})
    raw["features"]["f"]["input_tokens"] = {"kind": "uniform", "low": 10, "high": 10_000}
    sc = scenario_from_dict(raw)
    with ServerThread(sc, tmp_path / "s") as server:

        async def calls() -> None:
            client = openai.AsyncOpenAI(base_url=server.base_url("p"), api_key="k", max_retries=5)
            for i in range(4):
                await client.chat.completions.create(
                    model="m",
                    messages=MESSAGES,
                    extra_headers={"x-llmtraffic-request": f"r{i}"},
                )

        asyncio.run(calls())
    run = llmtraffic.load(tmp_path / "s")
    att, req = run.attempts, run.requests
    assert len(req) == 4
    assert req.attempts.sum() == len(att)
    for _, rows in att.groupby("request_id"):
        assert rows.attempt.tolist() == list(range(len(rows)))
        assert rows.input_tokens.nunique() == 1
    assert att.input_tokens.nunique() == 4  # four requests, four draws (ties: 1 in 10^4)
    assert req.billed_cost.sum() == pytest.approx(att.cost.sum())
    run_to_folder(sc, tmp_path / "sim")
    assert main(["compare", str(tmp_path / "s"), str(tmp_path / "sim")]) == 0
    assert "att/req" in capsys.readouterr().out


def test_a_taken_port_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml(config()), encoding="utf-8")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        code = main(["serve", str(cfg), "--port", str(port), "--out", str(tmp_path / "o")])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--port {port}" in err and "already in use" in err and "--port 0" in err
    assert not (tmp_path / "o").exists()


def test_sigterm_stops_the_server_with_the_log_written(tmp_path: Path) -> None:
    """The command in a process of its own: it prints its base URLs, answers, and on SIGTERM
    exits 0 with the session's folder complete."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml(config()), encoding="utf-8")
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": str(Path(llmtraffic.__file__).parents[1])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmtraffic.cli",
            "serve",
            str(cfg),
            "--port",
            "0",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        port = int(banner.split("http://127.0.0.1:")[1].split(",")[0])
        proc.stdout.readline()  # the provider's base URLs
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/p/v1/chat/completions", json.dumps(CHAT))
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "served 1 requests in 1 attempts" in stdout
    assert llmtraffic.load(out).summary["billed_cost"] == pytest.approx(COST)


def toml(raw: dict[str, Any]) -> str:
    """``raw`` as TOML (top-level keys of inline tables, which JSON literals mostly are)."""
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in raw.items())


def _toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)


def test_every_request_is_one_attempt_billed_by_its_rule(tmp_path: Path) -> None:
    """Conservation under concurrency: 16 calls at once to 2 slots with a queue of 2, fast
    errors and mid-stream failures: each HTTP request is exactly one attempt row, shed ones
    get the 529 (the queue is real concurrency accounting), each row is billed by its rule
    (ok: all of it; 429, 5xx, 529: nothing; mid-stream: input and the tokens generated), the
    summary adds the rows up, and the provider ends with no slot held and nothing queued."""
    sc = scenario(
        capacity={"slots": 2, "queue_limit": 2},
        failures={"error_rate": 0.2, "midstream_rate": 0.3},
        service={"kind": "tokens", "ttft": "0.3s", "decode_tps": 500, "noise_sigma": 0.0},
    )
    with ServerThread(sc, tmp_path / "s") as server:

        async def calls() -> list[str]:
            client = openai.AsyncOpenAI(base_url=server.base_url("p"), api_key="k", max_retries=0)

            async def one() -> str:
                try:
                    await client.chat.completions.create(model="m", messages=MESSAGES)
                    return "ok"
                except openai.APIError as exc:
                    return type(exc).__name__

            return list(await asyncio.gather(*(one() for _ in range(16))))

        outcomes = asyncio.run(calls())
    model = server.session.model  # type: ignore[union-attr]
    assert model is not None
    ep = model.endpoints["p"]
    assert (ep.busy, len(ep.queue)) == (0, 0)
    run = llmtraffic.load(tmp_path / "s")
    att = run.attempts
    assert len(att) == 16
    assert (att.status == "ok").sum() == outcomes.count("ok")
    # 2 slots and 2 queue places for 16 calls sent at once, each served 0.4 s: most are shed
    # (at most two rounds of 4 admitted if the calls take as long as a service to arrive).
    assert set(att[att.status == "overloaded"].http_status) == {529}
    assert (att.status == "overloaded").sum() >= 16 - 8 - (att.status == "server_error").sum()
    for row in att.itertuples():
        if row.status == "ok":
            assert row.cost == pytest.approx(COST)
        elif row.status == "midstream_error":
            assert row.cost == pytest.approx(100e-6 + 2e-6 * row.output_tokens)
            assert row.output_tokens < 50
        else:
            assert row.status in ("server_error", "overloaded") and row.cost == 0.0
    assert run.summary["billed_cost"] == pytest.approx(att.cost.sum())
    assert run.summary["attempts"] == 16
