"""The Python API: load a model, deblur an array or a file, at any size."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError, load_model_file
from .device import autocast, resolve_device
from .io import read_image, to_numpy, to_tensor
from .registry import get_entry
from .tiling import DEFAULT_OVERLAP, tiled_apply

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "default"  # weights/default.safetensors: the shipped default model


class NoWeightsError(CheckpointError):
    """A registered name was asked for, but no trained weights for it ship with the package."""


def shipped_weights(name: str) -> Path | None:
    """Path of ``weights/<name>.safetensors`` inside the package, or None."""
    p = WEIGHTS_DIR / f"{name}.safetensors"
    return p if p.is_file() else None


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
    except KeyError as exc:
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


def deblur(image: np.ndarray | str | os.PathLike, model: nn.Module | str | os.PathLike = DEFAULT_MODEL,
           tile: int = 0, overlap: int = DEFAULT_OVERLAP, device: str | torch.device = "auto",
           **options: Any) -> np.ndarray:
    """Deblur an image; returns float32 RGB (H, W, 3) in [0, 1].

    image: an (H, W, 3) float array in [0, 1] (uint8 arrays are scaled by 1/255), or a file path.
    model: a loaded module, a checkpoint path, or shipped weights' name (default: the default model).
    """
    if not isinstance(model, nn.Module):
        model = load_model(model, device)
    if isinstance(image, (str, os.PathLike)):
        image, _ = read_image(image)
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"deblur expects an (H, W, 3) image, got shape {arr.shape}")
    out = restore_tensor(model, to_tensor(arr.astype(np.float32)), tile=tile, overlap=overlap, **options)
    return to_numpy(out)
