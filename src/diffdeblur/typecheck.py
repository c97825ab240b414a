"""Values checked against type hints, with one-line ConfigErrors (a leaf module).

The one home of "is this keyword argument allowed, and of the right type": a constructor's keyword
arguments are its hyper-parameters (STYLE.md section 2), so its signature and its type hints are the
schema. :func:`check_kwargs` checks a mapping against them before the call, so that
``width=16.5`` is ``model 'nafnet-tiny': width=16.5 is not an int`` and not a torch traceback.

Supported hints: ``int``, ``float`` (an int is accepted; ``bool`` is never an int or a float here),
``bool``, ``str``, ``None``, ``Optional[X]`` / ``X | Y``, ``Sequence[X]`` / ``tuple[X, ...]`` /
``tuple[X, Y]`` / ``list[X]`` (a list or a tuple is accepted for each: YAML and JSON have only lists),
``dict[K, V]`` / ``Mapping``, ``Any``, ``Literal[...]`` and plain classes. A hint it cannot read
(an unresolvable forward reference) accepts any value.
"""
from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import Any, Callable, Mapping

from .errors import ConfigError

SEQUENCE_ORIGINS = (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence)
MAPPING_ORIGINS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the type hint ``hint`` (see the module docstring for the hints read)."""
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, h) for h in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is float:
        return _is_int(value) or isinstance(value, float)
    if hint is int:
        return _is_int(value)
    if hint is bool:
        return isinstance(value, bool)
    if origin in SEQUENCE_ORIGINS or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[X, Y]: fixed length
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
        return not args or all(matches(v, args[0]) for v in value)
    if origin in MAPPING_ORIGINS or hint in (dict,):
        if not isinstance(value, dict):
            return False
        if len(args) == 2:
            return all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items())
        return True
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # TypeVars, Callables, strings left unresolved: not checked here


def type_name(hint: Any) -> str:
    """A short human name of a type hint ("an int", "a number or None", "one of 'l1', 'l2'", ...)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(type_name(h) for h in args))  # tuple[int, ...] | list[int]: named once
    if hint is type(None) or hint is None:
        return "None"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is int:
        return "an int"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint is bool:
        return "a bool"
    if origin in SEQUENCE_ORIGINS or hint in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values ({', '.join(type_name(a) for a in args)})"
        inner = [a for a in args if a is not Ellipsis]
        return f"a list of {_plural(inner[0])}" if inner and inner[0] is not Any else "a list"
    if origin in MAPPING_ORIGINS or hint is dict:
        return "a mapping"
    name = getattr(hint, "__name__", None)
    return f"a {name}" if name else str(hint)


def _plural(hint: Any) -> str:
    return {int: "ints", float: "numbers", str: "strings", bool: "bools"}.get(hint, type_name(hint))


def check_value(owner: str, name: str, value: Any, hint: Any) -> Any:
    """``value`` if it matches ``hint``, else a one-line ConfigError naming the owner, the key, the value
    and the expected type (``model 'nafnet-tiny': width=16.5 is not an int``)."""
    if not matches(value, hint):
        raise ConfigError(f"{owner}: {name}={value!r} is not {type_name(hint)}")
    return value


def signature_target(fn_or_cls: Callable[..., Any]) -> Callable[..., Any]:
    """The function whose parameters are the keyword arguments of ``fn_or_cls``: a class's ``__init__``
    (unwrapped: the hyper-parameter mixin's wrapper keeps the original), else the function itself."""
    target = fn_or_cls.__init__ if isinstance(fn_or_cls, type) else fn_or_cls  # type: ignore[misc]
    return inspect.unwrap(target)


def type_hints(fn_or_cls: Callable[..., Any]) -> dict[str, Any]:
    """The resolved type hints of the parameters of ``fn_or_cls`` (see :func:`signature_target`).

    ``from __future__ import annotations`` leaves them as strings; they are evaluated in the defining
    module. A hint that cannot be evaluated (a name imported only for type checkers) is left out, so its
    parameter takes any value, rather than failing every call.
    """
    target = signature_target(fn_or_cls)
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - one unresolvable name: resolve the others one by one
        hints = {}
        namespace = getattr(target, "__globals__", {})
        for name, text in getattr(target, "__annotations__", {}).items():
            try:
                hints[name] = eval(text, namespace) if isinstance(text, str) else text  # noqa: S307
            except Exception:  # noqa: BLE001
                continue
    hints.pop("return", None)
    return hints


def check_keys(fn_or_cls: Callable[..., Any], kwargs: Mapping[str, Any], owner: str, what: str = "hyper-parameter",
               skip: tuple[str, ...] = ("submodel",)) -> None:
    """ConfigError naming a key of ``kwargs`` that ``fn_or_cls`` does not take (and listing those it takes).

    Checked against the signature before the call, so that a TypeError raised inside a constructor stays a
    bug with its traceback instead of passing for a user error. A ``**kwargs`` parameter takes every key.
    """
    params = inspect.signature(signature_target(fn_or_cls)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n, p in params.items() if n not in skip and n != "self"
               and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY)]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"{owner}: unknown {what} '{unknown[0]}' (allowed: {', '.join(allowed)})")


def check_kwargs(fn_or_cls: Callable[..., Any], kwargs: Mapping[str, Any], owner: str,
                 skip: tuple[str, ...] = ("submodel",), *, what: str = "hyper-parameter") -> None:
    """Check keyword arguments for ``fn_or_cls(**kwargs)`` before the call: an unknown key (:func:`check_keys`)
    or a value of the wrong type (:func:`check_value` against the parameter's type hint) is a one-line
    ConfigError naming ``owner``, the key, the value and the expected type. Keys in ``skip`` (objects the
    caller passes, like the registry's ``submodel`` factory) are not checked."""
    check_keys(fn_or_cls, kwargs, owner, what, skip)
    hints = type_hints(fn_or_cls)
    for name, value in kwargs.items():
        if name in hints and name not in skip:
            check_value(owner, name, value, hints[name])


def plain(value: Any) -> Any:
    """``value`` as plain JSON data: tuples become lists, mappings dicts (with string keys), recursively;
    numbers, strings, bools and None stay; any other object is returned as it is (JSON cannot hold it)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def is_plain(value: Any) -> bool:
    """Whether ``value`` is JSON data (dicts with string keys, lists, str, int, float, bool, None)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, list):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False
