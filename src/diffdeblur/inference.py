"""The Python API: load a model, deblur an array or a file, at any size (the command line calls these)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import load_model_file
from .device import resolve_device
from .engines import resolve_engine, runner_for
from .export import OnnxModel
from .io import IMAGE_EXTENSIONS, is_image_file, read_image, to_numpy, to_tensor, write_image
from .errors import CheckpointError, ConfigError, ImageError, UnknownNameError
from .registry import get_entry
from .runtime import tune_allocator_once
from .tensorfile import WEIGHTS_DIR, read_metadata, shipped_weights
from .options import DEFAULT_MODEL, DEFAULT_TILE
from .tiling import DEFAULT_OVERLAP, check_tile, count_tiles, pad_reflect, resolve_tile, tiled_apply

__all__ = ["WEIGHTS_DIR", "DEFAULT_MODEL", "NoWeightsError", "shipped_weights", "weights_for", "load_model",
           "restore_tensor",
           "deblur", "deblur_file", "DEFAULT_TILE"]


class NoWeightsError(CheckpointError):
    """A registered name was asked for, but no trained weights for it ship with the package."""


def weights_for(name: str) -> Path | None:
    """The shipped weights that ``name`` loads: ``weights/<name>.safetensors``, else the default
    weights when ``name`` is the registered preset they were trained as (the preset's hyper-parameters,
    plus any the run set on top of them)."""
    weights = shipped_weights(name)
    if weights is not None or name == DEFAULT_MODEL:
        return weights
    default = shipped_weights(DEFAULT_MODEL)
    if default is None:
        return None
    meta = read_metadata(default)
    try:
        preset = get_entry(name).defaults
    except UnknownNameError:
        return None
    # the same preset: every preset hyper-parameter equal; extra keys (e.g. the TLC train_size) are the run's own
    kwargs, wanted = meta.get("kwargs", {}), json.loads(json.dumps(preset))
    same = meta.get("model") == name and all(kwargs.get(k) == v for k, v in wanted.items())
    return default if same else None


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device = "auto") -> nn.Module:
    """Load a trained model, in eval mode on ``device``.

    ``name_or_path``: a diffdeblur ``.safetensors`` file, an ``.onnx`` file written by
    :func:`diffdeblur.export.export_onnx` (run by ONNX Runtime on the CPU), or the name of shipped weights
    (``"default"`` or a registered model name with weights in ``diffdeblur/weights``, see
    :func:`weights_for`). A registered name without shipped weights raises :class:`NoWeightsError`
    rather than silently returning random weights; use :func:`diffdeblur.build_model` for a fresh,
    untrained network.
    """
    dev = resolve_device(device)
    s = os.fspath(name_or_path)
    if s.endswith(".onnx"):  # an exported graph (diffdeblur export): ONNX Runtime on the CPU
        if dev.type != "cpu":
            raise ConfigError(f"{s}: an ONNX file runs on the CPU (use --device cpu or auto)")
        return OnnxModel(s)
    if s.endswith(".safetensors") or os.sep in s or os.path.exists(s):
        return load_model_file(s, dev)
    weights = weights_for(s)
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
                         f"(train one with `diffdeblur train {s}`)")


class SamplingProgress:
    """The per-step callback that shows a bar over the sampling steps of ``calls`` sampler runs
    (tiles x samples). The bar starts at the first step, its total set from that step's
    ``num_steps``: an option the model refuses (``steps`` out of range) fails before any bar is drawn."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.bar: tqdm | None = None

    def __call__(self, info: dict[str, Any]) -> None:
        if self.bar is None:
            total = int(info["num_steps"]) * self.calls if info.get("num_steps") else None
            self.bar = tqdm(total=total, desc="sampling", unit="step", leave=False, dynamic_ncols=True)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@torch.inference_mode()
def restore_tensor(model: nn.Module, blur: torch.Tensor, tile: int | str = 0, overlap: int = DEFAULT_OVERLAP,
                   show_progress: bool = False, seed: int = 0, engine: str = "auto", **options: Any) -> torch.Tensor:
    """Restore a (1, 3, H, W) float tensor in [0, 1] (CPU) -> (1, 3, H, W) float32 in [0, 1] (CPU).

    ``tile`` > 0 runs overlapping tiles of that size (bounded memory); 0 runs the whole image; ``"auto"``
    runs the whole image up to about a megapixel and 512-pixel tiles above (:func:`diffdeblur.tiling.resolve_tile`).
    ``options`` go to ``model.restore`` (e.g. ``steps`` / ``sampler`` for diffusion models).
    Stochastic models get a noise field drawn once for the whole image from ``seed`` and sliced
    per tile (``noise_box``), so overlapping tiles see the same noise and no seams appear.
    Sides smaller than the model's ``size_multiple`` (a 5x7 image, a 12-pixel strip) are padded by
    reflection to it and cropped back; a zero-size image is an ImageError. ``show_progress`` shows
    a bar over the tiles, or over the sampling steps for models that take a step callback.
    ``engine``: how the network runs (:mod:`diffdeblur.engines`). ``auto``: bf16 autocast on CUDA; on
    the CPU the engine measured fastest on this machine among those within 0.05 dB of fp32
    (:func:`diffdeblur.engines.choose_engine`: the first ``auto`` call for a network architecture on a
    CPU times the candidates on a small probe image, a few seconds, says which won on stderr and caches
    the choice in the user's cache folder; later calls and processes read it). The first call also applies
    :func:`diffdeblur.runtime.tune_allocator` (once per process; DIFFDEBLUR_MALLOC=default keeps glibc's
    allocator), so that the API runs as fast as the command line without the caller doing anything.
    """
    h, w = blur.shape[-2:]
    if h == 0 or w == 0:
        raise ImageError(f"image {w}x{h} is empty")
    multiple = int(getattr(model, "size_multiple", 1))
    check_tile(tile, overlap, multiple)
    tile = resolve_tile(tile, h, w)
    if h < multiple or w < multiple:
        padded = pad_reflect(blur, max(h, multiple), max(w, multiple))
        return restore_tensor(model, padded, tile, overlap, show_progress, seed, engine, **options)[..., :h, :w]
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device  # an ONNX model has no parameters: CPU
    tune_allocator_once()
    runner = runner_for(model, resolve_engine(engine, model, device), device)
    generator = torch.Generator().manual_seed(seed)
    needs_noise = getattr(model, "stochastic", False)
    noise = model.noise_like(blur, generator) if needs_noise else None
    steps_bar = None
    if show_progress and "callback" in getattr(type(model).restore, "options", ()) and "callback" not in options:
        steps_bar = SamplingProgress(count_tiles(h, w, tile, overlap) * int(options.get("num_samples") or 1))
        options = dict(options, callback=steps_bar)

    def run(tile_img: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        extra = dict(options)
        if needs_noise:
            extra["noise"] = model.slice_noise(noise, box).to(device)
        out = runner(tile_img.to(device), **extra)
        return out.float().clamp(0, 1)

    try:
        return tiled_apply(run, blur, tile, overlap, show_progress=show_progress and steps_bar is None)
    finally:
        if steps_bar is not None:
            steps_bar.close()


def as_model(model: nn.Module | str | os.PathLike, device: str | torch.device = "auto") -> nn.Module:
    """A loaded module as is; a checkpoint path or shipped weights' name loaded with :func:`load_model`."""
    return model if isinstance(model, nn.Module) else load_model(model, device)


def deblur(image: np.ndarray | str | os.PathLike, model: nn.Module | str | os.PathLike = DEFAULT_MODEL,
           tile: int | str = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, device: str | torch.device = "auto",
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
                model: nn.Module | str | os.PathLike = DEFAULT_MODEL, *, tile: int | str = DEFAULT_TILE,
                overlap: int = DEFAULT_OVERLAP, device: str | torch.device = "auto", seed: int = 0,
                show_progress: bool = False, **options: Any) -> Path:
    """Deblur the image file ``src`` into ``dest``; what ``diffdeblur deblur`` does for each input.

    The output keeps the input's mode: grey stays grey, 16-bit stays 16-bit, alpha is copied
    (:func:`diffdeblur.io.write_image`); the write is atomic and never replaces ``src``. Large
    images run in overlapping tiles of ``tile`` pixels (0 = whole image at once). ``model``, ``seed``
    and ``options`` as :func:`deblur`. Raises ImageError naming the file for unreadable,
    empty or clashing images. Returns ``dest`` as a Path.
    """
    src, dest = Path(src), Path(dest)
    if not is_image_file(dest):  # before the work, not when the result is written
        raise ImageError(f"{dest}: unsupported output extension (use one of {', '.join(IMAGE_EXTENSIONS)})")
    if dest.resolve() == src.resolve():
        raise ImageError(f"{src}: output {dest} would overwrite the input; choose another output")
    model = as_model(model, device)
    rgb, info = read_image(src)
    blur = to_tensor(rgb)
    del rgb  # one full-size float copy of the input at a time (a 24 MP image: 288 MB each)
    try:
        restored = restore_tensor(model, blur, tile=tile, overlap=overlap, show_progress=show_progress,
                                  seed=seed, **options)
    except ImageError as exc:
        raise ImageError(f"{src}: {exc}") from None
    del blur
    # the (H, W, 3) view of the result (encoding clips it band by band): no second full-size copy
    write_image(dest, restored[0].permute(1, 2, 0).numpy(), info)
    return dest
