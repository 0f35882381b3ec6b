"""llmtraffic: a discrete-event simulator of production LLM API traffic.

Describe traffic, providers and a client's resilience policy; replay hours of traffic in
seconds; read cost, waste, failures, latency and retry-storm recovery from the results.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llmtraffic")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from llmtraffic.config import Policy, Scenario, load_config, scenario_from_dict
from llmtraffic.errors import ConfigError, LLMTrafficError, TraceError
from llmtraffic.experiment import (
    ExperimentData,
    ExperimentSpec,
    load_experiment,
    read_experiment,
    run_experiment,
)
from llmtraffic.results.load import MissingTableError, RunData, load
from llmtraffic.runner import run_to_folder
from llmtraffic.simulation import RunResult, Simulation

__all__ = [
    "ConfigError",
    "ExperimentData",
    "ExperimentSpec",
    "LLMTrafficError",
    "MissingTableError",
    "Policy",
    "RunData",
    "RunResult",
    "Scenario",
    "Simulation",
    "TraceError",
    "__version__",
    "load",
    "load_config",
    "load_experiment",
    "read_experiment",
    "run_experiment",
    "run_to_folder",
    "scenario_from_dict",
]


def __dir__() -> list[str]:
    """What ``dir()`` and tab completion list: the API, not the submodules and imports."""
    return sorted(__all__)
