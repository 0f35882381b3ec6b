"""The incident schedule: each incident is a start and an end event that change an endpoint's
state and leave an event row. Incidents of one kind never overlap (the config refuses it), so
ending one restores the configured value."""

from __future__ import annotations

from collections.abc import Callable

from llmtraffic.config.provider import (
    Brownout,
    CapacityDrop,
    Incident,
    LatencySpike,
    Outage,
    QuotaExhaustion,
    RateLimitChange,
)
from llmtraffic.engine.kernel import Call, Kernel
from llmtraffic.provider.endpoint import Endpoint
from llmtraffic.provider.errors import ErrorEndpoint
from llmtraffic.results.recorder import Recorder


def schedule_incidents(
    kernel: Kernel, endpoint: Endpoint, incidents: list[Incident], recorder: Recorder
) -> None:
    """Schedule the start and end of each incident of ``endpoint``."""
    for inc in incidents:
        begin, end = _effects(endpoint, inc)

        def on_start(ev: Call, inc: Incident = inc, begin: Callable[[float], None] = begin) -> None:
            now = kernel.now
            begin(now)
            recorder.event(now, "incident_start", "", endpoint.name, inc.kind, inc.duration)

        def on_end(ev: Call, inc: Incident = inc, end: Callable[[float], None] = end) -> None:
            now = kernel.now
            end(now)
            recorder.event(now, "incident_end", "", endpoint.name, inc.kind, inc.duration)

        kernel.call_in(inc.start, on_start)
        kernel.call_in(inc.start + inc.duration, on_end)


def _effects(
    ep: Endpoint, inc: Incident
) -> tuple[Callable[[float], None], Callable[[float], None]]:
    """The (start, end) state changes an incident makes."""
    if isinstance(inc, Outage):
        status = inc.status

        def outage_on(now: float) -> None:
            ep.outage_status = status

        def outage_off(now: float) -> None:
            ep.outage_status = 0

        return outage_on, outage_off
    if isinstance(inc, Brownout):
        rate, mid, code = inc.error_rate, inc.midstream_rate, inc.status

        def brown_on(now: float) -> None:
            ep.error_rate = max(ep.base_error_rate, rate)
            ep.midstream_rate = max(ep.base_midstream_rate, mid)
            ep.error_status = code
            # The brownout's errors are its own status, sent without the configured header.
            ep.error_should_retry = None

        def brown_off(now: float) -> None:
            ep.error_rate = ep.base_error_rate
            ep.midstream_rate = ep.base_midstream_rate
            ep.error_status = ep.base_error_status
            ep.error_should_retry = ep.base_should_retry

        return brown_on, brown_off
    if isinstance(inc, LatencySpike):
        factor = inc.factor

        def spike_on(now: float) -> None:
            ep.slowdown = factor

        def spike_off(now: float) -> None:
            ep.slowdown = 1.0

        return spike_on, spike_off
    if isinstance(inc, CapacityDrop):
        remaining = max(1, round(ep.base_slots * inc.remaining))

        def drop_on(now: float) -> None:
            ep.set_slots(remaining, now)

        def drop_off(now: float) -> None:
            ep.set_slots(ep.base_slots, now)

        return drop_on, drop_off
    if isinstance(inc, RateLimitChange):
        limiter = ep.limiter
        factor = inc.factor

        def limits_on(now: float) -> None:
            if limiter is not None:
                limiter.scale(factor, now)

        def limits_off(now: float) -> None:
            if limiter is not None:
                limiter.scale(1.0, now)

        return limits_on, limits_off
    if isinstance(inc, QuotaExhaustion):
        if not isinstance(ep, ErrorEndpoint):  # pragma: no cover - make_endpoint ensures it
            raise TypeError(f"provider {ep.name!r} cannot exhaust its quota")
        errors_ep = ep

        def quota_on(now: float) -> None:
            errors_ep.quota_blocked = True

        def quota_off(now: float) -> None:
            errors_ep.quota_blocked = False

        return quota_on, quota_off
    raise TypeError(f"unknown incident {inc!r}")
