"""A reference implementation of llmtraffic's model, for tests only (issue 11, section 6).

``tests/oracle/model.py`` simulates a ``Scenario`` with ordinary SimPy processes, one per
request and one per attempt the provider works on, written to be read rather than to be fast.
It shares no code with the engine's client, provider, workload or results modules: only the
config models (``llmtraffic.config``). ``tests/test_oracle.py`` runs both on the same scenarios
and compares them; a disagreement is a bug in one of them.
"""

from tests.oracle.model import Oracle, OracleAttempt, OracleRequest, OracleResult

__all__ = ["Oracle", "OracleAttempt", "OracleRequest", "OracleResult"]
