"""Walking the config schema along a path of keys, guided by the input: what ``--set`` and
error messages (``config.loader``) and sweep paths (``experiment.spec``) need to know about
the setting a dotted path names."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel


def unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``Optional`` from a type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def models_of(tp: Any, node: Any) -> list[type[BaseModel]]:
    """The config models a value of type ``tp`` may be: one, or the members of a union (those
    whose ``kind`` matches the input's, when it names one)."""
    tp = unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return []
    members = [unwrap(a) for a in typing.get_args(tp)]
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    kind = node.get("kind") if isinstance(node, Mapping) else None
    matching = [
        m
        for m in models
        if "kind" in m.model_fields
        and typing.get_args(m.model_fields["kind"].annotation) == (kind,)
    ]
    return matching or models


def container(tp: Any) -> type | None:
    """``dict`` or ``list`` when ``tp`` is one (optional or annotated), else None."""
    origin = typing.get_origin(unwrap(tp))
    return origin if origin in (dict, list) else None


def item_type(tp: Any) -> Any:
    """The type of a ``dict``'s values or a ``list``'s items; None for any other type."""
    kind = container(tp)
    if kind is None:
        return None
    args = typing.get_args(unwrap(tp))
    return args[1] if kind is dict else args[0]


def child(node: Any, key: str | int) -> Any:
    """``node[key]`` of the input: a table's entry or a list's item (by index, or by a string
    of digits); None when there is none."""
    if isinstance(node, Mapping):
        return node.get(key)
    if isinstance(node, list):
        index = key if isinstance(key, int) else int(key) if key.isdigit() else None
        if index is not None and 0 <= index < len(node):
            return node[index]
    return None
