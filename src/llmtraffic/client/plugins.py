"""User code named in configs by import path (``"mypackage.policies:MyPolicy"``): checking the
form of a reference, deciding whether a run may import it, and loading it.

A plugin is code: importing its module runs that module, and building it runs its class. So
validating a config only checks the *form* of a reference (``check_reference``) and the TOML
types of its params; nothing is imported until a run is built. A run imports a plugin only
when its module is allowed: the Python API (``Simulation``, ``run_to_folder``, the pytest
plugin) is already the user's own code and allows every module; the command line allows none
unless ``--allow-plugin MODULE`` names it (``allowed_plugins``). A config can never allow its
own plugins.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import keyword
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from llmtraffic.errors import ConfigError

if TYPE_CHECKING:
    from llmtraffic.config.policy import CustomRetry
    from llmtraffic.config.scenario import Scenario

__all__ = [
    "PluginNotAllowedError",
    "allowed_plugins",
    "check_plugins",
]

FLAG = "--allow-plugin"
"""The command-line flag that allows a plugin's module."""

REFERENCE_FORM = "'module.path:Name' (Python identifiers, e.g. 'mypackage.policies:MyPolicy')"

Allowance = frozenset[str] | None
"""The modules a run may import plugins from; None: every module (the Python API)."""

_ALLOWED: ContextVar[Allowance] = ContextVar("llmtraffic_allowed_plugins", default=None)

Current = Literal["current"]
CURRENT: Current = "current"
"""As an ``allowance`` argument: whatever ``allowed_plugins`` set here (the default)."""


@contextmanager
def allowed_plugins(modules: Iterable[str] | None) -> Iterator[None]:
    """Within the block, runs built in this thread import plugins only from ``modules`` (and
    their submodules); ``None`` allows every module. The command line wraps each command in
    this with its ``--allow-plugin`` values."""
    token = _ALLOWED.set(None if modules is None else frozenset(modules))
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def current_allowance() -> Allowance:
    """The modules allowed here (None: all): what a worker process must be handed to judge
    the same way."""
    return _ALLOWED.get()


def is_allowed(module: str, allowance: Allowance) -> bool:
    """True when ``allowance`` names ``module`` or a package that contains it."""
    if allowance is None:
        return True
    return any(module == m or module.startswith(m + ".") for m in allowance)


def check_reference(text: str) -> str:
    """``text`` when it has the form of a plugin reference; ``ValueError`` otherwise.

    Only the form is checked (dotted identifiers, one colon): nothing is imported.
    """
    module, sep, attr = text.partition(":")
    parts = module.split(".") + attr.split(".")
    if not sep or not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        raise ValueError(f"expected {REFERENCE_FORM}, got {text!r}")
    return text


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` when they can be keyword arguments with TOML values; ``ValueError`` naming
    the first one that cannot (a key that is not an identifier, a Python object)."""
    for key, value in params.items():
        if not key.isidentifier() or keyword.iskeyword(key):
            raise ValueError(f".{key}: a parameter name must be a Python identifier")
        problem = _toml_problem(value)
        if problem:
            raise ValueError(f".{key}: {problem}")
    return params


def _toml_problem(value: Any) -> str:
    """What keeps ``value`` from being a TOML value ('' when nothing does)."""
    # Any TOML number goes, NaN and inf too: what a parameter means is the plugin's to judge.
    if isinstance(value, str | bool | int | float | dt.date | dt.time):  # datetime is a date
        return ""
    if isinstance(value, list):
        return next((p for p in map(_toml_problem, value) if p), "")
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return "table keys must be strings"
        return next((p for p in map(_toml_problem, value.values()) if p), "")
    kinds = "string, number, boolean, date, list or table"
    return f"expected a TOML value ({kinds}), got a {type(value).__name__}"


class PluginNotAllowedError(ConfigError):
    """A config names a plugin whose module the user did not allow (``problems`` name the
    fields, the modules and the flag)."""

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return where + self.problems[0]
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"{where}{len(self.problems)} plugins not allowed:\n{lines}"


@dataclass(frozen=True)
class PluginRef:
    """One plugin a scenario names: where (``field``, a config path), what (``reference``)."""

    field: str
    reference: str
    kind: str
    """"custom" (a policy class) or "tenacity" (a ``tenacity.Retrying``)."""

    @property
    def module(self) -> str:
        """The module a run would import."""
        return self.reference.partition(":")[0]


def plugin_references(scenario: Scenario) -> list[PluginRef]:
    """Every plugin the scenario's policies name, in config order."""
    from llmtraffic.config.policy import CustomRetry, TenacityRetry

    refs: list[PluginRef] = []
    for name, policy in scenario.policies.items():
        retry = policy.retry
        if isinstance(retry, CustomRetry):
            refs.append(PluginRef(f"policies.{name}.retry.class", retry.class_, "custom"))
        elif isinstance(retry, TenacityRetry):
            refs.append(PluginRef(f"policies.{name}.retry.retrying", retry.retrying, "tenacity"))
    return refs


def refusal(ref: PluginRef) -> str:
    """The problem line of a plugin whose module is not allowed: the field, the module, the
    flag that allows it."""
    return (
        f"{ref.field}: {ref.reference!r} is a plugin: running this config imports and runs code "
        f"from the module {ref.module!r}. llmtraffic runs a config's plugins only when you "
        f"allow them: if you trust that code, pass {FLAG} {ref.module}"
    )


def check_plugins(
    scenarios: Iterable[Scenario],
    allowance: Allowance | Current = CURRENT,
    load: bool = True,
    source: str | None = None,
) -> None:
    """Refuse (``ConfigError``, one line per plugin, field named) the scenarios' plugins whose
    modules are not allowed; then, with ``load``, import and check the allowed ones (a class
    that follows the policy protocol, built with its params; a ``tenacity.Retrying``), so
    that a bad reference is reported before any run starts. ``allowance`` defaults to the
    current one (``allowed_plugins``); ``source`` names the config file in messages."""
    scenarios = list(scenarios)  # walked twice
    allow = current_allowance() if allowance == CURRENT else allowance
    problems: list[str] = []
    seen: set[PluginRef] = set()
    for scenario in scenarios:
        for ref in plugin_references(scenario):
            if ref in seen:
                continue
            seen.add(ref)
            if not is_allowed(ref.module, allow):
                problems.append(refusal(ref))
    if problems:
        raise PluginNotAllowedError(problems, source=source)
    if load:
        with allowed_plugins(allow):
            for scenario in _distinct(scenarios):
                problems.extend(_load_problems(scenario))
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), source=source)


def _distinct(scenarios: Iterable[Scenario]) -> Iterator[Scenario]:
    """The scenarios whose plugin configs differ (a sweep's points often share them)."""
    seen: set[str] = set()
    for scenario in scenarios:
        key = repr(
            [(n, p.retry.model_dump(mode="json")) for n, p in sorted(scenario.policies.items())]
        )
        if key not in seen:
            seen.add(key)
            yield scenario


def _load_problems(scenario: Scenario) -> list[str]:
    from llmtraffic.client.tenacity_adapter import load_retrying
    from llmtraffic.config.policy import CustomRetry, TenacityRetry

    problems = []
    for name, policy in scenario.policies.items():
        retry = policy.retry
        try:
            if isinstance(retry, CustomRetry):
                build_custom(retry)
            elif isinstance(retry, TenacityRetry):
                load_retrying(retry.retrying)
        except ValueError as exc:
            problems.append(f"policies.{name}.retry: {exc}")
    return problems


def load_object(path: str, allowance: Allowance | Current = CURRENT) -> Any:
    """The object at ``module.path:attribute``, imported only when its module is allowed;
    ``ValueError`` saying what did not resolve, ``ConfigError`` when it is not allowed."""
    check_reference(path)
    module_name, _, attr = path.partition(":")
    allow = current_allowance() if allowance == CURRENT else allowance
    if not is_allowed(module_name, allow):
        raise PluginNotAllowedError(
            [
                f"{path!r} is a plugin from the module {module_name!r}, which this run does not "
                f"allow; if you trust that code, pass {FLAG} {module_name}"
            ]
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import module {module_name!r} ({exc}); is it installed, or on PYTHONPATH?"
        ) from None
    except Exception as exc:  # the module's own code failed: say so, naming the field
        raise ValueError(
            f"importing module {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def policy_class(path: str) -> type:
    """The policy class a reference names, checked before anything of it is called: a class
    whose instances have a ``decide`` method (``ValueError`` otherwise)."""
    cls = load_object(path)
    if not inspect.isclass(cls):
        raise ValueError(
            f"{path} is not a class (it is a {type(cls).__name__}); a custom retry policy is a "
            "class with a method decide(state, uniforms)"
        )
    if not callable(getattr(cls, "decide", None)):
        raise ValueError(
            f"{path} does not follow the retry policy protocol: it needs a method "
            "decide(state, uniforms) returning a Decision, a wait in seconds, or None"
        )
    return cls


def build_custom(cfg: CustomRetry) -> Any:
    """A new instance of a user's policy class (``ValueError`` when it cannot be used)."""
    from llmtraffic.client.retry import RetryPolicy

    cls = policy_class(cfg.class_)
    try:
        policy = cls(**cfg.params)
    except TypeError as exc:
        raise ValueError(f"{cfg.class_}(**params) failed: {exc}") from None
    except Exception as exc:  # the class's own code failed
        raise ValueError(f"{cfg.class_}(**params) raised {type(exc).__name__}: {exc}") from None
    if not isinstance(policy, RetryPolicy):
        raise ValueError(
            f"{cfg.class_} does not follow the retry policy protocol: it needs a method "
            "decide(state, uniforms) returning a Decision, a wait in seconds, or None"
        )
    return policy
