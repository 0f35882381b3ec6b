"""``Simulation``: builds one run of a scenario (kernel, streams, providers, clients, sources,
incidents, records) and runs it. It emits records to a sink and returns the summary; it writes
no files of its own (the runner owns results folders)."""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from llmtraffic.client.client import Client
from llmtraffic.client.hedging import HedgedClient
from llmtraffic.client.layers import LayeredClient
from llmtraffic.client.levers import LeversClient
from llmtraffic.client.plugins import check_plugins
from llmtraffic.client.routing import RoutedClient
from llmtraffic.client.session_client import (
    SessionClient,
    SessionHedgedClient,
    SessionLayeredClient,
    SessionRoutedClient,
)
from llmtraffic.client.spendcaps import CapBook
from llmtraffic.config.policy import Policy
from llmtraffic.config.scenario import Scenario
from llmtraffic.config.span import resolve_duration
from llmtraffic.config.workload import Feature
from llmtraffic.engine.entities import UNFINISHED
from llmtraffic.engine.kernel import Call, Kernel
from llmtraffic.engine.streams import Streams
from llmtraffic.provider.batching import BatchingEndpoint
from llmtraffic.provider.endpoint import Endpoint
from llmtraffic.provider.errors import (
    ErrorEndpoint,
    longest_request,
    make_endpoint,
    spend_meters,
)
from llmtraffic.provider.incidents import schedule_incidents
from llmtraffic.provider.pricing import PricedEndpoint
from llmtraffic.results.load import RunResult
from llmtraffic.results.metrics import (
    LIMIT_KINDS,
    IncidentSpan,
    RecoveryRule,
    SloBounds,
    hedge_metrics,
    incident_metrics,
    layer_metrics,
    peak_attempt_rate_ratio,
    route_metrics,
    session_metrics,
    steady_cost_rate,
    tally_metrics,
)
from llmtraffic.results.recorder import Recorder
from llmtraffic.results.schema import SCHEMA_VERSION
from llmtraffic.results.sink import MemorySink, RecordSink
from llmtraffic.workload.priced_source import PricedFeatureSource
from llmtraffic.workload.sessions import SessionClients, SessionDriver
from llmtraffic.workload.source import FeatureSource

__all__ = ["ProgressFn", "RunResult", "Simulation", "config_hash"]

ProgressFn = Callable[[float], None]

"""Called now and then with the fraction of the arrival span simulated so far."""


def chain_of(sc: Scenario, feature: str, endpoints: dict[str, Endpoint]) -> list[Endpoint]:
    """A feature's provider followed by its route's other deployments and its policy's
    fallback providers (``Scenario.chain_names``)."""
    return [endpoints[p] for p in sc.chain_names(feature)]


def config_hash(scenario: Scenario) -> str:
    """A short hash of the scenario without its seed (replications share it)."""
    data = scenario.model_dump(mode="json")
    data["run"].pop("seed", None)
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Simulation:
    """One run of one scenario with one seed.

    ``seed`` overrides ``scenario.run.seed``. ``sink`` receives the record tables (a
    ``MemorySink`` by default, whose tables come back in the result); ``progress`` is called
    with the fraction of the arrival span done.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int | None = None,
        sink: RecordSink | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        # A scenario built in Python may still say run.duration = "trace".
        self.scenario = scenario = resolve_duration(scenario)
        # Plugins are imported only when allowed (the Python API allows every module; the CLI
        # only those named by --allow-plugin): checked and loaded before the run starts, so a
        # refusal or a bad reference names its config field.
        check_plugins([scenario])
        self.seed = scenario.run.seed if seed is None else int(seed)
        self._memory = sink is None
        self.sink: RecordSink = MemorySink() if sink is None else sink
        self.progress = progress
        self.clients: dict[str, Client] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.drivers: dict[str, SessionDriver] = {}
        self.cap_books: dict[str, CapBook] = {}

    def run(self) -> RunResult:
        """Simulate the scenario and return the summary (and in-memory tables)."""
        # The engine makes millions of short-lived acyclic objects that reference counting
        # frees; the cyclic collector would only rescan the row buffers again and again
        # (a third of the run time with records kept). It is restored afterwards.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if was_enabled:
                gc.enable()

    def _run(self) -> RunResult:
        wall0 = time.perf_counter()
        sc = self.scenario
        run = sc.run
        duration = run.seconds
        kernel = Kernel()
        streams = Streams(self.seed)
        recorder = Recorder(
            self.sink,
            keep_rows=run.records == "all",
            keep_timeseries=run.records in ("all", "timeseries"),
            bin_width=run.timeseries_bin,
            expected_end=duration * 1.1,
            features=list(sc.features),
        )
        meters = spend_meters(sc.providers, recorder)
        endpoints = {
            name: make_endpoint(
                name,
                cfg,
                kernel,
                streams,
                # Only the features that may send to it can exceed its context window.
                longest_request(sc.features[f] for f in incident_scope(sc, name)),
                meters.get(name),
                {f: sc.features[f] for f in incident_scope(sc, name)},
            )
            for name, cfg in sc.providers.items()
        }
        for name, cfg in sc.providers.items():
            schedule_incidents(kernel, endpoints[name], cfg.incidents, recorder)
        finite_drain = not math.isinf(run.drain)
        # A policy with retry layers gets the client that runs them; the others, today's.
        books = {n: CapBook(n, cap, recorder) for n, cap in sc.spend_caps.items()}
        self.cap_books = books
        clients: dict[str, Client] = {}
        for name, feat in sc.features.items():
            caps = [books[n] for n, cap in sc.spend_caps.items() if name in cap.features]
            policy = sc.policy_of(name)
            args = (name, feat, policy, chain_of(sc, name, endpoints), kernel, streams, recorder)
            if feat.levers or caps:
                # Cascades, splits, response caches and spend caps: their own client.
                clients[name] = LeversClient(*args, track_live=finite_drain, caps=caps)
            else:
                cls = client_class(policy, closed_loop(feat))
                clients[name] = cls(*args, track_live=finite_drain)
        recorder.queue_integrals = {name: e.queue_integral for name, e in endpoints.items()}
        recorder.integrals = {
            "in_flight": lambda t: sum(c.inflight_integral(t) for c in clients.values()),
            "busy_slots": lambda t: sum(e.busy_integral(t) for e in endpoints.values()),
            "queue_length": lambda t: sum(e.queue_integral(t) for e in endpoints.values()),
        }
        ids = itertools.count()
        session_ids = itertools.count()
        drivers: dict[str, SessionDriver] = {}
        for name, feat in sc.features.items():
            client = clients[name]
            if closed_loop(feat):
                assert isinstance(client, SessionClients)
                drivers[name] = SessionDriver(
                    name,
                    feat,
                    client,
                    kernel,
                    streams,
                    duration,
                    run.start_hour,
                    ids.__next__,
                    session_ids.__next__,
                )
                drivers[name].start()
                continue
            source_class(feat, client.endpoint)(
                name, feat, client, kernel, streams, duration, run.start_hour, ids.__next__
            ).start()
        self._schedule_ticks(kernel, recorder, endpoints, clients, duration, drivers)
        # Kept for inspection after the run (tests audit the gates' books through them).
        self.clients, self.endpoints, self.drivers = clients, endpoints, drivers
        until = duration + run.drain if finite_drain else None
        kernel.run(until=until)
        end = kernel.now
        for c in clients.values():
            if c.live:
                for req in list(c.live.values()):
                    c.finish(req, UNFINISHED, end)
            c.close_open_intervals(end)
        for d in drivers.values():
            d.close(end)
        recorder.final_sample(end)
        recorder.close(end)
        wall = time.perf_counter() - wall0
        summary = self._summary(sc, recorder, end, wall, kernel.events_scheduled())
        tables: dict[str, pa.Table] = {}
        if self._memory and isinstance(self.sink, MemorySink):
            keep = {
                "all": ("requests", "attempts", "events", "timeseries"),
                "timeseries": ("events", "timeseries"),
                "summary": (),
            }[run.records]
            tables = {name: self.sink.table(name) for name in keep}
        # The scenario as it ran (the seed given here included), so that the result's
        # config is the config.json the runner writes for the same run.
        ran = sc
        if sc.run.seed != self.seed:
            ran = sc.model_copy(update={"run": sc.run.model_copy(update={"seed": self.seed})})
        return RunResult(
            summary,
            tables,
            scenario=ran,
            sink=None if self._memory else type(self.sink).__name__,
        )

    def _schedule_ticks(
        self,
        kernel: Kernel,
        recorder: Recorder,
        endpoints: dict[str, Endpoint],
        clients: dict[str, Client],
        duration: float,
        drivers: dict[str, SessionDriver],
    ) -> None:
        """One event per bin boundary: closes the bin, samples levels, reports progress.

        Ticks go on while requests arrive or are still active, or sessions are open (one may
        be pausing between turns), then stop, so the event queue empties once the last
        request is done.
        """
        bins = recorder.bins
        width = bins.width
        limiters = [ep.limiter for ep in endpoints.values() if ep.limiter is not None]
        budgets = [c.budget for c in clients.values() if c.budget is not None]
        client_list = list(clients.values())
        driver_list = list(drivers.values())
        progress = self.progress
        state = {"k": 1}

        def tick(ev: Call) -> None:
            now = kernel.now
            k = state["k"]
            b = k - 1
            recorder.sample(now, b)
            if limiters:
                bins.samples["rate_limit_headroom"][b] = min(lim.headroom(now) for lim in limiters)
            if budgets:
                bins.samples["budget_level"][b] = min(bg.level(now) for bg in budgets)
            if progress is not None:
                progress(min(1.0, now / duration))
            if (
                now < duration
                or any(c.active for c in client_list)
                or any(d.live for d in driver_list)
            ):
                state["k"] = k + 1
                # Absolute bin edges, so that no rounding drift accumulates over a long run;
                # urgent, so that bin k holds what happens in [k w, (k + 1) w), the same rule
                # as the columns indexed by int(t / w) (arrival bins).
                kernel.call_at((k + 1) * width, tick, urgent=True)

        kernel.call_at(width, tick, urgent=True)

    def _summary(
        self, sc: Scenario, recorder: Recorder, end: float, wall: float, events: int
    ) -> dict[str, Any]:
        from llmtraffic import __version__

        duration = sc.run.seconds
        names = list(sc.features)
        tallies = [recorder.tallies[n] for n in names]
        values = [sc.features[n].value_per_success for n in names]
        slos = [_slo_bounds(sc.features[n]) for n in names]
        n_bins = recorder.used_bins()
        incidents = incident_summaries(sc, recorder, duration)
        # Projections from each feature's steady state: outside the incidents that hit it.
        width = recorder.bins.width
        steady = {
            n: steady_cost_rate(
                recorder.bins.arrived_cost_by_feature.get(n, []),
                [
                    (inc["start"], inc["affected_until"])
                    for inc in incidents
                    if n in inc["features"].split(",")
                ],
                duration,
                width,
            )
            for n in names
        }
        # The whole system's projection is the sum of its features' (each from its own steady
        # state); the seconds behind it are the fewest of any feature's.
        total_rate = sum(rate for rate, _ in steady.values())
        fewest = min((sec for _, sec in steady.values()), default=duration)
        summary: dict[str, Any] = tally_metrics(
            tallies, duration, values, (total_rate, fewest), slos
        )
        summary["peak_attempt_rate_ratio"] = peak_attempt_rate_ratio(
            recorder.bins, n_bins, summary["requests"], duration
        )
        sent = sum(t.sent for t in tallies)
        summary["retry_share"] = sum(t.retries for t in tallies) / sent if sent else math.nan
        summary["features"] = {
            n: tally_metrics(
                [recorder.tallies[n]], duration, [sc.features[n].value_per_success], steady[n], [s]
            )
            for n, s in zip(names, slos, strict=True)
        }
        for n, client in self.clients.items():
            if isinstance(client, LayeredClient):
                summary["features"][n].update(
                    layer_metrics(
                        client.layer_totals,
                        client.tally.requests,
                        client.most_attempts,
                        sc.policy_of(n).attempt_bound(),
                    )
                )
            elif isinstance(client, LeversClient):
                summary["features"][n].update(client.lever_metrics())
            elif isinstance(client, HedgedClient):
                summary["features"][n].update(
                    hedge_metrics(
                        client.hedges, client.hedge_wins, client.cancelled, client.tally.sent
                    )
                )
            elif isinstance(client, RoutedClient):
                summary["features"][n].update(route_metrics(*client.route_totals()))
        for n, driver in self.drivers.items():
            summary["features"][n].update(
                session_metrics(driver.stats, driver.agent, recorder.tallies[n].billed)
            )
        summary["incidents"] = incidents
        # Which limit refused the 429s, per provider: "<provider>.<rpm|tpm|itpm|otpm>".
        summary["rate_limited_by"] = {
            f"{name}.{kind}": n
            for name, ep in self.endpoints.items()
            if ep.limiter is not None
            for kind, n in zip(LIMIT_KINDS, ep.limiter.rejected, strict=True)
            if n
        }
        # Which quota refused the quota_exhausted 429s: "<provider>.<spend_cap|incident>".
        summary["quota_exhausted_by"] = {
            f"{name}.{cause}": n
            for name, ep in self.endpoints.items()
            if isinstance(ep, ErrorEndpoint)
            for cause, n in ep.quota_refused.items()
            if n
        }
        # Spend caps of the gateway, and the cost levers over every feature (docs/metrics.md).
        if self.cap_books:
            summary["spend_caps"] = {n: b.summary() for n, b in self.cap_books.items()}
        summary.update(lever_totals(summary["features"]))
        # What continuous batching did, per provider that has it (docs/metrics.md).
        batching = {
            name: ep.stats(end)
            for name, ep in self.endpoints.items()
            if isinstance(ep, BatchingEndpoint)
        }
        if batching:
            summary["batching"] = batching
        # What the prices did, per provider that bills by the cache, tiers or reasoning.
        pricing = {
            name: ep.stats()
            for name, ep in self.endpoints.items()
            if isinstance(ep, PricedEndpoint)
        }
        if pricing:
            summary["pricing"] = pricing
        summary.update(
            {
                "scenario": sc.name,
                "seed": self.seed,
                "config_hash": config_hash(sc),
                "version": __version__,
                "schema_version": SCHEMA_VERSION,
                "duration": duration,
                "sim_end_time": end,
                "event_count": events,
                "wall_time_s": wall,
            }
        )
        return summary


def lever_totals(features: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The run's totals of the features' lever figures (none when no feature pulls one)."""
    out: dict[str, Any] = {}
    for key in (
        "cache_hits",
        "cache_saved_cost",
        "escalations",
        "escalation_cost",
        "quality_failures",
        "spend_cap_refused",
        "spend_cap_prevented_cost",
    ):
        values = [f[key] for f in features.values() if key in f]
        if values:
            out[key] = sum(values)
    return out


def client_class(policy: Policy, sessions: bool = False) -> type[Client]:
    """The client a policy needs: with retry layers, with hedging, routing across
    deployments, or today's plain one; and for a closed-loop feature (``sessions``), its
    variant that tells the session driver when a request ends (chosen here so that a policy
    without them runs exactly the plain client's code)."""
    if policy.layers:
        return SessionLayeredClient if sessions else LayeredClient
    if policy.hedge is not None:
        return SessionHedgedClient if sessions else HedgedClient
    if policy.route is not None:
        return SessionRoutedClient if sessions else RoutedClient
    return SessionClient if sessions else Client


def closed_loop(feature: Feature) -> bool:
    """Whether a feature sends sessions or agent tasks (a closed loop) rather than requests."""
    return feature.session is not None or feature.agent is not None


def source_class(feature: Feature, primary: Endpoint) -> type[FeatureSource]:
    """The request source a feature needs: with a system prompt, reasoning tokens or a
    primary provider that prices by the prompt cache (its baseline), the priced one;
    otherwise today's (chosen here so that other features run exactly its code)."""
    if (
        feature.system_prompt_tokens
        or feature.reasoning_tokens is not None
        or isinstance(primary, PricedEndpoint)
    ):
        return PricedFeatureSource
    return FeatureSource


def incident_scope(sc: Scenario, provider: str) -> list[str]:
    """The features whose provider chain (primary, route deployments and fallbacks) includes
    ``provider``."""
    return [name for name in sc.features if provider in sc.chain_names(name)]


def incident_summaries(sc: Scenario, recorder: Recorder, duration: float) -> list[dict[str, Any]]:
    """``incident_metrics`` of every incident, in start order, each on the features it hits;
    each is judged until the next incident that hits one of those features starts."""
    rec = sc.run.recovery
    rule = RecoveryRule(rec.tolerance, rec.window, rec.baseline, rec.horizon, rec.hold)
    spans = sorted(
        (
            IncidentSpan(p, inc.kind, inc.start, inc.start + inc.duration)
            for p, cfg in sc.providers.items()
            for inc in cfg.incidents
        ),
        key=lambda s: s.start,
    )
    scopes = [set(incident_scope(sc, s.provider)) for s in spans]
    out = []
    for i, s in enumerate(spans):
        stop = min(
            (
                o.start
                for o, sc_o in zip(spans, scopes, strict=True)
                if o.start > s.start and sc_o & scopes[i]
            ),
            default=math.inf,
        )
        features = [f for f in sc.features if f in scopes[i]]
        out.append(incident_metrics(s, recorder.bins, duration, rule, features, stop))
    return out


def _slo_bounds(feature: Feature) -> SloBounds | None:
    """A feature's SLO as the summary reads it (None: the feature has none)."""
    slo = feature.slo
    return None if slo is None else SloBounds(slo.ttft, slo.tpot, slo.e2e)
