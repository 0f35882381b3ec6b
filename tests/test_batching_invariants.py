"""The run invariants of tests/test_invariants.py on providers that serve by continuous
batching: every request ends once, the bills follow the billing rules (the tokens an abandoned
attempt generated at the batch's speed included), time and the time series agree with the
rows. The engine's own bookkeeping is checked after each run: every batch place, decoding
sequence and queue place is given back."""

from __future__ import annotations

from typing import Any

from hypothesis import given

from llmtraffic import Simulation
from llmtraffic.provider.batching import BatchingEndpoint
from llmtraffic.testing.strategies import batching_scenarios
from tests.test_invariants import (
    PROPERTY,
    build,
    check_aggregates,
    check_attempt_bound,
    check_billing,
    check_costs,
    check_events,
    check_records_agree,
    check_statuses,
    check_terminal_outcomes,
    check_time,
)


@PROPERTY
@given(batching_scenarios())
def test_batching_runs_keep_every_invariant(raw: dict[str, Any]) -> None:
    sc = build(raw)
    sim = Simulation(sc)
    result = sim.run()
    for check in (
        check_terminal_outcomes,
        check_records_agree,
        check_events,
        check_attempt_bound,
        check_costs,
        check_billing,
        check_statuses,
        check_time,
        check_aggregates,
    ):
        check(sc, result)
    if sc.run.drain != float("inf"):
        return  # a finite drain may cut the run with (abandoned) work still in service
    for ep in sim.endpoints.values():
        assert isinstance(ep, BatchingEndpoint)
        assert ep.busy == 0 and not ep.queue and ep.decoding == 0 and not ep.seqs
        assert all(not seq.alive for _, _, seq in ep.heap)
