"""The record of a served session, written as a run's results folder.

Every attempt the server answered is a row of ``attempts.parquet`` (results/schema.py), with
the bill the provider model gave it, streamed to disk in batches as the session goes. At the
end the attempts are grouped into requests (by the ``x-llmtraffic-request`` header; without it
each attempt is its own request) for ``requests.parquet``, and the summary is computed by the
simulator's own ``tally_metrics``, so ``llmtraffic compare`` and ``llmtraffic.load`` read a
served session as they read a simulated run. Times are simulated seconds from the session's
start (wall seconds times ``--speedup``).

The server sees attempts, not the application's intentions: a request whose last attempt
failed is ``exhausted`` (the client stopped retrying, for whatever reason), one that
succeeded is ``ok``.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from llmtraffic.config.scenario import Scenario
from llmtraffic.engine.entities import EXHAUSTED, OK
from llmtraffic.results.jsonio import write_json
from llmtraffic.results.metrics import tally_metrics
from llmtraffic.results.recorder import Tally
from llmtraffic.results.schema import ATTEMPTS, EVENTS, REQUESTS, SCHEMA_VERSION
from llmtraffic.results.sink import ParquetSink
from llmtraffic.serve.model import Served, token_times

FLUSH_ROWS = 2_000


@dataclass
class _Request:
    """What the log keeps of one logical request until the session ends."""

    rid: int
    feature: str
    arrival: float
    input_tokens: int
    output_tokens: int
    baseline: float
    attempts: int = 0
    end: float = math.nan
    billed: float = 0.0
    useful: float = 0.0
    ok: bool = False
    provider: str = ""
    model: str = ""
    ttft: float = math.nan
    tpots: list[float] = field(default_factory=list)


class SessionLog:
    """Collects the attempts of a session and writes its results folder into ``folder``."""

    def __init__(self, folder: Path, scenario: Scenario, seed: int, speedup: float) -> None:
        self.folder = folder
        self.scenario = scenario
        self.seed = seed
        self.speedup = speedup
        self.started = dt.datetime.now(dt.UTC)
        self.sink = ParquetSink(folder, ("requests", "attempts", "events"))
        self.rows: list[tuple[Any, ...]] = []
        self.requests: dict[str, _Request] = {}
        self.attempt_count = 0
        # Attempts per time-series bin (by send time): the peak attempt rate.
        self.width = scenario.run.timeseries_bin
        self.per_bin: dict[int, int] = {}
        self.closed = False

    def attempt(self, served: Served) -> None:
        """Record one attempt whose outcome was just reached (``ProviderModel.on_attempt``)."""
        att = served.att
        req = att.request
        ep = att.provider
        start = att.start
        started = start == start
        ttft, tpot = token_times(served)
        self.rows.append(
            (
                req.id,
                att.number,
                served.feature,
                ep.name,
                ep.model,
                att.send,
                start,
                served.end,
                att.status,
                att.http_status,
                att.retry_after,
                start - att.send if started else math.nan,
                req.input_tokens,
                att.generated,
                att.cost,
                att.wait_before,
                ttft,
                tpot,
            )
        )
        self.attempt_count += 1
        b = int(att.send / self.width)
        self.per_bin[b] = self.per_bin.get(b, 0) + 1
        rec = self.requests.get(served.request_key)
        if rec is None:
            rec = _Request(
                req.id, served.feature, att.send, req.input_tokens, req.output_tokens, req.baseline
            )
            self.requests[served.request_key] = rec
        rec.attempts += 1
        rec.end = served.end
        rec.billed += att.cost
        rec.provider, rec.model = ep.name, ep.model
        if att.status is OK:
            rec.ok = True
            rec.useful = att.cost
            rec.output_tokens = att.generated
            rec.ttft = ttft + (att.send - rec.arrival) if ttft == ttft else math.nan
            if tpot == tpot:
                rec.tpots.append(tpot)
        if len(self.rows) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered attempt rows."""
        if self.rows:
            cols = list(zip(*self.rows, strict=True))
            arrays = [pa.array(c, type=f.type) for c, f in zip(cols, ATTEMPTS, strict=True)]
            self.sink.write("attempts", pa.RecordBatch.from_arrays(arrays, schema=ATTEMPTS))
            self.rows.clear()

    def close(self, end: float, wall: float, events: list[tuple[Any, ...]]) -> dict[str, Any]:
        """Write the requests, events, summary, config and manifest (last: a folder with a
        manifest is complete); return the summary. ``end`` is the simulated time the session
        ended at, ``wall`` its wall seconds, ``events`` the model's incident rows."""
        if self.closed:
            raise RuntimeError("the session log is already closed")
        self.closed = True
        self.flush()
        reqs = sorted(self.requests.values(), key=lambda r: r.rid)
        rows = [
            (
                r.rid,
                r.feature,
                r.arrival,
                r.end,
                OK if r.ok else EXHAUSTED,
                r.attempts,
                r.provider,
                r.model,
                r.input_tokens,
                r.output_tokens if r.ok else 0,
                r.billed,
                r.useful,
                r.baseline,
                r.end - r.arrival if r.ok else math.nan,
            )
            for r in reqs
        ]
        self._write("requests", rows, REQUESTS)
        self._write("events", [e for e in events if e[0] <= end], EVENTS)
        self.sink.close()
        summary = self.summary(reqs, max(end, 1e-9), wall)
        write_json(self.folder / "config.json", self.scenario.model_dump(mode="python"))
        write_json(self.folder / "summary.json", summary)
        write_json(self.folder / "manifest.json", self._manifest(summary))
        return summary

    def _write(self, table: str, rows: list[tuple[Any, ...]], schema: pa.Schema) -> None:
        if not rows:
            return
        cols = list(zip(*rows, strict=True))
        arrays = [pa.array(c, type=f.type) for c, f in zip(cols, schema, strict=True)]
        self.sink.write(table, pa.RecordBatch.from_arrays(arrays, schema=schema))

    def summary(self, reqs: list[_Request], duration: float, wall: float) -> dict[str, Any]:
        """The run summary's metrics over the session (``tally_metrics``: the simulator's
        definitions), per feature and in all."""
        from llmtraffic import __version__

        tallies = {name: Tally() for name in self.scenario.features}
        for r in reqs:
            t = tallies[r.feature]
            t.requests += 1
            t.sent += r.attempts
            t.attempts += r.attempts
            t.retries += r.attempts - 1
            t.billed += r.billed
            t.useful += r.useful
            t.wasted += r.billed - r.useful
            t.baseline += r.baseline
            t.outcomes[OK if r.ok else EXHAUSTED] += 1
            if r.ok:
                t.status[OK] += 1
                t.failed_attempts += r.attempts - 1
                t.ok_input_tokens += r.input_tokens
                t.ok_output_tokens += r.output_tokens
                t.latencies.append(r.end - r.arrival)
                t.ttfts.append(r.ttft)
                t.tpots.append(r.tpots[-1] if r.tpots else math.nan)
            else:
                t.failed_attempts += r.attempts
        names = list(tallies)
        values = [self.scenario.features[n].value_per_success for n in names]
        summary = tally_metrics([tallies[n] for n in names], duration, values)
        sent = sum(t.sent for t in tallies.values())
        summary["retry_share"] = (
            sum(t.retries for t in tallies.values()) / sent if sent else math.nan
        )
        # As the simulator defines it (results.metrics.peak_attempt_rate_ratio), binned alike.
        requests = summary["requests"]
        summary["peak_attempt_rate_ratio"] = (
            max(self.per_bin.values()) / self.width / (requests / duration)
            if requests and self.per_bin
            else math.nan
        )
        summary["features"] = {
            n: tally_metrics([tallies[n]], duration, [self.scenario.features[n].value_per_success])
            for n in names
        }
        summary["incidents"] = []
        summary.update(
            {
                "scenario": self.scenario.name,
                "seed": self.seed,
                "served": True,
                "speedup": self.speedup,
                "version": __version__,
                "schema_version": SCHEMA_VERSION,
                "duration": duration,
                "sim_end_time": duration,
                "wall_time_s": wall,
            }
        )
        return summary

    def _manifest(self, summary: dict[str, Any]) -> dict[str, Any]:
        return {
            "kind": "llmtraffic-run",
            "served": True,
            "scenario": self.scenario.name,
            "seed": self.seed,
            "speedup": self.speedup,
            "version": summary["version"],
            "schema_version": SCHEMA_VERSION,
            "host": socket.gethostname(),
            "python": platform.python_version(),
            "started_utc": self.started.isoformat(timespec="seconds"),
            "wall_time_s": summary["wall_time_s"],
            "records": "all",
            "tables": ["requests", "attempts", "events"],
            "complete": True,
        }
