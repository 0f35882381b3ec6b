"""The simulation kernel and what it moves: the event kernel (the only module that touches
SimPy's internals), named random streams and the request and attempt entities. The wiring of
workload, providers, clients and records into a run lives above, in ``llmtraffic.simulation``."""
