"""The simulation engine: kernel, random streams, entities and the ``Simulation`` that wires
workload, providers, clients and records together."""
