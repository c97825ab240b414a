"""Declared hyper-parameters: a network's constructor arguments, checked and kept on the network.

Deriving a network from :class:`HyperParameters` makes its constructor its config (STYLE.md section 2):

- before the outermost constructor runs, its keyword arguments are checked against its signature and
  type hints (:func:`diffdeblur.typecheck.check_kwargs`): ``NAFNet(width=16.5)`` is the one-line
  ConfigError ``NAFNet: width=16.5 is not an int``;
- when it has finished, the arguments it was called with, defaults applied, are ``self.hparams``: a
  plain JSON-able dict (tuples become lists) that rebuilds the network, ``type(model)(**model.hparams)``.
  ``self`` and ``submodel`` (the registry's factory given to composite networks) are left out; the
  entries of a ``**kwargs`` parameter are kept as they were given.

"Outermost" is the ``__init__`` of the class of the instance (or the nearest class in its MRO that defines
one): ``super().__init__(...)`` calls of parent classes neither check nor record, so a subclass's own
signature is the config. A leaf inside :mod:`diffdeblur.models`: it imports only the typecheck leaf.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from ..typecheck import check_kwargs, plain

SKIPPED = ("self", "submodel")  # not hyper-parameters: the instance, the registry's submodel factory
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _defining_class(cls: type) -> type:
    """The class nearest in ``cls``'s MRO that defines ``__init__`` itself."""
    return next(k for k in cls.__mro__ if "__init__" in vars(k))


def _by_name(signature: inspect.Signature, arguments: dict[str, Any]) -> dict[str, Any]:
    """Bound arguments by name without ``self`` / ``submodel``; the entries of a ``**kwargs`` parameter are
    merged in; a ``*args`` parameter is left out (it has no names)."""
    out: dict[str, Any] = {}
    for name, value in arguments.items():
        kind = signature.parameters[name].kind
        if name in SKIPPED or kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update({k: v for k, v in value.items() if k not in SKIPPED})
        else:
            out[name] = value
    return out


def _record_hparams(cls: type, init: Callable[..., None]) -> Callable[..., None]:
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if _defining_class(type(self)) is not cls:  # a super().__init__ call inside a subclass's constructor
            init(self, *args, **kwargs)
            return
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:  # a wrong call (missing or extra arguments): Python's own message, from the call
            init(self, *args, **kwargs)
            raise
        given = {k: v for k, v in bound.arguments.items() if signature.parameters[k].kind not in VARIADIC}
        check_kwargs(init, _by_name(signature, given), type(self).__name__)  # the caller's values, not the defaults
        init(self, *args, **kwargs)
        bound.apply_defaults()
        self.hparams = plain(_by_name(signature, bound.arguments))

    __init__.records_hparams = True  # type: ignore[attr-defined]
    return __init__


class HyperParameters:
    """Mixin of networks whose constructor keyword arguments are their hyper-parameters (see the module
    docstring): the outermost constructor call checks its arguments and stores them as ``self.hparams``."""

    hparams: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = vars(cls).get("__init__")
        if init is not None and not getattr(init, "records_hparams", False):
            cls.__init__ = _record_hparams(cls, init)  # type: ignore[method-assign]


def model_hparams(model: Any) -> dict[str, Any]:
    """A copy of ``model.hparams`` (its constructor's arguments, defaults applied; plain JSON data).

    ValueError (one line) for a network that does not derive from :class:`HyperParameters`."""
    hparams = getattr(model, "hparams", None)
    if not isinstance(hparams, dict):
        raise ValueError(f"{type(model).__name__} does not record its hyper-parameters "
                         f"(derive it from diffdeblur.models.hparams.HyperParameters)")
    return plain(hparams)
