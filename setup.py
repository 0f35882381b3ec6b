"""Optional compilation of the engine's hot path with mypyc.

Everything else about the package is in pyproject.toml. With ``LLMTRAFFIC_COMPILE=1`` the
modules below (the per-event path: about three quarters of a run's time) are compiled to C
extensions, about 1.5x faster; without it the package is pure Python. Both behave the same:
the test suite runs against both (``make test`` and ``make test-compiled``).
"""

from __future__ import annotations

import os

from setuptools import setup

HOT_MODULES = [
    "src/llmtraffic/engine/entities.py",
    "src/llmtraffic/client/client.py",
    "src/llmtraffic/client/breaker.py",
    "src/llmtraffic/client/budget.py",
    "src/llmtraffic/client/hedging.py",
    "src/llmtraffic/client/layers.py",
    "src/llmtraffic/client/router.py",
    "src/llmtraffic/client/routing.py",
    "src/llmtraffic/client/levers.py",
    "src/llmtraffic/provider/batching.py",
    "src/llmtraffic/provider/endpoint.py",
    "src/llmtraffic/provider/errors.py",
    "src/llmtraffic/provider/caching.py",
    "src/llmtraffic/provider/pricing.py",
    "src/llmtraffic/provider/quota.py",
    "src/llmtraffic/provider/ratelimit.py",
    "src/llmtraffic/client/session_client.py",
    # A Client subclass (mypyc refuses an interpreted subclass of a compiled class).
    "src/llmtraffic/serve/client.py",
    "src/llmtraffic/workload/source.py",
    "src/llmtraffic/workload/priced_source.py",
]

ext_modules = []
compiling = os.environ.get("LLMTRAFFIC_COMPILE", "") == "1"
# While pip gathers build requirements mypy is not installed yet (tools/build_backend.py).
if compiling and os.environ.get("LLMTRAFFIC_GATHERING_REQUIRES", "") != "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(["--config-file", "tools/mypyc.ini", *HOT_MODULES], opt_level="3")

setup(ext_modules=ext_modules)
