"""The Python API: load a model, deblur an array or a file, at any size (the command line calls these)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import load_model_file
from .device import autocast, resolve_device
from .io import read_image, to_numpy, to_tensor, write_image
from .errors import CheckpointError, ImageError, UnknownNameError
from .registry import get_entry
from .tensorfile import WEIGHTS_DIR, shipped_weights
from .tiling import DEFAULT_OVERLAP, tiled_apply

__all__ = ["WEIGHTS_DIR", "DEFAULT_MODEL", "NoWeightsError", "shipped_weights", "load_model", "restore_tensor",
           "deblur", "deblur_file", "DEFAULT_TILE"]
DEFAULT_MODEL = "default"  # weights/default.safetensors: the shipped default model
DEFAULT_TILE = 512  # tile side of deblur() / deblur_file() and the command line: bounded memory at any size


class NoWeightsError(CheckpointError):
    """A registered name was asked for, but no trained weights for it ship with the package."""


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device = "auto") -> nn.Module:
    """Load a trained model, in eval mode on ``device``.

    ``name_or_path``: a diffdeblur ``.safetensors`` file, or the name of shipped weights
    (``"default"`` or a registered model name with weights in ``diffdeblur/weights``).
    A registered name without shipped weights raises :class:`NoWeightsError` rather than silently
    returning random weights; use :func:`diffdeblur.build_model` for a fresh, untrained network.
    """
    dev = resolve_device(device)
    s = os.fspath(name_or_path)
    if s.endswith(".safetensors") or os.sep in s or os.path.exists(s):
        return load_model_file(s, dev)
    weights = shipped_weights(s)
    if weights is not None:
        return load_model_file(weights, dev)
    if s == DEFAULT_MODEL:
        raise NoWeightsError("no trained default weights ship with this installation yet; pass --model "
                             "CHECKPOINT.safetensors (train one with `diffdeblur train nafnet-small`)")
    try:
        get_entry(s)
    except UnknownNameError as exc:
        raise NoWeightsError(f"{s}: not a checkpoint file and not a model name ({exc.args[0]})") from None
    raise NoWeightsError(f"{s}: no trained weights ship for this model; pass a checkpoint .safetensors "
                         f"(train one with `diffdeblur train`), or build an untrained one with build_model()")


@torch.inference_mode()
def restore_tensor(model: nn.Module, blur: torch.Tensor, tile: int = 0, overlap: int = DEFAULT_OVERLAP,
                   show_progress: bool = False, seed: int = 0, **options: Any) -> torch.Tensor:
    """Restore a (1, 3, H, W) float tensor in [0, 1] (CPU) -> (1, 3, H, W) float32 in [0, 1] (CPU).

    ``tile`` > 0 runs overlapping tiles of that size (bounded memory); 0 runs the whole image.
    ``options`` go to ``model.restore`` (e.g. ``steps`` / ``sampler`` for diffusion models).
    Stochastic models get a noise field drawn once for the whole image from ``seed`` and sliced
    per tile (``noise_box``), so overlapping tiles see the same noise and no seams appear.
    """
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    needs_noise = getattr(model, "stochastic", False)
    noise = model.noise_like(blur, generator) if needs_noise else None

    def run(tile_img: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        extra = dict(options)
        if needs_noise:
            extra["noise"] = model.slice_noise(noise, box).to(device)
        with autocast(device):
            out = model.restore(tile_img.to(device), **extra)
        return out.float().clamp(0, 1)

    return tiled_apply(run, blur, tile, overlap, show_progress=show_progress)


def as_model(model: nn.Module | str | os.PathLike, device: str | torch.device = "auto") -> nn.Module:
    """A loaded module as is; a checkpoint path or shipped weights' name loaded with :func:`load_model`."""
    return model if isinstance(model, nn.Module) else load_model(model, device)


def deblur(image: np.ndarray | str | os.PathLike, model: nn.Module | str | os.PathLike = DEFAULT_MODEL,
           tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, device: str | torch.device = "auto",
           seed: int = 0, **options: Any) -> np.ndarray:
    """Deblur an image; returns float32 RGB (H, W, 3) in [0, 1] (to write a file, see :func:`deblur_file`).

    image: an (H, W, 3) float array in [0, 1] (uint8 arrays are scaled by 1/255), or a file path.
    model: a loaded module, a checkpoint path, or shipped weights' name (default: the default model).
    tile / overlap / seed / options: as :func:`restore_tensor`, with the command line's defaults.
    """
    model = as_model(model, device)
    if isinstance(image, (str, os.PathLike)):
        image, _ = read_image(image)
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"deblur expects an (H, W, 3) image, got shape {arr.shape}")
    out = restore_tensor(model, to_tensor(arr.astype(np.float32)), tile=tile, overlap=overlap, seed=seed, **options)
    return to_numpy(out)


def deblur_file(src: str | os.PathLike, dest: str | os.PathLike,
                model: nn.Module | str | os.PathLike = DEFAULT_MODEL, *, tile: int = DEFAULT_TILE,
                overlap: int = DEFAULT_OVERLAP, device: str | torch.device = "auto", seed: int = 0,
                show_progress: bool = False, **options: Any) -> Path:
    """Deblur the image file ``src`` into ``dest``; what ``diffdeblur deblur`` does for each input.

    The output keeps the input's mode: grey stays grey, 16-bit stays 16-bit, alpha is copied
    (:func:`diffdeblur.io.write_image`); the write is atomic and never replaces ``src``. Large
    images run in overlapping tiles of ``tile`` pixels (0 = whole image at once). ``model``, ``seed``
    and ``options`` as :func:`deblur`. Raises ImageError naming the file for unreadable,
    too-small or clashing images. Returns ``dest`` as a Path.
    """
    src, dest = Path(src), Path(dest)
    if dest.resolve() == src.resolve():
        raise ImageError(f"{src}: output {dest} would overwrite the input; choose another output")
    model = as_model(model, device)
    rgb, info = read_image(src)
    multiple = getattr(model, "size_multiple", 1)
    if min(rgb.shape[:2]) < multiple:
        raise ImageError(f"{src}: image {rgb.shape[1]}x{rgb.shape[0]} is smaller than the model's "
                         f"minimum size {multiple}x{multiple}")
    restored = restore_tensor(model, to_tensor(rgb), tile=tile, overlap=overlap, show_progress=show_progress,
                              seed=seed, **options)
    del rgb  # the input's float copy is not needed while the output is encoded
    write_image(dest, to_numpy(restored), info)
    return dest
