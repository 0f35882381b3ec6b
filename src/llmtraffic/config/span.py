"""``run.duration = "trace"``: the arrival span of a run whose features all replay a trace.

Resolved when the scenario is loaded (``scenario_from_dict``) and again, for scenarios built
in Python, when a ``Simulation`` is made, so that the engine, ``config.json`` and the
per-day projections all see the same number of seconds.
"""

from __future__ import annotations

from llmtraffic.config.scenario import Scenario, late_incidents
from llmtraffic.config.trace import Trace
from llmtraffic.errors import ConfigError


def trace_span(cfg: Trace, feature: str) -> float:
    """Seconds one pass of ``cfg`` lasts once replayed: its last kept arrival plus the mean gap
    between its arrivals (1 s for a single row), so that the last request arrives inside it;
    divided by ``speedup``. Reads the file once (a full pass)."""
    # Imported here: the workload layer builds on the config layer, not the reverse.
    from llmtraffic.workload.trace import TraceReader

    reader = TraceReader(cfg, feature)
    for _ in reader.cycle():
        pass
    last, first, kept = reader.last_time, reader.first_time, reader.kept
    gap = (last - first) / (kept - 1) if kept > 1 else 0.0
    return (last + (gap if gap > 0 else 1.0)) / cfg.speedup


def resolve_duration(scenario: Scenario) -> Scenario:
    """``scenario`` with ``run.duration = "trace"`` replaced by the longest of its features'
    trace spans (``trace_span``); unchanged when the duration is given in seconds.

    Raises ``ConfigError`` when an incident starts at or after the resolved span (the
    scenario's own check cannot tell before the traces are read).
    """
    if scenario.run.duration != "trace":
        return scenario
    spans = []
    for name, feature in scenario.features.items():
        # Scenario's cross-check refuses "trace" unless every feature replays one, once.
        assert feature.trace is not None
        spans.append(trace_span(feature.trace, name))
    duration = max(spans)
    late = late_incidents(scenario, duration, span='run.duration = "trace", the traces\' span')
    if late:
        raise ConfigError(late)
    run = scenario.run.model_copy(update={"duration": duration})
    return scenario.model_copy(update={"run": run})
