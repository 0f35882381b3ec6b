"""Assert on simulated metrics from your own test suite (pytest or any other).

```python
from llmtraffic.testing import assert_metric, run_scenario

def test_a_brownout_does_not_triple_the_bill():
    runs = run_scenario("experiments/quickstart.toml", replications=3)  # a 5-minute brownout
    assert_metric(runs, "cost_amplification", "<=", 1.5)
    assert_metric(runs, "incident.0.metastable", "<=", 0)
```

A failed assertion says the value (mean and 95% interval over the replications), the bound,
by how much it missed, the scenario and seeds, and where the metric is defined. Judging
follows ``llmtraffic check``: a violation must exceed the replications' noise to fail
(``strict=True``: the whole interval must be on the right side). ``assert_checks_pass`` runs a
file's ``[[check]]`` entries; ``llmtraffic.testing.strategies`` has Hypothesis strategies to
property-test your own policy; the pytest plugin adds the ``llmtraffic_checks`` fixture.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmtraffic.checks.command import CheckReport, run_checks
from llmtraffic.checks.evaluate import OPS, _judge
from llmtraffic.checks.spec import Check
from llmtraffic.config.loader import apply_overrides, load_config, scenario_from_dict
from llmtraffic.config.scenario import Scenario
from llmtraffic.experiment.analysis import flatten_summary, mean_ci
from llmtraffic.simulation import Simulation
from llmtraffic.wording import counted

__all__ = [
    "ScenarioRuns",
    "assert_checks_pass",
    "assert_metric",
    "run_checks",
    "run_scenario",
]


def __dir__() -> list[str]:
    """What ``dir()`` and tab completion list: the API, not the imports (np, difflib...)."""
    return sorted(__all__)


@dataclass
class ScenarioRuns:
    """The summaries of one scenario's replications (one seed each)."""

    scenario: Scenario
    seeds: list[int]
    summaries: list[dict[str, Any]]
    source: str = ""
    _flat: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def summary(self) -> dict[str, Any]:
        """The first replication's summary."""
        return self.summaries[0]

    def __repr__(self) -> str:
        """One line per replication: seed, success rate, billed cost (the dataclass's own
        repr printed the scenario and every summary: ~7k characters for one)."""
        lines = [f"<ScenarioRuns {self.scenario.name!r} from {self.source or 'a dict'}"]
        for seed, s in zip(self.seeds, self.summaries, strict=True):
            lines.append(
                f"  seed {seed}: success {s['success_rate']:.2%}, billed ${s['billed_cost']:,.4f}"
            )
        return "\n".join(lines) + ">"

    def values(self, metric: str) -> list[float]:
        """The metric in each replication; ``metric`` is a summary column (docs/metrics.md):
        ``success_rate``, ``feature.chat.cost_per_month``, ``incident.0.recovery_time``..."""
        if not self._flat:
            self._flat = [flatten_summary(s) for s in self.summaries]
        names = self._flat[0].keys()
        if metric not in names:
            close = difflib.get_close_matches(metric, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"no metric {metric!r} in the summary{hint} (see docs/metrics.md)")
        return [float(f.get(metric, float("nan"))) for f in self._flat]

    def mean(self, metric: str) -> float:
        """Mean over the replications."""
        return float(np.nanmean(self.values(metric)))

    def interval(self, metric: str) -> tuple[float, float, float, int]:
        """(mean, low, high, n): the 95% t interval over the replications."""
        return mean_ci(self.values(metric))


def run_scenario(
    config: str | Path | Scenario | Mapping[str, Any],
    *,
    overrides: Iterable[str] = (),
    replications: int = 1,
    seeds: Sequence[int] | None = None,
) -> ScenarioRuns:
    """Run a scenario (a TOML path, a dict as TOML gives it, or a ``Scenario``) once per seed,
    in memory, keeping only the summaries. Seeds default to ``run.seed + r``."""
    source = ""
    if isinstance(config, Scenario):
        if list(overrides):
            raise ValueError("overrides apply to a file or a dict, not to a built Scenario")
        scenario = config
    elif isinstance(config, Mapping):
        raw = dict(config)
        apply_overrides(raw, overrides)
        scenario = scenario_from_dict(raw)
    else:
        source = str(config)
        scenario = load_config(config, overrides)
    scenario = scenario.model_copy(
        update={"run": scenario.run.model_copy(update={"records": "summary"})}
    )
    chosen = (
        list(seeds) if seeds is not None else [scenario.run.seed + r for r in range(replications)]
    )
    summaries = [Simulation(scenario, seed=s).run().summary for s in chosen]
    return ScenarioRuns(scenario, chosen, summaries, source or scenario.name)


def assert_metric(
    runs: ScenarioRuns, metric: str, op: str, bound: float, *, strict: bool = False
) -> None:
    """Fail with a message that shows the value, the bound and where to look."""
    if op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
    values = np.asarray(runs.values(metric), dtype=float)
    check = Check.model_validate({"metric": metric, "op": op, "value": float(bound)})
    result = _judge(
        check,
        runs.scenario.name,
        {},
        metric,
        values,
        op,
        float(bound),
        "bound",
        f"{op} {bound:g}",
        strict,
    )
    if not result.passed:
        per_run = ", ".join(f"seed {s}: {v:.6g}" for s, v in zip(runs.seeds, values, strict=True))
        raise AssertionError(
            f"{metric} = {result.measured} over {len(values)} run(s), needs {op} {bound:g}"
            f"{'; ' + result.note if result.note else ''}.\n"
            f"  scenario: {runs.source} ({per_run})\n"
            f"  definition: docs/metrics.md; rerun it with `llmtraffic run {runs.source}` "
            "and read summary.json and the plots"
        )


def assert_checks_pass(config: str | Path, **kwargs: Any) -> CheckReport:
    """Run an experiment file's ``[[check]]`` entries (``run_checks`` arguments) and fail
    with every failed check's line when one fails."""
    report = run_checks(config, **kwargs)
    if not report.passed:
        lines = [r.message() for r in report.failures]
        if report.failed_runs:
            lines.append(f"{counted(report.failed_runs, 'run')} failed: see {report.folder}")
        raise AssertionError(
            f"{len(report.failures)} of {len(report.results)} checks failed in {config}:\n  "
            + "\n  ".join(lines)
        )
    return report
