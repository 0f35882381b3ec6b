"""Records of a run (requests, attempts, events, time series), sinks, metrics and loading.

``RunResult`` is one run's results, from memory (``Simulation(...).run()``) or from its
folder (``llmtraffic.load(folder)``).
"""

from llmtraffic.results.load import TABLE_NAMES, MissingTableError, RunData, RunResult

# ``load`` stays a submodule here (llmtraffic.results.load); the function is llmtraffic.load.
__all__ = ["TABLE_NAMES", "MissingTableError", "RunData", "RunResult"]


def __dir__() -> list[str]:
    """What ``dir()`` and tab completion list: the API, not the submodules and imports."""
    return sorted(__all__)
