"""PEP 517 build backend: setuptools, plus mypy when an accelerated build is asked for.

``LLMTRAFFIC_COMPILE=1 pip install .`` compiles the engine's hot modules with mypyc (see
setup.py); only then does the build need mypy, so only then is it requested.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (re-export the standard hooks)

MYPY = "mypy==2.4.1"


def _compiling() -> bool:
    return os.environ.get("LLMTRAFFIC_COMPILE", "") == "1"


def _gathering(hook: Any, config_settings: dict[str, Any] | None) -> list[str]:
    # setuptools runs setup.py to collect requirements, before mypy is installed: tell it.
    os.environ["LLMTRAFFIC_GATHERING_REQUIRES"] = "1"
    try:
        requires: list[str] = hook(config_settings)
    finally:
        del os.environ["LLMTRAFFIC_GATHERING_REQUIRES"]
    return [*requires, MYPY] if _compiling() else requires


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    """Setuptools' requirements, plus mypy (for mypyc) when compiling."""
    return _gathering(_setuptools.get_requires_for_build_wheel, config_settings)


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    """As for wheels (an editable compiled build puts .so files in src/: see the README)."""
    return _gathering(_setuptools.get_requires_for_build_editable, config_settings)
