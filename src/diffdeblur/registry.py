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
from typing import Any, Callable, Iterable

from torch import nn

from .errors import ConfigError, UnknownNameError
from .methods import METHODS
from .methods.base import ModelSpec, spec
from .models.hparams import model_hparams
from .models.protocol import option_names
from .typecheck import check_kwargs, plain

ModelEntry = ModelSpec  # the registry's entries are the architecture modules' specs
ARCHITECTURES = METHODS  # the method modules, each with its PRESETS (diffdeblur.methods)
_MODELS: dict[str, ModelSpec] = {}


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
                   kind: str = "regression", composite: bool = False, loss: str = "", **defaults: Any) -> None:
    """Register ``builder`` under ``name`` with preset keyword arguments and its default objective ``loss``
    (a name of :data:`~diffdeblur.methods.base.OBJECTIVES`): the one line that adds a method from outside the package."""
    _add(spec(name, builder, description, kind=kind, composite=composite, loss=loss, **defaults))


def unregister_model(name: str) -> None:
    """Remove a model registered with :func:`register_model` (tests, notebooks); unknown names are an error."""
    get_entry(name)
    del _MODELS[name]


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


def build_submodel(name: str, *, kinds: tuple[str, ...] = ("regression",), **overrides: Any) -> nn.Module:
    """The :class:`~diffdeblur.methods.base.SubmodelFactory` given to composite networks."""
    entry = get_entry(name)
    if entry.kind not in kinds:
        raise ConfigError(f"'{name}' is a {entry.kind} model; expected a {' or '.join(kinds)} model here")
    return build_model(name, **overrides)


build_submodel.loss = lambda name: get_entry(name).loss  # type: ignore[attr-defined]  # a preset's objective


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build a freshly initialised registered model; ``overrides`` replace preset kwargs.

    The keyword arguments are checked against the constructor's signature and type hints first
    (:func:`diffdeblur.typecheck.check_kwargs`): an unknown key or a wrong type is a one-line ConfigError
    naming the model (``model 'nafnet-tiny': width=16.5 is not an int``). The model's config is then its
    own (:func:`model_config`); ``model.diffdeblur_config = {"model": name, "kwargs": {...}}`` (the registry's
    keyword arguments) is still set for the code that reads it.
    """
    entry = get_entry(name)
    kwargs = copy.deepcopy(entry.defaults)
    kwargs.update(copy.deepcopy(overrides))
    check_kwargs(entry.builder, kwargs, f"model '{name}'")
    extra = {"submodel": build_submodel} if entry.composite else {}
    model = entry.builder(**kwargs, **extra)
    model.diffdeblur_config = {"model": name, "kwargs": plain(kwargs)}
    return model


def preset_name(model: nn.Module) -> str:
    """The registered name of ``model``: the preset it was built as by :func:`build_model`, else the preset whose
    builder is ``type(model)`` and whose preset values all equal the model's hyper-parameters, else the first
    preset of that class. ValueError (one line) for a class that no preset builds."""
    cfg = getattr(model, "diffdeblur_config", None)
    if isinstance(cfg, dict) and cfg.get("model") in _MODELS:
        return cfg["model"]
    presets = [e for e in _MODELS.values() if e.builder is type(model)]
    if not presets:
        raise ValueError(f"{type(model).__name__} is not a registered model class; register it with "
                         f"diffdeblur.registry.register_model(name, {type(model).__name__}) to save it")
    hparams = getattr(model, "hparams", None) or {}
    same = [e for e in presets if all(k in hparams and hparams[k] == plain(v) for k, v in e.defaults.items())]
    return (same or presets)[0].name


def model_config(model: nn.Module) -> dict[str, Any]:
    """``{"model": name, "kwargs": {...}}`` that rebuilds ``model`` with :func:`build_model`: its own
    hyper-parameters (``model.hparams``, see :mod:`diffdeblur.models.hparams`) under its registered name
    (:func:`preset_name`), for a model built by :func:`build_model` or directly from its class.

    A network that does not record its hyper-parameters needs to have been built by :func:`build_model`
    (its ``diffdeblur_config``); else, and for a class that is not registered, a one-line ValueError.
    """
    cfg = getattr(model, "diffdeblur_config", None)
    if isinstance(getattr(model, "hparams", None), dict):
        name = preset_name(model)
        if get_entry(name).builder is type(model):  # hparams are the builder's own keyword arguments
            return {"model": name, "kwargs": model_hparams(model)}
    if cfg is None:
        raise ValueError(f"{type(model).__name__} records no hyper-parameters and was not built through "
                         "diffdeblur.build_model; its config is unknown")
    return {"model": cfg["model"], "kwargs": plain(cfg.get("kwargs", {}))}


_register_all(ARCHITECTURES)
