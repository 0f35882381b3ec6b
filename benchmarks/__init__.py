"""Benchmarks of llmtraffic (not part of the test suite): ``make bench`` runs ``benchmarks.run``."""
