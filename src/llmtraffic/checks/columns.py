"""The summary columns an experiment's runs will have, known before any of them runs.

``llmtraffic check`` judges ``[[check]]`` entries on the columns of ``summary.csv``
(``experiment.analysis.flatten_summary``). Knowing the names from the scenarios alone lets a
misspelt metric fail at once, not after the battery has run, and lets a count that never
happened (no request was ever ``rejected_budget``) read as 0 rather than as a missing column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from llmtraffic.config.policy import INNER_LAYER
from llmtraffic.config.scenario import Scenario
from llmtraffic.engine.entities import ATTEMPT_STATUSES, REQUEST_OUTCOMES
from llmtraffic.results.metrics import (
    BATCHING_KEYS,
    CACHE_KEYS,
    CAPPED_KEYS,
    CASCADE_KEYS,
    INCIDENT_KEYS,
    LAYER_KEYS,
    LAYERED_KEYS,
    LEVER_ROUTE_KEYS,
    LIMIT_KINDS,
    ROUTE_KEYS,
    RUN_KEYS,
    SPEND_CAP_KEYS,
    session_metric_keys,
    tally_metric_keys,
)

_COUNT = re.compile(
    r"^(?:feature\.[^.]+\.)?(?:outcomes\.(?:{})|attempt_statuses\.(?:{}))$".format(
        "|".join(REQUEST_OUTCOMES), "|".join(ATTEMPT_STATUSES)
    )
)


def is_count_column(name: str) -> bool:
    """Whether ``name`` counts requests by outcome or attempts by status (summary.json leaves
    such a count out when it is zero; the column then reads 0)."""
    return _COUNT.match(name) is not None


def _feature_keys(with_value: bool, with_slo: bool) -> list[str]:
    """Scalar keys of one feature's (or the whole run's) metrics, counts included."""
    keys = tally_metric_keys(with_value, with_slo)
    keys += [f"outcomes.{o}" for o in REQUEST_OUTCOMES]
    keys += [f"attempt_statuses.{s}" for s in ATTEMPT_STATUSES]
    return keys


def expected_columns(scenarios: Iterable[Scenario]) -> set[str]:
    """Every metric column the runs of these scenarios (an experiment's grid points) can have."""
    columns: set[str] = set(RUN_KEYS)
    for sc in scenarios:
        valued = {n for n, f in sc.features.items() if f.value_per_success is not None}
        slo = {n for n, f in sc.features.items() if f.slo is not None}
        columns.update(_feature_keys(bool(valued), bool(slo)))
        for name in sc.features:
            keys = _feature_keys(name in valued, name in slo)
            columns.update(f"feature.{name}.{k}" for k in keys)
            feature = sc.features[name]
            if feature.session is not None or feature.agent is not None:
                # Sessions or agent tasks: counts, turns, cost and duration of one.
                agent = feature.agent is not None
                columns.update(f"feature.{name}.{k}" for k in session_metric_keys(agent))
            layers = sc.policy_of(name).layers
            if layers:
                # Retry layers: calls per layer, the most attempts of a request, the bound.
                columns.update(f"feature.{name}.{k}" for k in LAYERED_KEYS)
                for layer in [*(la.name for la in layers), INNER_LAYER]:
                    columns.update(f"feature.{name}.layers.{layer}.{k}" for k in LAYER_KEYS)
            route = sc.policy_of(name).route
            if route is not None:
                # Routing: per deployment, and the requests no deployment could take.
                columns.add(f"feature.{name}.route.rejected_route")
                for d in route.deployments:
                    columns.update(f"feature.{name}.route.deployments.{d}.{k}" for k in ROUTE_KEYS)
        columns.update(_lever_columns(sc))
        for name, provider in sc.providers.items():
            if provider.rate_limit is not None:
                columns.update(f"rate_limited_by.{name}.{k}" for k in LIMIT_KINDS)
            if provider.quota is not None:
                columns.add(f"quota_exhausted_by.{name}.spend_cap")
            if any(inc.kind == "quota_exhausted" for inc in provider.incidents):
                columns.add(f"quota_exhausted_by.{name}.incident")
            if provider.batching is not None:
                columns.update(f"batching.{name}.{k}" for k in BATCHING_KEYS)
        incidents = sum(len(p.incidents) for p in sc.providers.values())
        for i in range(incidents):
            columns.update(f"incident.{i}.{k}" for k in INCIDENT_KEYS)
    return columns


def _lever_columns(sc: Scenario) -> set[str]:
    """The columns of the cost levers (docs/metrics.md, "Cost levers"): per feature that pulls
    one, the run's sums, and each spend cap's figures."""
    out: set[str] = set()
    capped = {f for cap in sc.spend_caps.values() for f in cap.features}
    for name, feat in sc.features.items():
        keys: list[str] = []
        routes: list[str] = []
        if feat.cascade is not None:
            keys += CASCADE_KEYS
            routes = list(feat.cascade.models)
        if feat.split is not None:
            routes = [feat.provider, feat.split.provider]
        if feat.response_cache is not None:
            keys += CACHE_KEYS
        if name in capped:
            keys += CAPPED_KEYS
        out.update(f"feature.{name}.{k}" for k in keys)
        out.update(f"feature.{name}.routes.{r}.{k}" for r in routes for k in LEVER_ROUTE_KEYS)
        # The run's figures are the sums of the counts and costs (not of the shares).
        out.update(k for k in keys if not k.endswith(("_share", "_rate")))
    for cname in sc.spend_caps:
        out.update(f"spend_caps.{cname}.{k}" for k in SPEND_CAP_KEYS)
    return out
