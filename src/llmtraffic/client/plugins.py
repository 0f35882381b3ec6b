"""Loading user code named in configs by import path (``"mypackage.policies:MyPolicy"``)."""

from __future__ import annotations

import importlib
from typing import Any

from llmtraffic.config.policy import CustomRetry


def load_object(path: str) -> Any:
    """The object at ``module.path:attribute``; ``ValueError`` saying what did not resolve."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module.path:Name', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import module {module_name!r} ({exc}); is it installed, or on PYTHONPATH?"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def check_custom(cfg: CustomRetry) -> None:
    """Import the class, build it once with its params, and check it follows the protocol."""
    build_custom(cfg)


def build_custom(cfg: CustomRetry) -> Any:
    """A new instance of a user's policy class (``ValueError`` when it cannot be used)."""
    from llmtraffic.client.retry import RetryPolicy

    cls = load_object(cfg.class_)
    if not callable(cls):
        raise ValueError(f"{cfg.class_} is not a class")
    try:
        policy = cls(**cfg.params)
    except TypeError as exc:
        raise ValueError(f"{cfg.class_}(**params) failed: {exc}") from None
    if not isinstance(policy, RetryPolicy):
        raise ValueError(
            f"{cfg.class_} does not follow the retry policy protocol: it needs a method "
            "decide(state, uniforms) returning a Decision, a wait in seconds, or None"
        )
    return policy
