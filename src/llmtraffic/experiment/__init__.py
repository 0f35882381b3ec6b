"""Experiments: sweeps over config paths with paired replications, run in parallel (local
processes or Dask), written to a resumable results folder with summary tables."""

from llmtraffic.experiment.execute import Outcome, run_experiment
from llmtraffic.experiment.spec import (
    Axis,
    ExperimentSpec,
    Point,
    experiment_from_dict,
    is_experiment,
    read_experiment,
)
from llmtraffic.experiment.store import ExperimentData, load_experiment

__all__ = [
    "Axis",
    "ExperimentData",
    "ExperimentSpec",
    "Outcome",
    "Point",
    "experiment_from_dict",
    "is_experiment",
    "load_experiment",
    "read_experiment",
    "run_experiment",
]


def __dir__() -> list[str]:
    """What ``dir()`` and tab completion list: the API, not the submodules and imports."""
    return sorted(__all__)
