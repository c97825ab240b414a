"""Super-resolution and object removal through the deblurring path: :func:`upscale` / :func:`upscale_file` and
:func:`remove` / :func:`remove_file` (``diffdeblur sr`` and ``diffdeblur remove`` call the file versions).

Both run :func:`diffdeblur.inference.deblur` / :func:`~diffdeblur.inference.deblur_file` with another model: a
super-resolution model declares ``scale`` (its output is ``scale`` times the input's size; the file path upscales
the alpha plane with it), a removal model takes a per-pixel ``mask`` (unmasked pixels come back bit for bit).
What is theirs: choosing the model (the shipped weights by scale, the scale check) and making the mask (an image
of any mode, boxes, or both; thresholded at 50 %, white = remove). Images as the rest of the API: float32 RGB
(H, W, 3) in [0, 1] (uint8 arrays are scaled by 1/255), or a file path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from .errors import ConfigError, ImageError
from .inference import NoWeightsError, as_model, deblur, deblur_file, weights_for
from .io import decode_pillow, read_image
from .data.masks import mask_values
from .models.protocol import extra_inputs, output_scale
from .options import MASK_THRESHOLD, REMOVE_WEIGHTS, SR_SCALES

__all__ = ["SR_SCALES", "REMOVE_WEIGHTS", "sr_weights_name", "sr_model", "upscale", "upscale_file", "removal_model",
           "load_mask", "removal_mask", "remove", "remove_file"]

Box = Sequence[int]  # (x, y, width, height) in pixels, x and y from the top-left corner
NOTHING_TO_REMOVE = "nothing to remove: give a mask (white = remove) or boxes (x, y, width, height)"
MaskLike = Union[str, os.PathLike, Image.Image, np.ndarray]
ModelLike = Union[nn.Module, str, os.PathLike, None]


def model_label(model: nn.Module | str | os.PathLike) -> str:
    """How an error names a model: its path or name, or its class for a loaded module."""
    return type(model).__name__ if isinstance(model, nn.Module) else os.fspath(model)


def shipped(name: str, what: str, recipe: str) -> str:
    """``name`` when weights ship under it, else a one-line NoWeightsError saying to pass a checkpoint (trained
    with ``recipe``)."""
    if weights_for(name) is None:
        raise NoWeightsError(f"no shipped {what} weights yet ({name}); pass --model CHECKPOINT.safetensors (train "
                             f"one with `diffdeblur train {recipe}`)")
    return name


# ---- super-resolution -----------------------------------------------------------------------------------

def sr_weights_name(scale: int) -> str:
    """The registered super-resolution preset whose shipped weights upscale ``scale`` times (``sr-x4``)."""
    return f"sr-x{scale}"


def check_scale(scale: Any) -> int:
    """``scale`` if it is one of :data:`~diffdeblur.options.SR_SCALES`, else a one-line ConfigError."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in SR_SCALES:
        raise ConfigError(f"scale {scale!r} is not supported (supported: {', '.join(map(str, SR_SCALES))})")
    return scale


def sr_model(scale: int = 4, model: ModelLike = None, device: str | torch.device = "auto") -> nn.Module:
    """The super-resolution model that upscales ``scale`` times: ``model`` (a loaded module, a checkpoint path or
    a registered name with shipped weights), else the shipped ``sr-x<scale>`` weights. One-line errors: an
    unsupported scale, no shipped weights (NoWeightsError: pass a checkpoint), a model of another scale."""
    check_scale(scale)
    if model is None:
        model = shipped(sr_weights_name(scale), "super-resolution", f"recipes/{sr_weights_name(scale)}.yaml")
    loaded = as_model(model, device)
    got = output_scale(loaded)
    if got == 1:
        raise ConfigError(f"model '{model_label(model)}' is not a super-resolution model (its output has the input's "
                          f"size); pass an sr model (sr-x2, sr-x4, sr-chain-x4)")
    if got != scale:
        raise ConfigError(f"model '{model_label(model)}' upscales x{got}, not x{scale}: ask for scale {got}, "
                          f"or pass a x{scale} model")
    return loaded


def refuse_mask(options: dict[str, Any]) -> None:
    if "mask" in options:
        raise ConfigError("super-resolution takes no mask (a mask is for object removal: diffdeblur remove)")


def upscale(image: np.ndarray | str | os.PathLike, scale: int = 4, model: ModelLike = None, *,
            device: str | torch.device = "auto", **options: Any) -> np.ndarray:
    """Upscale an image ``scale`` (2 or 4) times: (H, W, 3) -> float32 RGB (scale H, scale W, 3) in [0, 1].

    ``model``: as :func:`sr_model` (default: the shipped ``sr-x<scale>`` weights). ``options``: as
    :func:`diffdeblur.inference.deblur` (``tile``, ``overlap``, ``seed``, ``engine``, ``steps`` for a chain, ...);
    tiles give the whole image's result. An output above :data:`~diffdeblur.options.MAX_UPSCALED_PIXELS` is
    a one-line ImageError. To write a file (alpha upscaled too, EXIF kept): :func:`upscale_file`."""
    refuse_mask(options)
    return deblur(image, sr_model(scale, model, device), **options)


def upscale_file(src: str | os.PathLike, dest: str | os.PathLike, scale: int = 4, model: ModelLike = None, *,
                 device: str | torch.device = "auto", **options: Any) -> Path:
    """Upscale the image file ``src`` into ``dest``, what ``diffdeblur sr`` does for each input: the input's mode
    kept (grey, 16-bit, EXIF), its alpha plane upscaled bicubically and attached again; the write is atomic and
    never replaces ``src`` (:func:`diffdeblur.inference.deblur_file`). ``model`` / ``options``: as :func:`upscale`."""
    refuse_mask(options)
    return deblur_file(src, dest, sr_model(scale, model, device), **options)


# ---- object removal -------------------------------------------------------------------------------------

def removal_model(model: ModelLike = None, device: str | torch.device = "auto") -> nn.Module:
    """The object-removal model: ``model`` (a loaded module, checkpoint path or name with shipped weights), else
    the shipped ``remove`` weights. One-line errors: no shipped weights (pass a checkpoint), a model without a
    ``mask`` input."""
    if model is None:
        model = shipped(REMOVE_WEIGHTS, "object-removal", "recipes/remove.yaml")
    loaded = as_model(model, device)
    if "mask" not in extra_inputs(loaded):
        raise ConfigError(f"model '{model_label(model)}' takes no mask: it is not an object-removal model "
                          f"(e.g. remove, remove-chain)")
    return loaded


def array_values(mask: np.ndarray) -> np.ndarray:
    """An array mask (H, W), (H, W, 1) grey, (H, W, 2) grey + alpha, (H, W, 3) RGB or (H, W, 4) RGBA -> (H, W)
    float. bool and float arrays are read as they are (1 = white), uint8 as 0..255, uint16 as 0..65535, other
    integers as they are (so 0/1 and 0/255 masks both work)."""
    a = np.asarray(mask)
    if a.ndim == 3 and a.shape[2] in (1, 2, 3, 4):
        colour, alpha = (a[..., :-1], a[..., -1]) if a.shape[2] in (2, 4) else (a, None)
    elif a.ndim == 2:
        colour, alpha = a[..., None], None
    else:
        raise ConfigError(f"a mask array must be (H, W) or (H, W, C) with C in 1..4, got shape {a.shape}")
    if a.dtype.kind not in "buif":
        raise ConfigError(f"a mask array must hold numbers or booleans, got dtype {a.dtype}")
    full = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(a.dtype, 1.0)
    grey = colour.astype(np.float64).mean(axis=2) / full
    return grey * (alpha.astype(np.float64) / full) if alpha is not None else grey


def load_mask(mask: MaskLike) -> np.ndarray:
    """A removal mask as (H, W) bool, True = remove: a pixel is removed when its grey value (the mean of its
    colour channels, times its alpha where there is one: transparent = keep) is above 50 % of white.

    ``mask``: an image file of any mode (L, LA, RGB, RGBA, P, I;16, 1-bit; EXIF orientation applied), a Pillow
    image, or an array (see :func:`array_values`). One-line errors naming the file: unreadable, empty (nothing
    above 50 %), or covering every pixel (nothing left to fill the hole from)."""
    if isinstance(mask, (str, os.PathLike, Image.Image)):
        rgb, info = read_image(mask) if not isinstance(mask, Image.Image) else decode_pillow(mask)
        values = mask_values(rgb, info.alpha)
    else:
        values = array_values(mask)
    region = values > MASK_THRESHOLD
    check_region(region, os.fspath(mask) if isinstance(mask, (str, os.PathLike)) else "mask")
    return region


def check_region(region: np.ndarray, where: str) -> None:
    """ImageError naming ``where`` when the region to remove is empty or the whole image."""
    if region.size == 0 or not region.any():
        raise ImageError(f"{where}: the mask is empty (no pixel above 50 % white); white marks what to remove")
    if region.all():
        raise ImageError(f"{where}: the mask covers the whole image; nothing is left to fill the hole from")


def check_box(box: Box) -> tuple[int, int, int, int]:
    """``box`` as (x, y, width, height) ints, x, y >= 0 and width, height >= 1; else a one-line ConfigError."""
    values = tuple(box) if isinstance(box, (tuple, list)) else ()
    if (len(values) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values)
            or values[0] < 0 or values[1] < 0 or values[2] < 1 or values[3] < 1):
        raise ConfigError(f"box {box!r}: expected (x, y, width, height): four integers, x, y >= 0 and "
                          f"width, height >= 1")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def removal_mask(height: int, width: int, mask: np.ndarray | None = None, boxes: Sequence[Box] = (),
                 mask_name: str = "mask") -> torch.Tensor:
    """The mask of an H x W image as the removal model takes it, (1, 1, H, W) float32 in {0, 1} (1 = remove): the
    union of ``mask`` ((H, W) bool, :func:`load_mask`) and ``boxes`` ((x, y, width, height) each). One-line
    errors: neither given (ConfigError); a mask of another size, a box reaching outside the image, or a region
    covering the whole image (ImageError, naming ``mask_name`` for the mask)."""
    boxes = [check_box(b) for b in boxes]
    if mask is None and not boxes:
        raise ConfigError(NOTHING_TO_REMOVE)
    region = np.zeros((height, width), bool)
    if mask is not None:
        if mask.shape != (height, width):
            raise ImageError(f"the mask {mask_name} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                             f"{width}x{height}")
        region |= mask
    for x, y, w, h in boxes:
        if x + w > width or y + h > height:
            raise ImageError(f"box {x},{y},{w},{h} reaches outside the {width}x{height} image")
        region[y:y + h, x:x + w] = True
    if region.all():
        raise ImageError("the mask and boxes cover the whole image; nothing is left to fill the hole from")
    return torch.from_numpy(region.astype(np.float32))[None, None]


def mask_and_name(mask: MaskLike | None) -> tuple[np.ndarray | None, str]:
    if mask is None:
        return None, "mask"
    return load_mask(mask), os.fspath(mask) if isinstance(mask, (str, os.PathLike)) else "mask"


def remove(image: np.ndarray | str | os.PathLike, mask: MaskLike | None = None, boxes: Sequence[Box] = (),
           model: ModelLike = None, *, device: str | torch.device = "auto", **options: Any) -> np.ndarray:
    """Remove what ``mask`` and ``boxes`` mark from an image and fill it in: (H, W, 3) -> float32 RGB (H, W, 3) in
    [0, 1], every pixel outside the marked region equal to the input's.

    ``mask``: :func:`load_mask` (an image file of any mode, a Pillow image or an array; white = remove);
    ``boxes``: (x, y, width, height) rectangles to remove too; at least one of them. ``model``: as
    :func:`removal_model` (default: the shipped ``remove`` weights). ``options``: as
    :func:`diffdeblur.inference.deblur` (``tile``, ``overlap``, ``seed``, ``engine``, ``steps`` for a chain).
    To write a file: :func:`remove_file`."""
    net = removal_model(model, device)
    if isinstance(image, (str, os.PathLike)):
        image, _ = read_image(image)
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ImageError(f"remove expects an (H, W, 3) image, got shape {arr.shape}")
    region, name = mask_and_name(mask)
    return deblur(arr, net, mask=removal_mask(arr.shape[0], arr.shape[1], region, boxes, name), **options)


def remove_file(src: str | os.PathLike, dest: str | os.PathLike, mask: MaskLike | None = None,
                boxes: Sequence[Box] = (), model: ModelLike = None, *, device: str | torch.device = "auto",
                **options: Any) -> Path:
    """Remove what ``mask`` / ``boxes`` mark from the image file ``src`` into ``dest``, what ``diffdeblur remove``
    does for each input: unmasked pixels written back as they were read (an 8-bit PNG's bit for bit), the input's
    mode kept (grey, 16-bit, alpha, EXIF), an atomic write that never replaces ``src``
    (:func:`diffdeblur.inference.deblur_file`). A mask of another size than ``src`` or a box outside it is an
    ImageError naming ``src``, before anything is written. ``mask`` / ``boxes`` / ``model`` / ``options``: as
    :func:`remove`."""
    net = removal_model(model, device)
    region, name = mask_and_name(mask)
    boxes = [check_box(b) for b in boxes]
    if region is None and not boxes:  # before the image is read
        raise ConfigError(NOTHING_TO_REMOVE)

    def inputs_for(height: int, width: int) -> dict[str, torch.Tensor]:
        return {"mask": removal_mask(height, width, region, boxes, name)}

    return deblur_file(src, dest, net, inputs_for=inputs_for, **options)
