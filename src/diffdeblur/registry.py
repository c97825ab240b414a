"""The one model registry: name -> (constructor, preset keyword arguments).

Every registered network is a plain ``nn.Module`` whose constructor keyword arguments are its
hyper-parameters. It also exposes:

- ``size_multiple`` (int): input sides must be a multiple of this (inference pads and crops back);
- ``loss_hint`` (str): the training objective it was designed for (see :mod:`diffdeblur.losses`);
- ``restore(blur, **options)``: (B, 3, H, W) float in [0, 1] -> restored (B, 3, H, W) in [0, 1].
  Diffusion models take sampling options here (``steps``, ``sampler``, ``generator``, ``noise``).
"""
from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    kind: str = "regression"  # regression | diffusion | latent-diffusion | blurdm | autoencoder


_MODELS: dict[str, ModelEntry] = {}
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


def register_model(name: str, builder: Callable[..., nn.Module], *, description: str = "",
                   kind: str = "regression", **defaults: Any) -> None:
    """Register ``builder`` under ``name`` with preset keyword arguments. Names are unique."""
    if name in _MODELS:
        raise ValueError(f"model name '{name}' is registered twice")
    _MODELS[name] = ModelEntry(name, builder, dict(defaults), description, kind)


def _load_all() -> None:
    importlib.import_module("diffdeblur.models")


def model_names() -> list[str]:
    _load_all()
    return sorted(_MODELS)


def get_entry(name: str) -> ModelEntry:
    _load_all()
    if name not in _MODELS:
        raise KeyError(f"unknown model '{name}'; registered models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def list_models() -> list[ModelEntry]:
    _load_all()
    return [_MODELS[n] for n in sorted(_MODELS)]


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build a freshly initialised registered model; ``overrides`` replace preset kwargs.

    The result carries ``model.diffdeblur_config = {"model": name, "kwargs": {...}}`` so that a
    checkpoint can rebuild it with no other file.
    """
    entry = get_entry(name)
    kwargs = copy.deepcopy(entry.defaults)
    kwargs.update(copy.deepcopy(overrides))
    try:
        model = entry.builder(**kwargs)
    except TypeError as exc:
        raise ValueError(f"model '{name}': bad hyper-parameters ({exc})") from None
    model.diffdeblur_config = {"model": name, "kwargs": kwargs}
    return model


def model_config(model: nn.Module) -> dict[str, Any]:
    """The {"model": name, "kwargs": {...}} a registered model was built from."""
    cfg = getattr(model, "diffdeblur_config", None)
    if cfg is None:
        raise ValueError("model was not built through diffdeblur.build_model; its config is unknown")
    return cfg
