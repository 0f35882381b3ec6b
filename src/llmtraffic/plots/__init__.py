"""Plots of saved results (matplotlib, object API): per run and per experiment."""

from llmtraffic.plots.experiment import comparison, save_experiment_plots
from llmtraffic.plots.run import cost_breakdown, latency_cdf, save_run_plots, timeline

__all__ = [
    "comparison",
    "cost_breakdown",
    "latency_cdf",
    "save_experiment_plots",
    "save_run_plots",
    "timeline",
]
