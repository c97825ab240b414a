"""The one model registry: name -> (constructor, preset keyword arguments).

Every registered network is a plain ``nn.Module`` whose constructor keyword arguments are its
hyper-parameters. It also exposes (the protocol of :mod:`diffdeblur.models.protocol`):

- ``size_multiple`` (int): input sides must be a multiple of this (inference pads and crops back);
- ``restore(blur, **options)``: (B, 3, H, W) float in [0, 1] -> restored (B, 3, H, W) in [0, 1],
  declared with ``@restore_options`` so that unknown options are errors. Diffusion models take
  sampling options here (``steps``, ``sampler``, ``generator``, ``noise``).

The table is filled once, here, from the ``PRESETS`` of the architecture modules imported below
(explicitly: no folder scanning, nothing depends on import order). Registering checks the preset's
``restore`` protocol.
"""
from __future__ import annotations

import copy
import inspect
from typing import Any, Callable, Iterable, TypeVar

from torch import nn

from .errors import ConfigError, UnknownNameError
from .methods import METHODS
from .methods.base import ModelSpec, spec
from .models.protocol import option_names

ModelEntry = ModelSpec  # the registry's entries are the architecture modules' specs
ARCHITECTURES = METHODS  # the method modules, each with its PRESETS (diffdeblur.methods)
_MODELS: dict[str, ModelSpec] = {}
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


def _add(entry: ModelSpec) -> None:
    if entry.name in _MODELS:
        raise ValueError(f"model name '{entry.name}' is registered twice")
    restore = getattr(entry.builder, "restore", None)
    if restore is None or getattr(restore, "options", None) is None:
        raise TypeError(f"model '{entry.name}': {entry.builder.__name__}.restore must be declared with "
                        "@restore_options (diffdeblur.models.protocol)")
    option_names(restore)  # raises when restore() would swallow options (**kwargs)
    _MODELS[entry.name] = entry


def register_model(name: str, builder: Callable[..., nn.Module], *, description: str = "",
                   kind: str = "regression", composite: bool = False, **defaults: Any) -> None:
    """Register ``builder`` under ``name`` with preset keyword arguments (for models outside the package)."""
    _add(spec(name, builder, description, kind=kind, composite=composite, **defaults))


def _register_all(modules: Iterable[Any]) -> None:
    for module in modules:
        for entry in module.PRESETS:
            _add(entry)


def model_names() -> list[str]:
    return sorted(_MODELS)


def get_entry(name: str) -> ModelSpec:
    if name not in _MODELS:
        raise UnknownNameError(f"unknown model '{name}'; registered models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def list_models() -> list[ModelSpec]:
    return [_MODELS[n] for n in sorted(_MODELS)]


def check_keywords(fn: Callable[..., Any], kwargs: dict[str, Any], owner: str, what: str = "hyper-parameter",
                   skip: tuple[str, ...] = ("submodel",)) -> None:
    """ConfigError naming a keyword of ``kwargs`` that ``fn`` does not take (and listing those it takes).

    Checked against the signature before the call, so that a TypeError raised inside a
    constructor stays a bug with its traceback instead of passing for a user error.
    """
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n, p in params.items() if n not in skip and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"{owner}: unknown {what} '{unknown[0]}' (allowed: {', '.join(allowed)})")


def build_submodel(name: str, *, kinds: tuple[str, ...] = ("regression",), **overrides: Any) -> nn.Module:
    """The :class:`~diffdeblur.methods.base.SubmodelFactory` given to composite networks."""
    entry = get_entry(name)
    if entry.kind not in kinds:
        raise ConfigError(f"'{name}' is a {entry.kind} model; expected a {' or '.join(kinds)} model here")
    return build_model(name, **overrides)


build_submodel.loss = lambda name: get_entry(name).loss  # type: ignore[attr-defined]  # a preset's objective


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build a freshly initialised registered model; ``overrides`` replace preset kwargs.

    The result carries ``model.diffdeblur_config = {"model": name, "kwargs": {...}}`` so that a
    checkpoint can rebuild it with no other file.
    """
    entry = get_entry(name)
    kwargs = copy.deepcopy(entry.defaults)
    kwargs.update(copy.deepcopy(overrides))
    check_keywords(entry.builder, kwargs, f"model '{name}'")
    extra = {"submodel": build_submodel} if entry.composite else {}
    model = entry.builder(**kwargs, **extra)
    model.diffdeblur_config = {"model": name, "kwargs": kwargs}
    return model


def model_config(model: nn.Module) -> dict[str, Any]:
    """The {"model": name, "kwargs": {...}} a registered model was built from."""
    cfg = getattr(model, "diffdeblur_config", None)
    if cfg is None:
        raise ValueError("model was not built through diffdeblur.build_model; its config is unknown")
    return cfg


_register_all(ARCHITECTURES)
