"""Name registries: a ``@register(name)`` decorator factory over a dict (a leaf: imports nothing of the package)."""
from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")


def name_registrar(table: dict[str, T], what: str) -> Callable[[str], Callable[[T], T]]:
    """A ``@register(name)`` decorator factory that stores the decorated object in ``table``.

    Used by the smaller registries (data sources, training objectives); ``what`` names the kind of
    thing in the error raised when a name is registered twice.
    """
    def register(name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in table:
                raise ValueError(f"{what} '{name}' is registered twice")
            table[name] = obj
            return obj
        return deco
    return register
