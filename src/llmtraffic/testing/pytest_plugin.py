"""pytest plugin (registered on install): the ``llmtraffic_checks`` and ``llmtraffic_run``
fixtures.

```python
def test_our_policy_survives_the_fault_battery(llmtraffic_checks):
    llmtraffic_checks("experiments/ci.toml")      # fails with the table of failed checks

def test_brownout_cost(llmtraffic_run):
    runs = llmtraffic_run("experiments/quickstart.toml", replications=3)
    assert runs.mean("cost_amplification") < 1.3
```
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmtraffic.checks.command import CheckReport
from llmtraffic.testing import ScenarioRuns, assert_checks_pass, run_scenario


@pytest.fixture
def llmtraffic_checks(tmp_path: Path) -> Callable[..., CheckReport]:
    """Run an experiment file's checks into a temporary folder; fail the test if one fails."""

    def run(config: str | Path, **kwargs: Any) -> CheckReport:
        kwargs.setdefault("out", tmp_path / "llmtraffic-checks")
        return assert_checks_pass(config, **kwargs)

    return run


@pytest.fixture
def llmtraffic_run() -> Callable[..., ScenarioRuns]:
    """Run a scenario in memory and get its summaries (``run_scenario``)."""
    return run_scenario
