"""What a restorer provides, written down: its ``restore`` options (presets are :class:`diffdeblur.methods.base.ModelSpec`).

``restore(blur, **options)`` takes keyword options only, declared in its signature and typed;
:func:`restore_options` wraps it so that an unknown option (``restore(x, stpes=2)``) is a
:class:`~diffdeblur.errors.ConfigError` naming the option and the allowed ones, never swallowed.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import ConfigError

def option_names(restore: Callable[..., Any]) -> tuple[str, ...]:
    """The keyword options of a ``restore(self, blur, *, ...)`` function (its parameters after ``blur``).

    Raises TypeError when the signature has ``**kwargs`` (options would be swallowed) or is not
    ``(self, blur, ...)``.
    """
    params = list(inspect.signature(inspect.unwrap(restore)).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise TypeError(f"{restore.__qualname__}: restore() must list its options, not take **kwargs")
    if len(params) < 2 or params[0].name != "self":
        raise TypeError(f"{restore.__qualname__}: restore() must be a method restore(self, blur, ...)")
    return tuple(p.name for p in params[2:])


def check_options(owner: str, allowed: tuple[str, ...], options: Mapping[str, Any]) -> None:
    """ConfigError naming the first option of ``options`` not in ``allowed`` (and listing the allowed)."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        listed = ", ".join(allowed) if allowed else "none"
        raise ConfigError(f"{owner}: unknown restore option '{unknown[0]}' (allowed: {listed})")


def restore_options(restore: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Decorator for ``restore(self, blur, *, opt=default, ...)``: unknown keyword options are a
    ConfigError naming them and the allowed ones; the allowed names are ``restore.options``."""
    allowed = option_names(restore)

    @functools.wraps(restore)
    def checked(self: nn.Module, blur: torch.Tensor, **options: Any) -> torch.Tensor:
        check_options(f"{type(self).__name__}.restore", allowed, options)
        return restore(self, blur, **options)

    checked.options = allowed  # type: ignore[attr-defined]
    return checked


def model_options(model: nn.Module) -> tuple[str, ...]:
    """The restore options a network accepts (declared through :func:`restore_options`)."""
    allowed = getattr(type(model).restore, "options", None)
    if allowed is None:
        raise TypeError(f"{type(model).__name__}.restore is not declared with @restore_options")
    return allowed


def check_model_options(model: nn.Module, options: Mapping[str, Any], where: str = "") -> None:
    """ConfigError when ``options`` holds a name ``model.restore`` does not take (``where`` prefixes it)."""
    owner = f"{where}: {type(model).__name__}" if where else type(model).__name__
    check_options(owner, model_options(model), options)


def exclude_from_state(module: nn.Module, attr: str, fill: Callable[[nn.Module], None] | None = None) -> None:
    """Leave the frozen submodule ``module.<attr>`` out of ``module``'s state dicts (it is rebuilt from its own
    files, not stored in every checkpoint); a state loaded without its keys keeps the submodule's own tensors,
    after ``fill(module)`` (e.g. loading deferred weights)."""
    key = attr + "."

    def drop(mod: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
        for k in [k for k in state_dict if k.startswith(prefix + key)]:
            del state_dict[k]

    def keep(mod: nn.Module, state_dict: dict, prefix: str, *_: Any) -> None:
        if fill is not None:
            fill(mod)
        for k, v in getattr(mod, attr).state_dict(prefix=prefix + key).items():
            state_dict.setdefault(k, v)

    module.register_state_dict_post_hook(drop)
    module.register_load_state_dict_pre_hook(keep)


# ---- what a restorer declares for tiling (read by diffdeblur.inference and diffdeblur.export) ---------------

# submodules a wrapper restores through (few-step chains: unet, BlurDM: backbone, ResShift: predictor),
# whose tile context the wrapper inherits when it declares none itself
CONTEXT_HOLDERS = ("unet", "backbone", "predictor")


def output_scale(model: nn.Module) -> int:
    """Output pixels per input pixel along H and W: the model's ``scale`` (absent: 1; a super-resolution
    restorer declares 2, 4, ...); ConfigError unless a positive integer."""
    scale = getattr(model, "scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"{type(model).__name__}.scale must be a positive integer, got {scale!r}")
    return scale


def extra_inputs(model: nn.Module) -> tuple[str, ...]:
    """The per-pixel inputs ``model.restore`` takes besides the image (its ``extra_inputs``; absent: none),
    each a (1, K, H, W) tensor on the input's grid, sliced with every tile (e.g. ``("mask",)``)."""
    return tuple(getattr(model, "extra_inputs", ()))


def tile_context(model: nn.Module) -> int:
    """Input pixels beyond a tile that ``model``'s output there meaningfully depends on: its own
    ``tile_context``, else the largest of its :data:`CONTEXT_HOLDERS` submodules' (a wrapper around a
    NAFNet with test-time local statistics inherits the NAFNet's), else 0. Tiles are grown by it
    (:func:`diffdeblur.tiling.tiled_apply`), so that tiled output matches the whole image's."""
    own = getattr(model, "tile_context", None)  # an exported graph carries its network's (diffdeblur.export)
    if own is not None:
        return int(own)
    held = [getattr(model, name, None) for name in CONTEXT_HOLDERS]
    return max((tile_context(m) for m in held if isinstance(m, nn.Module)), default=0)


def whole_image_inputs(model: nn.Module, blur: torch.Tensor, noise: Any = None,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """A restorer's whole-image conditions: what its output depends on that is a statistic of the whole image,
    not of the pixels near a point (BlurDM's prior, pooled over the image and run through a latent chain).

    A model declares ``whole_image_inputs(blur, noise=None, generator=None) -> {option: tensor}``: ``blur`` the
    whole (B, 3, H, W) image (on the CPU in tiled inference; the model moves what it computes to its own device
    and bounds its memory on a large image), ``noise`` the image's noise (``noise_like``, unsliced) or None to
    draw from ``generator``. Every key is one of its ``restore`` options. :func:`diffdeblur.inference.restore_tensor`
    calls it once per image, before the tiles, and passes the values unchanged to every tile's ``restore`` (the
    tile grid does not slice them, unlike ``extra_inputs``); ``restore(blur)`` without them must compute them from
    ``blur`` by the same method, so that the whole image and its tiles see one condition and tiled output differs
    from whole only by the network's own tiling error (:func:`tile_context`). Absent: no whole-image conditions
    (every tile's output depends on its own pixels only), ``{}``."""
    hook = getattr(model, "whole_image_inputs", None)
    if hook is None:
        return {}
    inputs = dict(hook(blur, noise, generator))
    check_options(f"{type(model).__name__}.whole_image_inputs", model_options(model), inputs)
    return inputs
