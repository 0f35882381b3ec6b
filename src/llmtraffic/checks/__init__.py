"""Regression checks of resilience policies: ``[[check]]`` entries evaluated on an
experiment's runs, with confidence intervals, baselines, a table and JUnit XML for CI."""

from llmtraffic.checks.evaluate import CheckResult, evaluate
from llmtraffic.checks.spec import Check, parse_checks

__all__ = ["Check", "CheckResult", "evaluate", "parse_checks"]
