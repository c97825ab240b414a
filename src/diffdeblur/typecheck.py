"""Values checked against type hints, with one-line ConfigErrors (a leaf module)."""
from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any

from .errors import ConfigError


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any or hint is typing.Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is None or hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return not args or all(_matches(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def type_name(hint: Any) -> str:
    """A short human name of a type hint ("an int", "a float or None", ...)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(h) for h in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return "None"
    if hint is int:
        return "an int"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint is bool:
        return "a bool"
    if origin in (list, tuple, collections.abc.Sequence):
        return "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def check_value(owner: str, name: str, value: Any, hint: Any) -> Any:
    """``value`` if it matches ``hint``, else a one-line ConfigError naming the owner, the key, the value
    and the expected type (``model 'nafnet-tiny': width=16.5 is not an int``)."""
    if not _matches(value, hint):
        raise ConfigError(f"{owner}: {name}={value!r} is not {type_name(hint)}")
    return value
